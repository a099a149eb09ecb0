"""The README's Python example runs as printed: the tile API it shows is the API there is."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs() -> None:
    text = README.read_text()
    section = text[text.index("### From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the README's Python section has no python block"
    names: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), names)  # our own README
    tile = names["tile"]
    assert names["y"].shape == (10, 64) and names["g"].shape == (10, 32)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(tile.read_weights(), np.zeros((64, 32)))  # type: ignore[attr-defined]
