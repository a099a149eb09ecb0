"""``hilctl fit``: every device model recovered from an emulated characterisation whose true
parameters are known; the output is a config that runs; bad input is refused in one line.

The round trips characterise a 32 x 32 tile (1024 cells, seed 0) from its lower bound up and
back down, so both directions cover the whole range. A mean parameter must come within 5% of
the truth or within 3 of its reported standard errors (a parameter whose truth is 0 has only the
second); a device-to-device spread within 20%, which is about 9 standard errors of a spread
estimated from 1024 cells (1 / sqrt(2 * 1024) = 2.2%), so it checks that the spread is not
confused with the per-cell estimation noise, which at these settings would add 10-50%.
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilctl.backends import open_tile
from hilctl.characterize import measure_pulse_response
from hilctl.cli import main
from hilctl.config import DEVICE_CONFIGS, device_config, tile_config
from hilctl.fitting import fit_device, load_pulse_data
from hilctl.fitting.data import DataError, PulseData
from hilctl.fitting.fit import CELL_FITS
from hilctl.fitting.population import spread

SIZE = 32
PULSES = 200
COMMON = {"dw_min": 0.02, "dw_min_dtod": 0.3, "dw_min_std": 0.3, "up_down": 0.0,
          "up_down_dtod": 0.05, "w_max": 0.6, "w_min": -0.6, "w_max_dtod": 0.3,
          "w_min_dtod": 0.3}
TRUTH: dict[str, dict[str, Any]] = {
    "constant-step": {},
    "soft-bounds": {},
    "linear-step": {"gamma_up": 0.5, "gamma_down": 0.3, "gamma_up_dtod": 0.1,
                    "gamma_down_dtod": 0.1},
    # the response zero of the up step lies inside wide bounds; narrower ones keep it outside
    "exp-step": {"w_max_dtod": 0.1, "w_min_dtod": 0.1},
    "pow-step": {"dw_min": 0.03, "pow_gamma": 0.7, "pow_gamma_dtod": 0.1,
                 "pow_up_down_dtod": 0.05},
    "piecewise": {"piecewise_up": [1.4, 1.2, 1.0, 0.7, 0.3],
                  "piecewise_down": [0.3, 0.8, 1.0, 1.1, 1.2]},
}
#: Settings of the model, not fitted.
NOT_FITTED = {"mult_noise", "tau", "a", "b"}


def characterised(model: str, values: dict[str, Any], size: int = SIZE,
                  seed: int = 0) -> PulseData:
    """An emulated tile's per-cell pulse response, started at its lower bound."""
    config = tile_config(rows=size, cols=size, device=model, device_values=values, seed=seed)
    tile = open_tile("sim", config)
    response = measure_pulse_response(tile, PULSES, PULSES, values["w_min"], per_cell=True)
    assert response.per_cell is not None
    trace = response.per_cell
    weights = np.column_stack([trace.start, trace.weights.T])
    directions = np.r_[np.ones(PULSES), -np.ones(PULSES)].astype(np.int8)
    return PulseData(weights, directions, tuple(map(str, range(size * size))), model,
                     shape=(size, size))


def _close(name: str, fitted: float, true: float, error: float | None) -> bool:
    if name.endswith("_dtod"):
        return abs(fitted - true) <= 0.2 * abs(true)
    within_error = error is not None and abs(fitted - true) <= 3 * error
    return within_error or (true != 0 and abs(fitted - true) <= 0.05 * abs(true))


def test_every_device_model_has_a_fit_and_a_round_trip() -> None:
    assert set(CELL_FITS) == set(DEVICE_CONFIGS) == set(TRUTH)


@pytest.mark.parametrize("seed", range(4))
def test_a_spread_is_recovered_when_each_cell_has_its_own_noise(seed: int) -> None:
    """10,000 cells of spread 1, each seen through noise of its own size (lognormal around 1,
    so as large as the spread and skewed), plus 1% gross outliers: the spread comes within 4 of
    its reported standard errors of the spread the cells were drawn with (about 0.015 here);
    a typical squared error taken off the squared MAD reads 10-20% high on such data."""
    rng = np.random.default_rng(seed)
    n = 10_000
    true = rng.standard_normal(n)
    errors = np.exp(0.5 * rng.standard_normal(n))
    values = 3.0 + true + errors * rng.standard_normal(n)
    values[: n // 100] += 1e3 * rng.standard_normal(n // 100)
    estimate = spread(values, errors)
    assert estimate.error is not None
    assert abs(estimate.value - true.std()) < 4 * estimate.error


@pytest.mark.parametrize("model", list(TRUTH))
def test_every_model_is_recovered_from_its_emulated_characterisation(model: str) -> None:
    values = {**COMMON, **TRUTH[model]}
    truth = device_config(model, **values).model_dump()
    fit = fit_device(characterised(model, values), model)
    misses = []
    for name, fitted in fit.device.items():
        if name == "model" or name in NOT_FITTED or name in fit.held:
            continue
        errors = fit.uncertainty[name]
        pairs = (zip(fitted, truth[name], errors, strict=True) if isinstance(fitted, list)
                 else [(fitted, truth[name], errors)])
        for f, t, e in pairs:
            if not _close(name, f, t, e):
                misses.append(f"{name}: fitted {f:.4g} +- {e}, true {t:.4g}")
    assert not misses, misses
    assert fit.uncertainty.keys() == fit.device.keys() - {"model"}


def test_the_twin_of_a_good_fit_follows_the_measurement() -> None:
    from hilctl.fitting import compare

    values = {**COMMON, **TRUTH["soft-bounds"]}
    data = characterised("soft-bounds", values)
    quality = compare(data, fit_device(data, "soft-bounds").device)
    assert quality.verdict == "good"
    # The wrong model cannot follow a soft-bounds device's saturation.
    wrong = compare(data, fit_device(data, "constant-step").device)
    assert wrong.mean_residual > 2 * quality.mean_residual


@pytest.mark.parametrize("model", ["constant-step", "soft-bounds", "linear-step"])
def test_auto_chooses_the_model_that_made_the_data(model: str) -> None:
    from hilctl.fitting import choose_model

    data = characterised(model, {**COMMON, **TRUTH[model]}, size=16)
    best, scores = choose_model(data)
    assert best.model == model, scores


# ---------------------------------------------------------------------------------------------
# The command: JSON, a config that runs, CSV with conductances
# ---------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "chip.json"
    code, _, err = run(capsys, "characterize", "--rows", "8", "--cols", "8", "--up", "80",
                       "--down", "80", "--start", "-0.6", "--set", "device.dw_min=0.02",
                       "--per-cell", "--out", str(path))
    assert code == 0, err
    return path


def test_fit_json_holds_device_uncertainty_and_quality_and_the_toml_runs(
        capsys, tmp_path, measured) -> None:
    toml, png = tmp_path / "device.toml", tmp_path / "fit.png"
    code, out, err = run(capsys, "fit", str(measured), "--device", "soft-bounds", "--json",
                         "--out", str(toml), "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes().startswith(b"\x89PNG")
    record = json.loads(out)
    assert record["device"]["model"] == "soft-bounds"
    assert set(record["uncertainty"]) == set(record["device"]) - {"model"}
    assert record["quality"]["verdict"] in ("good", "fair", "poor")
    assert tomllib.loads(toml.read_text())["device"] == record["device"]
    code, out, err = run(capsys, "characterize", "--config", str(toml), "--rows", "4", "--cols",
                         "4", "--up", "5", "--down", "5", "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["device"]["dw_min"] == record["device"]["dw_min"]
    code, _, err = run(capsys, "train", "--config", str(toml), "--set", "task.steps=20",
                       "--store", str(tmp_path / "store"), "--json")
    assert code == 0, err


def _write_csv(path: Path, data: PulseData, unit: str, transform: Any = None) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["device", "cycle", "pulse", "direction", unit])
        for device, weights in zip(data.device_ids, data.weights, strict=True):
            for k, value in enumerate(weights):
                direction = "up" if k == 0 or data.directions[k - 1] > 0 else "down"
                writer.writerow([f"cell-{device}", 1, k, direction,
                                 repr(float(transform(value) if transform else value))])


def test_a_csv_of_conductances_gives_the_weights_fit_and_the_mapping(tmp_path) -> None:
    data = characterised("soft-bounds", {**COMMON, **TRUTH["soft-bounds"]}, size=8)
    g_ref, g_scale = 50e-6, 40e-6
    path = tmp_path / "chip.csv"
    _write_csv(path, data, "conductance", lambda w: g_ref + g_scale * w)
    loaded = load_pulse_data(path)
    assert loaded.mapping is not None
    # the mapping puts the mean conductance range at [-1, 1]: weights rescale by a known affine
    scale = g_scale / loaded.mapping.g_scale
    offset = (g_ref - loaded.mapping.g_ref) / loaded.mapping.g_scale
    np.testing.assert_allclose(loaded.weights, data.weights * scale + offset, rtol=1e-9,
                               atol=1e-9)
    # soft bounds map through an affine change of units: the bounds in siemens agree
    in_weights = fit_device(data, "soft-bounds").device
    in_conductance = fit_device(loaded, "soft-bounds").device
    for bound in ("w_max", "w_min"):
        siemens = loaded.mapping.to_conductance(in_conductance[bound])
        assert math.isclose(siemens, g_ref + g_scale * in_weights[bound], rel_tol=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2 (or 4 where the model does not fit)
# ---------------------------------------------------------------------------------------------


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


GOOD_ROWS = "".join(f"a,{k},{'up' if k <= 5 else 'down'},{0.1 * min(k, 10 - k)}\n"
                    for k in range(11))


@pytest.mark.parametrize(("text", "message"), [
    ("device,pulse,weight\na,0,0.1\n", "missing column(s) direction"),
    ("device,pulse,direction,weight,conductance\n", "both of the columns weight and conductance"),
    ("device,pulse,direction\na,0,up\n", "neither of the columns"),
    ("device,pulse,direction,weight\na,0,up,0\na,1,up,0.1\n", "1 up pulse(s)"),
    ("device,pulse,direction,weight\n" + GOOD_ROWS.replace("0.30000000000000004", "nan"),
     "not a finite number"),
    ("device,pulse,direction,weight\n" + GOOD_ROWS.replace(",up,", ",sideways,", 1),
     "direction must be up or down"),
    ("device,pulse,direction,conductance\n" + "".join(
        f"a,{k},{'up' if k <= 5 else 'down'},{50 + min(k, 10 - k)}\n" for k in range(11)),
     "conductance must be in siemens"),
    ("device,pulse,direction,weight\n" + "".join(
        f"a,{k},{'up' if k <= 5 else 'down'},0.2\n" for k in range(11)), "no device moved"),
    ("", "empty file"),
    ("device,pulse,direction,weight,device\n" + GOOD_ROWS, "'device' appears more than once"),
])
def test_a_file_that_is_not_a_pulse_response_is_refused_in_one_line(
        capsys, tmp_path, text, message) -> None:
    code, out, err = run(capsys, "fit", str(_csv(tmp_path, text)), "--device", "soft-bounds")
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_devices_with_different_sequences_are_refused(capsys, tmp_path) -> None:
    other = GOOD_ROWS.replace("a,", "b,")
    text = "device,pulse,direction,weight\n" + GOOD_ROWS + other.rsplit("\n", 2)[0] + "\n"
    code, _, err = run(capsys, "fit", str(_csv(tmp_path, text)), "--device", "soft-bounds")
    assert code == 2 and "another pulse sequence" in err


def test_a_json_without_per_cell_traces_says_how_to_measure_them(capsys, tmp_path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"up": 3, "down": 3, "mean": [0] * 6}))
    code, _, err = run(capsys, "fit", str(path), "--device", "soft-bounds")
    assert code == 2 and "--per-cell" in err


def test_bad_output_paths_are_refused_before_reading(capsys, tmp_path) -> None:
    missing = str(tmp_path / "no-such-file.json")
    code, _, err = run(capsys, "fit", missing, "--device", "soft-bounds", "--out",
                       str(tmp_path / "nowhere" / "d.toml"))
    assert code == 2 and "--out" in err


def test_a_model_that_cannot_fit_exits_4_with_the_best_parameters(capsys, tmp_path) -> None:
    """Soft bounds on steps that grow with the weight: the up line never crosses zero, so the
    fitted upper bound is negative, which is no device."""
    rows = "".join(f"a,{k},{'up' if k <= 5 else 'down'},{0.01 * k * k if k <= 5 else 0.25 - 0.05 * (k - 5)}\n"
                   for k in range(11))
    path = _csv(tmp_path, "device,pulse,direction,weight\n" + rows)
    code, _, err = run(capsys, "fit", str(path), "--device", "soft-bounds")
    assert code == 4
    assert "did not converge" in err and "best parameters so far" in err


# ---------------------------------------------------------------------------------------------
# The file readers never fail but with a DataError
# ---------------------------------------------------------------------------------------------

_cell = st.one_of(st.sampled_from(["up", "down", "UP", "", "nan", "inf", "1e999", "-0.5",
                                   "0.1", "3", "x", "1,2"]),
                  st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.integers(-3, 30).map(str), st.text(max_size=4))
_header = st.lists(st.sampled_from(["device", "pulse", "direction", "weight", "conductance",
                                    "cycle", "other"]), min_size=0, max_size=6)


def _read_or_refused(path: Path) -> None:
    """``path`` is read as finite pulse data, or refused with a one-line DataError."""
    try:
        data = load_pulse_data(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert np.all(np.isfinite(data.weights)) and data.weights.shape[1] == data.pulses + 1


@settings(max_examples=150, deadline=None, derandomize=True)
@given(header=_header, rows=st.lists(st.lists(_cell, min_size=0, max_size=7), max_size=14))
def test_any_csv_is_read_or_refused_with_a_data_error(tmp_path_factory, header, rows) -> None:
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    _read_or_refused(path)


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
              st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["up", "down", "rows", "cols",
                                                             "start", "weights", "per_cell"]),
                                            inner, max_size=6)),
    max_leaves=20)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(record=st.dictionaries(st.sampled_from(["up", "down", "per_cell", "mean"]), _json_value,
                              max_size=4),
       cells=st.one_of(st.none(), st.fixed_dictionaries({
           "rows": st.integers(-1, 3), "cols": st.integers(-1, 3),
           "start": st.lists(st.floats(allow_nan=True), max_size=9),
           "weights": st.lists(st.lists(st.floats(allow_nan=True), max_size=9), max_size=8)})))
def test_any_json_is_read_or_refused_with_a_data_error(tmp_path_factory, record, cells) -> None:
    if cells is not None:
        record = {**record, "per_cell": cells}
    path = tmp_path_factory.mktemp("json") / "data.json"
    path.write_text(json.dumps(record))
    _read_or_refused(path)


def test_a_sweep_from_zero_is_told_that_its_up_response_is_extrapolated(capsys, tmp_path) -> None:
    path = tmp_path / "from-zero.json"
    code, _, err = run(capsys, "characterize", "--rows", "8", "--cols", "8", "--up", "60",
                       "--down", "120", "--set", "device.dw_min=0.02", "--per-cell", "--out",
                       str(path))
    assert code == 0, err
    code, out, err = run(capsys, "fit", str(path), "--device", "soft-bounds")
    assert code == 0, err
    assert "the up pulses started from only" in out and "down pulses started" not in out


def test_pow_step_cells_split_over_processes_give_the_same_fit(monkeypatch) -> None:
    from hilctl.fitting import cells

    data = characterised("pow-step", {**COMMON, **TRUTH["pow-step"]}, size=8)
    serial = cells.fit_pow_step(data)
    monkeypatch.setattr(cells, "POW_CELLS_PER_PROCESS", 16)
    monkeypatch.setattr(cells.os, "cpu_count", lambda: 2)
    assert cells._processes(data.devices) == 2
    split = cells.fit_pow_step(data)
    for name, values in serial.cells.items():
        np.testing.assert_array_equal(split.cells[name], values)
    np.testing.assert_array_equal(split.expected, serial.expected)
