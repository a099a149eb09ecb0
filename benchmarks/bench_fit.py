"""Time of ``hilctl fit`` per device model, and what it recovers.

For every device model: a tile with known parameters (the round-trip settings of
``tests/test_fit.py``: spreads and noise on) is characterised on the emulator from its lower bound,
``--up`` up pulses then ``--down`` down pulses, every cell read after every pulse; then the fit
(:func:`hilctl.fitting.fit_device`, without the emulated twin) is timed, best of ``--rounds``. The
table of true against fitted parameters is printed with ``--table``.

    python benchmarks/bench_fit.py [--size 64] [--up 200] [--down 200] [--rounds 3] [--table]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np
from test_fit import COMMON, TRUTH

from hilctl.backends import open_tile
from hilctl.characterize import measure_pulse_response
from hilctl.config import device_config, tile_config
from hilctl.fitting import PulseData, fit_device


def characterise(model: str, size: int, up: int, down: int) -> PulseData:
    values = {**COMMON, **TRUTH[model]}
    tile = open_tile("sim", tile_config(rows=size, cols=size, device=model,
                                        device_values=values, seed=0))
    trace = measure_pulse_response(tile, up, down, values["w_min"], per_cell=True).per_cell
    assert trace is not None
    weights = np.column_stack([trace.start, trace.weights.T])
    directions = np.r_[np.ones(up), -np.ones(down)].astype(np.int8)
    return PulseData(weights, directions, tuple(map(str, range(size * size))), model,
                     shape=(size, size))


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--up", type=int, default=200)
    parser.add_argument("--down", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--table", action="store_true", help="print true against fitted")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    print(f"{args.size} x {args.size} cells, {args.up} up + {args.down} down pulses; "
          f"fit time best of {args.rounds}")
    for model in TRUTH:
        data = characterise(model, args.size, args.up, args.down)
        times = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            fit = fit_device(data, model)
            times.append(time.perf_counter() - began)
        truth = device_config(model, **{**COMMON, **TRUTH[model]}).model_dump()
        results[model] = {"seconds": min(times), "device": fit.device,
                          "uncertainty": fit.uncertainty,
                          "truth": {k: truth.get(k) for k in fit.device}}
        print(f"{model:14} {min(times):6.2f} s")
        if args.table:
            for name, value in fit.device.items():
                if name != "model":
                    error = fit.uncertainty.get(name)
                    print(f"    {name:18} true {_cell(truth.get(name)):>28}  fitted "
                          f"{_cell(value):>28}  +- {_cell(error)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
