"""A small network library over weight arrays: dense layers, activations, softmax cross-entropy.

Backpropagation runs through the weight arrays' ``backward`` (on an analog tile, a transposed
MVM through its periphery), and each dense layer's update is one ``update(x, d, lr)`` of its
weight array with the layer's input ``x`` and the loss gradient ``d`` at its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hilctl.algorithms import WeightArray

Array = NDArray[np.float64]
ActivationName = Literal["sigmoid", "tanh", "relu"]


class Dense:
    """``y = W [x, 1]``: a layer whose bias is the weight array's last column."""

    def __init__(self, weights: WeightArray, bias: bool = True) -> None:
        self.weights = weights
        self.bias = bias
        self._input: Array | None = None
        self._grad: Array | None = None

    @property
    def in_features(self) -> int:
        return self.weights.shape[1] - int(self.bias)

    def initialize(self, rng: np.random.Generator) -> None:
        """Program ``U(-1/sqrt(in), 1/sqrt(in))`` weights (and bias), as torch's Linear does."""
        limit = 1 / np.sqrt(self.in_features)
        self.weights.program_weights(rng.uniform(-limit, limit, self.weights.shape))

    def forward(self, x: Array) -> Array:
        if self.bias:
            x = np.concatenate((x, np.ones((x.shape[0], 1))), axis=1)
        self._input = x
        return self.weights.forward(x)

    def backward(self, grad: Array, need_input_grad: bool = True) -> Array | None:
        """Keep ``grad`` (dL/dy) for the update; return dL/dx if asked."""
        self._grad = grad
        if not need_input_grad:
            return None
        g = self.weights.backward(grad)
        return g[:, :-1] if self.bias else g

    def update(self, lr: float) -> None:
        if self._input is None or self._grad is None:
            raise RuntimeError("update() needs a forward() and a backward() first")
        self.weights.update(self._input, self._grad, lr)


@dataclass
class Activation:
    """An elementwise nonlinearity that remembers its output for the backward pass."""

    name: ActivationName
    _out: Array | None = field(default=None, repr=False)

    def forward(self, x: Array) -> Array:
        if self.name == "sigmoid":
            out = 1 / (1 + np.exp(-np.clip(x, -60, 60)))
        elif self.name == "tanh":
            out = np.tanh(x)
        else:
            out = np.maximum(x, 0)
        self._out = out
        return out

    def backward(self, grad: Array) -> Array:
        out = self._out
        assert out is not None
        if self.name == "sigmoid":
            return grad * out * (1 - out)
        if self.name == "tanh":
            return grad * (1 - out * out)
        return grad * (out > 0)


def softmax_cross_entropy(logits: Array, labels: NDArray[np.integer]) -> tuple[float, Array]:
    """Mean cross-entropy over the batch and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(labels.size)
    loss = float(-np.mean(shifted[rows, labels] - np.log(total[:, 0])))  # log-softmax, exact
    grad = exp / total
    grad[rows, labels] -= 1
    return loss, grad / labels.size


class Network:
    """Dense layers with an activation after each but the last."""

    def __init__(self, layers: list[Dense], activation: ActivationName) -> None:
        self.layers = layers
        self.activations = [Activation(activation) for _ in layers[:-1]]

    def forward(self, x: Array) -> Array:
        for layer, act in zip(self.layers, [*self.activations, None], strict=True):
            x = layer.forward(x)
            if act is not None:
                x = act.forward(x)
        return x

    def backward(self, grad: Array) -> None:
        """Backpropagate dL/dlogits; the first layer's input gradient is never needed."""
        for index in range(len(self.layers) - 1, -1, -1):
            g = self.layers[index].backward(grad, need_input_grad=index > 0)
            if index > 0:
                assert g is not None
                grad = self.activations[index - 1].backward(g)

    def update(self, lr: float) -> None:
        for layer in self.layers:
            layer.update(lr)
