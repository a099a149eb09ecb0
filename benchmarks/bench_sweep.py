"""The Dask overhead of ``hilctl sweep`` per point.

N least-squares trainings of about two seconds each (Analog SGD on the emulator, ``--steps``
samples), warm (the kernels compiled and cached beforehand):

1. **Whole sweep.** One after the other in this process, each recorded in a run store (what N
   ``hilctl train`` runs do, less N interpreter starts), against the same N points through the
   sweep's runner on a local cluster of one worker process: its start, the worker's first
   imports, each point sent out and its record sent back, the client writing the store.
2. **Steady state.** N more points on a cluster already running and warm, against N more in this
   process: wall time per point, the worker's CPU time per point, and the CPU time the client
   process (with the local cluster's scheduler and nanny in it) spends per point.

On a shared machine wall and CPU times move by about 10% from one minute to the next; run it
twice.

    python benchmarks/bench_sweep.py [--points 10] [--steps 60000]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from hilctl.cluster import Cluster
from hilctl.runs import RunStore
from hilctl.sweep.runner import run_sweep, train_point
from hilctl.sweep.spec import Sweep, load_sweep
from hilctl.training import train


def cpu_seconds() -> float:
    """CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_process(sweep: Sweep, store: RunStore) -> float:
    """Wall seconds of the sweep's points trained one after the other here."""
    started = time.perf_counter()
    for point in sweep.points:
        train(point.config, store=store, command="sweep")
    return time.perf_counter() - started


def whole_sweep(sweep: Sweep, store: RunStore) -> float:
    """Wall seconds of the sweep through its runner on a local cluster of one worker, from
    before the cluster starts to after it has closed."""
    started = time.perf_counter()
    run_sweep(sweep, store, lambda _: Cluster(workers=1), lambda _: None, lambda *_: None)
    return time.perf_counter() - started


def steady(sweep: Sweep) -> tuple[float, float, float]:
    """Wall, worker CPU and client CPU seconds per point on a warm cluster of one worker."""
    from distributed import default_client

    configs = [point.config.model_dump(mode="json", by_alias=True) for point in sweep.points]
    with Cluster(workers=1) as cluster:
        cluster.map(train_point, configs[:1], ["warm-up"], lambda _: None)
        client = default_client()
        [worker_before] = client.run(cpu_seconds).values()
        wall, own = time.perf_counter(), cpu_seconds()
        cluster.map(train_point, configs, ["point"] * len(configs), lambda _: None)
        wall, own = time.perf_counter() - wall, cpu_seconds() - own
        [worker_after] = client.run(cpu_seconds).values()
    n = len(configs)
    return wall / n, (worker_after - worker_before) / n, own / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60_000, help="samples per training")
    args = parser.parse_args()
    load = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    path = folder / "sweep.toml"
    path.write_text(f'[task]\nname = "least-squares"\nsteps = {args.steps}\n'
                    f"[sweep]\nseeds = {list(range(args.points))}\n")
    sweep, n = load_sweep(path), args.points
    train(sweep.points[0].config)  # compile or load the kernels here first

    alone = in_process(sweep, RunStore(folder / "in-process" / "runs.sqlite"))
    swept = whole_sweep(sweep, RunStore(folder / "swept" / "runs.sqlite"))
    alone_again = in_process(sweep, RunStore(folder / "in-process-2" / "runs.sqlite")) / n
    wall, worker_cpu, client_cpu = steady(sweep)

    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after: "
          f"{os.getloadavg()[0]:.2f}; {n} points of {args.steps} steps; {os.cpu_count()} cores")
    print(f"whole sweep: in this process {alone:.2f} s ({alone / n:.3f} s per point); on 1 "
          f"worker {swept:.2f} s: {(swept - alone) / n:+.3f} s per point "
          f"({(swept - alone) / alone:+.1%}), the cluster's start included")
    print(f"steady state, per point: in this process {alone_again:.3f} s; on the cluster "
          f"{wall:.3f} s ({(wall - alone_again) / alone_again:+.1%}), the worker's CPU "
          f"{worker_cpu:.3f} s, the client's CPU {client_cpu:.3f} s "
          f"({client_cpu / alone_again:.1%} of a training)")


if __name__ == "__main__":
    main()
