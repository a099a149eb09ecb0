"""Safety of the SCPI drivers against the simulated 33500B and 2450 over real sockets and pyvisa-py:
triggers never replayed, every command vetted against the command set and the station limits,
the pulse generator's interlock, the safe states and the link counters."""

from __future__ import annotations

import time

import pytest
from driver_helpers import FAST, LIMITS

from drivers.limits import CommandRefused, LimitError
from drivers.pulse_generator import COMMANDS as PG_COMMANDS
from drivers.pulse_generator import PulseGenerator
from drivers.scpi import COMMON_COMMANDS, InstrumentError, PulseUncertainError, ScpiInstrument
from drivers.smu import COMMANDS as SMU_COMMANDS
from protocols.scpi import Command
from protocols.station import StationLimits
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.smu import SimulatedSmu

SETTLE = 0.1  # s for the server to close a dropped connection and the peer's RST to come back


def _drop_the_next_message(sim: SimulatedPulseGenerator | SimulatedSmu, last: str) -> None:
    """Lose the next message on the (single) connection: wait until the server has executed
    ``last`` (a write returns before the server reads it), then arm ``drop_after``."""
    deadline = time.monotonic() + 2.0
    while not (sim.received and sim.received[-1] == last):
        assert time.monotonic() < deadline, f"{last!r} never reached the server"
        time.sleep(0.005)
    assert sim.connections == 1
    sim.faults.drop_after = sim.message_count


def trouble(instrument: ScpiInstrument) -> dict[str, float]:
    """The link-trouble counters of ``link_stats`` (without the accounting of round trips)."""
    stats = instrument.link_stats()
    return {key: stats[key] for key in ("retries", "timeouts", "reconnects", "uncertain_triggers")}


@pytest.fixture
def chip() -> EmulatedChip:
    chip = EmulatedChip(ChipConfig(rows=2, cols=2, seed=1))
    chip.routing.pulse_cell = (0, 0)
    chip.routing.smu_cell = (1, 1)
    return chip


@pytest.fixture
def armed(pg):
    """The generator armed for 1.5 V, 1 us pulses with the output on."""
    pg.configure_pulse(1.5, 1e-6)
    pg.output(True)
    return pg


# -- a trigger is never replayed --------------------------------------------------------------------


def test_a_trigger_is_never_replayed_three_bursts_for_two_intended(armed, pg_sim):
    """Two bursts are intended: a raw ``*TRG`` and a ``fire(1)``. In between the connection drops
    and a later setting write meets the broken link. The driver before this change reconnected,
    re-sent every write since the last answered query -- the ``*TRG`` included -- and the
    generator fired 3 bursts. Now the trigger is dropped from the re-send, the write raises
    PulseUncertainError, and exactly the 2 intended bursts fire."""
    pg = armed
    pg.set("BURS:NCYC 1")
    assert pg_sim.connections == 1 and pg_sim.fired == []
    pg.write("*TRG")  # intended burst 1; no *OPC? yet, so it is unconfirmed
    _drop_the_next_message(pg_sim, "*TRG")  # the next message is lost, the link closed
    uncertain = []
    for _ in range(3):  # the 1st is lost, the 2nd meets the closed socket, the 3rd a broken pipe
        try:
            pg.write("BURS:NCYC 1")
        except PulseUncertainError as exc:
            uncertain.append(exc)
        time.sleep(SETTLE)
    pg.fire(1)  # intended burst 2
    assert pg_sim.lost == ["BURS:NCYC 1"] and pg_sim.connections == 2
    assert len(pg_sim.fired) == 2 and pg_sim.triggers == 2  # the old code path: 3 and 3
    assert len(uncertain) == 1 and "*TRG" in str(uncertain[0])
    assert uncertain[0].command == "BURS:NCYC 1" and "was not completed" in str(uncertain[0])
    assert trouble(pg) == {"retries": 0, "timeouts": 0, "reconnects": 1, "uncertain_triggers": 1}


def test_a_trigger_met_by_a_dropped_link_is_uncertain_and_not_resent(armed, pg_sim, chip):
    pg = armed
    pg.fire(3)
    _drop_the_next_message(pg_sim, "*OPC?")  # *TRG itself is lost with the link
    with pytest.raises(PulseUncertainError) as info:
        pg.fire(3)
    assert pg_sim.lost == ["*TRG"] and info.value.command in ("*TRG", "*OPC?")
    assert len(pg_sim.fired) == 1 and chip.pulse_ledger() == {(0, 0): 3}  # lost, and not re-sent
    pg.fire(2)  # reconnected and usable: the settings were re-sent, the count again too
    assert [b.count for b in pg_sim.fired] == [3, 2]


def test_settings_are_replayed_but_never_the_trigger(armed, pg_sim):
    pg = armed
    pg.set("BURS:NCYC 2")
    pg.write("*TRG")
    pg.write("BURS:NCYC 4")  # unconfirmed setting after an unconfirmed trigger
    _drop_the_next_message(pg_sim, "BURS:NCYC 4")
    with pytest.raises(PulseUncertainError):
        pg.query("*OPC?")  # lost; the link fails with the trigger unconfirmed
    pg.query("*OPC?")  # answered on the new link, after everything re-sent
    assert pg_sim.lost == ["*OPC?"]
    assert pg_sim.arrived[-4:] == ["*OPC?", "*IDN?", "BURS:NCYC 4", "*OPC?"]  # the setting, no *TRG
    assert pg_sim.burst_ncycles == 4 and len(pg_sim.fired) == 1


# -- the command set: nothing else leaves ------------------------------------------------------------

_PG_REFUSED = [
    "APPL:PULS 1e3,9,0", "APPLy:PULSe 1e3,9,0", "VOLT 9", "VOLTage:AMPLitude 1", "VOLT:OFFS 1",
    "SOUR:VOLT:HIGH 1", "SOUR1:VOLT:HIGH 1", "VOLT:HIGH 9", "volt:high 3.0000000000000004",
    ":VOLTage:HIGH MAX", "VOLT:HIGH MIN", "VOLT:HIGH DEF", "VOLT:HIGH INF", "VOLT:HIGH NAN", "VOLT:LOW -3.1",
    "VOLT:HIGH 1.5 V", "VOLT:HIGH", "VOLT:HIGH 1,2", "VOLT:HIGH 1;VOLT:LOW -9", "VOLT:HIGH 1\nVOLT:HIGH 9",
    "VOLT:HIGH 1\r", "VOLT:HIGH? MAX", "OUTP:LOAD 50", "OUTP:LOAD MIN", "FUNC DC", "FUNC SIN",
    "FUNC:PULS:WIDT 1.0000000000000001e-3", "FUNC:PULS:WIDT 1.1e-3", "FUNC:PULS:WIDT 1 ms",
    "FUNC:PULS:WIDT 1e-9", "FUNCtion:PULSe:WIDTh MAX", "BURS:NCYC 1001", "BURS:NCYC 2.5", "BURS:NCYC 0",
    "BURS:NCYC MAX", "BURS:NCYC INF", "BURS:MODE GAT", "TRIG:SOUR EXT", "TRIG", "INIT", "*RST", "*CLS",
    "*TRG 1", "FOO:BAR", "", "   ",
]


@pytest.mark.parametrize("command", _PG_REFUSED)
def test_pulse_generator_refuses_what_is_not_in_its_command_set_or_limits(pg, pg_sim, command):
    pg.write("OUTP OFF")  # so that the interlock is not what refuses
    n = len(pg_sim.arrived)
    for send in (pg.write, pg.set, pg.query):
        with pytest.raises((LimitError, CommandRefused)) as info:
            send(command)
        assert pg.resource_name in str(info.value) and "nothing was sent" in str(info.value)
    assert len(pg_sim.arrived) == n


_SMU_REFUSED = [
    ":SOUR:VOLT 0.6", ":SOURce:VOLTage:LEVel:IMMediate:AMPLitude -0.6", "sour:volt:lev 0.5000000000000001",
    "VOLT MAX", ":SOUR:VOLT:ILIM 2e-3", "SOUR:VOLT:ILIM 0", "SOUR:VOLT:ILIM -1e-6", ":SOUR:VOLT:ILIM:LEV MAX",
    ":SOUR:FUNC CURR", ":SOUR:CURR 1", ":SOUR:VOLT:RANG 200", ':SENS:FUNC "VOLT"', ":SENS:CURR:NPLC MAX",
    ":OUTP 2", ":READ? 1", "*TRG", "*CLS",
]


@pytest.mark.parametrize("command", _SMU_REFUSED)
def test_smu_refuses_what_is_not_in_its_command_set_or_limits(smu, smu_sim, command):
    n = len(smu_sim.arrived)
    with pytest.raises((LimitError, CommandRefused)):
        smu.write(command)
    assert len(smu_sim.arrived) == n


@pytest.mark.parametrize("command,attribute,value", [
    ("VOLTage:HIGH 3", "v_high", 3.0), (":volt:high 3.0", "v_high", 3.0), ("VOLT:HIGH +3E+00", "v_high", 3.0),
    ("FUNCtion:PULSe:WIDTh 1E-3", "width", 1e-3), ("func:puls:widt 0.001", "width", 1e-3),
    (":FUNC:PULS:WIDT 2e-8", "width", 2e-8), ("burst:ncycles 1000", "burst_ncycles", 1000),
    ("BURS:NCYC 7.0", "burst_ncycles", 7), ("OUTPut:LOAD INFinity", "load", float("inf")),
])
def test_limited_headers_pass_in_any_spelling_up_to_the_limit(pg, pg_sim, command, attribute, value):
    pg.write("OUTP OFF")
    pg.set(command)
    assert getattr(pg_sim, attribute) == value


def test_smu_limited_headers_pass_in_any_spelling_up_to_the_limit(smu, smu_sim):
    smu.set(":SOURce:VOLTage:LEVel:IMMediate:AMPLitude -0.5", "sour:volt:ilim 1e-3")
    assert (smu_sim.level, smu_sim.ilim) == (-0.5, 1e-3)
    smu.set("VOLT 0.25", ":SOUR:VOLT:ILIM:LEV 5E-4")
    assert (smu_sim.level, smu_sim.ilim) == (0.25, 5e-4)


def test_every_command_set_names_its_limited_quantities():
    limited = {s.pattern: s.quantity for s in PG_COMMANDS if s.quantity}
    assert limited == {"FUNCtion:PULSe:WIDTh": "width", "VOLTage:HIGH": "amplitude",
                       "VOLTage:LOW": "amplitude", "BURSt:NCYCles": "count"}
    limited = {s.pattern: s.quantity for s in SMU_COMMANDS if s.quantity}
    assert limited == {"[SOURce]:VOLTage:ILIMit[:LEVel]": "compliance",
                       "[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]": "read_voltage"}
    assert [s.pattern for s in PG_COMMANDS if s.trigger] == ["*TRG"]
    assert set(COMMON_COMMANDS) <= set(PG_COMMANDS) and set(COMMON_COMMANDS) <= set(SMU_COMMANDS)


def test_the_bare_base_only_identifies(pg_sim):
    """``hilctl instruments`` identifies with the bare base class: it can ask, never set."""
    inst = ScpiInstrument(pg_sim.resource, **FAST)
    try:
        assert "33522B" in inst.connect()
        inst.check_errors()
        with pytest.raises(CommandRefused):
            inst.write("OUTP ON")
    finally:
        inst.close()


def test_a_driver_without_limits_sends_no_limited_quantity(pg_sim):
    inst = PulseGenerator(pg_sim.resource, LIMITS, **FAST)
    inst.limits = None  # type: ignore[assignment]
    try:
        inst.connect()
        inst.write("OUTP OFF")
        with pytest.raises(LimitError, match="no station limits"):
            inst.write("VOLT:HIGH 0.1")
    finally:
        inst.close()


def test_vet_parses_and_refuses_without_sending(pg, pg_sim):
    n = len(pg_sim.arrived)
    assert pg.vet("volt:high 1.5") == Command("volt:high", ("1.5",), False)
    with pytest.raises(LimitError) as info:
        pg.vet("VOLT:HIGH 9")
    assert "VOLT:HIGH 9" in str(info.value) and "3.0" in str(info.value)
    assert len(pg_sim.arrived) == n


# -- the pulse generator's interlock ---------------------------------------------------------------


def test_output_on_needs_an_armed_generator(pg, pg_sim):
    with pytest.raises(CommandRefused, match="not armed"):
        pg.output(True)
    with pytest.raises(CommandRefused, match="output may be on"):
        pg.write("FUNC:PULS:WIDT 1e-6")  # nothing switched the output off since connecting
    assert not pg_sim.output
    pg.configure_pulse(1.5, 1e-6)
    pg.output(True)
    assert pg_sim.output


def test_waveform_settings_only_with_the_output_off(armed, pg_sim):
    n = len(pg_sim.arrived)
    for command in ("BURS:STAT OFF", "TRIG:SOUR IMM", "VOLT:HIGH 1", "FUNC:PULS:WIDT 2e-6", "OUTP:POL INV"):
        with pytest.raises(CommandRefused, match="output may be on"):
            armed.write(command)
    armed.set("BURS:NCYC 5")  # the count may change with the output on
    assert len(pg_sim.arrived) == n + 2 and pg_sim.output and pg_sim.burst_state


def test_output_on_needs_a_clean_error_check_after_the_last_setting(armed, pg_sim):
    """A raw setting the generator refused leaves its old value: the interlock does not trust
    what was sent until the error queue was found empty."""
    pg = armed
    pg.write("OUTP OFF")
    pg.write("VOLT:LOW -1")
    pg.write("VOLT:HIGH -0.5")
    pg.write("VOLT:LOW 0")  # refused by the generator (-221: HIGH <= LOW), LOW stays -1 V
    pg.write("VOLT:HIGH 1.5")
    with pytest.raises(CommandRefused, match="empty error queue"):
        pg.write("OUTP ON")
    with pytest.raises(InstrumentError, match="-221"):
        pg.check_errors()
    assert (pg_sim.v_high, pg_sim.v_low) == (1.5, -1.0)  # as sent it would idle at 0 V; it is -1 V
    with pytest.raises(CommandRefused, match="not armed"):
        pg.write("OUTP ON")  # the error forgot what was armed
    pg.configure_pulse(1.5, 1e-6)
    pg.output(True)
    assert (pg_sim.v_high, pg_sim.v_low, pg_sim.output) == (1.5, 0.0, True)


_ARM_BUT_THE_WIDTH = ("OUTP OFF", "FUNC PULS", "OUTP:LOAD INF", "OUTP:POL NORM", "VOLT:HIGH 1.5",
                      "VOLT:LOW 0", "BURS:MODE TRIG", "TRIG:SOUR BUS", "BURS:STAT ON")


def test_an_unknown_or_refused_width_is_not_armed(pg_sim):
    """The width the generator holds from an earlier session is unknown; a width it refused
    (the 33500B's shortest is 16 ns, this station allows 1 ns) leaves the old one in place."""
    pg = PulseGenerator(pg_sim.resource, StationLimits(min_pulse_width=1e-9), **FAST)
    try:
        pg.connect()
        pg.set(*_ARM_BUT_THE_WIDTH)
        with pytest.raises(CommandRefused, match="a checked FUNC:PULS:WIDT"):
            pg.output(True)
        pg.write("FUNC:PULS:WIDT 5e-9")
        with pytest.raises(CommandRefused, match="empty error queue"):
            pg.output(True)
        with pytest.raises(InstrumentError, match="-222"):
            pg.check_errors()
        pg.set(*_ARM_BUT_THE_WIDTH, "FUNC:PULS:WIDT 1e-6")
        pg.output(True)
        assert pg_sim.output and pg_sim.width == 1e-6
    finally:
        pg.close()


def test_a_new_session_forgets_what_was_armed(armed, pg_sim):
    armed.close()
    armed.connect()
    with pytest.raises(CommandRefused, match="not armed"):
        armed.output(True)
    with pytest.raises(CommandRefused, match="output may be on"):
        armed.write("VOLT:HIGH 1")
    with pytest.raises(InstrumentError, match="before configure_pulse"):
        armed.fire(1)


def test_a_nonzero_baseline_is_not_armed(pg, pg_sim):
    pg.configure_pulse(1.5, 1e-6)
    pg.set("VOLT:LOW -0.5")  # normal polarity idles at LOW: -0.5 V between pulses
    with pytest.raises(CommandRefused, match="0 V baseline"):
        pg.output(True)
    with pytest.raises(CommandRefused, match="0 V baseline"):
        pg.write("*TRG")
    assert not pg_sim.output and pg_sim.triggers == 0


def test_smu_output_on_needs_a_source_configured_this_session(smu, smu_sim):
    """A 2450 keeps its source level between sessions: switching the output on before this
    session set (and the unit accepted) a level and a current limit is refused."""
    with pytest.raises(CommandRefused, match="not configured this session"):
        smu.output(True)
    smu.write(":SOUR:VOLT:LEV 0.2")
    with pytest.raises(CommandRefused, match="ILIM"):
        smu.output(True)
    smu.set(":SOUR:FUNC VOLT", ":SOUR:VOLT:ILIM 1e-4")
    smu.output(True)
    assert smu_sim.output and smu_sim.level == 0.2
    smu.reset()  # *RST: what the unit holds is its factory state, not what was sent
    with pytest.raises(CommandRefused, match="not configured this session"):
        smu.output(True)
    smu.configure_read(0.1, 1e-4)
    smu.output(True)
    assert smu_sim.output and smu_sim.level == 0.1


# -- safe states -------------------------------------------------------------------------------------


def test_pulse_generator_safe_state(armed, pg_sim):
    armed.safe_state()
    assert (pg_sim.output, pg_sim.burst_state, pg_sim.trigger_source) == (False, False, "IMM")
    assert pg_sim.received[-5:] == ["OUTP OFF", "BURS:STAT OFF", "TRIG:SOUR IMM", "OUTP?", "SYST:ERR?"]
    assert not armed.output_on


def test_pulse_generator_safe_state_after_a_dropped_link(armed, pg_sim):
    _drop_the_next_message(pg_sim, "SYST:ERR?")  # the first safe-state command is lost
    armed.safe_state()
    assert pg_sim.lost == ["OUTP OFF"] and armed.reconnects == 1
    assert (pg_sim.output, pg_sim.burst_state, pg_sim.trigger_source) == (False, False, "IMM")


def test_pulse_generator_safe_state_after_an_unconfirmed_trigger(armed, pg_sim):
    armed.set("BURS:NCYC 1")
    armed.write("*TRG")
    _drop_the_next_message(pg_sim, "*TRG")
    with pytest.raises(PulseUncertainError):  # raised after the safe state is reached
        armed.safe_state()
    assert (pg_sim.output, pg_sim.burst_state, pg_sim.trigger_source) == (False, False, "IMM")
    assert len(pg_sim.fired) == 1


def test_errors_left_by_an_earlier_session_are_not_blamed_on_the_safe_state(pg_sim, caplog):
    pg_sim.errors.push(-222, "Data out of range;VOLT:HIGH 99")  # from someone else's session
    pg = PulseGenerator(pg_sim.resource, LIMITS, **FAST)
    try:
        pg.connect()
        assert pg.stale_errors == [(-222, "Data out of range;VOLT:HIGH 99")]
        assert "before this session" in caplog.text
        pg.safe_state()  # does not raise the old error
        assert not pg_sim.output
    finally:
        pg.close()


class _StuckOutput(SimulatedPulseGenerator):
    """A generator whose output relay ignores OUTP OFF."""

    def _register(self) -> None:
        self.add("OUTPut[:STATe]", lambda c: "1" if c.query else None)
        super()._register()


def test_pulse_generator_safe_state_needs_the_output_confirmed_off(chip):
    with _StuckOutput(chip) as sim:
        pg = PulseGenerator(sim.resource, LIMITS, **FAST)
        try:
            pg.connect()
            with pytest.raises(InstrumentError, match="not confirmed off") as info:
                pg.safe_state()
            assert info.value.command == "OUTP?" and sim.resource in str(info.value)
        finally:
            pg.close()


def test_smu_safe_state(smu, smu_sim):
    smu.configure_read(0.3, 1e-4)
    smu.output(True)
    smu.safe_state()
    assert (smu_sim.output, smu_sim.level) == (False, 0.0)
    assert smu_sim.received[-4:] == [":OUTP OFF", ":SOUR:VOLT:LEV 0", ":OUTP?", "SYST:ERR?"]


def test_smu_safe_state_after_a_dropped_link(smu, smu_sim):
    smu.configure_read(0.3, 1e-4)
    smu.output(True)
    _drop_the_next_message(smu_sim, "SYST:ERR?")
    smu.safe_state()
    assert smu_sim.lost == [":OUTP OFF"] and smu.reconnects == 1
    assert (smu_sim.output, smu_sim.level) == (False, 0.0)


# -- counters ----------------------------------------------------------------------------------------


def test_link_stats_count_retries_timeouts_and_reconnects(pg, pg_sim, smu):
    assert trouble(pg) == {"retries": 0, "timeouts": 0, "reconnects": 0, "uncertain_triggers": 0}
    assert set(smu.link_stats()) == {"retries", "timeouts", "reconnects", "uncertain_triggers",
                                     "round_trips", "wait_seconds"}
    pg_sim.faults.ignore_fraction = 1.0
    with pytest.raises(InstrumentError, match="timeout"):
        pg.query("FUNC?")
    pg_sim.faults.ignore_fraction = 0.0
    # every attempt timed out: the query, then the *IDN? of each reconnect
    assert trouble(pg) == {"retries": pg.retries, "timeouts": pg.retries + 1, "reconnects": 0,
                           "uncertain_triggers": 0}
    assert pg.query("FUNC?") == "SIN"  # reconnects now
    assert pg.link_stats()["reconnects"] == 1
