"""Build hook: every built copy of hilctl records the commit it was built from.

The project's metadata is in ``pyproject.toml``; this file only replaces setuptools' ``build_py``
with one that writes ``hilctl/_build_info.py`` (``GIT_DESCRIBE = "<git describe --always
--dirty --tags>"``) into the build, when the source is a git checkout. An installed copy, which
has no checkout to ask, reads the commit from there (``hilctl/version.py``). An editable install
runs from the checkout and asks git directly, so nothing is written for it. A source archive
(``sdist``) carries the file too, for wheels built from it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent


def describe(root: Path) -> str | None:
    """``git describe --always --dirty --tags`` of ``root``, or None where it is no checkout."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return None
    try:
        done = subprocess.run([git, "-C", str(root), "describe", "--always", "--dirty", "--tags"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def write_build_info(package_dir: Path, commit: str) -> None:
    """``hilctl/_build_info.py`` in ``package_dir`` (a build's or a source archive's)."""
    target = package_dir / "hilctl" / "_build_info.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('"""Written by setup.py when this copy was built; not kept in git."""\n\n'
                      f"GIT_DESCRIBE = {commit!r}\n", encoding="utf-8")


class BuildPyWithCommit(build_py):
    """``build_py`` that also writes the commit into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        commit = describe(ROOT)
        if commit is None:
            return
        write_build_info(Path(self.build_lib), commit)


class SdistWithCommit(sdist):
    """``sdist`` that puts the commit into the source archive, so that a wheel built from the
    archive (which has no ``.git``) still knows it: its ``build_py`` copies the file along."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        commit = describe(ROOT)
        if commit is not None:
            write_build_info(Path(base_dir), commit)


setup(cmdclass={"build_py": BuildPyWithCommit, "sdist": SdistWithCommit})
