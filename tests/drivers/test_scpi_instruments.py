"""SCPI drivers against the simulated 33500B and 2450 over real sockets and real pyvisa-py."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
from driver_helpers import FAST, LIMITS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.limits import CommandRefused, LimitError, check
from drivers.pulse_generator import MIN_AMPLITUDE, PulseGenerator
from drivers.scpi import InstrumentError, PulseUncertainError
from drivers.smu import MIN_COMPLIANCE, Smu
from protocols.station import StationLimits
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.smu import SimulatedSmu


@pytest.fixture
def chip() -> EmulatedChip:
    return EmulatedChip(ChipConfig(rows=4, cols=4, seed=3))


# -- server ------------------------------------------------------------------------------------


def test_server_binds_loopback_only_and_stops_cleanly(chip):
    sim = SimulatedPulseGenerator(chip).start()
    host, port = sim.address
    assert host == "127.0.0.1" and port > 0
    inst = PulseGenerator(sim.resource, LIMITS, **FAST)
    inst.connect()
    sim.stop()
    inst.close()
    assert not sim.alive_threads()


# -- identification ----------------------------------------------------------------------------


def test_idn_check_accepts_the_model(pg, pg_sim):
    assert pg.idn == "Keysight Technologies,33522B,SIM0001,hilctl-sim"
    assert pg_sim.received[0] == "*IDN?"


def test_wrong_model_is_a_clear_error(smu_sim):
    inst = PulseGenerator(smu_sim.resource, LIMITS, **FAST)
    with pytest.raises(InstrumentError, match="expected a model containing '335'") as info:
        inst.connect()
    assert info.value.resource == smu_sim.resource and info.value.command == "*IDN?"
    assert "2450" in str(info.value)
    assert not inst.connected


def test_nothing_listening_is_a_clear_error(chip):
    sim = SimulatedPulseGenerator(chip).start()
    resource = sim.resource
    sim.stop()
    inst = PulseGenerator(resource, LIMITS, **{**FAST, "retries": 0})
    with pytest.raises(InstrumentError, match="cannot connect") as info:
        inst.connect()
    assert info.value.resource == resource


# -- settings reach the instrument ---------------------------------------------------------------


def test_pulse_settings_reach_the_generator(pg, pg_sim):
    pg.configure_pulse(1.25, 2e-6, edge=20e-9, period=1e-5)
    pg.output(True)
    s = pg_sim
    assert (s.function, s.load, s.period, s.width, s.edge) == ("PULS", math.inf, 1e-5, 2e-6, 20e-9)
    assert (s.v_high, s.v_low, s.polarity_inverted) == (1.25, 0.0, False)
    assert (s.burst_mode, s.trigger_source, s.burst_state, s.output) == ("TRIG", "BUS", True, True)
    assert pg.query("VOLT:HIGH?") == "+1.250000000E+00"
    pg.configure_pulse(-0.9, 1e-6)
    assert (s.v_high, s.v_low, s.polarity_inverted, s.output) == (0.0, -0.9, True, True)
    pg.fire(7)
    assert s.burst_ncycles == 7 and s.triggers == 1


def test_smu_settings_reach_the_smu(smu, smu_sim):
    assert smu.query("*LANG?") == "SCPI"
    smu.configure_read(0.2, 5e-5, nplc=0.5)
    smu.output(True)
    s = smu_sim
    assert (s.source_function, s.source_range_auto, s.ilim, s.level) == ("VOLT", True, 5e-5, 0.2)
    assert (s.sense_function, s.sense_range_auto, s.nplc, s.output) == ("CURR", True, 0.5, True)
    smu.output(False)
    assert not s.output


# -- error queue ---------------------------------------------------------------------------------


def test_unknown_header_is_refused_before_the_wire(pg, pg_sim):
    # Was: FOO:BAR 1 reached the generator and came back as -113. A header outside the driver's
    # command set now never leaves (it could as well be APPL:PULS or VOLT:OFFS).
    n = pg_sim.message_count
    with pytest.raises(CommandRefused) as info:
        pg.write("FOO:BAR 1")
    err = info.value
    assert err.command == "FOO:BAR 1" and err.resource == pg.resource_name
    assert "not in the command set" in str(err) and "VOLTage:HIGH" in err.allowed
    assert pg_sim.message_count == n
    pg.check_errors()  # nothing reached the instrument, nothing to report


def test_instrument_error_surfaces_as_instrument_error(pg, pg_sim):
    pg.write("OUTP OFF")
    pg.write("FUNC:PULS:TRAN:BOTH 1")  # in the command set and not limited; the 33500B refuses 1 s
    with pytest.raises(InstrumentError) as info:
        pg.check_errors()
    err = info.value
    assert err.code == -222 and err.command == "OUTP OFF ; FUNC:PULS:TRAN:BOTH 1"
    assert "FUNC:PULS:TRAN:BOTH 1" in str(err) and pg.resource_name in str(err)
    assert "Data out of range" in str(err)
    pg.check_errors()  # the queue was drained


def test_out_of_range_is_refused_by_the_limits_not_the_instrument(pg, pg_sim):
    # Was: VOLT:HIGH 99 reached the generator and came back as -222. Beyond the station's 3 V it
    # now never leaves; malformed arguments (-102 before) are refused by the driver too.
    n = pg_sim.message_count
    with pytest.raises(LimitError, match="VOLT:HIGH 99") as info:
        pg.set("VOLT:HIGH 99")
    assert info.value.quantity == "pulse amplitude (V)" and pg.resource_name in str(info.value)
    with pytest.raises(CommandRefused):
        pg.set("VOLT:HIGH 1,,2")
    assert pg_sim.message_count == n and pg_sim.v_high == 0.05


# -- physics through the whole path ------------------------------------------------------------------


def test_full_pulse_reaches_the_routed_cell(pg, chip):
    chip.routing.pulse_cell = (2, 1)
    g0 = chip.conductance()
    pg.configure_pulse(1.5, 1e-6)
    pg.output(True)
    pg.fire(5)
    assert chip.pulse_ledger() == {(2, 1): 5}
    moved = chip.conductance() - g0
    assert moved[2, 1] > 0
    assert np.count_nonzero(moved) == 1


def test_unrouted_pulse_reaches_nothing(pg, chip, pg_sim):
    pg.configure_pulse(1.5, 1e-6)
    pg.output(True)
    pg.fire(3)
    assert pg_sim.triggers == 1 and chip.ledger == []


def test_smu_reads_g_times_v(smu, chip):
    chip.routing.smu_cell = (1, 3)
    smu.configure_read(0.1, 1e-4)
    smu.output(True)
    g = chip.conductance()[1, 3]
    readings = np.array([smu.read_current() for _ in range(20)])
    # read noise is 1 nA (std); 6 sigma plus the 10-digit formatting of the reply
    assert np.all(np.abs(readings - g * 0.1) < 6 * chip.config.read_noise + 1e-14)


def test_smu_clips_to_compliance(smu, smu_sim, chip):
    chip.routing.smu_cell = (0, 0)
    smu.configure_read(0.5, 1e-6)  # G ~ 50 uS -> 25 uA wanted, 1 uA allowed
    smu.output(True)
    assert smu.read_current() == pytest.approx(1e-6)
    assert smu_sim.in_compliance


def test_smu_read_with_output_off_names_the_cause(smu):
    smu.configure_read(0.1, 1e-4)
    with pytest.raises(InstrumentError, match="output is off"):
        smu.read_current()


# -- station limits --------------------------------------------------------------------------


def test_beyond_limits_nothing_leaves(pg, pg_sim, smu, smu_sim):
    n_pg, n_smu = pg_sim.message_count, smu_sim.message_count
    for call in (lambda: pg.configure_pulse(3.5, 1e-6), lambda: pg.configure_pulse(-3.01, 1e-6),
                 lambda: pg.configure_pulse(1.0, 1e-9), lambda: pg.configure_pulse(1.0, 0.1),
                 lambda: pg.configure_pulse(math.nan, 1e-6), lambda: pg.fire(1001), lambda: pg.fire(0)):
        with pytest.raises(LimitError):
            call()
    for call in (lambda: smu.configure_read(0.6, 1e-4), lambda: smu.configure_read(0.1, 2e-3),
                 lambda: smu.configure_read(0.1, 1e-4, nplc=50)):
        with pytest.raises(LimitError):
            call()
    assert (pg_sim.message_count, smu_sim.message_count) == (n_pg, n_smu)


def test_limit_error_names_quantity_value_and_limit():
    with pytest.raises(LimitError) as info:
        check(LIMITS, amplitude=4.0)
    assert info.value.quantity == "pulse amplitude (V)" and info.value.value == 4.0
    assert "4.0" in str(info.value) and "3.0" in str(info.value)


def test_limits_validate_themselves():
    with pytest.raises(ValueError):
        StationLimits(min_pulse_width=1e-3, max_pulse_width=1e-6)
    with pytest.raises(ValueError):
        StationLimits(max_compliance=-1)


@pytest.fixture(scope="module")
def rig():
    chip = EmulatedChip(ChipConfig(rows=2, cols=2))
    with SimulatedPulseGenerator(chip) as pgs, SimulatedSmu(chip) as ss:
        pg = PulseGenerator(pgs.resource, LIMITS, **FAST)
        smu = Smu(ss.resource, LIMITS, **FAST)
        pg.connect()
        smu.connect()
        pg.configure_pulse(1.0, 1e-6)
        pg.output(True)
        yield pg, pgs, smu, ss
        pg.close()
        smu.close()


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.floats(-20, 20), st.floats(-1e-2, 1e-2), st.floats(0, 2e-3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amplitude=_numbers, width=_numbers, voltage=_numbers, compliance=_numbers,
       count=st.integers(-5, 2000))
def test_generated_settings_pass_and_arrive_or_are_refused_silently(rig, amplitude, width, voltage,
                                                                    compliance, count):
    pg, pgs, smu, ss = rig
    finite = all(math.isfinite(v) for v in (amplitude, width))
    ok = (finite and MIN_AMPLITUDE <= abs(amplitude) <= LIMITS.max_pulse_amplitude
          and LIMITS.min_pulse_width <= width <= LIMITS.max_pulse_width)
    n = pgs.message_count
    if ok:
        pg.configure_pulse(amplitude, width)
        level = pgs.v_low if pgs.polarity_inverted else pgs.v_high
        assert (level, pgs.width) == (amplitude, width)
    else:
        with pytest.raises(LimitError):
            pg.configure_pulse(amplitude, width)
        assert pgs.message_count == n
    n = pgs.message_count
    if 1 <= count <= LIMITS.max_burst_count:
        pg.write(f"BURS:NCYC {count}")  # the value fire() would send, without playing the burst
        pg.check_errors()
        assert pgs.burst_ncycles == count
        check(pg.limits, count=count)
    else:
        with pytest.raises(LimitError):
            pg.fire(count)
        assert pgs.message_count == n
    ok = (math.isfinite(voltage) and math.isfinite(compliance) and abs(voltage) <= LIMITS.max_read_voltage
          and MIN_COMPLIANCE <= compliance <= LIMITS.max_compliance)
    n = ss.message_count
    if ok:
        smu.configure_read(voltage, compliance)
        assert (ss.level, ss.ilim) == (voltage, compliance)
    else:
        with pytest.raises(LimitError):
            smu.configure_read(voltage, compliance)
        assert ss.message_count == n


# -- faults: timeouts, dropped connections, delays ---------------------------------------------


def test_ignored_query_times_out_naming_resource_and_command_then_recovers(pg, pg_sim):
    pg_sim.faults.ignore_fraction = 1.0
    t0 = time.perf_counter()
    with pytest.raises(InstrumentError) as info:
        pg.query("VOLT:HIGH?")
    assert time.perf_counter() - t0 < 3.0
    err = info.value
    assert err.resource == pg_sim.resource and err.command == "VOLT:HIGH?"
    assert pg_sim.resource in str(err) and "VOLT:HIGH?" in str(err) and "timeout" in str(err)
    pg_sim.faults.ignore_fraction = 0.0
    assert pg.query("VOLT:HIGH?") == "+5.000000000E-02"
    assert pg.reconnects >= 1


def test_some_ignored_queries_are_retried_transparently(pg, pg_sim):
    pg_sim.faults.ignore_fraction = 0.3
    pg.retries = 5
    assert all(pg.query("FUNC?") == "SIN" for _ in range(15))
    assert pg.reconnects >= 1  # the seeded rng ignored at least one


def test_dropped_connection_reconnects_and_settings_survive(pg_sim):
    pg_sim.faults.drop_after = 4  # *IDN?, SYST:ERR?, OUTP OFF, FUNC PULS, then the connection is gone
    pg = PulseGenerator(pg_sim.resource, LIMITS, **FAST)
    try:
        pg.connect()
        pg.configure_pulse(2.0, 5e-6)
        assert pg_sim.lost == ["OUTP:LOAD INF"]
        assert pg.reconnects == 1 and pg_sim.connections == 2
        assert (pg_sim.function, pg_sim.load, pg_sim.width, pg_sim.v_high, pg_sim.burst_state) == (
            "PULS", math.inf, 5e-6, 2.0, True)
    finally:
        pg.close()


def test_trigger_is_never_resent_after_a_dropped_connection(pg, pg_sim, chip):
    chip.routing.pulse_cell = (0, 0)
    pg.configure_pulse(1.5, 1e-6)
    pg.output(True)
    assert pg_sim.connections == 1
    # on this connection: BURS:NCYC and SYST:ERR? pass, *TRG runs, *OPC? is lost with the link
    pg_sim.faults.drop_after = pg_sim.message_count + 3
    with pytest.raises(PulseUncertainError) as info:
        pg.fire(5)
    assert info.value.command == "*OPC?" and pg.resource_name in str(info.value)
    assert pg_sim.lost == ["*OPC?"]
    assert chip.pulse_ledger() == {(0, 0): 5} and pg_sim.triggers == 1  # exactly once
    pg.fire(2)  # reconnected and usable again
    assert chip.pulse_ledger() == {(0, 0): 7}


def test_reply_delay(pg, pg_sim):
    pg_sim.faults.reply_delay = 0.05
    t0 = time.perf_counter()
    pg.query("*OPC?")
    assert time.perf_counter() - t0 >= 0.05


# -- traffic log -----------------------------------------------------------------------------------


def test_debug_log_holds_the_traffic(pg, caplog):
    caplog.set_level(logging.DEBUG, logger="hilctl.instrument.pulse_generator")
    pg.configure_pulse(1.5, 1e-6)
    pg.query("*IDN?")
    lines = [r.getMessage() for r in caplog.records if r.name == "hilctl.instrument.pulse_generator"]
    assert "pulse_generator -> 'VOLT:HIGH 1.5'" in lines
    assert "pulse_generator -> 'SYST:ERR?'" in lines
    assert "pulse_generator <- '0,\"No error\"'" in lines
    assert "pulse_generator <- 'Keysight Technologies,33522B,SIM0001,hilctl-sim'" in lines
