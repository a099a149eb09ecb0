"""Layers split over tiles of limited size (aihwkit's mapping) and biases in floating point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hilctl.algorithms import SingleTile, TikiTaka
from hilctl.digital import DigitalTile
from hilctl.errors import ConfigError
from hilctl.mapping import TiledWeights, mapped, split_sizes
from hilctl.nn import Conv2d, Dense
from hilctl.train_config import resolve_train_config
from hilctl.training import weight_factory


@given(st.integers(1, 5000), st.integers(0, 700))
def test_split_sizes_are_the_fewest_near_equal_parts(size: int, max_size: int) -> None:
    parts = split_sizes(size, max_size)
    assert sum(parts) == size
    if max_size == 0:
        assert parts == [size]
        return
    assert len(parts) == -(-size // max_size)  # the fewest parts of at most max_size
    assert max(parts) <= max_size and max(parts) - min(parts) <= 1
    assert parts == sorted(parts, reverse=True)  # the larger ones first, as aihwkit


def test_split_sizes_match_aihwkit_examples() -> None:
    assert split_sizes(784, 512) == [392, 392]
    assert split_sizes(785, 512) == [393, 392]
    assert split_sizes(512, 512) == [512]
    assert split_sizes(1100, 512) == [367, 367, 366]


def _digital(rows: int, cols: int) -> SingleTile:
    return SingleTile(DigitalTile(rows, cols))


def test_tiled_weights_act_as_one_matrix() -> None:
    """Forward, backward, update, read and program of a 7x10 matrix on 3x4 blocks against
    the same operations on one float matrix (digital blocks: exact to rounding)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 10))
    tiled = TiledWeights(7, 10, 3, 4, _digital)
    assert [len(band) for band in tiled.blocks] == [3, 3, 3]  # rows 3+2+2, cols 4+3+3
    np.testing.assert_allclose(tiled.program_weights(w), w)
    x, d = rng.normal(size=(5, 10)), rng.normal(size=(5, 7))
    np.testing.assert_allclose(tiled.forward(x), x @ w.T, rtol=1e-12)
    np.testing.assert_allclose(tiled.backward(d), d @ w, rtol=1e-12)
    tiled.update(x, d, 0.1)
    np.testing.assert_allclose(tiled.read_weights(), w - 0.1 * d.T @ x, rtol=1e-12)


def test_a_factory_splits_only_what_exceeds_the_limits() -> None:
    make = mapped(_digital, max_rows=4, max_cols=6)
    assert isinstance(make(4, 6), SingleTile)
    assert isinstance(make(5, 6), TiledWeights) and isinstance(make(4, 7), TiledWeights)
    assert isinstance(mapped(_digital, 0, 0)(5000, 5000), SingleTile)


def test_tiki_taka_layer_is_split_like_aihwkit() -> None:
    """A 3x10 Tiki-Taka layer with max_input_size 4: three blocks, each its own fast/slow pair."""
    cfg = resolve_train_config(task="least-squares", algorithm="tiki-taka",
                               overrides={"tile": {"max_input_size": 4}})
    weights = weight_factory(cfg)(3, 10)
    assert isinstance(weights, TiledWeights)
    blocks = [b for band in weights.blocks for b in band]
    assert [b.shape for b in blocks] == [(3, 4), (3, 3), (3, 3)]
    assert all(isinstance(b, TikiTaka) for b in blocks)
    assert weights.forward(np.ones((2, 10))).shape == (2, 3)


def test_defaults_are_aihwkits_mapping() -> None:
    tile = resolve_train_config().tile
    assert (tile.max_input_size, tile.max_output_size, tile.digital_bias) == (512, 512, True)


def test_a_negative_tile_size_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="max_input_size"):
        resolve_train_config(overrides={"tile": {"max_input_size": -1}})


def _layer(kind: str, weights: SingleTile, digital: bool) -> Dense | Conv2d:
    """A layer of 4 inputs (a 2x2 kernel on one channel for the convolution) and 3 outputs."""
    if kind == "dense":
        return Dense(weights, digital_bias=digital)
    return Conv2d(weights, in_channels=1, out_channels=3, kernel_size=2, digital_bias=digital)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_digital_bias_trains_like_a_bias_column(kind: str) -> None:
    """The same layer with its bias in floating point and as a last weight column (digital
    arrays): equal outputs, input gradients, weights and bias after an update."""
    rng = np.random.default_rng(3)
    column, digital = _layer(kind, _digital(3, 5), False), _layer(kind, _digital(3, 4), True)
    w = rng.normal(size=(3, 5))
    column.weights.program_weights(w)
    digital.weights.program_weights(w[:, :-1])
    assert digital.digital_bias is not None
    digital.digital_bias.values = w[:, -1].copy()
    x = rng.normal(size=(5, 4)) if kind == "dense" else rng.normal(size=(2, 1, 3, 3))
    y = column.forward(x)
    np.testing.assert_allclose(digital.forward(x), y, rtol=1e-12)
    g = rng.normal(size=y.shape)
    np.testing.assert_allclose(digital.backward(g), column.backward(g), rtol=1e-12)
    column.update(0.1)
    digital.update(0.1)
    after = column.weights.read_weights()
    np.testing.assert_allclose(digital.weights.read_weights(), after[:, :-1], rtol=1e-12)
    np.testing.assert_allclose(digital.digital_bias.values, after[:, -1], rtol=1e-12)
