"""MNIST classifiers: the fully connected network and the LeNet-like CNN of the paper's Fig. 5,
trained with softmax cross-entropy in mini-batches with a StepLR schedule."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from hilctl.checkpoints import rng_state, set_rng_state
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
from hilctl.tasks.base import (
    INIT,
    SHUFFLE,
    Reporter,
    TaskResult,
    TaskRun,
    TaskSettings,
    WeightFactory,
    require_finite,
)


class ClassifierSettings(TaskSettings):
    """What the MNIST classifiers share: epochs, learning rate and its StepLR schedule, data."""

    epochs: int = Field(10, ge=1, le=100_000)
    lr: float = Field(0.05, gt=0, le=1e6)
    lr_step_epochs: int | None = Field(None, ge=1, le=100_000, description="StepLR: decay lr every N epochs")
    lr_step_gamma: float = Field(0.1, gt=0, le=1e3, description="StepLR decay factor")
    data_dir: str | None = Field(None, description="folder with the MNIST IDX files")
    limit_train: int | None = Field(None, ge=1, le=10**9, description="use only the first N training images")

    batch: int
    final_metric: ClassVar[str] = "test_acc"
    higher_is_better: ClassVar[bool] = True
    metric_meanings: ClassVar[Mapping[str, str]] = {
        "test_acc": "share of the test images classified right"}

    def length(self) -> str:
        return f"{self.epochs} epochs"


class MnistFcnConfig(ClassifierSettings):
    """A 784-256-128-10 sigmoid network on MNIST, softmax cross-entropy, every layer analog."""

    name: Literal["mnist-fcn"] = "mnist-fcn"
    batch: int = Field(10, ge=1, le=100_000)
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [256, 128], min_length=1, max_length=8,
        description="widths of the hidden layers")

    def run(self, make_weights: WeightFactory, report: Reporter, run: TaskRun) -> TaskResult:
        return mnist_fcn(self, run.seed, make_weights, report, run.digital_bias, run.resume)


class MnistCnnConfig(ClassifierSettings):
    """A LeNet-like CNN on MNIST (the paper's Fig. 5), softmax cross-entropy, every layer analog.

    ``conv5x5 channels[0] -> tanh -> maxpool 2 -> conv5x5 channels[1] -> tanh -> maxpool 2 ->
    FC hidden -> tanh -> FC 10``; each convolution runs on one tile through im2col. The paper
    trains 80 epochs at batch 8 and lr 0.05 (its digital baseline at 0.1) with StepLR(35, 0.1).
    """

    name: Literal["mnist-cnn"] = "mnist-cnn"
    batch: int = Field(8, ge=1, le=100_000)
    channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [16, 32], min_length=2, max_length=2,
        description="output channels of the two convolutions")
    kernel_size: int = Field(5, ge=1, le=9, description="side of the square kernels (28x28 input)")
    hidden: int = Field(128, ge=1, le=4096, description="width of the fully connected hidden layer")

    def run(self, make_weights: WeightFactory, report: Reporter, run: TaskRun) -> TaskResult:
        return mnist_cnn(self, run.seed, make_weights, report, run.digital_bias, run.resume)


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
              report: Reporter, digital_bias: bool = False,
              resume: Mapping[str, Any] | None = None) -> TaskResult:
    """Train a sigmoid network ``784-hidden...-10`` with softmax cross-entropy, SGD in batches;
    each bias the last column of its layer's weights, or in floating point (``digital_bias``).
    ``resume``: the checkpointed loop state to continue from (weights restored already)."""
    sizes = [784, *cfg.hidden, 10]
    ones = int(not digital_bias)
    layers = [Dense(make_weights(n_out, n_in + ones), digital_bias=digital_bias)
              for n_in, n_out in itertools.pairwise(sizes)]
    net = Network(layers, "sigmoid")
    if resume is None:
        init = np.random.default_rng([seed, INIT])
        for layer in layers:
            layer.initialize(init)

    def weights() -> dict[str, np.ndarray]:
        return {f"layer{i}": layer.weights.read_weights() for i, layer in enumerate(layers)}

    result = _train_classifier(net, cfg, seed, report, weights, resume=resume)
    result.weights = weights()
    return result


def _train_classifier(net: Network | Sequential, cfg: ClassifierSettings, seed: int,
                      report: Reporter, weights: Callable[[], dict[str, np.ndarray]],
                      shape: tuple[int, ...] = (),
                      resume: Mapping[str, Any] | None = None) -> TaskResult:
    """SGD in mini-batches of ``cfg.batch`` on MNIST with softmax cross-entropy and the StepLR
    schedule; loss, test accuracy, seconds and lr per epoch. ``shape`` reshapes each flat image
    for the network (e.g. to (1, 28, 28)); ``weights()`` gives each layer's weights for a
    checkpoint; ``resume`` continues from a checkpointed loop state."""
    data = load_mnist(cfg.data_dir)
    train_x, train_y = data.train_x, data.train_y
    if cfg.limit_train is not None:
        train_x, train_y = train_x[:cfg.limit_train], train_y[:cfg.limit_train]
    shuffle = np.random.default_rng([seed, SHUFFLE])
    batches = -(-train_y.size // cfg.batch)
    result = TaskResult(final={})
    first_epoch, next_batch = 1, 0
    order: np.ndarray | None = None
    losses: list[float] = []
    seconds_before = 0.0  # training seconds of the current epoch before a resume
    if resume is not None:
        first_epoch, next_batch = int(resume["epoch"]), int(resume["next_batch"])
        set_rng_state(shuffle, resume["shuffle"])
        order = None if resume["order"] is None else np.asarray(resume["order"])
        losses, seconds_before = list(resume["losses"]), float(resume["seconds"])
        result.history = dict(resume["history"])
        net.load_state_dict(resume["network"])

    def state(epoch: int, batch: int, started: float | None) -> dict[str, Any]:
        """The loop at ``batch`` of ``epoch`` (training since ``started``, perf_counter s)."""
        seconds = 0.0 if started is None else time.perf_counter() - started
        return {"epoch": epoch, "next_batch": batch, "order": order, "losses": losses,
                "seconds": seconds, "shuffle": rng_state(shuffle), "history": result.history,
                "network": net.state_dict(),
                "weights": {k: v.astype(np.float32) for k, v in weights().items()}}  # to view

    for epoch in range(first_epoch, cfg.epochs + 1):
        started = time.perf_counter() - seconds_before
        lr = cfg.lr
        if cfg.lr_step_epochs:
            lr *= cfg.lr_step_gamma ** ((epoch - 1) // cfg.lr_step_epochs)
        if order is None:
            order, losses, next_batch = shuffle.permutation(train_y.size), [], 0
        for b in range(next_batch, batches):
            index = order[b * cfg.batch:(b + 1) * cfg.batch]
            images = train_x[index].astype(np.float64)
            if shape:
                images = images.reshape(index.size, *shape)
            loss, grad = softmax_cross_entropy(net.forward(images), train_y[index])
            require_finite({"loss": loss}, f"epoch {epoch}, batch {b + 1}")
            net.backward(grad)
            net.update(lr)
            losses.append(loss)
            done = (epoch - 1) * batches + b + 1
            report.progress(done, cfg.epochs * batches)
            report.boundary(done, functools.partial(state, epoch, b + 1, started))
        train_seconds = time.perf_counter() - started
        values = {"loss": float(np.mean(losses)),
                  "test_acc": _accuracy(net, data.test_x, data.test_y, chunk=250, shape=shape),
                  "epoch_seconds": train_seconds, "lr": lr}
        result.record(epoch, values)
        report.metrics(epoch, values)
        order, seconds_before = None, 0.0
        if epoch < cfg.epochs:
            report.boundary(epoch * batches, functools.partial(state, epoch + 1, 0, None),
                            epoch_end=True)
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
              report: Reporter, digital_bias: bool = False,
              resume: Mapping[str, Any] | None = None) -> TaskResult:
    """Train the LeNet-like CNN of :func:`lenet` with softmax cross-entropy, SGD in batches.

    The same epochs, StepLR schedule, metrics, random streams and resuming as :func:`mnist_fcn`.
    """
    net = lenet(cfg, make_weights, digital_bias)
    if resume is None:
        net.initialize(np.random.default_rng([seed, INIT]))
    names = ("conv1", "conv2", "fc1", "fc2")

    def weights() -> dict[str, np.ndarray]:
        return {name: layer.weights.read_weights()
                for name, layer in zip(names, net.trainable, strict=True)}

    result = _train_classifier(net, cfg, seed, report, weights, shape=_IMAGE_SHAPE, resume=resume)
    result.weights = weights()
    return result

