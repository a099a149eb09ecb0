"""Checkpoint size and time: the MNIST FCN (784-256-128-10, Tiki-Taka: two emulated tiles per
layer, aihwkit's default device with tau 0.6) and one 4096 x 4096 emulated tile.

For each: the checkpoint's bytes, the time to gather the state (a first gather of an emulated
tile also hashes its device draws once), and the time to write it (npz streamed to disk,
fsync, rename), best of ``--repeat`` rounds, into a temporary folder on
the disk the run store would use. The slowdown at the default interval (60 s) is the write
time divided by 60 s; measure it end to end with ``farm-bench`` on two ``hilctl train`` runs.

    python benchmarks/bench_checkpoint.py [--repeat 5] [--dir /path/on/the/store/disk]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hilctl.checkpoints import save
from hilctl.config import tile_config
from hilctl.train_config import resolve_train_config
from hilctl.training import Session, weight_factory
from sim.backend import SimBackend


def mnist_fcn_state() -> Callable[[], dict]:
    config = resolve_train_config(task="mnist-fcn", algorithm="tiki-taka",
                                  overrides={"device": {"tau": 0.6}})
    session = Session()
    make = weight_factory(config, SimBackend(), {}, session)
    layers = [make(n_out, n_in) for n_in, n_out in itertools.pairwise([784, 256, 128, 10])]

    def state() -> dict:
        weights = {f"layer{i}": layer.read_weights().astype(np.float32)
                   for i, layer in enumerate(layers)}
        return session.state({"weights": weights})

    return state


def big_tile_state() -> Callable[[], dict]:
    tile = SimBackend().open_tile(tile_config(rows=4096, cols=4096, device="soft-bounds"))
    return lambda: {"tiles": [tile.state_dict()],
                    "task": {"weights": {"W": tile.read_weights().astype(np.float32)}}}


def measure(name: str, make_state: Callable[[], Callable[[], dict]], folder: Path,
            repeat: int) -> None:
    state = make_state()
    gather_s, write_s, size = [], [], 0
    for k in range(repeat):
        began = time.perf_counter()
        tree = state()
        gathered = time.perf_counter()
        size = save(folder / f"{name}-{k}.npz", tree)
        written = time.perf_counter()
        (folder / f"{name}-{k}.npz").unlink()
        gather_s.append(gathered - began)
        write_s.append(written - gathered)
    total = min(g + w for g, w in zip(gather_s, write_s, strict=True))
    print(f"{name:<16} {size / 1e6:8.1f} MB   gather {min(gather_s):6.3f} s   write (npz, fsync, "
          f"rename) {min(write_s):6.3f} s   total {total:6.3f} s   = {100 * total / 60:.2f}% "
          "of a 60 s interval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        measure("mnist-fcn (tt)", mnist_fcn_state, Path(folder), args.repeat)
        measure("tile 4096x4096", big_tile_state, Path(folder), max(1, args.repeat // 2))


if __name__ == "__main__":
    main()
