"""The board's analog MVM over the wire: BoardClient.mvm against the simulated board, the limits
checked before the wire, batches split into frames, and what an old or incapable board says."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.board import BoardClient, BoardError
from drivers.limits import LimitError
from protocols import board as pb
from protocols.station import StationLimits
from sim.instruments.board import ALL_CAPABILITIES, BoardLimits, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.mvm import MvmSettings

LIMITS = StationLimits(max_read_voltage=0.5)
EXACT = MvmSettings(adc_bits=24)


def _chip() -> EmulatedChip:
    chip = EmulatedChip(ChipConfig(rows=6, cols=8, read_noise=0.0, seed=2))
    chip.pulse((np.array([0, 3, 5]), np.array([1, 4, 7])), +1, 30, 1.5, 1e-6)
    return chip


@pytest.fixture
def link():
    chip = _chip()
    with SimulatedBoard(chip, mvm=EXACT) as board, \
            BoardClient(board.port, timeout=0.2, retries=3, limits=LIMITS) as client:
        yield board, client, chip


def _mvms(board: SimulatedBoard) -> list[pb.Mvm]:
    return [m for m in board.requests if isinstance(m, pb.Mvm)]


def test_mvm_and_its_transpose_are_the_chip_conductances_times_the_voltages(link) -> None:
    board, client, chip = link
    g = chip.conductance()
    rows, cols = np.array([5, 0, 3]), np.array([1, 2, 4, 7])
    v = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 3))
    step = 2.4e-4 / 2**23  # ADC range 0.24 mA, 24 bits
    out = client.mvm("row", rows, cols, v[:, np.argsort(rows)], integration_time=1e-6,
                     adc_range=2.4e-4)
    np.testing.assert_allclose(out, v[:, np.argsort(rows)] @ g[np.ix_(np.sort(rows), cols)],
                               atol=step)
    w = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 4))
    back = client.mvm("column", cols, rows, w, integration_time=1e-6, adc_range=2.4e-4)
    np.testing.assert_allclose(back, w @ g[np.ix_(np.sort(rows), cols)].T, atol=step)
    assert [m.drive for m in _mvms(board)] == [pb.Axis.ROW, pb.Axis.COLUMN]


def test_a_large_batch_goes_in_as_few_frames_as_the_payload_allows() -> None:
    """8 driven lines: about 2,000 vectors fit a 65,535-byte payload, so 2,100 take two frames
    on a link fast enough to carry 65,535 bytes in half the timeout."""
    chip = _chip()
    with SimulatedBoard(chip, mvm=EXACT) as board, \
            BoardClient(board.port, timeout=0.2, retries=3, limits=LIMITS, baudrate=10_000_000) as client:
        assert client.payload_budget() == pb.DEFAULT_MAX_PAYLOAD
        v = np.full((2100, 8), 0.1)
        out = client.mvm("column", np.arange(8), np.arange(6), v, integration_time=1e-6,
                         adc_range=1e-3)
    assert out.shape == (2100, 6)
    np.testing.assert_allclose(out[0], 0.1 * chip.conductance().sum(axis=1), atol=1e-3 / 2**23)
    frames = _mvms(board)
    assert len(frames) == 2 and sum(len(m.voltages) for m in frames) == 2100
    assert all(len(pb.encode_message(m)[1]) <= pb.DEFAULT_MAX_PAYLOAD for m in frames)
    assert len(pb.encode_message(frames[0])[1]) > pb.DEFAULT_MAX_PAYLOAD - 4 * 8 - 32  # full


def test_a_slow_link_gets_frames_it_carries_within_the_timeout(link) -> None:
    """115,200 baud and a 0.2 s timeout: 11,520 bytes a second, so at most 1,152 payload bytes
    a frame (half the timeout), in each direction."""
    board, client, _ = link
    assert client.payload_budget() == 1152
    out = client.mvm("row", np.arange(6), np.arange(8), np.full((100, 6), 0.1),
                     integration_time=1e-6, adc_range=1e-3)
    assert out.shape == (100, 8)
    frames = _mvms(board)
    assert sum(len(m.voltages) for m in frames) == 100 and len(frames) == 3  # 35 + 35 + 30
    assert all(len(pb.encode_message(m)[1]) <= 1152 and 4 + 32 * len(m.voltages) <= 1152
               for m in frames)


@pytest.mark.parametrize(("voltages", "kwargs", "quantity"), [
    (np.full((1, 2), float(np.nextafter(0.5, 1.0))), {}, "read voltage"),  # one ulp beyond
    (np.array([[0.1, -0.6]]), {}, "read voltage"),
    (np.array([[0.1, np.nan]]), {}, "read voltage"),
    (np.array([[0.1, 0.2]]), {"integration_time": 0.0}, "integration time"),
    (np.array([[0.1, 0.2]]), {"integration_time": 2.0}, "integration time"),
    (np.array([[0.1, 0.2]]), {"adc_range": 0.0}, "ADC range"),
    (np.array([[0.1, 0.2]]), {"adc_range": 0.2}, "ADC range"),
    (np.array([[0.1, 0.2]]), {"adc_range": float("inf")}, "ADC range"),
])
def test_values_beyond_the_limits_are_refused_before_the_wire(link, voltages, kwargs, quantity) -> None:
    board, client, _ = link
    client.identify()
    since = len(board.requests)
    settings = {"integration_time": 1e-6, "adc_range": 1e-3, **kwargs}
    with pytest.raises(LimitError, match=quantity) as info:
        client.mvm("row", np.array([0, 1]), np.array([0]), voltages, **settings)
    assert board.port in str(info.value) and "nothing was sent" in str(info.value)
    assert len(board.requests) == since


def test_voltages_exactly_at_the_limit_are_sent_within_it(link) -> None:
    board, client, _ = link
    client.mvm("row", np.array([0, 1]), np.array([0]), np.array([[0.5, -0.5], [0.3, 0.0]]),
               integration_time=1e-6, adc_range=1e-3)
    (sent,) = _mvms(board)
    assert sent.voltages[0] == (0.5, -0.5) and abs(sent.voltages[1][0]) <= 0.5
    assert client.errors() == []


def test_a_raw_mvm_beyond_the_limits_is_refused_too(link) -> None:
    board, client, _ = link
    since = len(board.requests)
    with pytest.raises(LimitError, match="float32"):
        client.request(pb.Mvm("row", {0}, {0}, [[0.6]], 1e-6, 1e-3))
    assert len(board.requests) == since


def test_the_board_refuses_voltages_beyond_its_own_limit() -> None:
    """A host with a wider station limit than the board's: the board answers out of range."""
    with SimulatedBoard(_chip(), limits=BoardLimits(max_read_voltage=0.2)) as board, \
            BoardClient(board.port, timeout=0.2, retries=1, limits=LIMITS) as client, \
            pytest.raises(BoardError, match="out_of_range"):
        client.mvm("row", np.array([0]), np.array([0]), np.array([[0.3]]),
                   integration_time=1e-6, adc_range=1e-3)


def test_an_old_board_says_it_speaks_protocol_1() -> None:
    """A board built before protocol 2 reports no analog_mvm, so mvm() sends nothing; a raw MVM
    frame gets NACK bad_version, reported with the port, the command and the versions."""
    with SimulatedBoard(_chip(), protocol=1) as board, \
            BoardClient(board.port, timeout=0.2, retries=1, limits=LIMITS) as client:
        assert pb.Capability.ANALOG_MVM not in client.identify().capabilities
        with pytest.raises(BoardError, match="analog_mvm") as info:
            client.mvm("row", np.array([0]), np.array([0]), np.array([[0.1]]),
                       integration_time=1e-6, adc_range=1e-3)
        assert board.port in str(info.value) and "nothing was sent" in str(info.value)
        assert not _mvms(board)
        with pytest.raises(BoardError) as raw:
            client.request(pb.Mvm("row", {0}, {0}, [[0.1]], 1e-6, 1e-3))
        message = str(raw.value)
        assert board.port in message and "Mvm" in message and raw.value.nack is pb.NackCode.BAD_VERSION
        assert "the board speaks protocol 1; Mvm (analog MVM) needs 2" in message
        client.read_cell(0, 0, 0.1)  # every version-1 exchange still works


def test_a_board_without_the_capability_answers_unsupported() -> None:
    with SimulatedBoard(_chip(), capabilities=ALL_CAPABILITIES & ~pb.Capability.ANALOG_MVM) as board, \
            BoardClient(board.port, timeout=0.2, retries=1, limits=LIMITS) as client, \
            pytest.raises(BoardError, match="unsupported"):
        client.request(pb.Mvm("row", {0}, {0}, [[0.1]], 1e-6, 1e-3))
