"""Pulse trains (PULSE_TRAIN, protocol 2) end to end: BoardClient -> pyserial -> pty ->
SimulatedBoard -> chip, and the lab tile's coincidence updates through them.

The yardstick throughout is the same pulses sent one mask PULSE at a time to an identical chip
(same seed): a train must leave the same ledgers and the same weights, bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest
from pydantic import ValidationError

from drivers.backend import LabBackend
from drivers.board import BoardClient, BoardError
from drivers.limits import LimitError
from hilctl.config import TileConfig, device_config, no_variation
from protocols import board as pb
from protocols.station import StationConfig, StationLimits
from sim.instruments.board import ALL_CAPABILITIES, FaultConfig, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.disturb import DisturbSettings
from sim.instruments.station import SimStationSpec, SimulatedStation

ROWS, COLS = 6, 8
AMP, WIDTH = 1.5, 1e-6  # above the chip's set threshold
LIMITS = StationLimits(max_pulse_amplitude=10.0, max_read_voltage=2.0, max_burst_count=1000)
DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}
NO_TRAIN = ALL_CAPABILITIES & ~pb.Capability.PULSE_TRAIN


def make_chip(disturb: float = 0.0, rows: int = ROWS, cols: int = COLS) -> EmulatedChip:
    return EmulatedChip(ChipConfig(rows=rows, cols=cols, seed=5, read_noise=1e-10,
                                   device=device_config("soft-bounds", **DEVICE),
                                   disturb=DisturbSettings(rate=disturb)))


@contextmanager
def client_on(chip: EmulatedChip, *, timeout: float = 0.2, baudrate: int = 115200,
              **board_kwargs) -> Iterator[tuple[SimulatedBoard, BoardClient]]:
    with SimulatedBoard(chip, **board_kwargs) as board, \
            BoardClient(board.port, timeout=timeout, baudrate=baudrate, limits=LIMITS) as client:
        yield board, client


def random_slots(n: int, seed: int) -> list[tuple[list[int], list[int], int]]:
    """``n`` slots of random non-empty row and column masks and polarities."""
    rng = np.random.default_rng(seed)
    return [(sorted(rng.choice(ROWS, int(rng.integers(1, ROWS + 1)), replace=False).tolist()),
             sorted(rng.choice(COLS, int(rng.integers(1, COLS + 1)), replace=False).tolist()),
             int(rng.choice([-1, 1]))) for _ in range(n)]


def trains(board: SimulatedBoard) -> list[pb.PulseTrain]:
    return [m for m in board.requests if isinstance(m, pb.PulseTrain)]


# ---------------------------------------------------------------------------------------------
# The board


@pytest.mark.parametrize("bias", ["v/2", "v/3", "float"])
@pytest.mark.parametrize("disturb", [0.0, 0.3], ids=["no-disturb", "disturb"])
def test_a_train_applies_exactly_what_mask_pulses_one_by_one_apply(disturb, bias) -> None:
    """Two chips of the same seed: one takes 40 slots as one PULSE_TRAIN, the other the same
    slots as 40 mask PULSEs; the pulse ledgers, the disturb ledgers and the weights are equal
    bit for bit (the same chip calls in the same order draw the same random numbers). With
    disturb on, half-selected cells did move (else the comparison would prove nothing)."""
    slots = random_slots(40, seed=1)
    chips = [make_chip(disturb), make_chip(disturb)]
    with client_on(chips[0]) as (board, client):
        client.select("cell", 0, 0, bias)
        client.pulse_train(slots, amplitude=AMP, width=WIDTH)
        assert len(trains(board)) == 1 and not any(isinstance(m, pb.Pulse) for m in board.requests)
    with client_on(chips[1]) as (_, client):
        client.select("cell", 0, 0, bias)
        for rows, cols, polarity in slots:
            client.pulse_masks(rows, cols, polarity, amplitude=AMP, width=WIDTH)
    assert chips[0].ledger == chips[1].ledger and len(chips[0].ledger) > 40
    assert chips[0].disturbs == chips[1].disturbs
    assert bool(chips[0].disturbs) == (disturb > 0)
    np.testing.assert_array_equal(chips[0].weights(), chips[1].weights())


@pytest.mark.parametrize(
    ("slots", "amplitude", "width", "quantity"),
    [
        ([([0], [0], 1)], 10.5, WIDTH, "amplitude"),  # beyond the station's 10 V
        ([([0], [0], 1)], AMP, 2e-3, "width"),  # beyond the station's 1 ms
        ([([0], [0], 1), ([ROWS], [0], 1)], AMP, WIDTH, "row index"),  # beyond the array
        ([([0], [0], 1), ([0], [0, COLS], -1)], AMP, WIDTH, "column index"),
    ],
)
def test_limits_and_lines_are_refused_before_the_wire(slots, amplitude, width, quantity) -> None:
    """A train beyond the station's limits or the board's array raises LimitError naming the
    quantity; no PULSE_TRAIN reached the board and no cell moved."""
    chip = make_chip()
    with client_on(chip) as (board, client):
        with pytest.raises(LimitError, match=quantity):
            client.pulse_train(slots, amplitude=amplitude, width=width)
        assert trains(board) == [] and chip.ledger == []


def test_the_board_checks_the_whole_train_before_it_applies_any_slot() -> None:
    """Raw frames past the host's checks: an amplitude beyond the board's 5 V, and a train whose
    second slot leaves the array, are refused with out_of_range and apply nothing."""
    chip = make_chip()
    with client_on(chip) as (_, client):
        good = pb.TrainSlot(1, pb.MaskTarget({0, 1}, {2}))
        for request in (pb.PulseTrain(6.0, WIDTH, (good,)),
                        pb.PulseTrain(AMP, WIDTH, (good, pb.TrainSlot(-1, pb.MaskTarget({ROWS}, {0}))))):
            with pytest.raises(BoardError) as err:
                client.request(request)
            assert err.value.nack is pb.NackCode.OUT_OF_RANGE
        assert chip.ledger == []


def test_a_board_without_the_capability_or_of_protocol_1_gets_no_train() -> None:
    """Capability off: the client refuses before sending (BoardError unsupported, nothing sent).
    A protocol-1 board does not report it either, and answers a raw PULSE_TRAIN frame with
    bad_version, which the client reports as "the board speaks protocol 1"."""
    for kwargs in ({"capabilities": NO_TRAIN}, {"protocol": 1}):
        chip = make_chip()
        with client_on(chip, **kwargs) as (board, client):
            with pytest.raises(BoardError, match="pulse_train capability") as err:
                client.pulse_train([([0], [0], 1)], amplitude=AMP, width=WIDTH)
            assert err.value.nack is pb.NackCode.UNSUPPORTED and trains(board) == []
            raw = pb.PulseTrain(AMP, WIDTH, (pb.TrainSlot(1, pb.MaskTarget({0}, {0})),))
            with pytest.raises(BoardError) as err:
                client.request(raw)
            if "protocol" in kwargs:
                assert err.value.nack is pb.NackCode.BAD_VERSION
                assert "the board speaks protocol 1; PulseTrain (pulse trains) needs 2" in str(err.value)
            else:
                assert err.value.nack is pb.NackCode.UNSUPPORTED
            assert chip.ledger == []


def test_a_long_train_is_split_into_frames_the_link_carries() -> None:
    """9,600 baud and a 0.2 s timeout: the 1,024-byte floor of the payload budget. 400 slots of
    about 7 bytes go out as several frames, in order, each within the budget, and the chip gets
    what the mask pulses one by one would give it."""
    slots = random_slots(400, seed=2)
    chips = [make_chip(), make_chip()]
    with client_on(chips[0], baudrate=9600) as (board, client):
        assert client.payload_budget() == 1024
        client.pulse_train(slots, amplitude=AMP, width=WIDTH)
        frames = trains(board)
    assert len(frames) >= 3 and sum(len(f.slots) for f in frames) == 400
    assert all(len(pb.encode_message(f)[1]) <= 1024 for f in frames)
    with client_on(chips[1]) as (_, client):
        for rows, cols, polarity in slots:
            client.pulse_masks(rows, cols, polarity, amplitude=AMP, width=WIDTH)
    assert chips[0].ledger == chips[1].ledger
    np.testing.assert_array_equal(chips[0].weights(), chips[1].weights())


def test_trains_over_a_lossy_link_are_applied_exactly_once() -> None:
    """10% of frames dropped and 10% corrupted each way (seeded): 150 trains of 5 slots each,
    retried with the same sequence number, leave the chip ledger of the same slots sent as mask
    pulses to a clean link; every train frame executed once, retries answered from the cache."""
    slots = random_slots(750, seed=3)
    chips = [make_chip(), make_chip()]
    fault = FaultConfig.symmetric(drop=0.1, corrupt=0.1, seed=11)
    with client_on(chips[0], timeout=0.02, fault=fault) as (board, client):
        for k in range(0, 750, 5):
            client.pulse_train(slots[k:k + 5], amplitude=AMP, width=WIDTH)
        assert board.cache.hits > 0 and client.stats.retries > 10
        executed = board.cache.executions
    assert executed == 150 + 1  # the trains and the client's Identify
    with client_on(chips[1]) as (_, client):
        for rows, cols, polarity in slots:
            client.pulse_masks(rows, cols, polarity, amplitude=AMP, width=WIDTH)
    assert chips[0].ledger == chips[1].ledger
    np.testing.assert_array_equal(chips[0].weights(), chips[1].weights())


# ---------------------------------------------------------------------------------------------
# The lab tile


def lab_station(chip: EmulatedChip, port: str) -> StationConfig:
    rows, cols = chip.shape
    return StationConfig.model_validate({
        "board": {"port": port, "timeout": 0.2},
        "chip": {"rows": rows, "cols": cols},
        "tiles": [{"name": "t", "rows": rows, "cols": cols}],
        "write": {"bias": "v/3"},
        "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale, "dw_min": 0.01}})


@pytest.mark.parametrize("board", [{"capabilities": NO_TRAIN}, {"protocol": 1}],
                         ids=["capability-off", "protocol-1"])
def test_lab_updates_through_trains_equal_the_per_slot_fallback(board) -> None:
    """The same lab tile updates (seeded pulse trains, disturb on) on two chips of one seed: as
    one PULSE_TRAIN per sample where the board offers it, as mask PULSEs per slot where it
    does not (capability off, or a board of protocol 1). Same ledgers, same weights; the train
    path used far fewer round trips; the accounting's pulses equal the chip's pulse ledger."""
    rng = np.random.default_rng(4)
    samples = [(rng.standard_normal((1, COLS)), rng.standard_normal((1, ROWS))) for _ in range(6)]
    chips, results = [make_chip(0.3), make_chip(0.3)], []
    for chip, kwargs in zip(chips, ({}, board), strict=True):
        with ExitStack() as stack:
            sim = stack.enter_context(SimulatedBoard(chip, **kwargs))
            lab = stack.enter_context(LabBackend())
            station = lab_station(chip, sim.port)
            tile = lab.open_tile(TileConfig(rows=ROWS, cols=COLS, seed=9), station=station)
            trips = tile.access.round_trips()
            for x, d in samples:
                tile.update(x, d, 0.5)
            results.append((tile.access.round_trips() - trips, tile.access.pulses,
                            len(trains(sim)), sum(isinstance(m, pb.Pulse) for m in sim.requests)))
    (train_trips, train_pulses, n_trains, train_masks), (slot_trips, slot_pulses, _, n_masks) = results
    assert n_trains == len(samples) and train_masks == 0 and n_masks > 4 * len(samples)
    assert train_trips == len(samples) + 1  # the trains and the select that sets the bias
    assert slot_trips == n_masks + 1
    assert chips[0].ledger == chips[1].ledger and chips[0].disturbs == chips[1].disturbs
    np.testing.assert_array_equal(chips[0].weights(), chips[1].weights())
    for chip, pulses in zip(chips, (train_pulses, slot_pulses), strict=True):
        assert pulses == sum(entry.count for entry in chip.ledger) > 0


# ---------------------------------------------------------------------------------------------
# The simulated station's switch


@pytest.mark.parametrize(("sections", "offered"), [
    ({}, True), ({"pulse_train": {"enabled": False}}, False), ({"mvm": {"protocol": 1}}, False)])
def test_a_simulated_station_offers_pulse_trains_unless_told_not_to(sections, offered) -> None:
    """``[pulse_train] enabled`` (default true) sets the board's capability; a board of protocol
    1 (``[mvm] protocol = 1``) has none whatever it says. The other capabilities stay."""
    spec = SimStationSpec.model_validate({"tiles": [{"name": "t", "rows": 2, "cols": 2}], **sections})
    with SimulatedStation(spec) as station:
        assert station.board is not None
        capabilities = station.board.capabilities
        assert (pb.Capability.PULSE_TRAIN in capabilities) == offered
        assert pb.Capability.PARALLEL_UPDATE in capabilities


def test_a_bad_pulse_train_setting_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"pulse_train\.enabled"):
        SimStationSpec.model_validate({"tiles": [{"name": "t", "rows": 2, "cols": 2}],
                                       "pulse_train": {"enabled": "yes"}})
