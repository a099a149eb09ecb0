"""Training steps on the simulated bench with the board's analog MVM against cell reads.

A 32 x 32 Tiki-Taka weight array (fast tile A on chip rows 0..31, slow tile C on rows 32..63 of
a 64 x 32 emulated chip) learns streaming least squares through the whole lab path: lab tiles,
bench, board client over pyserial, the simulated board on a pseudo-terminal. One training step
is what the least-squares task does per sample, less its metric: ``forward`` (C's outputs),
``update`` on A (pulse trains as row/column mask pulses) and, every ``transfer_every`` steps,
Tiki-Taka's transfer (a one-hot forward of A, a pulsed write on C). Four boards:

- ``mvm, train``: the board offers an analog MVM and pulse trains; each forward is one MVM
  frame, each update's mask pulses one PULSE_TRAIN frame.
- ``mvm, per slot``: an analog MVM but no pulse trains: each update sends one mask PULSE frame
  per slot and sign quadrant.
- ``array reads``: no MVM (pulse trains offered); the lab tile reads the cells a write touched,
  the whole array in one READ when many are stale (``parallel_read``).
- ``cell reads``: no MVM and no parallel read (pulse trains offered); the stale cells are read
  one READ each.

A second figure isolates the forward pass of one 32 x 32 tile when every cell is to be read
(as after a resume, ``load_state_dict``, or an update that touched every cell): one MVM frame,
one READ of the whole array, or 1,024 single-cell READs.

Reported per board: training steps per second (wall clock, after three warm-up steps; the
boards are timed in alternating rounds and each keeps its best, so a busy machine slows all
alike) and instrument round trips per step (requests the board client sent, each one frame and
its reply), with the requests split by command.

    python benchmarks/bench_lab_mvm.py [--rounds 3] [--steps 40] [--cell-steps 10] [--passes 20]
                                       [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from drivers.backend import LabBackend
from hilctl.config import TileConfig, device_config, no_variation
from hilctl.train_config import resolve_train_config
from hilctl.training import weight_factory
from protocols import board as pb
from protocols.station import StationConfig
from sim.instruments.board import ALL_CAPABILITIES, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip

N = 32
DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}
BOARDS = {
    "mvm, train": ALL_CAPABILITIES,
    "mvm, per slot": ALL_CAPABILITIES & ~pb.Capability.PULSE_TRAIN,
    "array reads": ALL_CAPABILITIES & ~pb.Capability.ANALOG_MVM,
    "cell reads": ALL_CAPABILITIES & ~pb.Capability.ANALOG_MVM & ~pb.Capability.PARALLEL_READ,
}


@contextmanager
def bench(capabilities: pb.Capability) -> Iterator[tuple[SimulatedBoard, LabBackend, StationConfig]]:
    """A simulated board with ``capabilities`` on a 64 x 32 chip, a lab backend and the station
    (two 32 x 32 tile regions)."""
    chip = EmulatedChip(ChipConfig(rows=2 * N, cols=N, read_noise=1e-9,
                                   device=device_config("soft-bounds", **DEVICE)))
    with SimulatedBoard(chip, capabilities=capabilities) as board, LabBackend() as lab:
        station = StationConfig.model_validate({
            # 921600 baud: a link that carries the 8-kB array reply within the timeout (the
            # host reads row by row where the link would not)
            "board": {"port": board.port, "timeout": 1.0, "baudrate": 921_600},
            "chip": {"rows": 2 * N, "cols": N},
            "tiles": [{"name": "fast", "rows": N, "cols": N},
                      {"name": "slow", "row": N, "rows": N, "cols": N}],
            "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale, "dw_min": 0.01}})
        yield board, lab, station


def measure(capabilities: pb.Capability, steps: int) -> dict[str, Any]:
    """Steps per second and board requests per step of ``steps`` Tiki-Taka steps."""
    config = resolve_train_config(algorithm="tiki-taka", overrides={
        "task": {"out": N, "in": N, "lr": 0.05}, "device": DEVICE,
        "periphery": {"is_perfect": True}, "algorithm": {"fast_lr": 0.2}})
    rng = np.random.default_rng(0)
    w_star = np.clip(rng.normal(0, 0.3, (N, N)), -0.9, 0.9)
    with bench(capabilities) as (board, lab, station):
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


def forward_cost(capabilities: pb.Capability, passes: int) -> dict[str, Any]:
    """Forward passes per second and board requests per pass of one tile whose every cell is to
    be read (its state reloaded before each pass)."""
    rng = np.random.default_rng(1)
    with bench(capabilities) as (_board, lab, station):
        tile = lab.open_tile(TileConfig(rows=N, cols=N), station=station)
        client, state = lab.bench(station).board, tile.state_dict()
        requests, elapsed = client.stats.requests, 0.0
        for _ in range(passes):
            tile.load_state_dict(state)  # every cell unknown again
            x = rng.standard_normal((1, N))
            start = time.perf_counter()
            tile.forward(x)
            elapsed += time.perf_counter() - start
        return {"passes": passes, "passes_per_second": passes / elapsed,
                "round_trips_per_pass": (client.stats.requests - requests) / passes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per board")
    parser.add_argument("--steps", type=int, default=40, help="timed steps with MVM and array reads")
    parser.add_argument("--cell-steps", type=int, default=10, help="timed steps with cell reads")
    parser.add_argument("--passes", type=int, default=20, help="forward passes per board (cell "
                        "reads: a fifth of them)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for name, capabilities in BOARDS.items():
            r = measure(capabilities, args.cell_steps if name == "cell reads" else args.steps)
            if name not in results or r["steps_per_second"] > results[name]["steps_per_second"]:
                results[name] = r
    for name, capabilities in BOARDS.items():
        passes = max(1, args.passes // 5) if name == "cell reads" else args.passes
        results[name]["forward"] = forward_cost(capabilities, passes)
    for name, r in results.items():
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["requests_per_step"].items())
        f = r["forward"]
        print(f"{name:13s} training: {r['steps_per_second']:6.2f} steps/s, "
              f"{r['round_trips_per_step']:6.1f} round trips/step ({split}); forward with every "
              f"cell to read: {f['passes_per_second']:8.2f} passes/s, "
              f"{f['round_trips_per_pass']:6.1f} round trips/pass", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
