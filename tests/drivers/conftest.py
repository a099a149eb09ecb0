"""Fixtures of the SCPI driver tests: a simulated 33500B and 2450 on 127.0.0.1 acting on the
test module's ``chip``, and the drivers connected to them with short timeouts."""

from __future__ import annotations

import pytest
from driver_helpers import FAST, LIMITS

from drivers.pulse_generator import PulseGenerator
from drivers.smu import Smu
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.smu import SimulatedSmu


@pytest.fixture
def pg_sim(chip):
    with SimulatedPulseGenerator(chip) as sim:
        yield sim
    assert not sim.alive_threads()


@pytest.fixture
def smu_sim(chip):
    with SimulatedSmu(chip) as sim:
        yield sim
    assert not sim.alive_threads()


@pytest.fixture
def pg(pg_sim):
    inst = PulseGenerator(pg_sim.resource, LIMITS, **FAST)
    inst.connect()
    yield inst
    inst.close()


@pytest.fixture
def smu(smu_sim):
    inst = Smu(smu_sim.resource, LIMITS, **FAST)
    inst.connect()
    yield inst
    inst.close()
