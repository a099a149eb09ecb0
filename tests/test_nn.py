"""Tests of the network library (:mod:`hilctl.nn`) on floating-point weights.

Gradients are checked against central finite differences. With ``eps = 1e-6`` in float64 the
truncation error is ``O(eps^2 f''') ~ 1e-12`` and the rounding error ``~ 1e-16 / eps = 1e-10``
relative to the loss (order 1), so a tolerance of ``1e-6`` absolute leaves four orders of
magnitude to spare while a wrong factor (a missing activation derivative, a transposed
matrix, a bias gradient in the wrong place) is off by order 1e-2 or more.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hilctl.algorithms import SingleTile
from hilctl.digital import DigitalTile
from hilctl.nn import Activation, Dense, Network, softmax_cross_entropy

EPS = 1e-6
TOL = 1e-6


def dense(n_in: int, n_out: int, bias: bool = True) -> Dense:
    return Dense(SingleTile(DigitalTile(n_out, n_in + int(bias))), bias=bias)


def network(sizes: list[int], activation: str, seed: int) -> Network:
    rng = np.random.default_rng(seed)
    layers = [dense(n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)]
    for layer in layers:
        # Larger than the torch init so the activations are not all in their linear range.
        layer.weights.program_weights(rng.normal(0, 0.8, layer.weights.shape))
    return Network(layers, activation)


def loss_of(net: Network, x: np.ndarray, labels: np.ndarray) -> float:
    return softmax_cross_entropy(net.forward(x), labels)[0]


# ---------------------------------------------------------------------------------------------
# Gradient check of a whole network.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_network_weight_and_input_gradients_match_finite_differences(activation):
    sizes = [5, 4, 3, 4]
    net = network(sizes, activation, seed=1)
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(6, sizes[0])), rng.integers(0, sizes[-1], 6)

    _, grad = softmax_cross_entropy(net.forward(x), labels)
    net.backward(grad)
    # dL/dW of a layer = (dL/dy)^T @ [input, 1]; the layer keeps both for its update.
    analytic = [layer._grad.T @ layer._input for layer in net.layers]
    # dL/dx: the first layer's input gradient (Network.backward skips it; ask the layer).
    analytic_x = net.layers[0].backward(net.layers[0]._grad, need_input_grad=True)

    for layer, expected in zip(net.layers, analytic, strict=True):
        w = layer.weights.read_weights()
        numeric = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            for sign in (1, -1):
                shifted = w.copy()
                shifted[index] += sign * EPS
                layer.weights.program_weights(shifted)
                numeric[index] += sign * loss_of(net, x, labels) / (2 * EPS)
        layer.weights.program_weights(w)
        np.testing.assert_allclose(expected, numeric, atol=TOL, rtol=0)
        assert np.abs(expected).max() > 100 * TOL  # the check is not vacuous

    numeric_x = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        for sign in (1, -1):
            shifted = x.copy()
            shifted[index] += sign * EPS
            numeric_x[index] += sign * loss_of(net, shifted, labels) / (2 * EPS)
    np.testing.assert_allclose(analytic_x, numeric_x, atol=TOL, rtol=0)
    assert np.abs(analytic_x).max() > 100 * TOL


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_activation_derivative(activation):
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, size=(4, 7))
    z = z[:, np.abs(z).min(axis=0) > 1e-3]  # keep relu away from its kink
    act = Activation(activation)
    upstream = rng.normal(size=z.shape)
    act.forward(z)
    analytic = act.backward(upstream)
    numeric = upstream * (Activation(activation).forward(z + EPS)
                          - Activation(activation).forward(z - EPS)) / (2 * EPS)
    np.testing.assert_allclose(analytic, numeric, atol=1e-8, rtol=0)


def test_activation_values():
    z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(Activation("sigmoid").forward(z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(Activation("tanh").forward(z), np.tanh(z))
    np.testing.assert_array_equal(Activation("relu").forward(z), [[0.0, 0.0, 3.0]])
    # Sigmoid of huge inputs stays finite and saturates without overflow warnings.
    with np.errstate(over="raise"):
        np.testing.assert_allclose(Activation("sigmoid").forward(np.array([[-1e4, 1e4]])),
                                   [[0.0, 1.0]], atol=1e-26)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy.
# ---------------------------------------------------------------------------------------------


def reference_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    log_norm = np.log(np.sum(np.exp(logits), axis=1))
    return float(np.mean(log_norm - logits[np.arange(labels.size), labels]))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), batch=st.integers(1, 5), classes=st.integers(2, 6))
def test_softmax_cross_entropy_value_and_gradient(data, batch, classes):
    logits = data.draw(arrays(np.float64, (batch, classes),
                              elements=st.floats(-20, 20, allow_nan=False)))
    labels = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=batch,
                                         max_size=batch)))
    loss, grad = softmax_cross_entropy(logits.copy(), labels)
    assert loss == pytest.approx(reference_cross_entropy(logits, labels), rel=1e-12, abs=1e-12)
    numeric = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        for sign in (1, -1):
            shifted = logits.copy()
            shifted[index] += sign * EPS
            numeric[index] += sign * softmax_cross_entropy(shifted, labels)[0] / (2 * EPS)
    # Loss values up to ~40 here: rounding error ~40 * 1e-16 / 1e-6 = 4e-9.
    np.testing.assert_allclose(grad, numeric, atol=TOL, rtol=0)
    # Each row of (softmax - onehot) sums to 0, divided by the batch.
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-12)


def test_softmax_cross_entropy_known_value_and_no_overflow():
    with np.errstate(over="raise"):
        loss, grad = softmax_cross_entropy(np.array([[1000.0, 970.0], [0.0, 0.0]]),
                                           np.array([1, 0]))
    # Row 1: -log softmax = 30 + log(1 + e^-30); row 2: log 2.
    assert loss == pytest.approx((30 + np.log1p(np.exp(-30)) + np.log(2)) / 2, rel=1e-12)
    p = 1 / (1 + np.exp(-30))
    np.testing.assert_allclose(grad, [[p / 2, -p / 2], [-0.25, 0.25]], atol=1e-15)


def test_softmax_cross_entropy_is_exact_for_very_wrong_logits():
    loss, _ = softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, 0.0]]), np.array([1, 0]))
    # Row 1: -log softmax = 1000 (up to e^-1000); row 2: log 2.
    assert loss == pytest.approx((1000 + np.log(2)) / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Dense layers.
# ---------------------------------------------------------------------------------------------


def test_dense_bias_is_the_last_column():
    layer = dense(3, 2)
    w = np.array([[1.0, 2.0, 3.0, 10.0], [-1.0, 0.5, 0.0, -20.0]])
    layer.weights.program_weights(w)
    x = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    np.testing.assert_allclose(layer.forward(x), x @ w[:, :3].T + w[:, 3])
    assert layer.in_features == 3
    grad = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # The input gradient leaves out the bias column.
    np.testing.assert_allclose(layer.backward(grad), grad @ w[:, :3])
    layer.update(0.1)
    x1 = np.concatenate((x, np.ones((3, 1))), axis=1)
    np.testing.assert_allclose(layer.weights.read_weights(), w - 0.1 * grad.T @ x1)


def test_dense_without_bias():
    layer = dense(3, 2, bias=False)
    w = np.arange(6.0).reshape(2, 3)
    layer.weights.program_weights(w)
    x = np.array([[1.0, -2.0, 0.5]])
    np.testing.assert_allclose(layer.forward(x), x @ w.T)
    np.testing.assert_allclose(layer.backward(np.array([[1.0, 2.0]])), [[6.0, 9.0, 12.0]])
    assert layer.in_features == 3
    assert layer.backward(np.array([[1.0, 2.0]]), need_input_grad=False) is None


def test_dense_update_needs_forward_and_backward():
    layer = dense(2, 2)
    with pytest.raises(RuntimeError, match="forward"):
        layer.update(0.1)
    layer.forward(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match="backward"):
        layer.update(0.1)


@pytest.mark.parametrize("n_in", [1, 4, 100])
def test_initialize_is_uniform_within_one_over_sqrt_in(n_in):
    n_out = 2000 // n_in + 50
    layer = dense(n_in, n_out)
    layer.initialize(np.random.default_rng(0))
    w = layer.weights.read_weights()
    limit = 1 / np.sqrt(n_in)  # in_features, the bias column not counted
    assert np.all(np.abs(w) <= limit)
    # With N >= 2050 draws of U(-l, l), P(max < 0.99 l) = 0.995^N < 4e-5 for each side (the
    # seed is fixed, so this is a statement about the distribution being the right one): a
    # limit of 1/sqrt(in + 1) (counting the bias) would fail it for in = 1 and 4.
    assert w.max() > 0.99 * limit and w.min() < -0.99 * limit
    # Mean 0 and variance l^2 / 3: the standard errors are l/sqrt(3N) and ~0.9 l^2/(3 sqrt(N));
    # 5 standard errors.
    n = w.size
    assert abs(w.mean()) < 5 * limit / np.sqrt(3 * n)
    assert abs(w.var() - limit**2 / 3) < 5 * 0.9 * limit**2 / (3 * np.sqrt(n))


def test_network_training_step_lowers_the_loss():
    net = network([4, 6, 3], "sigmoid", seed=5)
    rng = np.random.default_rng(6)
    x, labels = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    before = loss_of(net, x, labels)
    for _ in range(20):
        _, grad = softmax_cross_entropy(net.forward(x), labels)
        net.backward(grad)
        net.update(0.5)
    # Gradient descent on a fixed batch, small enough steps: the loss must go down clearly.
    assert loss_of(net, x, labels) < 0.9 * before
