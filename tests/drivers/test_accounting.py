"""Operation accounting at the cell-access boundary and at the transports: the counting access
totals what passed through it, and the board client and the SCPI base count one round trip per
answered request, retries apart, and the time spent waiting in their request calls."""

from __future__ import annotations

import time

import numpy as np
import pytest
from driver_helpers import FAST, LIMITS
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.accounting import CountingAccess
from drivers.board import BoardClient, BoardError
from drivers.pulse_generator import PulseGenerator
from drivers.smu import Smu
from sim.instruments.board import FaultConfig, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip

AMP, WIDTH = 1.5, 1e-6  # above the chip's set threshold, within LIMITS


class FakeAccess:
    """A cell access that records its calls and answers with zeros."""

    parallel_update = True
    read_voltage = 0.1

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def pulse_cells(self, rows, cols, polarity, counts) -> None:
        self.calls.append(("pulse_cells", (rows.tolist(), cols.tolist(), polarity, counts.tolist())))

    def pulse_masks(self, rows, cols, polarity) -> None:
        self.calls.append(("pulse_masks", (rows.tolist(), cols.tolist(), polarity)))

    def pulse_mask_train(self, slots) -> None:
        for rows, cols, polarity in slots:
            self.pulse_masks(rows, cols, polarity)

    def read_cells(self, rows, cols):
        self.calls.append(("read_cells", (rows.tolist(), cols.tolist())))
        return np.zeros(rows.size)


class FakeMvmAccess(FakeAccess):
    """A fake with an analog MVM and transports of its own that say what they did."""

    parallel_mvm = True

    def mvm(self, voltages, drive, rows, cols):
        self.calls.append(("mvm", (voltages.shape, drive, rows.tolist(), cols.tolist())))
        return np.zeros((voltages.shape[0], cols.size))

    def round_trips(self) -> int:
        return 1000 + len(self.calls)

    def wait_seconds(self) -> float:
        return 2.5


_index = st.lists(st.integers(0, 7), min_size=0, max_size=6)
_call = st.one_of(
    st.tuples(st.just("pulse_cells"), st.lists(st.integers(0, 50), min_size=0, max_size=6)),
    st.tuples(st.just("pulse_masks"), _index, _index),
    st.tuples(st.just("read_cells"), _index),
    st.tuples(st.just("mvm"), st.integers(1, 5), st.integers(1, 4)),
)


@settings(max_examples=60, deadline=None)
@given(calls=st.lists(_call, max_size=20), with_mvm=st.booleans())
def test_the_totals_are_the_sums_of_the_calls(calls, with_mvm) -> None:
    """Whatever the sequence of calls, pulses are the summed counts plus rows x cols per mask
    pulse, cell reads the cells asked for, MVMs the input vectors; the wrapped access received
    exactly the calls made, with the same arguments."""
    fake = FakeMvmAccess() if with_mvm else FakeAccess()
    counted = CountingAccess(fake)
    pulses = reads = mvms = made = 0
    expected = []
    for call in calls:
        kind = call[0]
        if kind == "pulse_cells":
            counts = np.array(call[1], dtype=np.int64)
            cells = np.arange(counts.size, dtype=np.intp)
            counted.pulse_cells(cells, cells, -1, counts)
            expected.append((kind, (cells.tolist(), cells.tolist(), -1, counts.tolist())))
            pulses += int(counts.sum())
        elif kind == "pulse_masks":
            rows, cols = np.array(call[1], dtype=np.intp), np.array(call[2], dtype=np.intp)
            counted.pulse_masks(rows, cols, +1)
            expected.append((kind, (rows.tolist(), cols.tolist(), +1)))
            pulses += rows.size * cols.size
        elif kind == "read_cells":
            cells = np.array(call[1], dtype=np.intp)
            assert counted.read_cells(cells, cells).shape == (cells.size,)
            expected.append((kind, (cells.tolist(), cells.tolist())))
            reads += cells.size
        elif with_mvm:
            voltages = np.zeros((call[1], call[2]))
            driven = np.arange(call[2], dtype=np.intp)
            assert counted.mvm(voltages, "rows", driven, driven).shape == (call[1], call[2])
            expected.append((kind, (voltages.shape, "rows", driven.tolist(), driven.tolist())))
            mvms += call[1]
        else:
            continue
        made += 1
    assert fake.calls == expected
    totals = counted.operations()
    assert (totals.pulses, totals.cell_reads, totals.mvms) == (pulses, reads, mvms)
    assert counted.calls == made and counted.parallel_mvm is with_mvm
    if with_mvm:  # the access's own transports say
        assert (totals.round_trips, totals.wait_seconds) == (1000 + made, 2.5)
    else:  # one round trip per call, and the time inside the calls
        assert (totals.round_trips, totals.wait_seconds) == (made, counted.access_seconds)


def test_an_access_without_transports_is_charged_its_call_time() -> None:
    class Slow(FakeAccess):
        def read_cells(self, rows, cols):
            time.sleep(0.02)
            return super().read_cells(rows, cols)

    counted = CountingAccess(Slow())
    cells = np.arange(3, dtype=np.intp)
    t0 = time.perf_counter()
    for _ in range(3):
        counted.read_cells(cells, cells)
    elapsed = time.perf_counter() - t0
    assert 0.06 <= counted.operations().wait_seconds <= elapsed
    assert counted.read_voltage == 0.1 and counted.parallel_update is True


def test_a_call_that_fails_is_timed_but_not_counted() -> None:
    class Failing(FakeAccess):
        def pulse_cells(self, rows, cols, polarity, counts) -> None:
            raise BoardError("board gone", port="p", command="Pulse")

    counted = CountingAccess(Failing())
    cells = np.arange(2, dtype=np.intp)
    with pytest.raises(BoardError):
        counted.pulse_cells(cells, cells, +1, np.array([3, 4]))
    assert (counted.pulses, counted.calls) == (0, 0) and counted.access_seconds > 0
    assert counted.parallel_mvm is False  # an access without the attribute has no MVM


# -- the board client ------------------------------------------------------------------------


@pytest.fixture
def chip() -> EmulatedChip:
    return EmulatedChip(ChipConfig(rows=4, cols=8, seed=2))


def test_the_board_client_counts_one_round_trip_per_answered_request(chip) -> None:
    """On a clean link every request the board received is one round trip; a NACK is an
    answer too."""
    with SimulatedBoard(chip) as board, BoardClient(board.port, timeout=0.5, limits=LIMITS) as client:
        client.identify()
        client.pulse((1, 2), +1, 3, amplitude=AMP, width=WIDTH)
        client.pulse_masks([0, 1], [2, 3, 4], -1, amplitude=AMP, width=WIDTH)
        client.read("array", voltage=0.1)
        with pytest.raises(BoardError, match="NACK"):
            client.read("row", row=99, voltage=0.1)  # the board refuses: out of range
        stats = client.link_stats()
        assert stats["round_trips"] == len(board.requests) == stats["requests"] == 5
    assert stats["retries"] == 0 and stats["attempts"] == 5


def test_a_retry_after_a_dropped_reply_is_not_another_round_trip(chip) -> None:
    """The board drops 30% of its replies (seeded): every request still counts once, the
    resends are the retries, and the pulses land once each; the time waited covers the
    timeouts and lies within the wall time."""
    fault = FaultConfig(drop_out=0.3, seed=7)
    t0 = time.perf_counter()
    with SimulatedBoard(chip, fault=fault) as board, \
            BoardClient(board.port, timeout=0.03, retries=30, limits=LIMITS) as client:
        client.identify()
        for i in range(20):
            client.pulse((i % 4, i % 8), +1, 2, amplitude=AMP, width=WIDTH)
        stats = client.link_stats()
        dropped = board.stats.dropped_out
    elapsed = time.perf_counter() - t0
    assert dropped > 0 and stats["retries"] >= dropped
    assert stats["round_trips"] == stats["requests"] == 21
    assert stats["attempts"] == 21 + stats["retries"]
    assert sum(entry.count for entry in chip.ledger) == 40  # each pulse applied once
    assert 0.03 * stats["timeouts"] <= stats["wait_seconds"] <= elapsed


# -- the SCPI base ---------------------------------------------------------------------------


def test_an_scpi_instrument_counts_each_command_once(pg, pg_sim) -> None:
    """On a clean link each message the instrument received is one round trip: the connect's
    *IDN? and error-queue drain, writes and queries alike."""
    pg.write("OUTP OFF")
    assert pg.query("FUNC?") == "SIN"  # answered after the write: the write has arrived
    stats = pg.link_stats()
    assert stats["round_trips"] == pg_sim.message_count >= 4
    pg_sim.faults.reply_delay = 0.05
    pg.query("*OPC?")
    assert pg.link_stats()["wait_seconds"] - stats["wait_seconds"] >= 0.05


def test_an_scpi_retry_is_not_another_round_trip(pg, pg_sim) -> None:
    """30% of the queries go unanswered (seeded): each of 15 queries counts once, the
    unanswered attempts are retries, and each reconnect adds its own exchange, the *IDN?."""
    before = pg.link_stats()
    pg_sim.faults.ignore_fraction = 0.3
    pg.retries = 5
    assert all(pg.query("FUNC?") == "SIN" for _ in range(15))
    after = pg.link_stats()
    reconnects = after["reconnects"] - before["reconnects"]
    assert after["retries"] - before["retries"] == reconnects > 0
    assert after["round_trips"] - before["round_trips"] == 15 + reconnects


def test_a_connect_counts_its_identification(pg_sim, smu_sim) -> None:
    """The identification of a connection is wire work too (the SMU also asks *LANG?)."""
    for driver, sim in ((PulseGenerator, pg_sim), (Smu, smu_sim)):
        instrument = driver(sim.resource, LIMITS, **FAST)
        try:
            instrument.connect()
            instrument.query("*OPC?")
            assert instrument.round_trips == sim.message_count  # *IDN?, ..., *OPC?
            assert instrument.wait_seconds > 0
        finally:
            instrument.close()
