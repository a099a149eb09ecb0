"""Tests of :mod:`hilctl.characterize` (the measurement) and :mod:`hilctl.plotting`."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilctl.backends import open_tile
from hilctl.characterize import PulseResponse, measure_pulse_response
from hilctl.config import no_variation, tile_config
from hilctl.tile import Capabilities

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class RecordingTile:
    """A tile that only implements the interface and records what is done to it.

    Each up pulse adds 0.1 and each down pulse subtracts 0.3, so every step is known.
    """

    capabilities = Capabilities(parallel_mvm=False, parallel_update=False, exact_read=True)

    def __init__(self, rows: int = 2, cols: int = 3) -> None:
        self.rows, self.cols = rows, cols
        self.w = np.zeros((rows, cols))
        self.calls: list[tuple[str, object]] = []

    def program_weights(self, target, tol=0.0):
        self.calls.append(("program", np.array(target)))
        self.w = np.array(target, dtype=float)
        return self.w.copy()

    def apply_pulses(self, counts):
        counts = np.asarray(counts)
        self.calls.append(("pulses", counts.copy()))
        self.w = self.w + np.where(counts > 0, 0.1, -0.3) * np.abs(counts)

    def read_weights(self):
        self.calls.append(("read", None))
        return self.w.copy()

    def forward(self, x):  # pragma: no cover - not used by the measurement
        raise AssertionError("characterize must not use forward")

    def backward(self, d):  # pragma: no cover
        raise AssertionError("characterize must not use backward")

    def update(self, x, d, lr):  # pragma: no cover
        raise AssertionError("characterize must not use update")


def sim_tile(rows=4, cols=4, device="soft-bounds", seed=0, **device_values):
    config = tile_config(rows=rows, cols=cols, device=device, device_values=device_values,
                         seed=seed)
    return open_tile("sim", config)


def test_uses_only_the_tile_interface_in_order():
    tile = RecordingTile()
    seen = []
    response = measure_pulse_response(tile, up=2, down=1, start=0.25,
                                      progress=lambda done, total: seen.append((done, total)))
    kinds = [kind for kind, _ in tile.calls]
    assert kinds == ["program", "pulses", "read", "pulses", "read", "pulses", "read"]
    np.testing.assert_array_equal(tile.calls[0][1], np.full((2, 3), 0.25))
    signs = [int(np.unique(counts)[0]) for kind, counts in tile.calls if kind == "pulses"]
    assert signs == [1, 1, -1]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert response.mean == pytest.approx([0.35, 0.45, 0.15])
    assert response.std == pytest.approx([0.0, 0.0, 0.0])
    assert response.cells == 6


def test_summary_helpers():
    tile = RecordingTile()
    response = measure_pulse_response(tile, up=2, down=2, start=0.0)
    assert response.after_up == pytest.approx((0.2, 0.0))
    assert response.after_down == pytest.approx((-0.4, 0.0))
    assert response.first_up_step == pytest.approx(0.1)
    assert response.first_down_step == pytest.approx(-0.3)
    assert response.asymmetry == pytest.approx(1 / 3)
    summary = response.summary()
    assert summary["start"] == {"mean": 0.0, "std": 0.0}
    assert summary["asymmetry"] == pytest.approx(1 / 3)
    matches = [re.fullmatch(r"(\S+(?: \S+)*)\s{2,}(\S.*)", line)
               for line in response.summary_lines()]
    assert all(matches)
    assert [m.group(1) for m in matches] == [
        "start", "after 2 up", "after 2 down", "first up step", "first down step",
        "up/down ratio",
    ]
    assert len({m.start(2) for m in matches}) == 1  # the values are aligned in one column
    assert matches[3].group(2) == "+1.000e-01"


def test_no_pulses_in_one_direction():
    only_down = measure_pulse_response(RecordingTile(), up=0, down=3, start=0.5)
    assert only_down.first_up_step is None and only_down.asymmetry is None
    assert only_down.first_down_step == pytest.approx(-0.3)
    assert only_down.after_up == (0.5, 0.0)
    nothing = measure_pulse_response(RecordingTile(), up=0, down=0, start=0.0)
    assert nothing.mean == [] and nothing.after_down == (0.0, 0.0)
    assert "n/a" in nothing.summary_lines()[-1]


@pytest.mark.parametrize("bad", [{"up": -1}, {"down": -2}, {"start": float("nan")},
                                 {"start": float("inf")}])
def test_bad_arguments_raise_value_error(bad):
    arguments = {"up": 1, "down": 1, "start": 0.0, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        measure_pulse_response(RecordingTile(), **arguments)


def test_response_checks_lengths():
    with pytest.raises(ValueError, match="mean must have up"):
        PulseResponse(up=2, down=1, start=0.0, start_mean=0.0, start_std=0.0, mean=[0.0],
                      std=[0.0, 0.0, 0.0], cells=1)


def test_soft_bounds_without_variation_matches_closed_form():
    # w_{k+1} = w_k + 0.01 (1 - w_k): after k up pulses from 0, w = 1 - 0.99**k;
    # down: w_{j+1} = w_j - 0.01 (1 + w_j), so w + 1 shrinks by 0.99 per pulse.
    tile = sim_tile(**no_variation("soft-bounds"), dw_min=0.01, w_max=1.0, w_min=-1.0)
    response = measure_pulse_response(tile, up=300, down=200, start=0.0)
    k = np.arange(1, 301)
    np.testing.assert_allclose(response.mean[:300], 1 - 0.99**k, rtol=0, atol=1e-5)
    top = 1 - 0.99**300
    j = np.arange(1, 201)
    np.testing.assert_allclose(response.mean[300:], -1 + (1 + top) * 0.99**j, rtol=0, atol=1e-5)
    assert max(response.std) < 1e-6


@settings(max_examples=25, deadline=None)
@given(up=st.integers(0, 12), down=st.integers(0, 12),
       device=st.sampled_from(["constant-step", "soft-bounds", "pow-step", "piecewise"]),
       start=st.floats(-0.3, 0.3))
def test_lengths_and_spread_on_the_emulator(up, down, device, start):
    response = measure_pulse_response(sim_tile(rows=2, cols=3, device=device), up, down, start)
    assert len(response.mean) == len(response.std) == up + down
    assert all(s >= 0 for s in response.std)
    assert response.start_mean == pytest.approx(start, abs=1e-6)
    assert all(np.isfinite(response.mean))


def test_plot_writes_png(tmp_path):
    from hilctl.plotting import plot_pulse_response

    response = measure_pulse_response(sim_tile(), up=40, down=40, start=0.0)
    path = plot_pulse_response(response, tmp_path / "curve.png", "test")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # a real figure with axes, text and a curve, not an empty image


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    from hilctl.errors import HilctlError
    from hilctl.plotting import plot_pulse_response

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    response = measure_pulse_response(RecordingTile(), up=1, down=1, start=0.0)
    with pytest.raises(HilctlError, match=r"pip install 'hilctl\[plot\]'"):
        plot_pulse_response(response, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()
