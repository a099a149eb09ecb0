"""Pulsed-update throughput of the emulator, side by side with aihwkit 1.1.0 when it is importable.

The setting timed: a soft-bounds tile with aihwkit's default device variations, bit length 31
with update and bit-length management on, samples x ~ U(-1, 1), d ~ U(-0.1, 0.1), lr 0.01,
fed in mini-batches as training feeds them. All run single-threaded: hilctl's default engine
(compiled), its numpy engine (the reference) and aihwkit, timed in alternating rounds, each
keeping its best round, so a noisy neighbour on the machine slows all alike instead of skewing
the ratio (hilctl's default engine over aihwkit).

Also reports the peak memory of a 4096 x 4096 soft-bounds tile with variations through an
update and a forward pass (in a fresh process).

    python benchmarks/bench_update.py [--rounds 5] [--seconds 0.4] [--json FILE]

aihwkit needs torch; run the script with a Python that has both hilctl and aihwkit 1.1.0 to get
the ratios, or with any hilctl install to get the emulator's figures alone.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from timing import calls_per_second, round_arguments  # noqa: E402

from hilctl.backends import open_tile  # noqa: E402
from hilctl.config import tile_config  # noqa: E402

LR = 0.01
SIZES = (64, 256, 512)
BATCHES = (10, 1)
PREPARED = 32  # distinct mini-batches cycled through, as a data loader would feed them


def _batches(rows: int, cols: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        (rng.uniform(-1, 1, (batch, cols)), rng.uniform(-0.1, 0.1, (batch, rows)))
        for _ in range(PREPARED)
    ]


def hilctl_step(rows: int, cols: int, batch: int, engine: str = "auto") -> Callable[[int], None]:
    """One emulator update per call, on the i-th prepared mini-batch."""
    tile = open_tile("sim", tile_config(rows=rows, cols=cols, device="soft-bounds",
                                        update_values={"engine": engine}))
    data = _batches(rows, cols, batch)

    def step(i: int) -> None:
        x, d = data[i % PREPARED]
        tile.update(x, d, LR)

    return step


def aihwkit_step(rows: int, cols: int, batch: int) -> Callable[[int], None] | None:
    """One aihwkit AnalogTile update per call, or None where aihwkit is not importable."""
    try:
        import torch
        from aihwkit.simulator.configs import SingleRPUConfig, SoftBoundsDevice
        from aihwkit.simulator.tiles import AnalogTile
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tile = AnalogTile(rows, cols, SingleRPUConfig(device=SoftBoundsDevice()), bias=False)
    tile.set_learning_rate(LR)
    data = [
        (torch.tensor(x, dtype=torch.float32), torch.tensor(d, dtype=torch.float32))
        for x, d in _batches(rows, cols, batch)
    ]

    def step(i: int) -> None:
        x, d = data[i % PREPARED]
        tile.update(x, d)

    return step


def measure(rounds: int, seconds: float) -> list[dict[str, float | int | None]]:
    results: list[dict[str, float | int | None]] = []
    for size in SIZES:
        for batch in BATCHES:
            ours = hilctl_step(size, size, batch)
            reference = hilctl_step(size, size, batch, "numpy")
            theirs = aihwkit_step(size, size, batch)
            best_ours = best_reference = best_theirs = 0.0
            for _ in range(rounds):
                best_ours = max(best_ours, calls_per_second(ours, seconds) * batch)
                best_reference = max(best_reference, calls_per_second(reference, seconds) * batch)
                if theirs is not None:
                    best_theirs = max(best_theirs, calls_per_second(theirs, seconds) * batch)
            row: dict[str, float | int | None] = {
                "size": size,
                "batch": batch,
                "hilctl_samples_per_s": round(best_ours, 1),
                "numpy_engine_samples_per_s": round(best_reference, 1),
                "aihwkit_samples_per_s": round(best_theirs, 1) if theirs else None,
                "ratio": round(best_ours / best_theirs, 2) if theirs else None,
            }
            results.append(row)
            print(_format(row), flush=True)
    return results


def _format(row: dict[str, float | int | None]) -> str:
    theirs = row["aihwkit_samples_per_s"]
    ratio = row["ratio"]
    return (
        f"{row['size']:>4}x{row['size']:<4} batch {row['batch']:>2}: "
        f"hilctl {row['hilctl_samples_per_s']:>9.0f}/s (numpy engine "
        f"{row['numpy_engine_samples_per_s']:>7.0f}/s)"
        + (f"  aihwkit {theirs:>8.0f}/s  ratio {ratio:>5.2f}x" if theirs else "  (no aihwkit)")
    )


_MEMORY_PROBE = """
import resource, numpy as np
from hilctl.backends import open_tile
from hilctl.config import tile_config
tile = open_tile("sim", tile_config(rows=4096, cols=4096, device="soft-bounds"))
rng = np.random.default_rng(0)
tile.update(rng.uniform(-1, 1, (10, 4096)), rng.uniform(-0.1, 0.1, (10, 4096)), 0.01)
tile.forward(rng.uniform(-1, 1, (10, 4096)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def memory_4096() -> dict[str, float]:
    """Peak RSS (MiB) of a whole process that builds a 4096 x 4096 tile, updates it once and
    runs a forward pass (a fresh process, so nothing else counts)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True,
                         check=True)
    return {"peak_rss_mib": round(float(out.stdout), 1)}


def main() -> None:
    args = round_arguments(__doc__.splitlines()[0], 0.4)
    updates = measure(args.rounds, args.seconds)
    memory = memory_4096()
    print(f"4096x4096 soft-bounds tile with variations, one update and one forward: peak RSS of "
          f"the process {memory['peak_rss_mib']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"update": updates, "memory_4096": memory}, fh, indent=1)


if __name__ == "__main__":
    main()
