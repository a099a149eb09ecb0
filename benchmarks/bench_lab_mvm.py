"""Training steps on the simulated bench with the board's analog MVM against cell reads.

A 32 x 32 Tiki-Taka weight array (fast tile A on chip rows 0..31, slow tile C on rows 32..63 of
a 64 x 32 emulated chip) learns streaming least squares through the whole lab path: lab tiles,
bench, board client over pyserial, the simulated board on a pseudo-terminal. One training step
is what the least-squares task does per sample, less its metric: ``forward`` (C's outputs),
``update`` on A (pulse trains as row/column mask pulses) and, every ``transfer_every`` steps,
Tiki-Taka's transfer (a one-hot forward of A, a pulsed write on C). Three boards:

- ``mvm``: the board offers an analog MVM; each forward is one MVM frame.
- ``array reads``: no MVM; the lab tile reads the cells a write touched, the whole array in
  one READ when many are stale (``parallel_read``).
- ``cell reads``: no MVM and no parallel read; the stale cells are read one READ each.

Reported per board: training steps per second (wall clock, after three warm-up steps; the
boards are timed in alternating rounds and each keeps its best, so a busy machine slows all
alike) and instrument round trips per step (requests the board client sent, each one frame and
its reply), with the requests split by command.

    python benchmarks/bench_lab_mvm.py [--rounds 3] [--steps 40] [--cell-steps 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from typing import Any

import numpy as np

from drivers.backend import LabBackend
from hilctl.config import device_config, no_variation
from hilctl.train_config import resolve_train_config
from hilctl.training import weight_factory
from protocols import board as pb
from protocols.station import StationConfig
from sim.instruments.board import ALL_CAPABILITIES, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip

N = 32
DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}
BOARDS = {
    "mvm": ALL_CAPABILITIES,
    "array reads": ALL_CAPABILITIES & ~pb.Capability.ANALOG_MVM,
    "cell reads": ALL_CAPABILITIES & ~pb.Capability.ANALOG_MVM & ~pb.Capability.PARALLEL_READ,
}


def measure(capabilities: pb.Capability, steps: int) -> dict[str, Any]:
    """Steps per second and board requests per step of ``steps`` Tiki-Taka steps."""
    chip = EmulatedChip(ChipConfig(rows=2 * N, cols=N, read_noise=1e-9,
                                   device=device_config("soft-bounds", **DEVICE)))
    config = resolve_train_config(algorithm="tiki-taka", overrides={
        "task": {"out": N, "in": N, "lr": 0.05}, "device": DEVICE,
        "periphery": {"is_perfect": True}, "algorithm": {"fast_lr": 0.2}})
    rng = np.random.default_rng(0)
    w_star = np.clip(rng.normal(0, 0.3, (N, N)), -0.9, 0.9)
    with SimulatedBoard(chip, capabilities=capabilities) as board, LabBackend() as lab:
        station = StationConfig.model_validate({
            "board": {"port": board.port, "timeout": 1.0},
            "chip": {"rows": 2 * N, "cols": N},
            "tiles": [{"name": "fast", "rows": N, "cols": N},
                      {"name": "slow", "row": N, "rows": N, "cols": N}],
            "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale, "dw_min": 0.01}})
        weights = weight_factory(config, lab, {"station": station})(N, N)
        client = lab.bench(station).board

        def step() -> None:
            x = rng.standard_normal((1, N))
            error = weights.forward(x) - x @ w_star.T
            weights.update(x, error, 0.05)

        for _ in range(3):
            step()
        requests, seen = client.stats.requests, len(board.requests)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - start
        kinds = collections.Counter(type(m).__name__ for m in board.requests[seen:])
        return {"steps": steps, "seconds": elapsed, "steps_per_second": steps / elapsed,
                "round_trips_per_step": (client.stats.requests - requests) / steps,
                "requests_per_step": {k: v / steps for k, v in sorted(kinds.items())},
                "mvm_used": lab.bench(station).access.parallel_mvm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per board")
    parser.add_argument("--steps", type=int, default=40, help="timed steps with MVM and array reads")
    parser.add_argument("--cell-steps", type=int, default=10, help="timed steps with cell reads")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for name, capabilities in BOARDS.items():
            r = measure(capabilities, args.cell_steps if name == "cell reads" else args.steps)
            if name not in results or r["steps_per_second"] > results[name]["steps_per_second"]:
                results[name] = r
    for name, r in results.items():
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["requests_per_step"].items())
        print(f"{name:12s} {r['steps_per_second']:8.2f} steps/s  {r['round_trips_per_step']:8.1f} "
              f"round trips/step  ({split})", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
