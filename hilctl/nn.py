"""A small network library over weight arrays: dense and convolution layers, max-pooling,
activations, softmax cross-entropy.

Backpropagation runs through the weight arrays' ``backward`` (on an analog tile, a transposed
MVM through its periphery), and each layer's update is one ``update(x, d, lr)`` of its weight
array with the layer's input ``x`` and the loss gradient ``d`` at its output. A convolution is
a dense layer applied to every patch of its input (im2col), so it, too, is one tile: its
forward is one MVM of all patches, its update one outer-product update with every patch a
sample (see :class:`Conv2d`).

:class:`Network` is the fully connected stack (dense layers with one activation between
them); :class:`Sequential` chains any layers (:class:`Dense`, :class:`Conv2d`,
:class:`MaxPool2d`, :class:`Flatten`, :class:`Activation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from hilctl.algorithms import WeightArray

Array = NDArray[np.float64]
ActivationName = Literal["sigmoid", "tanh", "relu"]


class DigitalBias:
    """A bias vector kept in floating point and trained by plain SGD next to an analog weight
    array (aihwkit's ``digital_bias``, its default): ``b <- b - lr sum_samples d``."""

    def __init__(self, size: int) -> None:
        self.values = np.zeros(size)

    def initialize(self, rng: np.random.Generator, limit: float) -> None:
        self.values = rng.uniform(-limit, limit, self.values.size)

    def update(self, grad: Array, lr: float) -> None:
        """``grad``: (samples, size), the loss gradient at the outputs of every sample."""
        self.values = self.values - lr * grad.sum(axis=0)


def _bias_parts(bias: bool, digital_bias: bool, outputs: int) -> tuple[int, DigitalBias | None]:
    """(columns of ones the weight array takes, the digital bias if any)."""
    if bias and digital_bias:
        return 0, DigitalBias(outputs)
    return int(bias), None


class Dense:
    """``y = W [x, 1]``: a layer whose bias is the weight array's last column, or with
    ``digital_bias`` ``y = W x + b`` with ``b`` in floating point (:class:`DigitalBias`)."""

    def __init__(self, weights: WeightArray, bias: bool = True, digital_bias: bool = False) -> None:
        self.weights = weights
        self._ones, self.digital_bias = _bias_parts(bias, digital_bias, weights.shape[0])
        self._input: Array | None = None
        self._grad: Array | None = None

    @property
    def in_features(self) -> int:
        return self.weights.shape[1] - self._ones

    def initialize(self, rng: np.random.Generator) -> None:
        """Program ``U(-1/sqrt(in), 1/sqrt(in))`` weights (and bias), as torch's Linear does."""
        limit = 1 / np.sqrt(self.in_features)
        self.weights.program_weights(rng.uniform(-limit, limit, self.weights.shape))
        if self.digital_bias is not None:
            self.digital_bias.initialize(rng, limit)

    def forward(self, x: Array) -> Array:
        if self._ones:
            x = np.concatenate((x, np.ones((x.shape[0], 1))), axis=1)
        self._input = x
        y = self.weights.forward(x)
        return y if self.digital_bias is None else y + self.digital_bias.values

    def backward(self, grad: Array, need_input_grad: bool = True) -> Array | None:
        """Keep ``grad`` (dL/dy) for the update; return dL/dx if asked."""
        self._grad = grad
        if not need_input_grad:
            return None
        g = self.weights.backward(grad)
        return g[:, :-1] if self._ones else g

    def update(self, lr: float) -> None:
        if self._input is None or self._grad is None:
            raise RuntimeError("update() needs a forward() and a backward() first")
        self.weights.update(self._input, self._grad, lr)
        if self.digital_bias is not None:
            self.digital_bias.update(self._grad, lr)


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

    def state_dict(self) -> dict[str, Any]:
        """The floating-point biases (the weights are their arrays' own state)."""
        return bias_state(self.layers)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_bias_state(self.layers, state)


def bias_state(layers: Sequence[Dense | Conv2d | Trainable]) -> dict[str, Any]:
    """The values of every layer's digital bias, in layer order (None where it has none)."""
    return {"biases": [None if getattr(layer, "digital_bias", None) is None
                       else layer.digital_bias.values for layer in layers]}  # type: ignore[union-attr]


def load_bias_state(layers: Sequence[Dense | Conv2d | Trainable], state: Mapping[str, Any]) -> None:
    """Set every layer's digital bias from :func:`bias_state`."""
    for layer, values in zip(layers, state["biases"], strict=True):
        bias = getattr(layer, "digital_bias", None)
        if (bias is None) != (values is None):
            raise ValueError("state biases: a layer with a digital bias got none, or the other way")
        if bias is not None:
            bias.values = np.array(values, dtype=np.float64)


# -- convolution ------------------------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution (or pooling) along one axis, as torch computes it."""
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"a kernel of {kernel} (stride {stride}, padding {padding}) does not fit "
                         f"an input of {size}")
    return out


def im2col(x: Array, kernel: int, stride: int = 1, padding: int = 0) -> Array:
    """The patches of ``x`` (batch, C, H, W) as rows: (batch * H_out * W_out, C * kernel^2).

    Rows run over (image, output row, output column); each row is ``x[b, :, i:i+k, j:j+k]``
    flattened in (channel, kernel row, kernel column) order, the order of torch's
    ``weight.view(out_channels, -1)``. One strided view and one copy, no Python loop.
    """
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    batch, channels, height, width = x.shape
    h_out = conv_output_size(height, kernel, stride)
    w_out = conv_output_size(width, kernel, stride)
    windows = sliding_window_view(x, (kernel, kernel), axis=(2, 3))  # (B, C, H-k+1, W-k+1, k, k)
    windows = windows[:, :, ::stride, ::stride][:, :, :h_out, :w_out]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(batch * h_out * w_out,
                                                       channels * kernel * kernel)


def col2im(cols: Array, shape: tuple[int, int, int, int], kernel: int, stride: int = 1,
           padding: int = 0) -> Array:
    """The adjoint of :func:`im2col`: sum every patch entry back onto the pixel it came from.

    ``shape`` is the (batch, C, H, W) of the image; the loop runs over the ``kernel^2`` kernel
    offsets only, each adding one strided slab of all images, channels and positions.
    """
    batch, channels, height, width = shape
    h_out = conv_output_size(height, kernel, stride, padding)
    w_out = conv_output_size(width, kernel, stride, padding)
    patches = cols.reshape(batch, h_out, w_out, channels, kernel, kernel).transpose(0, 3, 4, 5, 1, 2)
    image = np.zeros((batch, channels, height + 2 * padding, width + 2 * padding))
    for i in range(kernel):
        for j in range(kernel):
            image[:, :, i:i + stride * h_out:stride, j:j + stride * w_out:stride] += patches[:, :, i, j]
    if padding:
        image = image[:, :, padding:-padding, padding:-padding]
    return image


class Conv2d:
    """A 2-D convolution on one weight array through im2col.

    The weights are (out_channels, in_channels * kernel^2 + 1): each row a flattened filter
    in torch's order with its bias in the last column (with ``digital_bias`` no bias column:
    the bias is a :class:`DigitalBias`). ``forward`` unfolds the input into its
    patches (plus a column of ones) and runs all of them through the array in one MVM;
    ``backward`` runs the output gradients of every patch back through the array (a transposed
    MVM) and folds the patch gradients onto the input (:func:`col2im`).

    ``update`` is one ``update(x=patches, d=per-patch output gradients, lr)`` of the array:
    ``W <- W - lr sum_p d_p x_p^T`` over every patch p of every image of the mini-batch, which
    is exactly the gradient of the (batch-mean) loss with respect to the shared filter. On an
    analog tile each patch is a sample of the pulsed outer-product update, as in aihwkit's
    ``AnalogConv2d`` (which hands the unfolded patches to its tile as one batch); a batch of 8
    28x28 images with a 5x5 kernel is 4,608 samples of one tile update.
    """

    def __init__(self, weights: WeightArray, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, bias: bool = True,
                 digital_bias: bool = False) -> None:
        ones, self.digital_bias = _bias_parts(bias, digital_bias, out_channels)
        expected = (out_channels, in_channels * kernel_size * kernel_size + ones)
        if tuple(weights.shape) != expected:
            raise ValueError(f"a Conv2d({in_channels}, {out_channels}, {kernel_size}) needs weights "
                             f"of shape {expected}; got {tuple(weights.shape)}")
        if stride < 1 or padding < 0:
            raise ValueError(f"stride must be >= 1 and padding >= 0; got {stride} and {padding}")
        self.weights = weights
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._ones = ones
        self._input_shape: tuple[int, int, int, int] | None = None
        self._patches: Array | None = None
        self._grad: Array | None = None

    @property
    def in_features(self) -> int:
        """Inputs of one patch: ``in_channels * kernel^2`` (the fan-in)."""
        return self.in_channels * self.kernel_size * self.kernel_size

    def initialize(self, rng: np.random.Generator) -> None:
        """Program ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` filters and biases, torch's default."""
        limit = 1 / np.sqrt(self.in_features)
        self.weights.program_weights(rng.uniform(-limit, limit, self.weights.shape))
        if self.digital_bias is not None:
            self.digital_bias.initialize(rng, limit)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return conv_output_size(height, k, s, p), conv_output_size(width, k, s, p)

    def forward(self, x: Array) -> Array:
        """(batch, in_channels, H, W) -> (batch, out_channels, H_out, W_out)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d input must have shape (batch, {self.in_channels}, H, W); "
                             f"got {x.shape}")
        batch, _, height, width = x.shape
        h_out, w_out = self.output_shape(height, width)
        patches = im2col(x, self.kernel_size, self.stride, self.padding)
        if self._ones:
            patches = np.concatenate((patches, np.ones((patches.shape[0], 1))), axis=1)
        self._input_shape = (batch, self.in_channels, height, width)
        self._patches = patches
        y = self.weights.forward(patches)  # (batch * h_out * w_out, out_channels)
        if self.digital_bias is not None:
            y = y + self.digital_bias.values
        return y.reshape(batch, h_out, w_out, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad: Array, need_input_grad: bool = True) -> Array | None:
        """Keep dL/dy per patch for the update; return dL/dx (batch, C, H, W) if asked."""
        if self._input_shape is None:
            raise RuntimeError("backward() needs a forward() first")
        self._grad = np.asarray(grad, dtype=np.float64).transpose(0, 2, 3, 1).reshape(
            -1, self.out_channels)
        if not need_input_grad:
            return None
        cols = self.weights.backward(self._grad)
        if self._ones:
            cols = cols[:, :-1]
        return col2im(cols, self._input_shape, self.kernel_size, self.stride, self.padding)

    def update(self, lr: float) -> None:
        """One array update with every patch of the mini-batch a sample (see the class)."""
        if self._patches is None or self._grad is None:
            raise RuntimeError("update() needs a forward() and a backward() first")
        self.weights.update(self._patches, self._grad, lr)
        if self.digital_bias is not None:
            self.digital_bias.update(self._grad, lr)


class MaxPool2d:
    """Non-overlapping ``k x k`` max-pooling (stride ``k``); a remainder row/column is dropped.

    ``forward`` keeps the position of each window's maximum (the first one on ties, as
    ``argmax`` does); ``backward`` routes each output gradient to that position only.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1; got {kernel_size}")
        self.kernel_size = kernel_size
        self._input_shape: tuple[int, ...] | None = None
        self._argmax: NDArray[np.intp] | None = None

    def forward(self, x: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        k = self.kernel_size
        batch, channels, height, width = x.shape
        h_out, w_out = conv_output_size(height, k, k), conv_output_size(width, k, k)
        windows = (x[:, :, :h_out * k, :w_out * k]
                   .reshape(batch, channels, h_out, k, w_out, k)
                   .transpose(0, 1, 2, 4, 3, 5)
                   .reshape(batch, channels, h_out, w_out, k * k))
        self._input_shape = x.shape
        self._argmax = np.argmax(windows, axis=-1)
        return np.take_along_axis(windows, self._argmax[..., np.newaxis], axis=-1)[..., 0]

    def backward(self, grad: Array) -> Array:
        if self._input_shape is None or self._argmax is None:
            raise RuntimeError("backward() needs a forward() first")
        k = self.kernel_size
        batch, channels = self._input_shape[:2]
        h_out, w_out = self._argmax.shape[2:]
        windows = np.zeros((batch, channels, h_out, w_out, k * k))
        np.put_along_axis(windows, self._argmax[..., np.newaxis],
                          np.asarray(grad, dtype=np.float64)[..., np.newaxis], axis=-1)
        out = np.zeros(self._input_shape)
        out[:, :, :h_out * k, :w_out * k] = (windows.reshape(batch, channels, h_out, w_out, k, k)
                                             .transpose(0, 1, 2, 4, 3, 5)
                                             .reshape(batch, channels, h_out * k, w_out * k))
        return out


class Flatten:
    """(batch, ...) -> (batch, prod(...)), and back for the gradient."""

    def __init__(self) -> None:
        self._input_shape: tuple[int, ...] | None = None

    def forward(self, x: Array) -> Array:
        self._input_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: Array) -> Array:
        if self._input_shape is None:
            raise RuntimeError("backward() needs a forward() first")
        return grad.reshape(self._input_shape)


# -- any chain of layers ----------------------------------------------------------------------


class Layer(Protocol):
    """A stage of a :class:`Sequential`: forward, and backward from dL/dy to dL/dx."""

    def forward(self, x: Array) -> Array: ...

    def backward(self, grad: Array) -> Array | None: ...


@runtime_checkable
class Trainable(Protocol):
    """A layer with a weight array: its backward may skip dL/dx, and it takes an update."""

    weights: WeightArray

    def backward(self, grad: Array, need_input_grad: bool = True) -> Array | None: ...

    def update(self, lr: float) -> None: ...

    def initialize(self, rng: np.random.Generator) -> None: ...


class Sequential:
    """Layers applied one after another (a CNN: ``Conv2d``, ``Activation``, ``MaxPool2d``,
    ``Flatten``, ``Dense`` ...); the same ``forward``/``backward``/``update`` as :class:`Network`.

    ``backward`` stops at the first layer with weights: nothing before it learns, so its input
    gradient (a transposed MVM on a tile) is never computed.
    """

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = list(layers)
        self.trainable: list[Trainable] = [
            layer for layer in self.layers if isinstance(layer, Trainable)]
        self._first = next((i for i, layer in enumerate(self.layers) if isinstance(layer, Trainable)),
                           len(self.layers))

    def initialize(self, rng: np.random.Generator) -> None:
        """Initialize every layer with weights in order, from one random stream."""
        for layer in self.trainable:
            layer.initialize(rng)

    def forward(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad: Array) -> None:
        """Backpropagate dL/d(output) down to the first layer with weights."""
        for index in range(len(self.layers) - 1, self._first - 1, -1):
            layer = self.layers[index]
            if index == self._first:
                assert isinstance(layer, Trainable)
                layer.backward(grad, need_input_grad=False)
                return
            g = layer.backward(grad)
            assert g is not None
            grad = g

    def update(self, lr: float) -> None:
        for layer in self.trainable:
            layer.update(lr)

    def state_dict(self) -> dict[str, Any]:
        """The floating-point biases of the layers with weights."""
        return bias_state(self.trainable)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_bias_state(self.trainable, state)
