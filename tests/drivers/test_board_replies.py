"""The board client checks every reply's shape against its request, refuses pulses and reads
without station limits, and reports its link counters (over a real pty and pyserial)."""

from __future__ import annotations

import pytest

from drivers.board import BoardClient, BoardError, BoardTimeout
from drivers.limits import LimitError
from protocols import board as pb
from protocols.station import StationLimits
from sim.instruments.board import FaultConfig, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip

ROWS, COLS = 3, 5
LIMITS = StationLimits(max_pulse_amplitude=3.0, max_read_voltage=0.5, max_burst_count=100)


@pytest.fixture
def board():
    chip = EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, seed=2))
    with SimulatedBoard(chip) as sim:
        yield sim


@pytest.fixture
def client(board):
    with BoardClient(board.port, timeout=0.05, retries=3, limits=LIMITS) as c:
        yield c


@pytest.mark.parametrize("mode,row,col,expected", [
    ("cell", 1, 2, (1, 1)), ("row", 1, None, (1, COLS)), ("column", None, 2, (ROWS, 1)),
    ("array", None, None, (ROWS, COLS)),
])
def test_reads_have_the_shape_of_their_request(client, mode, row, col, expected):
    assert client.read(mode, row, col, voltage=0.2).shape == expected


@pytest.mark.parametrize("mode,row,col,expected", [
    ("cell", 1, 2, (1, 1)), ("row", 1, None, (1, COLS)), ("column", None, 2, (ROWS, 1)),
    ("array", None, None, (ROWS, COLS)),
])
def test_a_reply_of_the_wrong_shape_is_a_board_error_not_data(board, client, mode, row, col, expected):
    board.read_shape = (1, 2)  # the right sequence number and type, the wrong content
    with pytest.raises(BoardError) as info:
        client.read(mode, row, col, voltage=0.2)
    err = info.value
    assert not isinstance(err, BoardTimeout)
    assert err.port == board.port and board.port in str(err) and "Read" in str(err)
    assert f"expected a reply of shape {expected}, received shape (1, 2)" in str(err)
    assert "Read" in err.command and mode in err.command
    assert client.stats.retries == 0  # not retried: the board's reply cache would answer the same
    assert client.stats.requests == 2  # the first Identify, the Read
    with pytest.raises(BoardError, match="received shape"):
        client.read_cell(0, 0, voltage=0.1)


def test_the_client_identifies_before_its_first_read(board, client):
    client.read("row", 0, voltage=0.1)
    assert [type(m).__name__ for m in board.requests] == ["Identify", "Read"]


def test_an_identify_reply_without_rows_or_columns_is_a_board_error(board, client):
    board.identify_geometry = (0, COLS)
    with pytest.raises(BoardError, match=r"at least 1 x 1, received 0 x 5") as info:
        client.identify()
    assert board.port in str(info.value) and "Identify" in str(info.value)
    with pytest.raises(BoardError, match="received 0 x 5"):
        client.read("array", voltage=0.1)  # needs the geometry, which is not sane


def test_a_wrong_geometry_makes_every_parallel_read_refused(board, client):
    board.identify_geometry = (ROWS + 1, COLS)  # claims a row the chip does not have
    with pytest.raises(BoardError, match=rf"expected a reply of shape \({ROWS + 1}, {COLS}\)"):
        client.read("array", voltage=0.1)


def test_without_limits_the_client_identifies_but_never_pulses_or_reads(board):
    with BoardClient(board.port, timeout=0.05, retries=2) as bare:
        assert bare.identify().rows == ROWS
        bare.reset()
        bare.select("cell", 0, 0)
        bare.route(pulse=("row", 0))
        assert bare.errors() == []
        before = len(board.requests)
        for call in (lambda: bare.pulse((0, 0), +1, 1, amplitude=1.0, width=1e-6),
                     lambda: bare.pulse_masks({0}, {0}, +1, 1, amplitude=1.0, width=1e-6),
                     lambda: bare.read("array", voltage=0.1), lambda: bare.read_cell(0, 0, 0.1),
                     lambda: bare.request(pb.Pulse(1, 1, 1.0, 1e-6, pb.CellTarget(0, 0))),
                     lambda: bare.request(pb.Read(pb.ReadMode.CELL, 0, 0, 0.1))):
            with pytest.raises(LimitError, match="no station limits") as info:
                call()
            assert board.port in str(info.value)
        assert len(board.requests) == before


def test_reset_is_the_boards_safe_state(board, client):
    client.select("cell", 1, 1)
    client.route(pulse=("row", 1), smu=("column", 1))
    assert board.chip.routing.pulse_cell == (1, 1)
    client.reset()
    assert board.selection is None and board.routes == pb.Route()
    assert (board.chip.routing.pulse_cell, board.chip.routing.smu_cell) == (None, None)


def test_link_stats_report_retries_and_timeouts():
    chip = EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, seed=2))
    with SimulatedBoard(chip, fault=FaultConfig(drop_in=0.5, seed=4)) as lossy, \
            BoardClient(lossy.port, timeout=0.02, retries=30, limits=LIMITS) as c:
        for _ in range(10):
            c.identify()
        stats = c.link_stats()
    assert {"retries", "timeouts", "reconnects", "corrupt_replies", "transient_nacks"} <= set(stats)
    assert stats["retries"] == stats["timeouts"] > 0 and stats["reconnects"] == 0
    assert stats["requests"] == 10 and stats["attempts"] == 10 + stats["retries"]
