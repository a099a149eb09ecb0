"""Fixtures of the SCPI driver tests: a simulated 33500B and 2450 on 127.0.0.1 acting on the
test module's ``chip``, and the drivers connected to them with short timeouts."""

from __future__ import annotations

import pytest
from driver_helpers import FAST, LIMITS

from drivers.pulse_generator import PulseGenerator
from drivers.smu import Smu
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.smu import SimulatedSmu


def _simulated(twin, chip):
    """A simulated instrument on ``chip`` for the test's life; no thread of it left after."""
    with twin(chip) as sim:
        yield sim
    assert not sim.alive_threads()


def _connected(driver, sim):
    """The driver connected to ``sim`` with the tests' limits and short timeouts, closed after."""
    inst = driver(sim.resource, LIMITS, **FAST)
    inst.connect()
    yield inst
    inst.close()


@pytest.fixture
def pg_sim(chip):
    yield from _simulated(SimulatedPulseGenerator, chip)


@pytest.fixture
def smu_sim(chip):
    yield from _simulated(SimulatedSmu, chip)


@pytest.fixture
def pg(pg_sim):
    yield from _connected(PulseGenerator, pg_sim)


@pytest.fixture
def smu(smu_sim):
    yield from _connected(Smu, smu_sim)
