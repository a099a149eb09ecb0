"""Fuzz of the command line: whatever a user types or writes into a file, hilctl answers with an
exit code and, for bad input, one line -- never a traceback, never NaN or Infinity in --json.

Hypothesis draws ``--set`` keys (every key of every section, and some that do not exist) with
values that broke earlier versions (booleans, overflowing and denormal numbers, NaN and Infinity
as JSON, lists where numbers belong, ...), config files (structured and raw bytes, invalid UTF-8,
a byte-order mark) and station files. Each invocation runs ``hilctl.cli.main`` in this process;
a run that has not ended after :data:`BUDGET_S` seconds is stopped by a SIGALRM that acts as
Ctrl-C (exit 130), so a long but legitimate run does not stall the suite.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilctl.algorithms import ALGORITHMS
from hilctl.cli import main
from hilctl.config import DEVICE_CONFIGS, PeripheryConfig, UpdateConfig
from hilctl.tasks import TASKS
from hilctl.train_config import TileSection
from protocols.toml_writer import dump_toml

#: Wall time one invocation may take before it is interrupted (s).
BUDGET_S = 2.0
#: Every exit code a fuzzed invocation may end with: done, bad input, bench failure, diverged,
#: interrupted by the budget.
EXIT_CODES = {0, 2, 3, 4, 130}

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _keys() -> list[str]:
    keys = {f"task.{'in' if k == 'in_' else k}" for k in TASKS["least-squares"].model_fields}
    keys |= {f"algorithm.{k}" for model in ALGORITHMS.values() for k in model.model_fields}
    keys |= {f"device.{k}" for model in DEVICE_CONFIGS.values() for k in model.model_fields}
    keys |= {f"update.{k}" for k in UpdateConfig.model_fields}
    keys |= {f"periphery.{k}" for k in PeripheryConfig.model_fields}
    keys |= {f"tile.{k}" for k in TileSection.model_fields}
    keys -= {"task.name"}  # another task is another program (MNIST): not for a quick fuzz
    return sorted(keys | {"device.colour", "task.", "nosection.x", "update"})


#: Values that broke earlier versions, as text (a --set value is JSON where it parses).
NASTY = ["true", "false", "null", "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e300",
         "-1e300", "1e-320", "-1e-320", "5e-324", "-0", "0", "1", "-1", "0.5", "2.5", "4096",
         "65536", "1e12", "9007199254740993", "[0]", "[]", "[1, 2]", "[0.5, -1]", "[true]",
         '"x"', "abc", "", "{}", '{"a": 1}', "symmetric-point", "pulsed", "none"]

#: Ordinary values, so that many fuzzed runs get past validation and actually train.
PLAUSIBLE = ["0.001", "0.01", "0.05", "0.1", "0.3", "0.5", "0.9", "1", "2", "5", "10", "31", "100",
             "1000", "1e6"]

values = st.one_of(st.sampled_from(NASTY), st.sampled_from(PLAUSIBLE), st.sampled_from(PLAUSIBLE),
                   st.integers(-10**30, 10**30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(
                       lambda f: json.dumps(f)))  # NaN, Infinity, 1e+300 ...
assignments = st.lists(st.tuples(st.sampled_from(_keys()), values), min_size=1, max_size=3)

#: A small, fast run that every fuzzed assignment then changes.
SMALL = ["--set", "task.steps=30", "--set", "task.log_every=10", "--set", "task.eval_window=5",
         "--set", "task.out=3", "--set", "task.in=4"]


@contextlib.contextmanager
def _budget(seconds: float) -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"--json printed {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


INVOCATIONS: list[int] = []  # exit code of every fuzzed invocation, for the summary test
STATION_CODES: list[int] = []  # exit codes of the station-file fuzz


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """Run ``hilctl argv`` in this process; check the contract every invocation must meet."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _budget(BUDGET_S):
        code = main(argv)
    stdout, stderr = out.getvalue(), err.getvalue()
    INVOCATIONS.append(code)
    assert "Traceback" not in stderr, f"hilctl {argv}\n{stderr}"
    assert code in EXIT_CODES, f"exit {code}: hilctl {argv}\n{stderr}"
    if code == 2:
        assert stderr.startswith("hilctl: error: ") and stderr.count("\n") == 1, (argv, stderr)
        assert stdout == "", (argv, stdout)
    if "--json" in argv and stdout:
        _strict_json(stdout)
    return code, stdout, stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz-store"))


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(algorithm=st.sampled_from(sorted(ALGORITHMS)), device=st.sampled_from(sorted(DEVICE_CONFIGS)),
       sets=assignments, as_json=st.booleans())
def test_set_values_never_crash(store: str, algorithm: str, device: str,
                                sets: list[tuple[str, str]], as_json: bool) -> None:
    argv = ["train", "--store", store, "--algorithm", algorithm, "--device", device, *SMALL]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    invoke(argv + (["--json"] if as_json else []))


def _scalars() -> st.SearchStrategy[object]:
    return st.one_of(st.booleans(), st.integers(-10**20, 10**20),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                     st.lists(st.integers(-3, 5), max_size=3))


config_tables = st.fixed_dictionaries({}, optional={
    section: st.dictionaries(st.sampled_from([k.split(".", 1)[1] for k in _keys()
                                              if k.startswith(section + ".")] + ["bogus"]),
                             _scalars(), max_size=3)
    for section in ("task", "algorithm", "device", "update", "periphery", "tile")})


@SETTINGS
@given(tables=config_tables, seed=st.one_of(st.none(), _scalars()), prefix=st.sampled_from(
    [b"", b"\xef\xbb\xbf", b"\xff\xfe", b"[task\n", b"seed = inf\n"]))
def test_config_files_never_crash(store: str, tmp_path_factory: pytest.TempPathFactory,
                                  tables: dict[str, dict[str, object]], seed: object,
                                  prefix: bytes) -> None:
    data: dict[str, object] = {"task": {"steps": 30, "log_every": 10, "eval_window": 5, "out": 3,
                                        "in": 4}}
    for section, values in tables.items():
        data[section] = {**data.get(section, {}), **values}  # type: ignore[dict-item]
    if seed is not None:
        data["seed"] = seed
    path = tmp_path_factory.mktemp("config") / "run.toml"
    path.write_bytes(prefix + dump_toml(data).encode("utf-8"))
    invoke(["train", "--store", store, "--config", str(path)])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(raw=st.binary(max_size=200))
def test_raw_bytes_as_config_never_crash(store: str, tmp_path_factory: pytest.TempPathFactory,
                                         raw: bytes) -> None:
    path = tmp_path_factory.mktemp("raw") / "run.toml"
    path.write_bytes(raw)
    invoke(["train", "--store", store, "--config", str(path), *SMALL])


#: A valid station (whose board is absent), that the fuzz then changes in one to three places.
STATION: dict[str, dict[str, object]] = {
    "board": {"port": "/dev/hilctl-no-such-port", "timeout": 0.05, "retries": 1},
    "chip": {"rows": 8, "cols": 8},
    "write": {"amplitude": 1.5, "width": 1e-6},
    "read": {"voltage": 0.1, "compliance": 1e-4},
    "mapping": {"g_ref": 50e-6, "g_scale": 50e-6},
    "limits": {"max_pulse_amplitude": 3.0, "max_pulse_width": 1e-3},
}
STATION_KEYS = [
    ("board", "baudrate"), ("board", "timeout"), ("board", "retries"), ("chip", "rows"),
    ("chip", "cols"), ("write", "amplitude"), ("write", "width"), ("write", "bias"),
    ("write", "via"), ("read", "voltage"), ("read", "compliance"), ("read", "nplc"),
    ("read", "via"), ("mapping", "kind"), ("mapping", "g_ref"), ("mapping", "g_scale"),
    ("mapping", "g_min"), ("mapping", "g_max"), ("mapping", "dw_min"),
    ("limits", "max_pulse_amplitude"), ("limits", "min_pulse_width"), ("limits", "max_pulse_width"),
    ("limits", "max_read_voltage"), ("limits", "max_compliance"), ("limits", "max_burst_count"),
    ("limits", "bogus"), ("smu", "timeout"), ("pulse_generator", "resource")]
tile_lists = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c"]), "rows": st.integers(0, 5), "cols": st.integers(0, 9)},
    optional={"row": st.integers(-1, 5), "col": st.integers(-1, 2)}), min_size=0, max_size=3)
station_tables = st.tuples(
    st.lists(st.tuples(st.sampled_from(STATION_KEYS), st.one_of(
        _scalars(), st.just(None), st.sampled_from([1e-6, 1e-4, 0.1, 1.0, 4, 8, 1000])
    )), max_size=2),
    # mostly a valid region (so that the changes above are what is fuzzed), sometimes any
    st.one_of(*[st.just([{"name": "a", "rows": 4, "cols": 8}])] * 3, tile_lists),
).map(lambda changes: _station(*changes))


def _station(changes: list[tuple[tuple[str, str], object]],
             tiles: list[dict[str, object]]) -> dict[str, object]:
    station: dict[str, object] = {name: dict(table) for name, table in STATION.items()}
    for (section, key), value in changes:
        table = station.setdefault(section, {})
        assert isinstance(table, dict)
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    station["tiles"] = tiles
    return station


@settings(max_examples=80, deadline=None, derandomize=True)
@given(station=station_tables)
def test_station_files_never_crash(store: str, tmp_path_factory: pytest.TempPathFactory,
                                   station: dict[str, object]) -> None:
    path = tmp_path_factory.mktemp("station") / "station.toml"
    path.write_text(dump_toml(station), encoding="utf-8")
    code, _, _ = invoke(["characterize", "--backend", "lab", "--station", str(path), "--up", "1",
                         "--down", "1"])
    assert code in (2, 3)  # refused, or the (absent) bench failed: never a run on no bench
    STATION_CODES.append(code)


def test_the_fuzz_ran_and_found_no_traceback() -> None:
    """Runs last in this module: every invocation above met the contract (each asserted it)."""
    assert len(INVOCATIONS) >= 300
    # the fuzz reached past validation: runs that trained, and stations whose (absent) bench
    # failed as a bench failure, not as a crash
    assert INVOCATIONS.count(0) >= 20 and STATION_CODES.count(3) >= 3
    print(f"\nfuzz: {len(INVOCATIONS)} invocations, exit codes "
          f"{ {c: INVOCATIONS.count(c) for c in sorted(set(INVOCATIONS))} } (station files: "
          f"{ {c: STATION_CODES.count(c) for c in sorted(set(STATION_CODES))} }), 0 tracebacks")


#: Inputs that gave tracebacks before (one each of the causes found by an earlier fuzz), with
#: the exit code each must get now: refused (2), or a run that diverged (4).
KNOWN = [
    (["--set", "task.steps=true"], 2),          # a boolean read as 1
    (["--set", "device.dw_min_std=1e300"], 2),  # overflow to NaN
    (["--set", "device.tau=1e-320"], 2),        # a denormal dividing by zero
    (["--set", "periphery.inp_res=1e-320"], 2),
    (["--set", "task.lr=1e300"], 2),
    (["--set", "task.lr=1e5", "--set", "task.steps=200", "--algorithm", "digital-sgd"], 4),
    (["--set", "task.sigma=1e300"], 2),
    (["--task", "mnist-fcn", "--set", "task.hidden=[0]"], 2),
    (["--set", "device.dw_min=NaN"], 2),
]


@pytest.mark.parametrize(("argv", "code"), KNOWN, ids=[" ".join(a) for a, _ in KNOWN])
def test_inputs_that_crashed_before(store: str, argv: list[str], code: int) -> None:
    assert invoke(["train", "--store", store, *SMALL, *argv])[0] == code


@pytest.mark.parametrize("content", [b"\xef\xbb\xbf[task]\nsteps = 20\n", b'[task]\nname = "\xff"\n'],
                         ids=["byte-order mark", "invalid UTF-8"])
def test_config_file_encodings(store: str, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    code, _, err = invoke(["train", "--store", store, "--config", str(path), *SMALL])
    assert code == (0 if content.startswith(b"\xef\xbb\xbf") else 2), err


@pytest.mark.parametrize(("section", "key", "value"), [
    ("board", "baudrate", 10**12), ("board", "timeout", 1e300), ("smu", "timeout", -1.0),
    ("limits", "max_pulse_width", 10.0), ("limits", "max_burst_count", 10**9)])
def test_station_values_out_of_range(tmp_path: Path, section: str, key: str, value: object) -> None:
    station = {name: dict(table) for name, table in STATION.items()}
    station.setdefault(section, {"resource": "TCPIP0::127.0.0.1::9::SOCKET"})[key] = value
    station["tiles"] = [{"name": "a", "rows": 4, "cols": 8}]
    path = tmp_path / "station.toml"
    path.write_text(dump_toml(station), encoding="utf-8")
    code, _, err = invoke(["characterize", "--backend", "lab", "--station", str(path)])
    assert code == 2 and f"{section}.{key}" in err, err
