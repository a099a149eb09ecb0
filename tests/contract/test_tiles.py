"""Every tile of the house keeps the tile contract (:mod:`hilctl.testing`): the digital reference,
the emulator (with and without a perfect periphery) and the lab tile on a simulated bench.

The lab tiles share one simulated station per module; each ``make_tile`` call opens its tile on
a new :class:`LabBackend` (closing the previous one), so it takes the first region ``fast``
again, and the checks program the weights they start from. Last, the checks are shown to catch
tiles broken in the ways they are meant to catch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray

from drivers.backend import LabBackend
from hilctl.backends import get_backend
from hilctl.config import tile_config
from hilctl.digital import DigitalTile
from hilctl.testing import TILE_CHECKS, check_tile
from hilctl.tile import Capabilities, Tile, as_batch
from sim.instruments.station import SimulatedStation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sim_station.toml"
Factory = Callable[[], Tile]


@pytest.fixture(scope="module")
def sim_bench() -> Iterator[SimulatedStation]:
    """One simulated station (examples/sim_station.toml) for every lab tile of the module."""
    with SimulatedStation.from_file(EXAMPLE) as station:
        yield station


@pytest.fixture
def lab_tiles(sim_bench: SimulatedStation) -> Iterator[Callable[[str], Factory]]:
    """Factories of fresh 4 x 8 lab tiles on region ``fast`` for a ``read.mvm`` setting (the
    board offers an analog MVM: ``auto`` uses it, ``off`` reads cells): a new LabBackend per
    tile, the previous one closed; the last one is closed when the test ends."""
    open_backends: list[LabBackend] = []

    def factory(mvm: str) -> Factory:
        station = sim_bench.station
        station = station.model_copy(update={"read": station.read.model_copy(update={"mvm": mvm})})

        def make() -> Tile:
            while open_backends:
                open_backends.pop().close()
            backend = LabBackend()
            open_backends.append(backend)
            return backend.open_tile(tile_config(rows=4, cols=8, device="soft-bounds"), station=station)

        return make

    yield factory
    while open_backends:
        open_backends.pop().close()


def _sim_tiles(**periphery: bool) -> Factory:
    config = tile_config(rows=4, cols=6, device="soft-bounds", periphery_values=periphery)
    backend = get_backend("sim")
    return lambda: backend.open_tile(config)


TILES = ["digital", "sim", "sim-perfect-periphery", "lab", "lab-cell-reads"]


@pytest.fixture(params=TILES)
def make_tile(request: pytest.FixtureRequest) -> Factory:
    """A factory of fresh tiles of each backend (the bench starts only for the lab tiles)."""
    if request.param == "digital":
        return lambda: DigitalTile(4, 6)
    if request.param == "sim":
        return _sim_tiles()
    if request.param == "sim-perfect-periphery":
        return _sim_tiles(is_perfect=True)
    factories: Callable[[str], Factory] = request.getfixturevalue("lab_tiles")
    return factories("off" if request.param == "lab-cell-reads" else "auto")


@pytest.mark.parametrize("check", TILE_CHECKS, ids=lambda c: c.__name__)
def test_tile_keeps_the_contract(check: Callable[[Factory], None], make_tile: Factory) -> None:
    check(make_tile)


def test_check_tile_runs_every_check_on_a_fresh_tile() -> None:
    made: list[Tile] = []

    def make() -> Tile:
        made.append(DigitalTile(3, 5))
        return made[-1]

    check_tile(make)
    # a fresh tile for every check (the state check makes a second one to load into)
    assert len(made) == len(TILE_CHECKS) + 1 and len({id(t) for t in made}) == len(made)


def test_every_check_says_what_it_checks() -> None:
    assert len({check.__name__ for check in TILE_CHECKS}) == len(TILE_CHECKS) >= 5
    assert all(check.__doc__ and len(check.__doc__) > 40 for check in TILE_CHECKS)


# ---------------------------------------------------------------------------------------------
# The checks catch broken tiles
# ---------------------------------------------------------------------------------------------

Array = NDArray[np.float64]


class FlatForward(DigitalTile):
    """Drops the batch axis of a 1-D input."""

    def forward(self, x: ArrayLike) -> Array:
        return super().forward(x).reshape(-1) if np.ndim(x) == 1 else super().forward(x)


class WritesBeforeChecking(DigitalTile):
    """Sends its pulses before it looks at them."""

    def apply_pulses(self, counts: ArrayLike) -> None:
        self._w += self.pulse_step
        super().apply_pulses(counts)


class UnnamedErrors(DigitalTile):
    """Refuses a wrong width without saying which argument."""

    def backward(self, d: ArrayLike) -> Array:
        if np.shape(d)[-1] != self.rows:
            raise ValueError("wrong width")
        return super().backward(d)


class NoisyButExact(DigitalTile):
    """Claims exact reads but reads with noise."""

    def read_weights(self) -> Array:
        return self._w + np.random.default_rng().normal(0.0, 1e-3, self._w.shape)


class StringCapabilities(DigitalTile):
    capabilities = Capabilities(parallel_mvm=True, parallel_update=True, exact_read="yes")  # type: ignore[arg-type]


class BackwardsPulses(DigitalTile):
    """A bench wired with its polarity the wrong way round."""

    def apply_pulses(self, counts: ArrayLike) -> None:
        super().apply_pulses(-np.asarray(counts))


class IgnoresTheSignOfD(DigitalTile):
    """Moves the weights as if ``d`` were always positive (a sign quadrant wired wrong)."""

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        super().update(x, np.abs(as_batch(d, self.rows, "d")), lr)


class IgnoresItsState(DigitalTile):
    """Loads a checkpoint by doing nothing (a resumed run would start from zeros)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


BROKEN = {
    "1-D forward without batch axis": (FlatForward, "check_shapes"),
    "pulses sent before checking": (WritesBeforeChecking, "check_bad_input_is_refused"),
    "error without the argument's name": (UnnamedErrors, "check_bad_input_is_refused"),
    # noisy reads also spoil the exact continuation from a checkpoint: two checks fail
    "noisy reads claimed exact": (NoisyButExact, "check_capabilities_are_honest",
                                  "check_state_continues"),
    "capability not a bool": (StringCapabilities, "check_capabilities_are_honest"),
    "pulse polarity backwards": (BackwardsPulses, "check_pulses_move_weights_their_way"),
    "update ignores the sign of d": (IgnoresTheSignOfD, "check_update_moves_against_gradient"),
    "state ignored": (IgnoresItsState, "check_state_continues"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_checks_catch_a_broken_tile(name: str) -> None:
    kind, *failing = BROKEN[name]
    with pytest.raises(AssertionError, match=rf"^{len(failing)} of {len(TILE_CHECKS)} tile checks "
                       rf"failed:\n{failing[0]}: ") as raised:
        check_tile(lambda: kind(4, 6))
    assert all(f"\n{check}: " in str(raised.value) for check in failing)
