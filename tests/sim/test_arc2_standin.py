"""The pyarc2 stand-in (``sim/instruments/arc2.py``): its API is the installed pyarc2's, so a
pyarc2 change breaks CI rather than a lab's run; and it does what libarc2 0.6 does with the
calls the ArC TWO driver makes."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from hilctl.config import device_config, no_variation
from protocols.arc2 import BIT_CHANNELS, WORD_CHANNELS, slice_channels
from sim.instruments import arc2 as standin
from sim.instruments.chip import ChipConfig, EmulatedChip

ROOT = Path(__file__).resolve().parents[2]


def pyarc2_requirement() -> Requirement:
    """The ``arc2`` extra's pyarc2 requirement, marker included (pyproject.toml)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["arc2"]
    (line,) = [r for r in extra if r.startswith("pyarc2")]
    return Requirement(line)


@pytest.fixture(scope="module")
def pyarc2():
    """The installed pyarc2. Skipped ONLY where the arc2 extra's environment marker excludes
    this platform (pyarc2 0.6 has wheels for CPython 3.11 on Linux x86_64 and Windows only);
    everywhere else it must import (the test extra installs it), or the test fails."""
    requirement = pyarc2_requirement()
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"pyarc2 is not installable here (marker: {requirement.marker})")
    module = importlib.import_module("pyarc2")
    from importlib.metadata import version
    assert version("pyarc2") in requirement.specifier, "pyarc2 outside the range the extra pins"
    return module


def implemented() -> list[str]:
    """The Instrument methods the stand-in implements (its public ones, and the constructor)."""
    return ["__init__", *sorted(name for name, value in vars(standin.Instrument).items()
                                if callable(value) and not name.startswith("_"))]


def parameters(function) -> list[tuple[str, object, object]]:
    """``(name, kind, default)`` of every parameter but ``self``."""
    listed = list(inspect.signature(function).parameters.values())
    assert listed[0].name == "self"
    return [(p.name, p.kind, p.default) for p in listed[1:]]


@pytest.mark.parametrize("method", implemented())
def test_each_standin_method_has_pyarc2s_parameters_in_its_order(pyarc2, method) -> None:
    """Names, order, kinds (positional or keyword) and defaults, from pyarc2's Python wrapper
    where it has one, else the compiled method's ``__text_signature__``."""
    real = getattr(pyarc2.Instrument, method)
    assert parameters(getattr(standin.Instrument, method)) == parameters(real)


def test_find_ids_and_idle_mode_are_pyarc2s(pyarc2) -> None:
    assert list(inspect.signature(standin.find_ids).parameters) == \
        list(inspect.signature(pyarc2.find_ids).parameters) == []
    assert {m.name: m.value for m in standin.IdleMode} == {m.name: m.value for m in pyarc2.IdleMode}


def test_the_driver_calls_only_what_the_standin_implements() -> None:
    """Every pyarc2 method ``drivers/arc2.py`` calls (``self.call("name", ...)``) is one the
    stand-in implements, so the signature check above covers the driver's whole use."""
    source = (ROOT / "drivers" / "arc2.py").read_text()
    called = set(re.findall(r'self\.call\("(\w+)"', source))
    assert called and called <= set(implemented())


# -- behaviour --------------------------------------------------------------------------------

ROWS, COLS = [3, 0, 33], [16, 50, 17, 20]


@pytest.fixture
def board():
    device = device_config("soft-bounds", **{**no_variation("soft-bounds"), "dw_min": 0.05})
    chip = EmulatedChip(ChipConfig(rows=3, cols=4, read_noise=0.0, device=device))
    with standin.SimulatedArc2(chip, rows=ROWS, cols=COLS, board=7, firmware="fw.bin") as sim:
        yield sim


def test_the_registry_lists_and_opens_registered_boards(board) -> None:
    assert standin.find_ids() == [7]
    with pytest.raises(standin.ArC2Error, match="no ArC TWO with id 1"):
        standin.Instrument(1, "fw.bin")
    with pytest.raises(standin.ArC2Error, match="firmware"):
        standin.Instrument(7, "other.bin")
    board.unregister()
    assert standin.find_ids() == []


def test_pulses_wait_for_execute_and_their_sign_is_the_column_against_the_row(board) -> None:
    arc = standin.Instrument(7, "fw.bin")
    arc.pulse_one(ROWS[1], COLS[2], 1.5, 1000)  # column +0.75 V, row -0.75 V: up
    arc.pulse_one(COLS[3], ROWS[2], 1.5, 1000)  # the column is the low channel: down
    assert not board.chip.ledger
    arc.execute()
    assert board.chip.pulse_ledger() == {(1, 2): 1, (2, 3): -1}
    arc.pulse_slice_masked(ROWS[0], -1.5, 1000, [COLS[0], COLS[1]]).execute()
    assert board.chip.pulse_ledger() == {(1, 2): 1, (2, 3): -1, (0, 0): -1, (0, 1): -1}


def test_widths_are_integer_nanoseconds(board) -> None:
    arc = standin.Instrument(7, "fw.bin")
    with pytest.raises(TypeError, match="nanos"):
        arc.pulse_one(ROWS[0], COLS[0], 1.5, 1e-6)


def test_a_slice_read_returns_the_other_groups_currents_in_libarc2s_order(board) -> None:
    arc = standin.Instrument(7, "fw.bin")
    g = board.chip.conductance()
    row_read = arc.read_slice(ROWS[1], 0.1)
    assert row_read.dtype == np.float32 and row_read.shape == (32,)
    assert slice_channels(ROWS[1]) == WORD_CHANNELS
    for j, col in enumerate(COLS):
        assert row_read[WORD_CHANNELS.index(col)] == pytest.approx(g[1, j] * 0.1, rel=1e-6)
    unwired = [k for k, c in enumerate(WORD_CHANNELS) if c not in COLS]
    assert not row_read[unwired].any()
    column_read = arc.read_slice(COLS[2], 0.1)
    for i, row in enumerate(ROWS):
        assert column_read[BIT_CHANNELS.index(row)] == pytest.approx(g[i, 2] * 0.1, rel=1e-6)
    assert arc.read_one(ROWS[2], COLS[3], 0.1) == pytest.approx(g[2, 3] * 0.1)


def test_finalise_operation_sends_the_queue_then_idles_the_channels(board) -> None:
    arc = standin.Instrument(7, "fw.bin")
    arc.pulse_one(ROWS[0], COLS[0], 1.5, 1000)
    arc.finalise_operation(standin.IdleMode.SoftGnd)
    assert board.chip.pulse_ledger() == {(0, 0): 1} and board.idle is standin.IdleMode.SoftGnd
    arc.read_one(ROWS[0], COLS[0], 0.1)
    assert board.idle is None


def test_fail_at_makes_the_nth_call_fail_once(board) -> None:
    arc = standin.Instrument(7, "fw.bin")
    board.fail_at["read_one"] = 2
    arc.read_one(ROWS[0], COLS[0], 0.1)
    with pytest.raises(standin.ArC2Error):
        arc.read_one(ROWS[0], COLS[0], 0.1)
    arc.read_one(ROWS[0], COLS[0], 0.1)
