"""The training tasks: streaming least squares, the MNIST fully connected network and the MNIST
LeNet-like CNN.

A task builds its model from weight arrays (``make_weights(rows, cols)``, which hides the
algorithm and the backend), trains it, reports metrics as it goes and returns the final figures
and the history. Each task draws its data from its own random stream of the run's seed, so the
same seed gives every algorithm the same problem and the same samples.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hilctl.algorithms import WeightArray
from hilctl.datasets import load_mnist
from hilctl.nn import (
    Activation,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    Sequential,
    conv_output_size,
    softmax_cross_entropy,
)
from hilctl.train_config import LeastSquaresConfig, MnistCnnConfig, MnistFcnConfig

WeightFactory = Callable[[int, int], WeightArray]

#: Random streams of a run, each ``default_rng([seed, stream])``.
_PROBLEM, _SAMPLES, _INIT, _SHUFFLE = 1, 2, 3, 4


class Reporter(Protocol):
    """Where a task sends its progress and metrics."""

    def progress(self, done: int, total: int) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...


@dataclass
class TaskResult:
    """The final figures, the recorded history (one list per metric, plus ``step``) and the
    final weights of each layer (read back from the tiles)."""

    final: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self, step: int, values: dict[str, float]) -> None:
        self.history.setdefault("step", []).append(step)
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)


def least_squares(cfg: LeastSquaresConfig, seed: int, bound: float, make_weights: WeightFactory,
                  report: Reporter) -> TaskResult:
    """Train ``W`` on ``y = W* x + eps`` one sample per step from ``W = 0``.

    ``bound`` is the device's ``tau``; ``W*`` is clipped to ``+-0.9 tau`` so it is reachable.
    """
    problem = np.random.default_rng([seed, _PROBLEM])
    w_star = problem.normal(0, cfg.w_star_std, (cfg.out, cfg.in_))
    if np.isfinite(bound):
        w_star = np.clip(w_star, -0.9 * bound, 0.9 * bound)
    star_norm = float(np.sum(w_star**2))
    weights = make_weights(cfg.out, cfg.in_)
    weights.program_weights(np.zeros((cfg.out, cfg.in_)))
    samples = np.random.default_rng([seed, _SAMPLES])
    result = TaskResult(final={})
    window_losses, window_errors, tail = [], [], []
    for step in range(1, cfg.steps + 1):
        x = samples.standard_normal((1, cfg.in_))
        y = x @ w_star.T + cfg.sigma * samples.standard_normal((1, cfg.out))
        error = weights.forward(x) - y
        weights.update(x, error, cfg.lr)
        rel_err = float(np.sum((weights.read_weights() - w_star) ** 2)) / star_norm
        window_losses.append(0.5 * float(np.sum(error**2)))
        window_errors.append(rel_err)
        if step > cfg.steps - cfg.eval_window:
            tail.append(rel_err)
        if step % cfg.log_every == 0 or step == cfg.steps:
            values = {"loss": float(np.mean(window_losses)), "rel_err": float(np.mean(window_errors))}
            result.record(step, values)
            report.metrics(step, values)
            window_losses, window_errors = [], []
        report.progress(step, cfg.steps)
    result.final = {"rel_err": float(np.mean(tail)), "loss": result.history["loss"][-1]}
    result.weights = {"W": weights.read_weights(), "W_star": w_star}
    return result


def _accuracy(net: Network | Sequential, images: np.ndarray, labels: np.ndarray, chunk: int = 500,
              shape: tuple[int, ...] = ()) -> float:
    """Test accuracy in chunks; ``shape`` reshapes each flat image (e.g. to (1, 28, 28))."""
    correct = 0
    for start in range(0, labels.size, chunk):
        batch = images[start:start + chunk].astype(np.float64)
        logits = net.forward(batch.reshape(batch.shape[0], *shape) if shape else batch)
        correct += int(np.sum(np.argmax(logits, axis=1) == labels[start:start + chunk]))
    return correct / labels.size


def mnist_fcn(cfg: MnistFcnConfig, seed: int, make_weights: WeightFactory,
              report: Reporter, digital_bias: bool = False) -> TaskResult:
    """Train a sigmoid network ``784-hidden...-10`` with softmax cross-entropy, SGD in batches;
    each bias the last column of its layer's weights, or in floating point (``digital_bias``)."""
    sizes = [784, *cfg.hidden, 10]
    ones = int(not digital_bias)
    layers = [Dense(make_weights(n_out, n_in + ones), digital_bias=digital_bias)
              for n_in, n_out in itertools.pairwise(sizes)]
    init = np.random.default_rng([seed, _INIT])
    for layer in layers:
        layer.initialize(init)
    result = _train_classifier(Network(layers, "sigmoid"), cfg, seed, report)
    result.weights = {f"layer{i}": layer.weights.read_weights() for i, layer in enumerate(layers)}
    return result


def _train_classifier(net: Network | Sequential, cfg: MnistFcnConfig | MnistCnnConfig, seed: int,
                      report: Reporter, shape: tuple[int, ...] = ()) -> TaskResult:
    """SGD in mini-batches of ``cfg.batch`` on MNIST with softmax cross-entropy and the StepLR
    schedule; loss, test accuracy, seconds and lr per epoch. ``shape`` reshapes each flat image
    for the network (e.g. to (1, 28, 28))."""
    data = load_mnist(cfg.data_dir)
    train_x, train_y = data.train_x, data.train_y
    if cfg.limit_train is not None:
        train_x, train_y = train_x[:cfg.limit_train], train_y[:cfg.limit_train]
    shuffle = np.random.default_rng([seed, _SHUFFLE])
    batches = -(-train_y.size // cfg.batch)
    result = TaskResult(final={})
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        lr = cfg.lr
        if cfg.lr_step_epochs:
            lr *= cfg.lr_step_gamma ** ((epoch - 1) // cfg.lr_step_epochs)
        order = shuffle.permutation(train_y.size)
        losses = []
        for b in range(batches):
            index = order[b * cfg.batch:(b + 1) * cfg.batch]
            images = train_x[index].astype(np.float64)
            if shape:
                images = images.reshape(index.size, *shape)
            loss, grad = softmax_cross_entropy(net.forward(images), train_y[index])
            net.backward(grad)
            net.update(lr)
            losses.append(loss)
            report.progress((epoch - 1) * batches + b + 1, cfg.epochs * batches)
        train_seconds = time.perf_counter() - started
        values = {"loss": float(np.mean(losses)),
                  "test_acc": _accuracy(net, data.test_x, data.test_y, chunk=250, shape=shape),
                  "epoch_seconds": train_seconds, "lr": lr}
        result.record(epoch, values)
        report.metrics(epoch, values)
    result.final = {"test_acc": result.history["test_acc"][-1], "loss": result.history["loss"][-1]}
    return result


#: MNIST images as the CNN sees them: one channel of 28 x 28.
_IMAGE_SHAPE = (1, 28, 28)


def lenet(cfg: MnistCnnConfig, make_weights: WeightFactory,
          digital_bias: bool = False) -> Sequential:
    """``conv k c1 -> tanh -> pool 2 -> conv k c2 -> tanh -> pool 2 -> FC hidden -> tanh -> FC 10``
    on (batch, 1, 28, 28) images, each layer's weights from ``make_weights``, each bias a last
    column of them or in floating point (``digital_bias``)."""
    (c1, c2), k = cfg.channels, cfg.kernel_size
    side = _IMAGE_SHAPE[1]
    for _ in range(2):
        side = conv_output_size(conv_output_size(side, k), 2, 2)
    flat = c2 * side * side
    ones = int(not digital_bias)
    return Sequential([
        Conv2d(make_weights(c1, _IMAGE_SHAPE[0] * k * k + ones), _IMAGE_SHAPE[0], c1, k,
               digital_bias=digital_bias),
        Activation("tanh"),
        MaxPool2d(2),
        Conv2d(make_weights(c2, c1 * k * k + ones), c1, c2, k, digital_bias=digital_bias),
        Activation("tanh"),
        MaxPool2d(2),
        Flatten(),
        Dense(make_weights(cfg.hidden, flat + ones), digital_bias=digital_bias),
        Activation("tanh"),
        Dense(make_weights(10, cfg.hidden + ones), digital_bias=digital_bias),
    ])


def mnist_cnn(cfg: MnistCnnConfig, seed: int, make_weights: WeightFactory,
              report: Reporter, digital_bias: bool = False) -> TaskResult:
    """Train the LeNet-like CNN of :func:`lenet` with softmax cross-entropy, SGD in batches.

    The same epochs, StepLR schedule, metrics and random streams as :func:`mnist_fcn`.
    """
    net = lenet(cfg, make_weights, digital_bias)
    net.initialize(np.random.default_rng([seed, _INIT]))
    result = _train_classifier(net, cfg, seed, report, shape=_IMAGE_SHAPE)
    names = ("conv1", "conv2", "fc1", "fc2")
    result.weights = {name: layer.weights.read_weights()
                      for name, layer in zip(names, net.trainable, strict=True)}
    return result
