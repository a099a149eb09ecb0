"""Tests of the ``hilctl`` command line, run in-process through :func:`hilctl.cli.main`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilctl.cli import main
from hilctl.config import DEVICE_CONFIGS, parse_assignments

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = ["--rows", "4", "--cols", "4"]
NO_VARIATION_SOFT_BOUNDS = [
    "--set", "device.dw_min_dtod=0", "--set", "device.dw_min_std=0",
    "--set", "device.up_down_dtod=0", "--set", "device.w_max_dtod=0",
    "--set", "device.w_min_dtod=0",
]


def run_json(capsys, *argv: str) -> dict:
    code = main(["characterize", "--json", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert out.count("\n") == 1  # exactly one JSON object, on one line
    return json.loads(out)


def test_json_shape(capsys):
    record = run_json(capsys, *SMALL, "--up", "7", "--down", "5", "--seed", "3")
    assert len(record["mean"]) == len(record["std"]) == 12
    assert all(isinstance(v, float) for v in record["mean"] + record["std"])
    for key, value in {"backend": "sim", "device": "soft-bounds", "rows": 4, "cols": 4,
                       "up": 7, "down": 5, "start": 0.0, "seed": 3}.items():
        assert record[key] == value
    assert record["seconds"] >= 0
    assert record["config"]["device"]["model"] == "soft-bounds"
    assert record["config"]["seed"] == 3 and record["config"]["rows"] == 4
    assert set(record["config"]) >= {"device", "update", "periphery"}
    assert record["summary"]["after_up"]["mean"] == record["mean"][6]


def test_defaults(capsys):
    record = run_json(capsys, "--up", "2", "--down", "1")
    assert (record["rows"], record["cols"], record["start"], record["seed"]) == (32, 32, 0.0, 0)
    assert record["device"] == "soft-bounds" and record["backend"] == "sim"


@pytest.mark.parametrize("device", list(DEVICE_CONFIGS))
def test_every_device_model_runs(capsys, device):
    record = run_json(capsys, *SMALL, "--device", device, "--up", "3", "--down", "2")
    assert record["config"]["device"]["model"] == device
    assert len(record["mean"]) == 5


def test_soft_bounds_mean_is_one_minus_099_to_the_k(capsys):
    argv = [*SMALL, *NO_VARIATION_SOFT_BOUNDS, "--set", "device.dw_min=0.01",
            "--set", "device.w_max=1", "--set", "device.w_min=-1", "--up", "500", "--down", "0"]
    record = run_json(capsys, *argv)
    k = np.arange(1, 501)
    np.testing.assert_allclose(record["mean"], 1 - 0.99**k, rtol=0, atol=1e-5)
    assert max(record["std"]) < 1e-6
    assert record["config"]["device"]["dw_min_std"] == 0
    # --no-variation is the same as setting every variation key to zero
    same = run_json(capsys, *SMALL, "--no-variation", "--set", "device.dw_min=0.01",
                    "--set", "device.w_max=1", "--set", "device.w_min=-1",
                    "--up", "500", "--down", "0")
    assert same["mean"] == record["mean"]


def test_update_and_periphery_sections_reach_the_config(capsys):
    record = run_json(capsys, *SMALL, "--up", "1", "--down", "1",
                      "--set", "update.desired_bl=15", "--set", "periphery.is_perfect=true",
                      "--set", "device.tau=0.5")
    assert record["config"]["update"]["desired_bl"] == 15
    assert record["config"]["periphery"]["is_perfect"] is True
    assert record["config"]["device"]["w_max"] == 0.5


def test_same_seed_same_curve(capsys):
    a = run_json(capsys, *SMALL, "--up", "20", "--down", "20", "--seed", "5")
    b = run_json(capsys, *SMALL, "--up", "20", "--down", "20", "--seed", "5")
    c = run_json(capsys, *SMALL, "--up", "20", "--down", "20", "--seed", "6")
    assert a["mean"] == b["mean"] and a["mean"] != c["mean"]


def test_human_summary(capsys):
    code = main(["characterize", *SMALL, "--up", "10", "--down", "4"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""  # no progress: stderr is not a terminal here
    lines = out.splitlines()
    assert lines[0].startswith("soft-bounds on sim: 4 x 4 cells, seed 0, 14 pulses in ")
    labels = ["start", "after 10 up", "after 4 down", "first up step", "first down step",
              "up/down ratio"]
    for label, line in zip(labels, lines[1:], strict=True):
        assert line.strip().startswith(label)
    assert " +- " in lines[2]
    assert "{" not in out


def test_plot_writes_png(capsys, tmp_path):
    path = tmp_path / "curve.png"
    code = main(["characterize", *SMALL, "--up", "30", "--down", "30", "--json",
                 "--plot", str(path)])
    out, _ = capsys.readouterr()
    assert code == 0
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # axes, labels and a curve; an empty canvas is far smaller
    assert json.loads(out)["plot"] == str(path)


def test_plot_without_matplotlib_fails_before_measuring(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code = main(["characterize", "--up", "1000000", "--plot", str(tmp_path / "x.png")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "pip install 'hilctl[plot]'" in err


def test_help_lists_device_models(capsys):
    assert main(["characterize", "--help"]) == 0
    out = capsys.readouterr().out
    for model in DEVICE_CONFIGS:
        assert model in out
    assert "update.*" in out and "periphery.*" in out


BAD_INPUT = [
    (["--device", "nope"], ["--device", "nope", "soft-bounds", "constant-step", "piecewise"]),
    (["--set", "device.foo=1"], ["device.foo", "valid keys", "dw_min", "w_max"]),
    (["--set", "update.foo=1"], ["update.foo", "valid keys", "desired_bl"]),
    (["--set", "periphery.foo=1"], ["periphery.foo", "valid keys", "out_noise"]),
    (["--device", "constant-step", "--set", "device.tau=0.5"], ["device.tau", "valid keys"]),
    (["--set", "device.dw_min=abc"], ["device.dw_min", "number", "abc"]),
    (["--set", "update.mode=fast"], ["update.mode", "'pulsed'", "'expected'", "'ideal'"]),
    (["--set", "device.dw_min=-0.01"], ["device.dw_min", "greater than or equal to"]),
    (["--set", "device.w_min=0.5", "--set", "device.w_max=0.2"], ["w_min", "w_max"]),
    (["--set", "device.up_down=NaN"], ["device.up_down", "finite"]),
    (["--set", "bogus.x=1"], ["bogus", "device, update, periphery"]),
    (["--set", "device.dw_min"], ["device.dw_min", "section.key=value"]),
    (["--set", "device.model=pow-step"], ["device.model", "--device"]),
    (["--rows", "-3"], ["--rows", ">= 1"]),
    (["--cols", "0"], ["--cols", ">= 1"]),
    (["--up", "-1"], ["--up", ">= 0"]),
    (["--down", "x"], ["--down", "integer"]),
    (["--seed", "-1"], ["--seed", ">= 0"]),
    (["--start", "nan"], ["--start", "finite"]),
    (["--start", "0.9"], ["--start", "w_min", "w_max"]),
    (["--backend", "nope"], ["--backend", "nope", "allowed", "sim"]),
    (["--plot", "curve.pdf"], ["--plot", ".png"]),
    (["--frobnicate"], ["unrecognized", "--frobnicate"]),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, expected):
    code = main(["characterize", *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("hilctl: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)


def test_no_command(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hilctl: error: ") and "characterize" in err


@settings(max_examples=30, deadline=None)
@given(up=st.integers(0, 15), down=st.integers(0, 15))
def test_any_small_sweep_gives_up_plus_down_points(up, down):
    # capsys does not reset between hypothesis examples, so capture by hand
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["characterize", "--json", "--rows", "2", "--cols", "2",
                     "--up", str(up), "--down", str(down)])
    assert code == 0
    record = json.loads(buffer.getvalue())
    assert len(record["mean"]) == len(record["std"]) == up + down


_keys = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
_values = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.floats(0, 10, allow_nan=False), max_size=4),
    st.sampled_from(["pulsed", "expected", "abs-max", "none"]),
)


@given(st.lists(st.tuples(st.sampled_from(["device", "update", "periphery"]), _keys, _values),
                max_size=6))
def test_parse_assignments_round_trips(items):
    def text(value):
        return value if isinstance(value, str) else json.dumps(value)

    parsed = parse_assignments([f"{s}.{k}={text(v)}" for s, k, v in items],
                               ["device", "update", "periphery"])
    expected: dict = {"device": {}, "update": {}, "periphery": {}}
    for section, key, value in items:
        expected[section][key] = value
    assert parsed == expected


def _console_script() -> str | None:
    beside = Path(sys.executable).with_name("hilctl")
    return str(beside) if beside.exists() else shutil.which("hilctl")


@pytest.mark.skipif(_console_script() is None, reason="the hilctl console script is not installed")
def test_console_script():
    script = _console_script()
    assert script is not None
    done = subprocess.run([script, "characterize", "--json", "--up", "5", "--down", "5"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    record = json.loads(done.stdout)
    assert len(record["mean"]) == len(record["std"]) == 10


def test_python_dash_m(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hilctl", "characterize", "--up", "-1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "hilctl: error: argument --up: must be an integer >= 0; got -1"


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path):
    """``hilctl ... --json | head -c 20``: the pipe closes early; hilctl stops quietly."""
    import subprocess
    import sys

    command = (f"{sys.executable} -m hilctl characterize --json --up 3000 --down 3000 --rows 4 "
               "--cols 4 | head -c 20")
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HILCTL_HOME": str(tmp_path)})
    assert done.stdout.startswith("{")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
