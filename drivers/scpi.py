"""SCPI instruments over pyvisa (pyvisa-py backend): the base of the pulse generator and SMU drivers.

Guarantees of every :class:`ScpiInstrument`:

- Nothing leaves unchecked. Every command passes :meth:`ScpiInstrument.vet` right before it is
  written -- ``write``, ``query``, ``set``, the ``*IDN?`` of a connect and the settings re-sent
  after a reconnect alike. A command must be one printable-ASCII SCPI command (no ``;``, no line
  break), its header must match the driver's command set (:attr:`ScpiInstrument.commands`, one
  :class:`Setting` per line at the top of each driver's module; short or long forms, any case,
  optional nodes, with or without the leading colon), and its argument must be what that line
  allows. An argument of a limited quantity (pulse level, width, burst count, read voltage,
  compliance) must be a plain number within the station's :class:`~protocols.station.StationLimits`
  (:func:`drivers.limits.check_text`: parsed as the instrument parses it, keywords such as
  ``MAX`` or ``INF`` refused). A refusal raises :class:`~drivers.limits.CommandRefused` or
  :class:`~drivers.limits.LimitError` and nothing is written. A driver may add an interlock on
  its public path (:meth:`ScpiInstrument._interlock`: the pulse generator refuses to switch its
  output on unless it is armed for a bus-triggered burst of checked pulses).
- A trigger is never replayed. A command that makes the instrument emit pulses (a
  :class:`Setting` with ``trigger=True``, or one of :attr:`ScpiInstrument.pulse_triggers`) is
  never re-sent. If the link fails on *any* call while a trigger written since the last answered
  query is unconfirmed, the driver reconnects (re-sending the unconfirmed settings, never the
  trigger) so the instrument stays usable, and raises :class:`PulseUncertainError`: the caller
  must find out (e.g. by reading the cell) whether the pulses happened.
- Reconnect. A timeout or a lost connection closes the session (a late reply on the old socket
  could otherwise be read as the answer to the next query), reopens it, re-checks ``*IDN?``,
  re-sends the settings written since the last answered query (they may have been lost with the
  connection; settings are idempotent) and repeats the call, at most ``retries`` times.
  :meth:`ScpiInstrument.link_stats` counts retries, timeouts, reconnects and uncertain triggers.
- Accounting. :meth:`ScpiInstrument.link_stats` also counts ``round_trips``, the messages that
  completed on the wire: a command written, a query answered (the identification of each
  connection and the settings a reconnect re-sends included). An attempt that failed is not
  one (it is a ``timeout`` or a ``retry``): a query retried after its reply was lost counts
  once, plus the ``*IDN?`` of the reconnect. ``wait_seconds`` is the time spent in
  ``connect``, ``write`` and ``query``: on the wire, waiting for replies, reconnecting and
  backing off.
- ``connect()`` opens the resource (``TCPIP0::host::5025::SOCKET``, ``GPIB0::17::INSTR``, ...)
  with ``\\n`` read and write termination, without ``clear()`` (some instruments freeze on a
  device clear), and checks ``*IDN?`` against the expected model: a wrong or silent instrument is
  an :class:`InstrumentError` at once, not a strange failure later.
- Every ``write``/``query`` sets the VISA timeout (milliseconds) for that call.
- ``check_errors()`` drains ``SYST:ERR?`` until ``0`` and raises :class:`InstrumentError` with the
  codes and messages, the resource and the command(s) written since the last check.
- Wire traffic is logged at DEBUG on ``hilctl.instrument.<name>`` (``-> cmd``, ``<- reply``).
- An unrecoverable failure raises :class:`InstrumentError` naming the resource and the last
  command. Every error here subclasses :class:`hilctl.errors.BenchError` (exit code 3).

A shared ``pyvisa.ResourceManager("@py")`` is created on first use and never closed by a
driver; pass ``resource_manager=`` to use your own (the driver will not close it either).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pyvisa
import pyvisa.constants
import pyvisa.errors

from drivers.limits import CommandRefused, LimitError, check_text
from hilctl.errors import BenchError, HilctlError
from protocols.scpi import (
    Command,
    HeaderPattern,
    ScpiParseError,
    parse_bool,
    parse_command,
    parse_error,
    parse_number,
    split_commands,
    unquote,
)
from protocols.station import QUANTITY_NAMES, StationLimits

__all__ = ["COMMON_COMMANDS", "InstrumentError", "PulseUncertainError", "ScpiInstrument", "Setting",
           "shared_resource_manager"]

_rm_lock = threading.Lock()
_shared_rm: pyvisa.ResourceManager | None = None

# What a broken link looks like through pyvisa and pyvisa-py: VISA I/O errors (timeouts), socket
# errors, and pyvisa-py's bare Exception("could not connect: ...") on open.
_LINK_ERRORS = (pyvisa.errors.Error, OSError)

_BOOLEANS = {"ON": True, "1": True, "OFF": False, "0": False}
_KEYWORD_PATH = re.compile(r"[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][A-Za-z0-9]*)*")  # a choice: CURR, CURR:DC


def shared_resource_manager() -> pyvisa.ResourceManager:
    """The process-wide ``ResourceManager("@py")``; drivers never close it."""
    global _shared_rm
    with _rm_lock:
        if _shared_rm is None:
            _shared_rm = pyvisa.ResourceManager("@py")
        return _shared_rm


@dataclass(frozen=True)
class Setting:
    """One line of a driver's command set: a SCPI header pattern and what its argument may be.

    ``pattern`` is a :class:`~protocols.scpi.HeaderPattern` (``VOLTage:HIGH``,
    ``[SOURce]:VOLTage[:LEVel]``); a trailing ``?`` makes it query-only, else both the setting
    and its query form (without arguments) are allowed. The argument of the setting form is, by
    the first field given: ``quantity`` -- one plain number within the station limit of that
    quantity (``amplitude``, ``width``, ``count``, ``read_voltage``, ``compliance``; see
    :data:`protocols.station.QUANTITY_NAMES`); ``choices`` -- one of these SCPI keywords
    (``INFinity``; quotes around the argument are ignored); ``boolean`` -- ``ON``, ``OFF``,
    ``1`` or ``0``; ``number`` -- one finite number the station does not limit (an edge time);
    none of them -- no argument. ``trigger`` marks a command that makes the instrument emit
    pulses (never re-sent). ``state`` names the key under which the driver records the value it
    last sent (:attr:`ScpiInstrument.sent`), for its interlock.
    """

    pattern: str
    quantity: str | None = None
    choices: tuple[str, ...] = ()
    boolean: bool = False
    number: bool = False
    trigger: bool = False
    state: str | None = None
    header: HeaderPattern = field(init=False, repr=False, compare=False)
    _choices: tuple[HeaderPattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", HeaderPattern(self.pattern))
        object.__setattr__(self, "_choices", tuple(HeaderPattern(c) for c in self.choices))
        if self.quantity is not None and self.quantity not in QUANTITY_NAMES:
            raise ValueError(f"{self.pattern}: unknown quantity {self.quantity!r}; "
                             f"one of {sorted(QUANTITY_NAMES)}")
        kinds = [self.quantity is not None, bool(self.choices), self.boolean, self.number]
        if sum(kinds) > 1:
            raise ValueError(f"{self.pattern}: give at most one of quantity, choices, boolean, number")

    def matches(self, cmd: Command) -> bool:
        return self.header.matches(cmd)

    def describe(self) -> str:
        """The line as a person reads it: ``VOLTage:HIGH <pulse amplitude (V)>``."""
        if self.header.query_only:
            return self.pattern
        if self.quantity is not None:
            arg = f" <{QUANTITY_NAMES[self.quantity]} within the station limits>"
        elif self.choices:
            arg = " " + "|".join(self.choices)
        elif self.boolean:
            arg = " ON|OFF|1|0"
        elif self.number:
            arg = " <number>"
        else:
            arg = ""
        return self.pattern + arg

    def argument(self, cmd: Command, limits: StationLimits | None, resource: str) -> object:
        """The normalised argument of ``cmd`` (None for a query or a command without one).

        Raises :class:`CommandRefused` for an argument this line does not allow and
        :class:`LimitError` for a limited quantity beyond (or without) the station limits.
        """
        text = cmd.text
        takes_argument = self.quantity is not None or bool(self.choices) or self.boolean or self.number
        if cmd.query:
            if not (self.header.query_only or takes_argument):
                raise CommandRefused(text, "this command has no query form", resource=resource,
                                     allowed=self.describe())
            if cmd.args:
                raise CommandRefused(text, "a query takes no arguments here", resource=resource,
                                     allowed=self.pattern.rstrip("?") + "?")
            return None
        if self.quantity is not None:
            if len(cmd.args) != 1:
                raise CommandRefused(text, "needs exactly one number", resource=resource,
                                     allowed=self.describe())
            if limits is None:
                raise LimitError(QUANTITY_NAMES[self.quantity], cmd.args[0],
                                 "no station limits were given to this driver",
                                 where=f"{resource}, command {text!r}")
            try:
                return check_text(limits, self.quantity, cmd.args[0])
            except LimitError as exc:
                raise LimitError(exc.quantity, exc.value, exc.limit,
                                 where=f"{resource}, command {text!r}") from None
        if self.choices:
            if len(cmd.args) == 1:
                word = unquote(cmd.args[0])
                if _KEYWORD_PATH.fullmatch(word):
                    for pattern in self._choices:
                        if pattern.matches(word):
                            return pattern.nodes[0].short
            raise CommandRefused(text, "argument not allowed", resource=resource, allowed=self.describe())
        if self.boolean:
            if len(cmd.args) == 1 and cmd.args[0].upper() in _BOOLEANS:
                return _BOOLEANS[cmd.args[0].upper()]
            raise CommandRefused(text, "argument not allowed", resource=resource, allowed=self.describe())
        if self.number:
            if len(cmd.args) == 1:
                try:
                    value = parse_number(cmd.args[0])
                except ScpiParseError:
                    value = math.nan
                if math.isfinite(value):
                    return value
            raise CommandRefused(text, "needs one finite number (no keywords or units)",
                                 resource=resource, allowed=self.describe())
        if cmd.args:
            raise CommandRefused(text, "takes no argument", resource=resource, allowed=self.describe())
        return None


#: What every SCPI instrument is asked: identification, completion and the error queue.
COMMON_COMMANDS: tuple[Setting, ...] = (
    Setting("*IDN?"),                   # identification, checked on every connect
    Setting("*OPC?"),                   # 1 when every pending operation is done
    Setting("SYSTem:ERRor[:NEXT]?"),    # the oldest error-queue entry
)


class InstrumentError(BenchError):
    """An instrument refused, reported an error, timed out or went away.

    ``resource`` and ``command`` name where and on what; ``errors`` holds the ``(code, message)``
    entries read from the error queue, if that is what failed.
    """

    def __init__(self, message: str, *, resource: str, command: str | None = None,
                 errors: tuple[tuple[int, str], ...] = ()) -> None:
        where = f"{resource}" + (f", command {command!r}" if command else "")
        super().__init__(f"{where}: {message}")
        self.resource = resource
        self.command = command
        self.errors = errors

    @property
    def code(self) -> int | None:
        return self.errors[0][0] if self.errors else None


class PulseUncertainError(InstrumentError):
    """The link failed while a pulse trigger was unconfirmed: the pulses may or may not have run.

    The driver has reconnected (if it could) and did not re-send the trigger.
    """


class _LinkLost(Exception):
    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class ScpiInstrument:
    """An SCPI instrument on a VISA resource; see the module docstring for the guarantees."""

    #: a substring of the ``*IDN?`` reply that identifies a supported model
    expected_model: str = ""
    #: every command this driver may send; anything else is refused before the wire
    commands: tuple[Setting, ...] = COMMON_COMMANDS
    #: header patterns of commands that make an instrument emit pulses (never re-sent), in
    #: addition to the command set's ``trigger=True`` lines
    pulse_triggers: tuple[str, ...] = ("*TRG", "TRIGger[:SEQuence][:IMMediate]", "INITiate[:IMMediate]")

    def __init__(self, resource: str, *, name: str | None = None, timeout_ms: int = 2000,
                 open_timeout_ms: int = 2000, retries: int = 2, backoff_s: float = 0.05,
                 expected_model: str | None = None, limits: StationLimits | None = None,
                 resource_manager: pyvisa.ResourceManager | None = None) -> None:
        if timeout_ms <= 0 or open_timeout_ms <= 0:
            raise ValueError("timeouts must be positive (milliseconds)")
        if not 0 <= retries <= 10:
            raise ValueError("retries must be 0..10")
        self.resource_name = resource
        self.name = name or type(self).__name__.lower()
        self.timeout_ms = int(timeout_ms)
        self.open_timeout_ms = int(open_timeout_ms)
        self.retries = retries
        self.backoff_s = backoff_s
        if expected_model is not None:
            self.expected_model = expected_model
        #: the station limits every limited quantity is checked against (None: none may be sent)
        self.limits = limits
        self.log = logging.getLogger(f"hilctl.instrument.{self.name}")
        self.idn: str | None = None
        #: error-queue entries found when connecting, left by an earlier session
        self.stale_errors: list[tuple[int, str]] = []
        self.last_command: str | None = None
        self.reconnects = 0
        self.link_retries = 0  # re-attempts of a call after a link failure
        self.timeouts = 0  # link failures that were timeouts
        self.uncertain_triggers = 0  # PulseUncertainError raised
        self.round_trips = 0  # messages completed on the wire: writes written, queries answered
        self.wait_seconds = 0.0  # s spent in wire calls (connect, write, query)
        self._waiting = 0  # depth of nested wire calls (a query inside connect counts once)
        #: what this driver last sent for each ``Setting.state`` key (None: not sent since connect)
        self.sent: dict[str, object] = {}
        self._rm = resource_manager
        self._res: pyvisa.resources.MessageBasedResource | None = None
        self._lock = threading.RLock()
        self._unsynced: list[str] = []  # writes since the last answered query (never a trigger)
        self._unsynced_triggers: list[str] = []  # triggers written since the last answered query
        self._unchecked: list[str] = []  # writes since the last error-queue check
        self._triggers = [HeaderPattern(p) for p in self.pulse_triggers]

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> str:
        """Open the resource and check ``*IDN?``; the identification string.

        Errors left in the instrument's queue by an earlier session are drained, logged at
        WARNING and kept in :attr:`stale_errors`, so they are not blamed on this session's
        commands (``safe_state`` or ``set`` right after connecting would raise them).
        """
        with self._lock, self._on_the_wire():
            try:
                self._open()
            except _LinkLost as exc:
                raise InstrumentError(f"cannot connect: {exc}", resource=self.resource_name,
                                      command="*IDN?") from exc
            assert self.idn is not None
            self._unsynced.clear()
            self._unsynced_triggers.clear()
            self._unchecked.clear()
            self.sent = {}  # a new session: what the instrument holds is unknown
            self.stale_errors = self._drain_stale_errors()
            return self.idn

    def _drain_stale_errors(self, max_entries: int = 64) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for _ in range(max_entries):
            text = self.query("SYST:ERR?")
            try:
                code, message = parse_error(text)
            except ScpiParseError:
                found.append((0, f"unreadable error-queue entry {text!r}"))
                break
            if code == 0:
                break
            found.append((code, message))
        if found:
            self.log.warning("%s: errors left from before this session (not raised): %s",
                             self.resource_name, found)
        return found

    def close(self) -> None:
        """Close this instrument's session (never the ResourceManager).

        What was written on the session was delivered with it, so nothing is replayed on the
        next connection.
        """
        with self._lock:
            self._drop_link()
            self._unsynced.clear()
            self._unsynced_triggers.clear()

    def __enter__(self) -> ScpiInstrument:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._res is not None

    def switch_off(self, commands: tuple[str, ...], *, confirm: str) -> None:
        """Send ``commands`` (a safe state), then ask ``confirm`` (an output-state query) and
        raise :class:`InstrumentError` unless it answers off."""
        with self._lock:
            for command in commands:
                self.write(command)
            reply = self.query(confirm)
            try:
                on = parse_bool(reply)
            except ScpiParseError:
                on = True
            if on:
                raise InstrumentError(f"output not confirmed off: {confirm} answered {reply!r}",
                                      resource=self.resource_name, command=confirm)

    def link_stats(self) -> dict[str, float]:
        """Counters a run can report: ``retries`` (re-attempts after a link failure),
        ``timeouts``, ``reconnects``, ``uncertain_triggers`` (:class:`PulseUncertainError`),
        ``round_trips`` and ``wait_seconds`` (module docstring, "Accounting")."""
        return {"retries": self.link_retries, "timeouts": self.timeouts, "reconnects": self.reconnects,
                "uncertain_triggers": self.uncertain_triggers, "round_trips": self.round_trips,
                "wait_seconds": self.wait_seconds}

    @contextlib.contextmanager
    def _on_the_wire(self) -> Iterator[None]:
        """Add the time inside to :attr:`wait_seconds`, once for nested wire calls."""
        self._waiting += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._waiting -= 1
            if not self._waiting:
                self.wait_seconds += time.perf_counter() - started

    # -- the check every command passes ---------------------------------------------------------

    def vet(self, command: str) -> Command:
        """``command`` parsed, if this driver may send it now; else :class:`CommandRefused` or
        :class:`LimitError` (see the module docstring). Sends nothing."""
        if not isinstance(command, str):
            raise CommandRefused(repr(command), "not a string", resource=self.resource_name)
        bad = sorted({c for c in command if not " " <= c <= "~"})
        if bad:
            raise CommandRefused(command, f"characters {bad!r} (line breaks, control or non-ASCII "
                                 "characters) would split or corrupt the program message",
                                 resource=self.resource_name, allowed="one printable-ASCII command")
        try:
            parts = split_commands(command)
            cmd = parse_command(command)
        except ScpiParseError as exc:
            raise CommandRefused(command, f"not an SCPI command ({exc})",
                                 resource=self.resource_name) from None
        if len(parts) != 1 or parts[0] != command.strip():
            raise CommandRefused(command, "one command per message (';' would add commands the "
                                 "check does not see)", resource=self.resource_name)
        matching = [s for s in self.commands if s.matches(cmd)]
        if not matching:
            allowed = ", ".join(s.describe() for s in self.commands)
            raise CommandRefused(command, f"header {cmd.header!r}{'?' if cmd.query else ''} is not in "
                                 f"the command set of {type(self).__name__}", resource=self.resource_name,
                                 allowed=allowed)
        for setting in matching:
            setting.argument(cmd, self.limits, self.resource_name)
        return cmd

    def is_trigger(self, command: str) -> bool:
        """Whether a command makes the instrument emit pulses (never re-sent automatically)."""
        try:
            cmd = parse_command(command)
        except ScpiParseError:
            return False
        return (any(p.matches(cmd) for p in self._triggers)
                or any(s.trigger and s.matches(cmd) for s in self.commands))

    def _interlock(self, cmd: Command, sent: Mapping[str, object]) -> None:
        """Hook: raise :class:`CommandRefused` if ``cmd`` must not be written in the state
        ``sent`` (what the driver last sent per ``Setting.state``). Public writes only; a
        re-sent setting passed it when it was first written."""

    def _record(self, cmd: Command, sent: dict[str, object]) -> None:
        """Update ``sent`` with the value ``cmd`` sets (settings with a ``state`` key)."""
        if cmd.query:
            return
        for setting in self.commands:
            if setting.state is not None and setting.matches(cmd):
                sent[setting.state] = setting.argument(cmd, self.limits, self.resource_name)

    # -- wire operations -----------------------------------------------------------------------

    def write(self, command: str, *, timeout_ms: int | None = None) -> None:
        """Send one command (no reply expected) after :meth:`vet` and the interlock; a setting is
        re-sent after a reconnect, a trigger never."""
        with self._lock:
            cmd = self.vet(command)
            if cmd.query:  # its reply would be read as the answer to the next query
                raise CommandRefused(command, "a query goes through query(), not write()",
                                     resource=self.resource_name)
            self._interlock(cmd, self.sent)
            for setting in self.commands:  # unknown until the write succeeds (it may half-succeed)
                if setting.state is not None and setting.matches(cmd):
                    self.sent[setting.state] = None
            self._run(command, timeout_ms, expect_reply=False)
            self._record(cmd, self.sent)
            if self.is_trigger(command):
                self._unsynced_triggers.append(command)
            else:
                self._unsynced.append(command)
            self._unchecked.append(command)

    def query(self, command: str, *, timeout_ms: int | None = None) -> str:
        """Send a query (after :meth:`vet`) and return its reply (terminator stripped)."""
        with self._lock:
            if not self.vet(command).query:  # no reply would come; a trigger would be uncertain
                raise CommandRefused(command, "query() needs a query (a header ending in '?'); "
                                     "use write() or set()", resource=self.resource_name)
            reply = self._run(command, timeout_ms, expect_reply=True)
            self._unsynced.clear()
            self._unsynced_triggers.clear()
            return reply

    def check_errors(self, *, timeout_ms: int | None = None, max_entries: int = 64) -> None:
        """Drain ``SYST:ERR?``; raise :class:`InstrumentError` if the instrument reported any."""
        with self._lock:
            commands = list(self._unchecked)
            found: list[tuple[int, str]] = []
            for _ in range(max_entries):
                text = self.query("SYST:ERR?", timeout_ms=timeout_ms)
                try:
                    code, message = parse_error(text)
                except ScpiParseError as exc:
                    raise InstrumentError(f"unreadable error-queue entry {text!r}",
                                          resource=self.resource_name, command="SYST:ERR?") from exc
                if code == 0:
                    break
                found.append((code, message))
            else:
                found.append((0, f"error queue not empty after {max_entries} reads"))
            self._unchecked.clear()
            if not found:
                self._on_errors_checked()
            else:
                self._on_instrument_error()
                listed = "; ".join(f"{c},{m!r}" for c, m in found)
                command = commands[-1] if len(commands) == 1 else None
                sent = f" (sent since the last check: {commands})" if len(commands) > 1 else ""
                raise InstrumentError(f"instrument error {listed}{sent}", resource=self.resource_name,
                                      command=command or (" ; ".join(commands) or None),
                                      errors=tuple(found))

    def set(self, *commands: str, timeout_ms: int | None = None) -> None:
        """Write settings, then check the error queue.

        Every command is vetted (and the interlock run over the whole sequence) before the first
        is written, so a refused command stops the sequence before anything is sent.
        """
        with self._lock:
            sent = dict(self.sent)
            for c in commands:
                cmd = self.vet(c)
                if cmd.query:
                    raise CommandRefused(c, "a query goes through query(), not set()",
                                         resource=self.resource_name)
                self._interlock(cmd, sent)
                self._record(cmd, sent)
            for c in commands:
                self.write(c, timeout_ms=timeout_ms)
            self.check_errors(timeout_ms=timeout_ms)

    # -- internals -----------------------------------------------------------------------------

    def _on_instrument_error(self) -> None:
        """Hook: the instrument reported an error, so a setting may not have taken effect."""

    def _on_errors_checked(self) -> None:
        """Hook: the error queue was empty, so every setting written before took effect."""

    def _run(self, command: str, timeout_ms: int | None, *, expect_reply: bool) -> str:
        with self._on_the_wire():
            return self._attempts(command, timeout_ms, expect_reply=expect_reply)

    def _attempts(self, command: str, timeout_ms: int | None, *, expect_reply: bool) -> str:
        timeout = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        self.last_command = command
        attempt = 0
        while True:
            try:
                if self._res is None:
                    self._reopen()
                self._send(command, timeout)
                return self._receive(timeout) if expect_reply else ""
            except _LinkLost as exc:
                self._drop_link()
                if exc.timeout:
                    self.timeouts += 1
                pending = list(self._unsynced_triggers)
                if self.is_trigger(command):
                    pending.append(command)
                if pending:
                    self._unsynced_triggers.clear()
                    self.uncertain_triggers += 1
                    self._try_reopen()
                    raise PulseUncertainError(
                        f"link failed ({exc}) with pulse trigger(s) {pending} unconfirmed; "
                        f"{'reconnected' if self.connected else 'not reconnected'}, the trigger was "
                        "not re-sent and the pulses may or may not have run"
                        + ("" if self.is_trigger(command) else f"; {command!r} was not completed"),
                        resource=self.resource_name, command=command) from exc
                attempt += 1
                if attempt > self.retries:
                    raise InstrumentError(f"no answer after {attempt} attempts ({exc})",
                                          resource=self.resource_name, command=command) from exc
                self.link_retries += 1
                self.log.warning("%s: %s on %r; reconnecting (attempt %d of %d)", self.resource_name,
                                 exc, command, attempt, self.retries)
                time.sleep(self.backoff_s * attempt)
            except HilctlError:
                raise  # refused before anything was sent: the link is in step
            except BaseException:
                # Interrupted mid-exchange (Ctrl-C, SIGTERM): a reply may still be on its way and
                # would be read as the answer to the next query. The next call starts afresh.
                self._drop_link()
                raise

    def _send(self, command: str, timeout: int) -> None:
        """The last step before the wire: :meth:`vet`, then write (a command that is not a
        query is one round trip once written)."""
        query = self.vet(command).query
        assert self._res is not None
        self.log.debug("%s -> %r", self.name, command)
        try:
            self._res.timeout = timeout
            self._res.write(command)
        except _LINK_ERRORS as exc:
            raise _LinkLost(_describe(exc), timeout=_is_timeout(exc)) from exc
        if not query:
            self.round_trips += 1

    def _receive(self, timeout: int) -> str:
        assert self._res is not None
        try:
            self._res.timeout = timeout
            reply = self._res.read()
        except _LINK_ERRORS as exc:
            raise _LinkLost(_describe(exc), timeout=_is_timeout(exc)) from exc
        self.round_trips += 1
        self.log.debug("%s <- %r", self.name, reply)
        return reply

    def _open(self) -> None:
        rm = self._rm or shared_resource_manager()
        self.log.debug("%s: opening %s", self.name, self.resource_name)
        try:
            res = rm.open_resource(self.resource_name, read_termination="\n", write_termination="\n",
                                   open_timeout=self.open_timeout_ms)
        except Exception as exc:  # pyvisa-py raises a bare Exception("could not connect")
            raise _LinkLost(_describe(exc)) from exc
        self._res = res  # type: ignore[assignment]
        _set_nodelay(res)
        try:
            self.last_command = "*IDN?"
            self._send("*IDN?", self.timeout_ms)
            idn = self._receive(self.timeout_ms).strip()
        except _LinkLost:
            self._drop_link()
            raise
        if self.expected_model and self.expected_model.lower() not in idn.lower():
            self._drop_link()
            raise InstrumentError(f"*IDN? answered {idn!r}, expected a model containing "
                                  f"{self.expected_model!r}: wrong address or wrong instrument?",
                                  resource=self.resource_name, command="*IDN?")
        self.idn = idn
        self._after_connect()

    def _after_connect(self) -> None:
        """Hook: more checks after ``*IDN?`` (e.g. the command language)."""

    def _reopen(self) -> None:
        """Reconnect and re-send the settings written since the last answered query (never a
        trigger: those are kept apart in ``_unsynced_triggers`` and never replayed)."""
        self._open()
        self.reconnects += 1
        self.log.info("%s: reconnected to %s", self.name, self.resource_name)
        for command in list(self._unsynced):
            if self.is_trigger(command):  # never: write() keeps triggers apart; belt and braces
                continue
            self._send(command, self.timeout_ms)

    def _try_reopen(self) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._reopen()
                return
            except (_LinkLost, InstrumentError) as exc:
                self.log.warning("%s: reconnect failed: %s", self.resource_name, exc)
                self._drop_link()
                time.sleep(self.backoff_s * (attempt + 1))

    def _drop_link(self) -> None:
        res, self._res = self._res, None
        if res is not None:
            with contextlib.suppress(Exception):  # closing a broken session must not mask the error
                res.close()


def _set_nodelay(res: object) -> None:
    """Switch Nagle's algorithm off on a raw-socket session.

    Without it, a setting written right after another waits for the instrument's delayed ACK
    (~40 ms on Linux). pyvisa-py 0.8 wires ``VI_ATTR_TCPIP_NODELAY`` to a setter that does not
    reach the socket, so the option is set on the session's socket directly when there is one.
    """
    with contextlib.suppress(Exception):  # not TCP/IP, or another backend
        res.set_visa_attribute(pyvisa.constants.ResourceAttribute.tcpip_nodelay, True)  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        session = res.visalib.sessions[res.session]  # type: ignore[attr-defined]
        sock = getattr(session, "interface", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _is_timeout(exc: BaseException) -> bool:
    timeout = pyvisa.constants.StatusCode.error_timeout
    return isinstance(exc, pyvisa.errors.VisaIOError) and exc.error_code == timeout


def _describe(exc: BaseException) -> str:
    if _is_timeout(exc):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"
