"""The board link end to end: drivers.board.BoardClient -> pyserial -> a real pty -> SimulatedBoard -> chip.

Every test talks over a real pseudo-terminal with real pyserial; the boards and ports are closed by
the fixtures, and an autouse fixture checks that no thread or file descriptor leaks.
"""

from __future__ import annotations

import collections
import gc
import os
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.board import BoardClient, BoardError, BoardTimeout
from hilctl.errors import HilctlError
from protocols import board as pb
from protocols.station import StationLimits
from sim.instruments.board import ALL_CAPABILITIES, FaultConfig, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip, LedgerEntry

ROWS, COLS = 4, 8
AMP, WIDTH = 1.5, 1e-6  # above the chip's 0.8 V set threshold and 10 ns minimum width
# Wide station limits (at the schema's ceilings), so the simulated board's own, narrower limits
# (5 V, 1 V read) are what refuses a request here.
LIMITS = StationLimits(max_pulse_amplitude=10.0, max_read_voltage=2.0, max_burst_count=1000)


def _open_fds() -> set[tuple[str, str]]:
    """The process's open file descriptors with what they point to."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:  # closed while listing (the listing's own fd)
            continue
    return found


@pytest.fixture(autouse=True)
def _no_leaks():
    """No board thread and no fd opened by the test outlive it (fds that other tests left for
    the garbage collector may close meanwhile: only new ones count)."""
    gc.collect()
    threads, fds = {t.ident for t in threading.enumerate()}, _open_fds()
    yield
    gc.collect()
    assert {t.ident for t in threading.enumerate()} <= threads, "a board thread was left running"
    assert not {target for _fd, target in _open_fds() - fds if "pt" in target or "tty" in target}, \
        "a pty or serial fd was left open"


@pytest.fixture
def chip() -> EmulatedChip:
    return EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, seed=3))


@pytest.fixture
def link(chip):
    """``link(**board_kwargs, timeout=..., retries=...) -> (board, client)``; all closed at teardown."""
    opened: list[SimulatedBoard | BoardClient] = []

    def make(*, timeout: float = 0.2, retries: int = 20, **board_kwargs):
        board = SimulatedBoard(chip, **board_kwargs).start()
        opened.append(board)
        client = BoardClient(board.port, timeout=timeout, retries=retries, limits=LIMITS)
        opened.append(client)
        return board, client

    yield make
    for thing in reversed(opened):
        if isinstance(thing, BoardClient):
            thing.close()
        else:
            thing.stop()


# ---------------------------------------------------------------------------------------------
# Round trips


def test_identify_reports_chip_geometry_and_capabilities(link) -> None:
    _, client = link()
    info = client.identify()
    assert (info.firmware, info.rows, info.cols) == ("hilctl-sim 0.1", ROWS, COLS)
    assert info.capabilities == ALL_CAPABILITIES
    _, client2 = link(firmware="fw 2", capabilities=pb.Capability.ON_BOARD_ADC)
    assert client2.identify().capabilities == pb.Capability.ON_BOARD_ADC
    assert client2.info.firmware == "fw 2"


def test_select_route_and_reset_set_chip_routing(link, chip) -> None:
    board, client = link()
    client.select("cell", 1, 2, bias="v/3")
    assert board.selection == pb.Select(pb.SelectMode.CELL, 1, 2, pb.Bias.V_THIRD)
    client.route(pulse=("row", 1), smu=("column", 2))
    assert (chip.routing.pulse_cell, chip.routing.smu_cell) == ((1, 2), (1, 2))
    # A routed row reaches the selected column, a routed column the selected row.
    client.select("column", col=5)
    client.route(pulse=("row", 3), smu=("column", 2))
    assert (chip.routing.pulse_cell, chip.routing.smu_cell) == ((3, 5), None)
    client.select("cell", 2, 6)  # routes are re-resolved against the new selection
    assert (chip.routing.pulse_cell, chip.routing.smu_cell) == ((3, 6), (2, 2))
    client.reset()
    assert board.selection is None and board.routes == pb.Route()
    assert (chip.routing.pulse_cell, chip.routing.smu_cell) == (None, None)


def test_pulse_cell_and_masks_reach_the_chip_ledger(link, chip) -> None:
    _, client = link()
    w0 = chip.weights()
    client.pulse((1, 2), +1, 5, amplitude=AMP, width=WIDTH)
    client.pulse(pb.CellTarget(3, 7), -1, 2, amplitude=AMP, width=WIDTH)
    client.pulse_masks({0, 2}, {1, 4}, +1, 3, amplitude=AMP, width=WIDTH)
    assert chip.ledger[:2] == [LedgerEntry(1, 2, 1, 5), LedgerEntry(3, 7, -1, 2)]
    assert sorted(chip.ledger[2:], key=lambda e: (e.row, e.col)) == [
        LedgerEntry(r, c, 1, 3) for r in (0, 2) for c in (1, 4)]
    dw = chip.weights() - w0
    assert dw[1, 2] > 0 and dw[3, 7] < 0 and dw[0, 1] > 0
    assert np.count_nonzero(dw) == 6
    client.pulse((0, 0), +1, 4, amplitude=0.5, width=WIDTH)  # below threshold: acked, no effect
    assert len(chip.ledger) == 6


def test_reads_return_g_times_v_within_noise(link, chip) -> None:
    _, client = link()
    client.pulse((2, 3), +1, 20, amplitude=AMP, width=WIDTH)
    g = chip.conductance()
    v = 0.2
    # Bound: 6 sigma of the chip's read noise (1 nA) plus float32 rounding of ~10 uA currents.
    bound = 6 * chip.config.read_noise + 1e-11
    cell = client.read_cell(2, 3, voltage=v)
    assert abs(cell - g[2, 3] * v) < bound
    row = client.read("row", row=1, voltage=v)
    assert row.shape == (1, COLS) and np.all(np.abs(row[0] - g[1] * v) < bound)
    col = client.read("column", col=3, voltage=v)
    assert col.shape == (ROWS, 1) and np.all(np.abs(col[:, 0] - g[:, 3] * v) < bound)
    arr = client.read("array", voltage=v)
    assert arr.shape == (ROWS, COLS) and np.all(np.abs(arr - g * v) < bound)
    assert np.std(arr - g * v) > 0  # the noise is there


# ---------------------------------------------------------------------------------------------
# The must-show: 10,000 pulses through 2% (and 10%) drops and corruption in both directions


@pytest.mark.parametrize("rate", [0.02, 0.10])
def test_ten_thousand_pulses_through_a_lossy_link_apply_exactly_once(link, chip, rate) -> None:
    fault = FaultConfig.symmetric(drop=rate, corrupt=rate, seed=2024)
    board, client = link(fault=fault, timeout=0.02, retries=20)
    rng = np.random.default_rng(7)
    intended: list[LedgerEntry] = []
    # 10,000 pulses; at 10% loss in fewer, larger requests (each lost frame costs a timeout)
    n_requests, count = (2000, 5) if rate < 0.05 else (500, 20)
    for _ in range(n_requests):
        r, c = int(rng.integers(ROWS)), int(rng.integers(COLS))
        polarity = int(rng.choice([-1, 1]))
        client.pulse((r, c), polarity, count, amplitude=AMP, width=WIDTH)
        intended.append(LedgerEntry(r, c, polarity, count))

    assert sum(e.count for e in intended) == 10_000
    # Exactly what the controller intended, in order: no pulse twice, none lost.
    assert chip.ledger == intended
    net: dict[tuple[int, int], int] = collections.defaultdict(int)
    for e in intended:
        net[(e.row, e.col)] += e.polarity * e.count
    assert chip.pulse_ledger() == {k: v for k, v in net.items()}
    assert board.cache.executions == n_requests  # every request executed once
    # The faults really happened and were really recovered from.
    s = board.stats
    assert s.dropped_in > 0 and s.dropped_out > 0 and s.corrupted_in > 0 and s.corrupted_out > 0
    assert client.stats.retries > 50
    assert client.stats.timeouts > 0 and client.stats.corrupt_replies > 0
    assert board.cache.hits > 0  # duplicates the board answered from its cache without executing
    assert sum(n - 1 for n in s.seqs_seen.values()) == board.cache.hits


# ---------------------------------------------------------------------------------------------
# Refusals and dead boards


def test_out_of_range_is_a_board_error_naming_port_and_command(link, chip) -> None:
    board, client = link()
    with pytest.raises(BoardError) as info:
        client.pulse((ROWS, 0), +1, 1, amplitude=AMP, width=WIDTH)
    err = info.value
    assert isinstance(err, HilctlError) and not isinstance(err, BoardTimeout)
    assert err.nack is pb.NackCode.OUT_OF_RANGE and err.port == board.port
    assert board.port in str(err) and "Pulse" in str(err) and "out_of_range" in str(err)
    with pytest.raises(BoardError, match="out_of_range"):
        client.read("column", col=COLS)
    with pytest.raises(BoardError, match="out_of_range"):
        client.pulse((0, 0), +1, 1, amplitude=6.0, width=WIDTH)  # within the station, beyond the board
    with pytest.raises(BoardError, match="out_of_range"):
        client.route(pulse=("column", COLS))
    assert chip.ledger == []
    codes = [code for code, _ in client.errors()]
    assert codes == [pb.NackCode.OUT_OF_RANGE] * 4
    assert client.errors() == []  # drained


def test_mask_pulse_without_parallel_update_is_unsupported(link, chip) -> None:
    caps = pb.Capability.ON_BOARD_PULSER | pb.Capability.ON_BOARD_ADC
    board, client = link(capabilities=caps)
    with pytest.raises(BoardError) as info:
        client.pulse_masks({0}, {1, 2}, +1, 1, amplitude=AMP, width=WIDTH)
    assert info.value.nack is pb.NackCode.UNSUPPORTED
    assert board.port in str(info.value) and "Pulse" in str(info.value)
    with pytest.raises(BoardError, match="unsupported"):
        client.read("array")
    client.pulse((0, 1), +1, 1, amplitude=AMP, width=WIDTH)  # a cell pulse still works
    assert chip.ledger == [LedgerEntry(0, 1, 1, 1)]


def test_stopped_board_times_out_naming_port_and_command(link) -> None:
    board, client = link(timeout=0.05, retries=3)
    client.identify()
    board.stop()
    t0 = time.monotonic()
    with pytest.raises(BoardTimeout) as info:
        client.pulse((0, 0), +1, 1, amplitude=AMP, width=WIDTH)
    elapsed = time.monotonic() - t0
    assert elapsed < 2 * 0.05 * 4 + 0.3
    err = info.value
    assert err.port == board.port and board.port in str(err) and "Pulse" in str(err)
    assert isinstance(err, BoardError) and isinstance(err, TimeoutError)


def test_silent_board_times_out_without_executing(link, chip) -> None:
    board, client = link(fault=FaultConfig(drop_in=1.0), timeout=0.03, retries=4)
    t0 = time.monotonic()
    with pytest.raises(BoardTimeout, match="Identify"):
        client.identify()
    assert time.monotonic() - t0 < 2 * 0.03 * 5 + 0.3
    assert client.stats.attempts == 5 and client.stats.timeouts == 5
    assert board.stats.dropped_in == 5 and board.cache.executions == 0


def test_late_replies_are_discarded_and_pulses_applied_once(link, chip) -> None:
    # Every reply comes after the client has given up waiting: it retries, the board answers the
    # retries from its cache, and the late answers to earlier attempts are discarded.
    board, client = link(fault=FaultConfig(delay=0.03, delay_rate=0.5, seed=5), timeout=0.02)
    for i in range(10):
        client.pulse((i % ROWS, i % COLS), +1, 2, amplitude=AMP, width=WIDTH)
    assert chip.ledger == [LedgerEntry(i % ROWS, i % COLS, 1, 2) for i in range(10)]
    assert board.cache.executions == 10 and board.cache.hits > 0
    assert client.stats.retries > 0


# ---------------------------------------------------------------------------------------------
# Property: random request sequences under random faults never execute a pulse twice

_ops = st.one_of(
    st.tuples(st.just("pulse"), st.integers(0, ROWS - 1), st.integers(0, COLS - 1),
              st.sampled_from([-1, 1]), st.integers(1, 4)),
    st.tuples(st.just("mask"), st.frozensets(st.integers(0, ROWS - 1), min_size=1),
              st.frozensets(st.integers(0, COLS - 1), min_size=1), st.sampled_from([-1, 1]),
              st.integers(1, 3)),
    st.tuples(st.just("read"), st.integers(0, ROWS - 1), st.integers(0, COLS - 1)),
    st.tuples(st.just("select"), st.integers(0, ROWS - 1), st.integers(0, COLS - 1)),
    st.tuples(st.just("identify")),
    st.tuples(st.just("bad"), st.integers(ROWS, ROWS + 3)),
)
_rate = st.sampled_from([0.0, 0.02, 0.05, 0.1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_ops, min_size=1, max_size=15), drop_in=_rate, drop_out=_rate, corrupt_in=_rate,
       corrupt_out=_rate, delayed=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2**16))
def test_random_requests_under_random_faults_never_pulse_twice(ops, drop_in, drop_out, corrupt_in,
                                                               corrupt_out, delayed, seed) -> None:
    chip = EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, seed=1))
    fault = FaultConfig(drop_in=drop_in, drop_out=drop_out, corrupt_in=corrupt_in,
                        corrupt_out=corrupt_out, delay=0.03, delay_rate=delayed, seed=seed)
    intended: list[LedgerEntry] = []
    with SimulatedBoard(chip, fault=fault) as board, \
            BoardClient(board.port, timeout=0.02, retries=30, limits=LIMITS) as client:
        client.identify()  # reads check their reply's shape against the geometry
        for op in ops:
            kind = op[0]
            if kind == "pulse":
                _, r, c, pol, n = op
                client.pulse((r, c), pol, n, amplitude=AMP, width=WIDTH)
                intended.append(LedgerEntry(r, c, pol, n))
            elif kind == "mask":
                _, rows, cols, pol, n = op
                client.pulse_masks(rows, cols, pol, n, amplitude=AMP, width=WIDTH)
                intended += [LedgerEntry(r, c, pol, n) for r in rows for c in cols]
            elif kind == "read":
                assert client.read_cell(op[1], op[2]) > 0
            elif kind == "select":
                client.select("cell", op[1], op[2])
            elif kind == "identify":
                assert client.identify().rows == ROWS
            else:
                with pytest.raises(BoardError, match="out_of_range"):
                    client.pulse((op[1], 0), +1, 1, amplitude=AMP, width=WIDTH)
        assert board.cache.executions == client.stats.requests == len(ops) + 1

    def key(e: LedgerEntry) -> tuple[int, int, int, int]:
        return (e.row, e.col, e.polarity, e.count)

    assert sorted(chip.ledger, key=key) == sorted(intended, key=key)
