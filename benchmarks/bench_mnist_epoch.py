"""Seconds per MNIST FCN epoch: the emulator against aihwkit 1.1.0, side by side.

The setting timed: a 784-256-128-10 sigmoid network, every layer analog with aihwkit's default
soft-bounds device (bounds +-0.6, the paper's tau 0.6) with its default variations and
periphery, lr 0.05, mini-batches of 10, one epoch over the 4,000 training images of the shipped
MNIST sample; Analog SGD, and Tiki-Taka (aihwkit's ``TransferCompound`` of two such devices,
fast_lr 0.1, one column per mini-batch, gamma 0, as ``hilctl train --task mnist-fcn
--algorithm tiki-taka``). Both run single-threaded; epochs alternate between the two and each
keeps its best, so machine noise hits both alike. Test accuracy after the epochs is printed as
a smoke check only: in this setting both simulators stay near chance for the first ~10 epochs,
so the accuracy comparison needs a longer run (20 epochs, several seeds).

    python benchmarks/bench_mnist_epoch.py [--epochs 3] [--algorithm analog-sgd] [--json FILE]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from hilctl.datasets import load_mnist  # noqa: E402
from hilctl.nn import Dense, Network, softmax_cross_entropy  # noqa: E402
from hilctl.train_config import resolve_train_config  # noqa: E402
from hilctl.training import weight_factory  # noqa: E402

LR, BATCH, SIZES = 0.05, 10, (784, 256, 128, 10)


ALGORITHMS = ("analog-sgd", "tiki-taka")


def hilctl_model(algorithm: str) -> tuple[Callable[[], None], Callable[[], float]]:
    """One training epoch and a test-accuracy function for the emulator."""
    data = load_mnist()
    config = resolve_train_config(task="mnist-fcn", algorithm=algorithm)
    make_weights = weight_factory(config, "sim")
    layers = [Dense(make_weights(n_out, n_in + 1))
              for n_in, n_out in itertools.pairwise(SIZES)]
    init = np.random.default_rng(0)
    for layer in layers:
        layer.initialize(init)
    net = Network(layers, "sigmoid")
    shuffle = np.random.default_rng(1)
    train_x = data.train_x.astype(np.float64)

    def epoch() -> None:
        order = shuffle.permutation(data.train_y.size)
        for start in range(0, order.size, BATCH):
            index = order[start:start + BATCH]
            _, grad = softmax_cross_entropy(net.forward(train_x[index]), data.train_y[index])
            net.backward(grad)
            net.update(LR)

    def accuracy() -> float:
        logits = net.forward(data.test_x.astype(np.float64))
        return float(np.mean(np.argmax(logits, axis=1) == data.test_y))

    return epoch, accuracy


def aihwkit_model(algorithm: str) -> tuple[Callable[[], None], Callable[[], float]] | None:
    """The same network in aihwkit 1.1.0, or None where it is not importable."""
    try:
        import torch
        from aihwkit.nn import AnalogLinear, AnalogSequential
        from aihwkit.optim import AnalogSGD
        from aihwkit.simulator.configs import (
            SingleRPUConfig,
            SoftBoundsDevice,
            TransferCompound,
            UnitCellRPUConfig,
        )
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_mnist()
    if algorithm == "tiki-taka":
        config = UnitCellRPUConfig(device=TransferCompound(
            unit_cell_devices=[SoftBoundsDevice(), SoftBoundsDevice()], gamma=0.0,
            transfer_every=1, units_in_mbatch=True, n_reads_per_transfer=1, fast_lr=0.1,
            transfer_lr=1.0))
    else:
        config = SingleRPUConfig(device=SoftBoundsDevice())
    model = AnalogSequential(
        AnalogLinear(784, 256, bias=True, rpu_config=config), torch.nn.Sigmoid(),
        AnalogLinear(256, 128, bias=True, rpu_config=config), torch.nn.Sigmoid(),
        AnalogLinear(128, 10, bias=True, rpu_config=config),
    )
    optimizer = AnalogSGD(model.parameters(), lr=LR)
    optimizer.regroup_param_groups(model)
    loss_fn = torch.nn.CrossEntropyLoss()
    train_x = torch.tensor(data.train_x, dtype=torch.float32)
    train_y = torch.tensor(data.train_y)
    test_x = torch.tensor(data.test_x, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)

    def epoch() -> None:
        model.train()
        order = torch.randperm(train_y.numel(), generator=generator)
        for start in range(0, order.numel(), BATCH):
            index = order[start:start + BATCH]
            optimizer.zero_grad()
            loss_fn(model(train_x[index]), train_y[index]).backward()
            optimizer.step()

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            predicted = model(test_x).argmax(dim=1).numpy()
        return float(np.mean(predicted == data.test_y))

    return epoch, accuracy


def timed(epoch: Callable[[], None]) -> float:
    start = time.perf_counter()
    epoch()
    return time.perf_counter() - start


def compare(algorithm: str, epochs: int) -> dict[str, object]:
    """Best epoch time of each simulator over ``epochs`` alternating epochs, and the ratio."""
    ours = hilctl_model(algorithm)
    theirs = aihwkit_model(algorithm)
    best_ours = best_theirs = float("inf")
    for _ in range(epochs):
        best_ours = min(best_ours, timed(ours[0]))
        if theirs is not None:
            best_theirs = min(best_theirs, timed(theirs[0]))
    result: dict[str, object] = {"algorithm": algorithm, "epochs": epochs,
                                 "hilctl_seconds_per_epoch": round(best_ours, 3),
                                 "hilctl_test_acc": ours[1]()}
    print(f"{algorithm}: hilctl {best_ours:.3f} s per epoch (best of {epochs}), "
          f"test accuracy {result['hilctl_test_acc']:.3f}")
    if theirs is not None:
        result.update(aihwkit_seconds_per_epoch=round(best_theirs, 3),
                      aihwkit_test_acc=theirs[1](), ratio=round(best_ours / best_theirs, 3))
        print(f"{algorithm}: aihwkit {best_theirs:.3f} s per epoch (best of {epochs}), "
              f"test accuracy {result['aihwkit_test_acc']:.3f}")
        print(f"{algorithm}: hilctl takes {result['ratio']:.2f} of aihwkit's time per epoch")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs each (default: 3)")
    parser.add_argument("--algorithm", choices=ALGORITHMS, action="append",
                        help="time this algorithm (repeatable; default: both)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = [compare(algorithm, args.epochs) for algorithm in args.algorithm or ALGORITHMS]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
