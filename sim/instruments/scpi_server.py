"""A small threaded SCPI server on 127.0.0.1: the transport of the simulated LAN instruments.

Real LAN instruments serve SCPI on a raw TCP socket (port 5025): newline-terminated program
messages, ``;`` between commands, one newline-terminated response message per message that holds
queries (several query responses joined by ``;``). This server does the same, decoded with
``protocols.scpi``, and dispatches every command by :class:`~protocols.scpi.HeaderPattern` to a
handler of the instrument subclass.

Errors go to a per-instrument :class:`~protocols.scpi.ErrorQueue` read with ``SYST:ERR?``:

- ``-102`` a command that does not parse, ``-113`` an unknown header (both abort the rest of the
  program message, as an IEEE 488.2 parser does);
- ``-222`` a value out of the instrument's range (the setting keeps its old value);
- handlers raise :class:`ScpiError` for any other code.

Vendor detail after the standard message names the offending command, e.g.
``-222,"Data out of range;VOLT:HIGH 99"``.

Fault injection (:class:`Faults`, changeable while the server runs):

- ``reply_delay``: every response is sent that many seconds late;
- ``drop_after``: one-shot; after that many messages on a connection, the next message that
  arrives is lost and the server closes that connection (an instrument that lost power or a
  cable that was pulled);
- ``ignore_fraction``: that fraction of the messages holding queries is executed but never
  answered (seeded rng, so a test is repeatable).

What arrived: ``received`` holds every program message executed, ``lost`` those that met a
dropped connection, ``arrived`` both in arrival order (a test checks that nothing beyond a
station's limits ever reached the instrument, whether or not it was executed).

Every loop is bounded: sockets poll with a short timeout and check a stop event, a message is at
most ``MAX_MESSAGE`` bytes, at most ``MAX_CONNECTIONS`` clients are served at once. The server
only ever binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from protocols.scpi import (
    Command,
    ErrorCode,
    ErrorQueue,
    HeaderPattern,
    ScpiParseError,
    format_error,
    parse_bool,
    parse_command,
    parse_number,
    split_commands,
)

__all__ = ["Faults", "Handler", "ScpiError", "ScpiServer", "bool_arg", "choice_arg", "format_reading",
           "number_arg", "one_arg"]

HOST = "127.0.0.1"
MAX_MESSAGE = 64 * 1024
MAX_CONNECTIONS = 8
_POLL = 0.05  # seconds between checks of the stop event

_log = logging.getLogger("sim.instruments.scpi")

Handler = Callable[[Command], "str | None"]


class ScpiError(Exception):
    """Raised by a handler: the code and detail go to the error queue."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"{code} {detail}")
        self.code = int(code)
        self.detail = detail


@dataclass
class Faults:
    """Fault injection knobs; change them at any time (read under the server's lock)."""

    reply_delay: float = 0.0
    drop_after: int | None = None
    ignore_fraction: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class ScpiServer:
    """A threaded SCPI instrument on 127.0.0.1; subclasses register handlers with :meth:`add`."""

    def __init__(self, idn: str, *, port: int = 0, faults: Faults | None = None,
                 queue_size: int = 10, name: str = "scpi") -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self.idn = idn
        self.name = name
        self.faults = faults or Faults()
        self.errors = ErrorQueue(queue_size)
        self.lock = threading.RLock()  # instrument state, error queue, message log
        self.received: list[str] = []  # every program message executed, in order
        self.lost: list[str] = []  # messages that met a dropped connection
        self.arrived: list[str] = []  # every program message that arrived (executed or lost), in order
        self.connections = 0  # connections accepted so far
        self._handlers: list[tuple[HeaderPattern, Handler]] = []
        self._port = port
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self.add("*IDN?", lambda c: self.idn)
        self.add("*RST", self._rst)
        self.add("*CLS", self._cls)
        self.add("*OPC?", lambda c: "1")
        self.add("*WAI", lambda c: None)
        self.add("SYSTem:ERRor[:NEXT]?", self._syst_err)
        self.add("SYSTem:ERRor:COUNt?", lambda c: str(len(self.errors)))

    # -- registration and state helpers ---------------------------------------------------------

    def add(self, pattern: str, handler: Handler) -> None:
        """Dispatch commands matching ``pattern`` to ``handler`` (first registered pattern wins)."""
        self._handlers.append((HeaderPattern(pattern), handler))

    def reset(self) -> None:
        """``*RST``: subclasses put their settings back to the power-on defaults."""

    def _rst(self, cmd: Command) -> None:
        _no_args(cmd)
        self.reset()

    def _cls(self, cmd: Command) -> None:
        _no_args(cmd)
        self.errors.clear()

    def _syst_err(self, cmd: Command) -> str:
        return format_error(*self.errors.pop())

    @property
    def message_count(self) -> int:
        with self.lock:
            return len(self.received)

    # -- executing program messages ---------------------------------------------------------

    def execute(self, message: str) -> str | None:
        """Run one program message; the response message (without terminator) or None."""
        replies: list[str] = []
        with self.lock:
            self.received.append(message)
            try:
                commands = split_commands(message)
            except UnicodeDecodeError:
                self.errors.push(ErrorCode.INVALID_CHARACTER)
                return None
            for text in commands:
                try:
                    cmd = parse_command(text)
                except ScpiParseError:
                    self.errors.push(ErrorCode.SYNTAX_ERROR, f"Syntax error;{text}")
                    break
                handler = self._find(cmd)
                if handler is None:
                    self.errors.push(ErrorCode.UNDEFINED_HEADER, f"Undefined header;{text}")
                    break
                try:
                    reply = handler(cmd)
                except ScpiError as exc:
                    base = format_error(exc.code).split(",", 1)[1].strip('"')
                    detail = f";{exc.detail}" if exc.detail else ""
                    self.errors.push(exc.code, f"{base};{text}{detail}")
                    if cmd.query:
                        replies.append("9.91E37")  # answer anyway so the client does not hang
                    continue
                if cmd.query:
                    replies.append("" if reply is None else str(reply))
        return ";".join(replies) if replies else None

    def _find(self, cmd: Command) -> Handler | None:
        for pattern, handler in self._handlers:
            if pattern.matches(cmd):
                return handler
        return None

    # -- sockets ---------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        if self._sock is None:
            raise RuntimeError("server not started")
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def resource(self) -> str:
        """The VISA resource string of this instrument's raw socket."""
        return f"TCPIP0::{HOST}::{self.address[1]}::SOCKET"

    def start(self) -> Self:
        if self._sock is not None:
            raise RuntimeError("server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, self._port))
            sock.listen(MAX_CONNECTIONS)
            sock.settimeout(_POLL)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._stop.clear()
        t = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._threads.append(t)
        t.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self.lock:
            clients = list(self._clients)
        for c in clients:
            _close(c)
        for t in self._threads:
            t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._sock is not None:
            _close(self._sock)
            self._sock = None

    def drop_connections(self) -> int:
        """Close every client connection now (a pulled cable); the server keeps listening, so
        a client can reconnect. The number of connections closed."""
        with self.lock:
            clients = list(self._clients)
        for c in clients:
            _close(c)
        return len(clients)

    def alive_threads(self) -> list[threading.Thread]:
        """This server's threads still running (none after :meth:`stop`)."""
        return [t for t in self._threads if t.is_alive()]

    # -- handlers of plain settings (an attribute that a command sets and a query returns) ----

    def number_setting(self, attr: str, lo: float, hi: float) -> Handler:
        """``HEADER <number>`` sets ``attr`` (-222 outside ``[lo, hi]``); ``HEADER?`` reads it."""
        def handler(cmd: Command) -> str | None:
            if cmd.query:
                return format_reading(getattr(self, attr))
            setattr(self, attr, number_arg(cmd, lo, hi))
            return None
        return handler

    def choice_setting(self, attr: str, choices: list[str]) -> Handler:
        """``HEADER <choice>`` sets ``attr`` to one of ``choices``; ``HEADER?`` reads it."""
        def handler(cmd: Command) -> str | None:
            if cmd.query:
                return str(getattr(self, attr))
            setattr(self, attr, choice_arg(cmd, choices))
            return None
        return handler

    def bool_setting(self, attr: str) -> Handler:
        """``HEADER ON|OFF|1|0`` sets ``attr``; ``HEADER?`` answers 1 or 0."""
        def handler(cmd: Command) -> str | None:
            if cmd.query:
                return "1" if getattr(self, attr) else "0"
            setattr(self, attr, bool_arg(cmd))
            return None
        return handler

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with self.lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                if len(self._clients) >= MAX_CONNECTIONS:
                    _close(conn)
                    continue
                self._clients.add(conn)
                self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(_POLL)
            t = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        handled = 0
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                buf.extend(chunk)
                if len(buf) > MAX_MESSAGE and b"\n" not in buf:
                    _log.warning("%s: message longer than %d bytes; closing", self.name, MAX_MESSAGE)
                    break
                while b"\n" in buf and not self._stop.is_set():
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    text = line.decode("ascii", errors="replace").rstrip("\r")
                    if not text.strip():
                        continue
                    with self.lock:
                        self.arrived.append(text)
                        drop = self.faults.drop_after is not None and handled >= self.faults.drop_after
                        if drop:
                            self.faults.drop_after = None  # one shot
                            self.lost.append(text)
                    if drop:
                        return
                    handled += 1
                    reply = self.execute(text)
                    if reply is None:
                        continue
                    with self.lock:
                        ignore = (self.faults.ignore_fraction > 0
                                  and self.faults.rng.random() < self.faults.ignore_fraction)
                        delay = self.faults.reply_delay
                    if ignore:
                        continue
                    if delay > 0 and self._stop.wait(delay):
                        return
                    try:
                        conn.sendall(reply.encode("ascii", errors="replace") + b"\n")
                    except OSError:
                        return
        finally:
            with self.lock:
                self._clients.discard(conn)
            _close(conn)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# -- argument helpers for handlers -------------------------------------------------------------


def _no_args(cmd: Command) -> None:
    if cmd.args:
        raise ScpiError(ErrorCode.PARAMETER_NOT_ALLOWED)


def one_arg(cmd: Command) -> str:
    """The single argument of a setting (-109 missing, -108 too many)."""
    if not cmd.args:
        raise ScpiError(ErrorCode.MISSING_PARAMETER)
    if len(cmd.args) > 1:
        raise ScpiError(ErrorCode.PARAMETER_NOT_ALLOWED)
    return cmd.args[0]


def number_arg(cmd: Command, lo: float, hi: float, *, keywords: dict[str, float] | None = None) -> float:
    """A numeric argument within ``[lo, hi]`` (-104 not a number, -222 out of range).

    ``MINimum`` and ``MAXimum`` give ``lo`` and ``hi``; ``keywords`` adds others (``INFinity``).
    """
    text = one_arg(cmd)
    words = {"MINimum": lo, "MAXimum": hi, **(keywords or {})}
    for word, value in words.items():
        if HeaderPattern(word).matches(text):
            return value
    try:
        value = parse_number(text)
    except ScpiParseError:
        raise ScpiError(ErrorCode.DATA_TYPE_ERROR) from None
    if not lo <= value <= hi:  # also refuses nan
        raise ScpiError(ErrorCode.DATA_OUT_OF_RANGE)
    return value


def bool_arg(cmd: Command) -> bool:
    try:
        return parse_bool(one_arg(cmd))
    except ScpiParseError:
        raise ScpiError(ErrorCode.DATA_TYPE_ERROR) from None


def choice_arg(cmd: Command, choices: list[str]) -> str:
    """A character-data argument, one of ``choices`` given as SCPI keywords (``PULSe``).

    Returns the short form of the first keyword of the matching choice (``PULS``, ``CURR``).
    """
    text = one_arg(cmd).strip().strip('"').strip("'")
    for choice in choices:
        pattern = HeaderPattern(choice)
        if pattern.matches(text):
            return pattern.nodes[0].short
    raise ScpiError(ErrorCode.DATA_OUT_OF_RANGE if text else ErrorCode.MISSING_PARAMETER)


def format_reading(value: float) -> str:
    """A number as instruments answer: ``+1.500000000E+00``."""
    return f"{value:+.9E}"
