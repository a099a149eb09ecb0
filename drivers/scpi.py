"""SCPI instruments over pyvisa (pyvisa-py backend): the base of the pulse generator and SMU drivers.

What every instrument gets from :class:`ScpiInstrument`:

- ``connect()`` opens the resource (``TCPIP0::host::5025::SOCKET``, ``GPIB0::17::INSTR``, ...)
  with ``\\n`` read and write termination, without ``clear()`` (some instruments freeze on a
  device clear), and checks ``*IDN?`` against the expected model: a wrong or silent instrument is
  an :class:`InstrumentError` at once, not a strange failure later.
- Every ``write``/``query`` sets the VISA timeout (milliseconds) for that call.
- ``check_errors()`` drains ``SYST:ERR?`` until ``0`` and raises :class:`InstrumentError` with the
  codes and messages, the resource and the command(s) written since the last check.
- Wire traffic is logged at DEBUG on ``hilctl.instrument.<name>`` (``-> cmd``, ``<- reply``).
- Reconnect. A timeout or a lost connection closes the session (a late reply on the old socket
  could otherwise be read as the answer to the next query), reopens it, re-checks ``*IDN?``,
  re-sends the settings written since the last answered query (they may have been lost with the
  connection; settings are idempotent) and repeats the call, at most ``retries`` times. A
  command that triggers pulses (``*TRG``, ``TRIG``, ``INIT``; see :attr:`pulse_triggers`) is
  never re-sent: if the link fails while one is unconfirmed, the driver reconnects so the
  instrument stays usable and raises :class:`PulseUncertainError` -- the caller must find out
  (e.g. by reading the cell) whether the pulses happened.
- An unrecoverable failure raises :class:`InstrumentError` naming the resource and the last
  command. Every error here subclasses :class:`hilctl.errors.HilctlError`.

A shared ``pyvisa.ResourceManager("@py")`` is created on first use and never closed by a
driver; pass ``resource_manager=`` to use your own (the driver will not close it either).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import pyvisa
import pyvisa.constants
import pyvisa.errors

from hilctl.errors import HilctlError
from protocols.scpi import HeaderPattern, ScpiParseError, parse_command, parse_error

__all__ = ["InstrumentError", "PulseUncertainError", "ScpiInstrument", "shared_resource_manager"]

_rm_lock = threading.Lock()
_shared_rm: pyvisa.ResourceManager | None = None

# What a broken link looks like through pyvisa and pyvisa-py: VISA I/O errors (timeouts), socket
# errors, and pyvisa-py's bare Exception("could not connect: ...") on open.
_LINK_ERRORS = (pyvisa.errors.Error, OSError)


def shared_resource_manager() -> pyvisa.ResourceManager:
    """The process-wide ``ResourceManager("@py")``; drivers never close it."""
    global _shared_rm
    with _rm_lock:
        if _shared_rm is None:
            _shared_rm = pyvisa.ResourceManager("@py")
        return _shared_rm


class InstrumentError(HilctlError):
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
    """The link failed while a pulse trigger was unconfirmed: the pulses may or may not have run."""


class _LinkLost(Exception):
    pass


class ScpiInstrument:
    """An SCPI instrument on a VISA resource; see the module docstring for the guarantees."""

    #: a substring of the ``*IDN?`` reply that identifies a supported model
    expected_model: str = ""
    #: header patterns of commands that make an instrument emit pulses (never re-sent)
    pulse_triggers: tuple[str, ...] = ("*TRG", "TRIGger[:SEQuence][:IMMediate]", "INITiate[:IMMediate]")

    def __init__(self, resource: str, *, name: str | None = None, timeout_ms: int = 2000,
                 open_timeout_ms: int = 2000, retries: int = 2, backoff_s: float = 0.05,
                 expected_model: str | None = None,
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
        self.log = logging.getLogger(f"hilctl.instrument.{self.name}")
        self.idn: str | None = None
        self.last_command: str | None = None
        self.reconnects = 0
        self._rm = resource_manager
        self._res: pyvisa.resources.MessageBasedResource | None = None
        self._lock = threading.RLock()
        self._unsynced: list[str] = []  # writes since the last answered query
        self._unchecked: list[str] = []  # writes since the last error-queue check
        self._triggers = [HeaderPattern(p) for p in self.pulse_triggers]

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> str:
        """Open the resource and check ``*IDN?``; the identification string."""
        with self._lock:
            try:
                self._open()
            except _LinkLost as exc:
                raise InstrumentError(f"cannot connect: {exc}", resource=self.resource_name,
                                      command="*IDN?") from exc
            assert self.idn is not None
            return self.idn

    def close(self) -> None:
        """Close this instrument's session (never the ResourceManager)."""
        with self._lock:
            self._drop_link()

    def __enter__(self) -> ScpiInstrument:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._res is not None

    # -- wire operations -----------------------------------------------------------------------

    def write(self, command: str, *, timeout_ms: int | None = None) -> None:
        """Send one command (no reply expected); re-sent after a reconnect unless it triggers."""
        with self._lock:
            trigger = self.is_trigger(command)
            self._run(command, timeout_ms, expect_reply=False, trigger=trigger)
            self._unsynced.append(command)
            self._unchecked.append(command)

    def query(self, command: str, *, timeout_ms: int | None = None) -> str:
        """Send a query and return its reply (terminator stripped)."""
        with self._lock:
            trigger = self.is_trigger(command) or any(self.is_trigger(c) for c in self._unsynced)
            reply = self._run(command, timeout_ms, expect_reply=True, trigger=trigger)
            self._unsynced.clear()
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
            if found:
                listed = "; ".join(f"{c},{m!r}" for c, m in found)
                command = commands[-1] if len(commands) == 1 else None
                sent = f" (sent since the last check: {commands})" if len(commands) > 1 else ""
                raise InstrumentError(f"instrument error {listed}{sent}", resource=self.resource_name,
                                      command=command or (" ; ".join(commands) or None),
                                      errors=tuple(found))

    def set(self, *commands: str, timeout_ms: int | None = None) -> None:
        """Write settings, then check the error queue."""
        with self._lock:
            for c in commands:
                self.write(c, timeout_ms=timeout_ms)
            self.check_errors(timeout_ms=timeout_ms)

    def is_trigger(self, command: str) -> bool:
        """Whether a command makes the instrument emit pulses (never re-sent automatically)."""
        try:
            cmd = parse_command(command)
        except ScpiParseError:
            return False
        return any(p.matches(cmd) for p in self._triggers)

    # -- internals -----------------------------------------------------------------------------

    def _run(self, command: str, timeout_ms: int | None, *, expect_reply: bool, trigger: bool) -> str:
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
                if trigger:
                    self._unsynced.clear()
                    self._try_reopen()
                    raise PulseUncertainError(
                        f"link failed with a pulse trigger unconfirmed ({exc}); not re-sent, the pulses "
                        "may or may not have run", resource=self.resource_name, command=command) from exc
                attempt += 1
                if attempt > self.retries:
                    raise InstrumentError(f"no answer after {attempt} attempts ({exc})",
                                          resource=self.resource_name, command=command) from exc
                self.log.warning("%s: %s on %r; reconnecting (attempt %d of %d)", self.resource_name,
                                 exc, command, attempt, self.retries)
                time.sleep(self.backoff_s * attempt)

    def _send(self, command: str, timeout: int) -> None:
        assert self._res is not None
        self.log.debug("%s -> %r", self.name, command)
        try:
            self._res.timeout = timeout
            self._res.write(command)
        except _LINK_ERRORS as exc:
            raise _LinkLost(_describe(exc)) from exc

    def _receive(self, timeout: int) -> str:
        assert self._res is not None
        try:
            self._res.timeout = timeout
            reply = self._res.read()
        except _LINK_ERRORS as exc:
            raise _LinkLost(_describe(exc)) from exc
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
        """Reconnect and re-send the settings written since the last answered query."""
        self._open()
        self.reconnects += 1
        self.log.info("%s: reconnected to %s", self.name, self.resource_name)
        for command in list(self._unsynced):
            self._send(command, self.timeout_ms)

    def _try_reopen(self) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._reopen()
                return
            except _LinkLost:
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


def _describe(exc: BaseException) -> str:
    timeout = pyvisa.constants.StatusCode.error_timeout
    if isinstance(exc, pyvisa.errors.VisaIOError) and exc.error_code == timeout:
        return "timeout"
    return f"{type(exc).__name__}: {exc}"
