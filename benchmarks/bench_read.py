"""Forward-read throughput of the emulator's periphery, numpy and compiled, side by side with
aihwkit 1.1.0 when it is importable.

The setting timed: the default periphery (abs-max noise management, 7-bit DAC, 9-bit ADC, output
noise 0.06, iterative bound management), float32 weights drawn as a Xavier-uniform layer,
``U(-a, a)`` with ``a = sqrt(6 / (in + out))`` (so bound management is rare, as in a trained
layer), samples ``x ~ U(-1, 1)`` fed in mini-batches. hilctl's two read paths are timed as the
tile calls them (:func:`sim.periphery.analog_mvm`, :func:`sim.read_kernel.compiled_mvm`);
aihwkit's ``AnalogTile.forward`` on the same weights and inputs (float32 tensors, no autograd).
Everything runs single-threaded. The engines are timed in alternating rounds and each keeps its
best round, so a noisy neighbour on the machine slows all alike instead of skewing the ratios.

    python benchmarks/bench_read.py [--rounds 5] [--seconds 0.3] [--json FILE]

aihwkit needs torch; run the script with a Python that has both hilctl and aihwkit 1.1.0 to get
its column, or with any hilctl install to get the emulator's figures alone.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402

import numpy as np  # noqa: E402
from timing import Step, calls_per_second, round_arguments  # noqa: E402

from hilctl.config import PeripheryConfig  # noqa: E402
from sim.periphery import analog_mvm  # noqa: E402
from sim.read_kernel import compiled_mvm  # noqa: E402

#: (outputs, inputs) of the tiles timed.
SHAPES = ((64, 64), (256, 256), (512, 512), (256, 784))
BATCHES = (1, 10, 100)
PREPARED = 32  # distinct mini-batches cycled through, as a data loader would feed them
ENGINES = ("numpy", "compiled", "aihwkit")




def _weights(rows: int, cols: int) -> np.ndarray:
    limit = np.sqrt(6 / (rows + cols))
    return np.random.default_rng(0).uniform(-limit, limit, (rows, cols)).astype(np.float32)


def _batches(cols: int, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.uniform(-1, 1, (batch, cols)) for _ in range(PREPARED)]


def hilctl_step(engine: str, rows: int, cols: int, batch: int) -> Step:
    """One forward read of the i-th prepared mini-batch per call, through ``engine``'s path."""
    mvm = compiled_mvm if engine == "compiled" else analog_mvm
    weights, data = _weights(rows, cols), _batches(cols, batch)
    cfg, rng = PeripheryConfig(), np.random.default_rng(2)

    def step(i: int) -> None:
        mvm(weights, data[i % PREPARED], cfg, rng)

    return step


def aihwkit_step(rows: int, cols: int, batch: int) -> Step | None:
    """One aihwkit AnalogTile forward per call, or None where aihwkit is not importable."""
    try:
        import torch
        from aihwkit.simulator.configs import SingleRPUConfig
        from aihwkit.simulator.tiles import AnalogTile
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tile = AnalogTile(rows, cols, SingleRPUConfig(), bias=False)
    tile.set_weights(torch.from_numpy(_weights(rows, cols)))
    data = [torch.tensor(x, dtype=torch.float32) for x in _batches(cols, batch)]

    def step(i: int) -> None:
        with torch.no_grad():
            tile.forward(data[i % PREPARED])

    return step


def measure(rounds: int, seconds: float) -> list[dict[str, float | int | None]]:
    results: list[dict[str, float | int | None]] = []
    for rows, cols in SHAPES:
        for batch in BATCHES:
            steps: dict[str, Step | None] = {
                "numpy": hilctl_step("numpy", rows, cols, batch),
                "compiled": hilctl_step("compiled", rows, cols, batch),
                "aihwkit": aihwkit_step(rows, cols, batch),
            }
            best = dict.fromkeys(ENGINES, 0.0)
            for _ in range(rounds):
                for engine, step in steps.items():
                    if step is not None:
                        best[engine] = max(best[engine], calls_per_second(step, seconds) * batch)
            row: dict[str, float | int | None] = {"outputs": rows, "inputs": cols, "batch": batch}
            for engine in ENGINES:
                row[f"{engine}_samples_per_s"] = round(best[engine], 1) if best[engine] else None
            row["compiled_over_numpy"] = round(best["compiled"] / best["numpy"], 2)
            row["compiled_over_aihwkit"] = (round(best["compiled"] / best["aihwkit"], 2)
                                            if best["aihwkit"] else None)
            results.append(row)
            print(_format(row), flush=True)
    return results


def _format(row: dict[str, float | int | None]) -> str:
    def cell(key: str) -> str:
        value = row[key]
        return f"{value:>10.0f}" if value is not None else f"{'-':>10}"

    versus = row["compiled_over_aihwkit"]
    return (f"{row['inputs']:>4} -> {row['outputs']:<4} batch {row['batch']:>3}: samples/s "
            f"numpy {cell('numpy_samples_per_s')}  compiled {cell('compiled_samples_per_s')}  "
            f"aihwkit {cell('aihwkit_samples_per_s')}  compiled/numpy "
            f"{row['compiled_over_numpy']:>5.1f}x"
            + (f"  compiled/aihwkit {versus:>5.2f}x" if versus is not None else ""))


def main() -> None:
    args = round_arguments(__doc__.splitlines()[0], 0.3)
    reads = measure(args.rounds, args.seconds)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"forward": reads}, fh, indent=1)


if __name__ == "__main__":
    main()
