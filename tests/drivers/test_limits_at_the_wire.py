"""Nothing beyond a station's limits ever arrives at an instrument, whatever the drivers' public API
is asked to send: the board (float32 on the wire, rounded towards safety), the pulse generator and
the SMU (SCPI text, parsed as the instrument parses it, raw commands included). And station files
validate to limits under the schema's ceilings or are refused with a ValueError.

The received side is checked independently of the drivers: the simulated board's decoded
``requests`` and every SCPI program message that ``arrived`` at a simulated instrument are read
with ``protocols`` and the instruments' own header patterns (from their manuals), not with the
drivers' command sets.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.board import BoardClient, BoardError
from drivers.limits import CommandRefused, LimitError, check_text, float32_within
from drivers.pulse_generator import PulseGenerator
from drivers.scpi import InstrumentError
from drivers.smu import Smu
from drivers.station import load_station
from hilctl.errors import ConfigError
from protocols import board as pb
from protocols.scpi import HeaderPattern, ScpiParseError, parse_command, parse_number, split_commands
from protocols.station import StationConfig, StationLimits
from sim.instruments.board import BoardLimits, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.smu import SimulatedSmu

LIMITS = StationLimits(max_pulse_amplitude=3.0, min_pulse_width=20e-9, max_pulse_width=1e-3,
                       max_read_voltage=0.5, max_compliance=1e-3, max_burst_count=1000)
FAST = {"timeout_ms": 500, "open_timeout_ms": 500, "retries": 2, "backoff_s": 0.01}
ROWS, COLS = 2, 3
INF = math.inf


def _up(x: float) -> float:
    return float(np.nextafter(x, INF))


def _down(x: float) -> float:
    return float(np.nextafter(x, -INF))


def _f32(x: float) -> float:
    return float(np.float32(x))


# Values at and around every limit (exactly at it, one float64 ulp either side, its float32), and
# the awkward ones.
_LIMIT_VALUES = (LIMITS.max_pulse_amplitude, LIMITS.min_pulse_width, LIMITS.max_pulse_width,
                 LIMITS.max_read_voltage, LIMITS.max_compliance)
EDGES = sorted({v for limit in _LIMIT_VALUES for x in (limit, -limit)
                for v in (x, _up(x), _down(x), _f32(x))}
               | {0.0, -0.0, 5e-324, -5e-324, 1e-45, 1e308, -1e308, 3.4028235e38})
values = st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(-20, 20), st.floats(-1e-2, 1e-2), st.floats(0, 2e-3))


def _near(*limits: float, within: tuple[float, float]) -> st.SearchStrategy[float]:
    """Values at the limits (exactly, one ulp either side, their float32, negated), within
    ``within``, around it, or anything."""
    at = [v for limit in limits for x in (limit, -limit) for v in (x, _up(x), _down(x), _f32(x))]
    lo, hi = within
    return st.one_of(st.sampled_from(at), st.floats(lo, hi), st.floats(lo, hi),
                     st.floats(-1.2 * max(abs(lo), abs(hi)), 1.2 * max(abs(lo), abs(hi))), values)


amplitudes = _near(LIMITS.max_pulse_amplitude, within=(0.0, LIMITS.max_pulse_amplitude))
widths = _near(LIMITS.min_pulse_width, LIMITS.max_pulse_width,
               within=(LIMITS.min_pulse_width, LIMITS.max_pulse_width))
read_voltages = _near(LIMITS.max_read_voltage, within=(-LIMITS.max_read_voltage, LIMITS.max_read_voltage))
compliances = _near(LIMITS.max_compliance, within=(0.0, LIMITS.max_compliance))
counts = st.one_of(st.integers(1, 1000), st.integers(1, 1100), st.integers(-5, 70_000),
                   st.sampled_from([0, 1, 999, 1000, 1001, 65535, 65536, 2**40]),
                   st.sampled_from([1.0, 2.5, 1000.0, 1000.5, INF, math.nan]))


# ---------------------------------------------------------------------------------------------
# The helpers, exactly


def test_float32_within_rounds_towards_safety():
    assert _f32(1e-3) > 1e-3  # the nearest float32 of the limit lies beyond it
    below = float(np.nextafter(np.float32(1e-3), np.float32(0)))  # the float32 just below 1e-3
    assert float32_within(1e-3, 20e-9, 1e-3) == below == 0.0009999999310821295 <= 1e-3
    assert _f32(20e-9) < 20e-9  # ... and of this lower limit below it
    assert 20e-9 <= float32_within(20e-9, 20e-9, 1e-3) == float(np.nextafter(np.float32(20e-9),
                                                                             np.float32(1)))
    assert float32_within(0.5, -0.5, 0.5) == 0.5 and float32_within(-0.1, -0.5, 0.5) == _f32(-0.1)
    assert float32_within(0.3, 0, 3.0) == _f32(0.3)  # within: the nearest, whichever side
    with pytest.raises(LimitError):
        float32_within(_up(1e-3), 20e-9, 1e-3)
    with pytest.raises(LimitError):
        float32_within(1.0, 1.0 + 1e-12, 1.0 + 2e-12)  # no float32 in between


@pytest.mark.parametrize("text,ok", [
    ("1e-3", True), ("1E-3", True), ("0.001", True), ("+1.000000E-03", True), (".001", True),
    ("0.0009999999999999999", True), ("1.0000000000000001e-3", False), ("1.00000000000000002e-3", False),
    (repr(_up(1e-3)), False), ("1.1e-3", False), ("2e-8", True), ("1.9999999999999999e-8", False),
    ("MAX", False), ("MIN", False), ("DEF", False), ("INF", False), ("NAN", False), ("-INF", False),
    ("1 ms", False), ("1e-3V", False), ("#H10", False), ("", False),
])
def test_check_text_compares_the_text_as_the_instrument_reads_it_and_exactly(text, ok):
    if ok:
        assert check_text(LIMITS, "width", text) == parse_number(text)
    else:
        with pytest.raises(LimitError):
            check_text(LIMITS, "width", text)


def test_check_text_of_every_limit_passes_at_it_and_refuses_one_ulp_beyond():
    for quantity, limit in (("amplitude", 3.0), ("amplitude", -3.0), ("read_voltage", 0.5),
                            ("read_voltage", -0.5), ("compliance", 1e-3), ("width", 1e-3), ("width", 20e-9)):
        assert check_text(LIMITS, quantity, repr(limit)) == limit
        beyond = _down(limit) if quantity == "width" and limit == 20e-9 else (
            _up(limit) if limit > 0 else _down(limit))
        with pytest.raises(LimitError):
            check_text(LIMITS, quantity, repr(beyond))
    assert check_text(LIMITS, "count", "1000") == 1000
    for text in ("1001", "0", "2.5", "1000.0000000000001"):
        with pytest.raises(LimitError):
            check_text(LIMITS, "count", text)


# ---------------------------------------------------------------------------------------------
# The board: float32 on the wire


@pytest.fixture(scope="module")
def board_link() -> Iterator[tuple[SimulatedBoard, BoardClient]]:
    chip = EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, seed=5))
    with SimulatedBoard(chip, limits=BoardLimits(max_amplitude=5.0, max_width=1e-3)) as board, \
            BoardClient(board.port, timeout=0.2, retries=3, limits=LIMITS) as client:
        client.identify()
        yield board, client


def _pulses(board: SimulatedBoard, since: int) -> list[pb.Pulse]:
    return [m for m in board.requests[since:] if isinstance(m, pb.Pulse)]


def test_a_width_exactly_at_the_limit_is_sent_and_accepted_on_every_pulse(board_link):
    """Before: 1e-3 s went out as the float32 0.0010000000475 and the board (1 ms) refused every
    such pulse. Now it goes out as the largest float32 not above 1 ms, and is executed."""
    board, client = board_link
    since, executed = len(board.requests), board.cache.executions
    for i in range(50):
        client.pulse((i % ROWS, i % COLS), +1 if i % 2 else -1, 3, amplitude=3.0, width=1e-3)
    pulses = _pulses(board, since)
    assert len(pulses) == 50 and board.cache.executions == executed + 50
    assert {p.width for p in pulses} == {float(np.nextafter(np.float32(1e-3), np.float32(0)))}
    assert all(p.width <= 1e-3 and p.amplitude == 3.0 and p.count == 3 for p in pulses)
    assert client.errors() == []  # no NACK on the board's error queue
    client.pulse((0, 0), +1, 1, amplitude=3.0, width=20e-9)  # the shortest allowed pulse
    (shortest,) = _pulses(board, since + 50)
    assert shortest.width >= 20e-9 and shortest.width == float32_within(20e-9, 20e-9, 1e-3)


def test_the_board_refused_the_float32_nearest_the_limit(board_link):
    """Why the rounding matters: the same 1 ms sent as its nearest float32 (as a client with a
    wider limit would send it) is beyond the board's 1 ms and refused."""
    board, _ = board_link
    wide = StationLimits(max_pulse_width=1.0)
    with BoardClient(board.port, timeout=0.2, retries=3, limits=wide) as other:
        with pytest.raises(BoardError, match="out_of_range"):
            other.pulse((0, 0), +1, 1, amplitude=1.0, width=1e-3)
        other.errors()


def test_one_ulp_beyond_a_limit_is_refused_and_nothing_is_sent(board_link):
    board, client = board_link
    since = len(board.requests)
    for call in (lambda: client.pulse((0, 0), +1, 1, amplitude=_up(3.0), width=1e-6),
                 lambda: client.pulse((0, 0), +1, 1, amplitude=1.0, width=_up(1e-3)),
                 lambda: client.pulse((0, 0), +1, 1, amplitude=1.0, width=_down(20e-9)),
                 lambda: client.pulse((0, 0), +1, 1001, amplitude=1.0, width=1e-6),
                 lambda: client.pulse_masks({0}, {1}, -1, 1, amplitude=_up(3.0), width=1e-6),
                 lambda: client.read("array", voltage=_up(0.5)),
                 lambda: client.read_cell(0, 0, voltage=_down(-0.5)),
                 # raw frames are compared as the float32 they carry: 1e-3 becomes 0.0010000000475
                 lambda: client.request(pb.Pulse(1, 1, 1.0, 1e-3, pb.CellTarget(0, 0))),
                 lambda: client.request(pb.Read(pb.ReadMode.CELL, 0, 0, 0.5000001))):
        with pytest.raises(LimitError) as info:
            call()
        assert board.port in str(info.value) and "nothing was sent" in str(info.value)
    assert len(board.requests) == since


def test_read_voltage_exactly_at_the_limit_arrives_within_it(board_link):
    board, client = board_link
    since = len(board.requests)
    client.read("array", voltage=0.5)
    client.read_cell(1, 1, voltage=-0.5)
    client.read("row", 0, voltage=0.3)  # not a float32: the nearest one, within the limit
    reads = [m for m in board.requests[since:] if isinstance(m, pb.Read)]
    assert [r.voltage for r in reads] == [0.5, -0.5, _f32(0.3)]


def _board_allows(amplitude: float, width: float, count: float) -> bool:
    return (math.isfinite(amplitude) and math.isfinite(width) and 0 < amplitude <= 3.0
            and 20e-9 <= width <= 1e-3 and isinstance(count, int | float) and math.isfinite(count)
            and count == int(count) and 1 <= count <= 1000)


_board_ops = st.lists(st.one_of(
    st.tuples(st.just("pulse"), amplitudes, widths, counts, st.sampled_from([-1, 1])),
    st.tuples(st.just("pulse"), st.sampled_from([3.0, _down(3.0), _up(3.0), 1e-45, 5e-324]),  # at the limits
              st.sampled_from([1e-3, _down(1e-3), _up(1e-3), 20e-9, _up(20e-9), _down(20e-9)]),
              st.sampled_from([1, 1000, 1001]), st.sampled_from([-1, 1])),
    st.tuples(st.just("masks"), amplitudes, widths, counts, st.sampled_from([-1, 1])),
    st.tuples(st.just("read"), read_voltages, st.sampled_from(["cell", "row", "column", "array"])),
    st.tuples(st.just("read_cell"), read_voltages),
    st.tuples(st.just("mvm"), st.lists(read_voltages, min_size=2, max_size=2),
              st.sampled_from(["row", "column"])),
), min_size=1, max_size=8)


def _board_call(client: BoardClient, op: tuple) -> tuple[Callable[[], object], bool]:
    """The call an op makes and whether the station limits allow it."""
    kind = op[0]
    if kind in ("pulse", "masks"):
        _, amplitude, width, count, polarity = op
        if kind == "pulse":
            call = lambda: client.pulse((1, 2), polarity, count, amplitude=amplitude, width=width)  # noqa: E731
        else:
            call = lambda: client.pulse_masks({0, 1}, {0, 2}, polarity, count,  # noqa: E731
                                              amplitude=amplitude, width=width)
        return call, _board_allows(amplitude, width, count)
    if kind == "mvm":
        _, pair, drive = op
        rows, cols = np.array([0, 1]), np.arange(COLS)
        driven, sensed = (rows, cols) if drive == "row" else (cols[:2], rows)
        allowed = all(math.isfinite(v) and abs(v) <= 0.5 for v in pair)

        def mvm() -> None:
            out = client.mvm(drive, driven, sensed, np.array([pair]), integration_time=1e-6,
                             adc_range=1e-3)
            assert out.shape == (1, sensed.size)

        return mvm, allowed
    voltage = op[1]
    allowed = math.isfinite(voltage) and abs(voltage) <= 0.5
    if kind == "read_cell":
        return (lambda: client.read_cell(0, 1, voltage=voltage)), allowed
    mode = op[2]
    expected = {"cell": (1, 1), "row": (1, COLS), "column": (ROWS, 1), "array": (ROWS, COLS)}[mode]

    def read() -> None:
        row = 1 if mode in ("cell", "row") else None
        col = 2 if mode in ("cell", "column") else None
        assert client.read(mode, row, col, voltage=voltage).shape == expected

    return read, allowed


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_board_ops)
def test_nothing_beyond_the_limits_reaches_the_board(board_link, ops):
    board, client = board_link
    since = len(board.requests)
    sent = 0
    for op in ops:
        call, allowed = _board_call(client, op)
        if allowed:
            call()  # exactly at a limit passes, and the board executes it (no NACK)
            sent += 1
        else:
            with pytest.raises(LimitError):
                call()
    arrived = [m for m in board.requests[since:] if isinstance(m, pb.Pulse | pb.Read | pb.Mvm)]
    assert len(arrived) == sent
    for message in arrived:
        if isinstance(message, pb.Pulse):
            assert 0 < message.amplitude <= LIMITS.max_pulse_amplitude
            assert LIMITS.min_pulse_width <= message.width <= LIMITS.max_pulse_width
            assert 1 <= message.count <= LIMITS.max_burst_count
        elif isinstance(message, pb.Mvm):
            assert all(abs(v) <= LIMITS.max_read_voltage for v in message.voltages[0])
        else:
            assert abs(message.voltage) <= LIMITS.max_read_voltage


# ---------------------------------------------------------------------------------------------
# The SCPI instruments: text on the wire, raw commands included

# Headers as the instruments understand them (their manuals), independent of the drivers.
_PG_LEVEL = [HeaderPattern("[SOURce]:VOLTage:HIGH"), HeaderPattern("[SOURce]:VOLTage:LOW")]
_PG_WIDTH = HeaderPattern("[SOURce]:FUNCtion:PULSe:WIDTh")
_PG_COUNT = HeaderPattern("[SOURce]:BURSt:NCYCles")
_PG_LOAD = HeaderPattern("OUTPut:LOAD")
_PG_FUNCTION = HeaderPattern("[SOURce]:FUNCtion[:SHAPe]")
_PG_NEVER = [HeaderPattern(p) for p in (
    "[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "[SOURce]:VOLTage:OFFSet", "[SOURce]:APPLy:PULSe",
    "[SOURce]:APPLy:DC", "[SOURce]:APPLy:SQUare", "[SOURce]:FUNCtion:PULSe:DCYCle", "*RST",
    "TRIGger[:SEQuence][:IMMediate]", "INITiate[:IMMediate]")]
_SMU_LEVEL = HeaderPattern("[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]")
_SMU_ILIM = HeaderPattern("[SOURce]:VOLTage:ILIMit[:LEVel]")
_SMU_FUNCTION = HeaderPattern("[SOURce]:FUNCtion[:MODE]")
_SMU_NEVER = [HeaderPattern(p) for p in ("[SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]",
                                         "[SOURce]:VOLTage:RANGe", "[SOURce]:CURRent:VLIMit[:LEVel]")]


def _number(text: str) -> float:
    value = parse_number(text)  # raises for a keyword: a keyword must never arrive here
    assert math.isfinite(value)
    return value


def _check_arrived_at_the_generator(messages: list[str]) -> None:
    for message in messages:
        (text,) = split_commands(message)  # one command per message
        try:
            cmd = parse_command(text)
        except ScpiParseError:  # pragma: no cover - the drivers parse before sending
            raise AssertionError(f"unparseable message arrived: {message!r}") from None
        if cmd.query:
            continue
        assert not any(p.matches(cmd) for p in _PG_NEVER), message
        assert not cmd.header.upper().lstrip(":").startswith("APPL"), message
        if any(p.matches(cmd) for p in _PG_LEVEL):
            (arg,) = cmd.args
            assert abs(_number(arg)) <= LIMITS.max_pulse_amplitude, message
            assert abs(Decimal(arg)) <= Decimal(repr(LIMITS.max_pulse_amplitude)), message
        elif _PG_WIDTH.matches(cmd):
            (arg,) = cmd.args
            assert LIMITS.min_pulse_width <= _number(arg) <= LIMITS.max_pulse_width, message
        elif _PG_COUNT.matches(cmd):
            (arg,) = cmd.args
            value = _number(arg)
            assert value == int(value) and 1 <= value <= LIMITS.max_burst_count, message
        elif _PG_LOAD.matches(cmd):
            assert HeaderPattern("INFinity").matches(cmd.args[0]), message
        elif _PG_FUNCTION.matches(cmd):
            assert HeaderPattern("PULSe").matches(cmd.args[0]), message


def _check_arrived_at_the_smu(messages: list[str]) -> None:
    for message in messages:
        (text,) = split_commands(message)
        cmd = parse_command(text)
        if cmd.query:
            continue
        assert not any(p.matches(cmd) for p in _SMU_NEVER), message
        if _SMU_LEVEL.matches(cmd):
            (arg,) = cmd.args
            assert abs(_number(arg)) <= LIMITS.max_read_voltage, message
        elif _SMU_ILIM.matches(cmd):
            (arg,) = cmd.args
            assert 0 < _number(arg) <= LIMITS.max_compliance, message
        elif _SMU_FUNCTION.matches(cmd):
            assert HeaderPattern("VOLTage").matches(cmd.args[0]), message


@pytest.fixture(scope="module")
def scpi_rig():
    chip = EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, seed=6))
    chip.routing.pulse_cell = (0, 1)
    chip.routing.smu_cell = (1, 0)
    with SimulatedPulseGenerator(chip) as pgs, SimulatedSmu(chip) as ss:
        pg = PulseGenerator(pgs.resource, LIMITS, **FAST)
        smu = Smu(ss.resource, LIMITS, **FAST)
        pg.connect()
        smu.connect()
        yield pg, pgs, smu, ss
        pg.close()
        smu.close()


_PG_HEADERS = ["VOLT:HIGH", "VOLTage:HIGH", ":volt:high", "VOLT:LOW", "VOLTage:LOW", "SOUR:VOLT:LOW",
               "FUNC:PULS:WIDT", "FUNCtion:PULSe:WIDTh", ":func:puls:widt", "BURS:NCYC", "BURSt:NCYCles",
               "VOLT", "VOLTage:OFFSet", "APPL:PULS", "APPLy:DC", "OUTP", "OUTPut", "OUTP:LOAD", "FUNC",
               "FUNCtion", "FUNC:PULS:PER", "FUNC:PULS:TRAN:BOTH", "TRIG:SOUR", "BURS:STAT", "BURS:MODE",
               "OUTP:POL", "*TRG", "TRIG", "*RST", "*OPC"]
_SMU_HEADERS = [":SOUR:VOLT", ":SOURce:VOLTage:LEVel", "SOUR:VOLT:LEV:IMM:AMPL", "VOLT", ":volt:lev",
                ":SOUR:VOLT:ILIM", "SOURce:VOLTage:ILIMit:LEVel", "sour:volt:ilim", ":SOUR:CURR",
                ":SOUR:FUNC", ":OUTP", ":SENS:CURR:NPLC", ":SOUR:VOLT:RANG", "*RST"]
_FORMATS: list[Callable[[float], str]] = [repr, lambda x: f"{x:.17e}", lambda x: f"{x:E}",
                                          lambda x: f"{x:.3g}", lambda x: f"{x:.20f}",
                                          lambda x: format(Decimal(x), "f") if math.isfinite(x) else "INF"]
_WORDS = ["MAX", "MIN", "DEF", "INF", "INFinity", "NAN", "-INF", "ON", "OFF", "1", "0", "BUS", "IMM", "PULS",
          "DC", "SIN", "NORM", "INV", "TRIG", "GAT", "VOLT", "CURR", '"CURR"', "1,2", "1 V", "1e-3 s",
          "1.0000000000000001e-3", "3.0000000000000004", "1E-3", "1000", "1001", "65535", "2.5", ""]


def _texts(numbers: st.SearchStrategy[float]) -> st.SearchStrategy[str]:
    """Arguments: numbers written in several ways, or keywords and malformed texts."""
    written = st.builds(lambda f, x: f(x), st.sampled_from(_FORMATS), numbers)
    return st.one_of(st.sampled_from(_WORDS), written, written)


_finite_counts = counts.filter(lambda c: math.isfinite(c))
_args = _texts(st.one_of(amplitudes, widths, read_voltages, compliances, _finite_counts))
# A header and an argument: mostly a limited header with a number around its own limit.
_pg_raw = st.one_of(
    st.tuples(st.sampled_from([h for h in _PG_HEADERS if "VOLT" in h.upper()]), _texts(amplitudes)),
    st.tuples(st.sampled_from([h for h in _PG_HEADERS if "WIDT" in h.upper()]), _texts(widths)),
    st.tuples(st.sampled_from([h for h in _PG_HEADERS if "NCYC" in h.upper()]), _texts(_finite_counts)),
    st.tuples(st.sampled_from(_PG_HEADERS), _args))
_smu_raw = st.one_of(
    st.tuples(st.sampled_from([h for h in _SMU_HEADERS if "VOLT" in h.upper() and "ILIM" not in h.upper()]),
              _texts(read_voltages)),
    st.tuples(st.sampled_from([h for h in _SMU_HEADERS if "ILIM" in h.upper()]), _texts(compliances)),
    st.tuples(st.sampled_from(_SMU_HEADERS), _args))

_scpi_ops = st.lists(st.one_of(
    st.tuples(st.just("configure"), amplitudes, widths),
    st.tuples(st.just("output"), st.booleans()),
    st.tuples(st.just("fire"), counts),
    st.tuples(st.just("burst"), amplitudes, widths, counts),  # configure, output on, fire
    st.tuples(st.just("pg_raw"), st.sampled_from(["write", "set", "query"]), _pg_raw, st.booleans()),
    st.tuples(st.just("pg_raw"), st.sampled_from(["write", "set"]), _pg_raw, st.just(True)),
    st.tuples(st.just("smu_read"), read_voltages, compliances,
              st.sampled_from([0.01, 0.1, 1.0, 50.0, math.nan])),
    st.tuples(st.just("smu_measure")),
    st.tuples(st.just("smu_raw"), st.sampled_from(["write", "set", "query"]), _smu_raw, st.booleans()),
    st.tuples(st.just("safe"), st.sampled_from(["pg", "smu"])),
), min_size=1, max_size=8)

_EXPECTED = (LimitError, CommandRefused, InstrumentError)  # refused here, or by the instrument


def _raw_command(header: str, arg: str, query: bool) -> str:
    return header + ("?" if query else "") + (" " + arg if arg else "")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_scpi_ops)
def test_nothing_beyond_the_limits_reaches_the_scpi_instruments(scpi_rig, ops):
    pg, pgs, smu, ss = scpi_rig
    _drain_errors(pg, smu)
    pg_since, smu_since, fired_since = len(pgs.arrived), len(ss.arrived), len(pgs.fired)
    for op in ops:
        kind = op[0]
        with suppress(*_EXPECTED):
            if kind == "configure":
                pg.configure_pulse(op[1], op[2])
            elif kind == "output":
                pg.output(op[1])
            elif kind == "fire":
                pg.fire(op[1])
            elif kind == "burst":
                pg.configure_pulse(op[1], op[2])
                pg.output(True)
                pg.fire(op[3])
            elif kind in ("pg_raw", "smu_raw"):
                inst = pg if kind == "pg_raw" else smu
                method, (header, arg) = op[1], op[2]
                if kind == "pg_raw" and op[3]:
                    pg.write("OUTP OFF")  # so that the interlock lets waveform settings through
                command = _raw_command(header, arg, method == "query")
                getattr(inst, method)(command)
            elif kind == "smu_measure":
                smu.output(True)
                smu.read_current()
            elif kind == "smu_read":
                smu.configure_read(op[1], op[2], op[3])
            elif kind == "safe":
                (pg if op[1] == "pg" else smu).safe_state()
    pg.query("*OPC?")  # every write has been executed when this is answered
    smu.query("*OPC?")
    _check_arrived_at_the_generator(pgs.arrived[pg_since:])
    _check_arrived_at_the_smu(ss.arrived[smu_since:])
    for burst in pgs.fired[fired_since:]:
        assert 0 < burst.amplitude <= LIMITS.max_pulse_amplitude
        assert LIMITS.min_pulse_width <= burst.width <= LIMITS.max_pulse_width
        assert 1 <= burst.count <= LIMITS.max_burst_count
    if pgs.output:  # the interlock: a live output is a bus-triggered burst idling at 0 V
        assert (pgs.function, pgs.load, pgs.burst_mode, pgs.burst_state, pgs.trigger_source) == (
            "PULS", INF, "TRIG", True, "BUS")
        assert (pgs.v_high if pgs.polarity_inverted else pgs.v_low) == 0.0
    assert abs(ss.level) <= LIMITS.max_read_voltage and ss.ilim <= LIMITS.max_compliance


def _drain_errors(*instruments: PulseGenerator | Smu) -> None:
    """Forget errors left in the queues by raw writes of earlier examples or tests."""
    for inst in instruments:
        with suppress(InstrumentError):
            inst.check_errors()


def test_exactly_at_the_limits_arrives_one_ulp_beyond_does_not(scpi_rig):
    pg, pgs, smu, ss = scpi_rig
    _drain_errors(pg, smu)
    pg.configure_pulse(-3.0, 1e-3)
    assert (pgs.v_low, pgs.width) == (-3.0, 1e-3)
    pg.configure_pulse(3.0, 20e-9)
    assert (pgs.v_high, pgs.width) == (3.0, 20e-9)
    smu.configure_read(-0.5, 1e-3)
    assert (ss.level, ss.ilim) == (-0.5, 1e-3)
    n_pg, n_smu = len(pgs.arrived), len(ss.arrived)
    for call in (lambda: pg.configure_pulse(_up(3.0), 1e-6), lambda: pg.configure_pulse(1.0, _up(1e-3)),
                 lambda: pg.configure_pulse(1.0, _down(20e-9)), lambda: pg.set(f"VOLT:HIGH {_up(3.0)!r}"),
                 lambda: pg.set(f"FUNC:PULS:WIDT {_up(1e-3)!r}"), lambda: smu.configure_read(_up(0.5), 1e-4),
                 lambda: smu.configure_read(0.1, _up(1e-3)), lambda: smu.set(f":SOUR:VOLT {_down(-0.5)!r}")):
        with pytest.raises(LimitError):
            call()
    assert (len(pgs.arrived), len(ss.arrived)) == (n_pg, n_smu)


# ---------------------------------------------------------------------------------------------
# Station files: under the ceilings, or refused with a ValueError

CEILINGS = {"max_pulse_amplitude": 10.0, "max_pulse_width": 1.0, "max_read_voltage": 2.0,
            "max_compliance": 0.1, "max_burst_count": 65535}

_anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.inf, -math.inf, math.nan, 1e308]),
    st.floats(0, 20), st.floats(0, 1e-2), st.integers(-(2**70), 2**70), st.integers(0, 70_000),
    st.booleans(), st.text(max_size=5), st.sampled_from(["3.0", "inf", "1e-3", ""]),
)
_LIMIT_KEYS = ["max_pulse_amplitude", "min_pulse_width", "max_pulse_width", "max_read_voltage",
               "max_compliance", "max_burst_count"]
_WRITE_KEYS = ["amplitude", "width"]
_READ_KEYS = ["voltage", "compliance", "nplc"]


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys), _anything, max_size=len(keys))


Table = dict[str, object]


def _station(limits: Table, write: Table, read: Table) -> dict[str, object]:
    tiles = [{"name": "fast", "rows": 4, "cols": 8}, {"name": "slow", "row": 4, "rows": 4, "cols": 8}]
    return {"board": {"port": "/dev/null"}, "chip": {"rows": 8, "cols": 8}, "tiles": tiles,
            "limits": limits, "write": write, "read": read}


def _check_valid(station: StationConfig) -> None:
    lim = station.limits
    for key in _LIMIT_KEYS:
        value = getattr(lim, key)
        assert not isinstance(value, bool) and math.isfinite(value) and value > 0
        if key in CEILINGS:
            assert value <= CEILINGS[key]
    assert lim.min_pulse_width >= 1e-9 and isinstance(lim.max_burst_count, int)
    assert abs(station.write.amplitude) <= lim.max_pulse_amplitude
    assert lim.min_pulse_width <= station.write.width <= lim.max_pulse_width
    assert abs(station.read.voltage) <= lim.max_read_voltage
    assert 0 < station.read.compliance <= lim.max_compliance


@settings(max_examples=1000, deadline=None)
@given(limits=_table(_LIMIT_KEYS), write=_table(_WRITE_KEYS), read=_table(_READ_KEYS))
def test_station_tables_validate_under_the_ceilings_or_are_refused(limits, write, read):
    try:
        station = StationConfig.model_validate(_station(limits, write, read))
    except ValueError:  # pydantic's ValidationError is one
        return
    _check_valid(station)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def _toml(station: dict[str, object]) -> str:
    lines = ['[board]\nport = "/dev/null"\n[chip]\nrows = 8\ncols = 8',
             '[[tiles]]\nname = "fast"\nrows = 4\ncols = 8',
             '[[tiles]]\nname = "slow"\nrow = 4\nrows = 4\ncols = 8']
    for name in ("limits", "write", "read"):
        table = station[name]
        assert isinstance(table, dict)
        lines.append(f"[{name}]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in table.items()))
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None)
@given(limits=_table(_LIMIT_KEYS), write=_table(_WRITE_KEYS), read=_table(_READ_KEYS))
def test_station_files_load_under_the_ceilings_or_are_refused_with_a_config_error(limits, write, read):
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_toml(_station(limits, write, read)))
        try:
            station = load_station(path)
        except ConfigError as exc:
            assert isinstance(exc, ValueError) and path in str(exc)
            return
        _check_valid(station)
    finally:
        os.unlink(path)


def test_the_station_ceilings_and_finite_limits():
    for key, ceiling in CEILINGS.items():
        StationLimits.model_validate({key: ceiling})
        beyond = ceiling + 1 if key == "max_burst_count" else _up(float(ceiling))
        with pytest.raises(ValueError, match=key):
            StationLimits.model_validate({key: beyond})
    for key in _LIMIT_KEYS:
        for bad in (math.inf, math.nan, -math.inf, True, "1", 0, -1):
            with pytest.raises(ValueError, match=key):
                StationLimits.model_validate({key: bad})
    with pytest.raises(ValueError, match="min_pulse_width"):
        StationLimits(min_pulse_width=_down(1e-9))
