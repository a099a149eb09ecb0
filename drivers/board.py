"""Client of the crossbar controller board over a serial line (pyserial).

Every request gets a fresh sequence number from :class:`~protocols.board.SequenceCounter`. The
client then waits up to ``timeout`` seconds for the reply carrying that number. On a timeout, an
undecodable reply, a reply of the wrong type, or a transient NACK (``bad_crc``, ``bad_frame``,
``busy``) it sends the *identical* frame again, with the *same* sequence number, up to ``retries``
more times. The board answers a repeated number from its reply cache without executing the
request again, so a pulse is applied exactly once however many frames are lost on the way
(``protocols/BOARD.md``, "Idempotent retry"). Replies with another sequence number (late
duplicates of earlier retries) are discarded.

A definite NACK (out of range, unsupported, bad payload, ...) raises :class:`BoardError`; no
valid reply after all attempts raises :class:`BoardTimeout`. Both name the port and the command.
Frames are logged at DEBUG on ``hilctl.instrument.board``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import serial
from numpy.typing import NDArray

from hilctl.errors import HilctlError
from protocols import board as pb

__all__ = ["BoardClient", "BoardError", "BoardStats", "BoardTimeout"]

log = logging.getLogger("hilctl.instrument.board")

#: NACK codes that mean "not executed, send the same frame again".
_TRANSIENT = frozenset({pb.NackCode.BAD_CRC, pb.NackCode.BAD_FRAME, pb.NackCode.BUSY})
_BUSY_BACKOFF = 0.005  # s to wait before retrying after NACK busy


class BoardError(HilctlError):
    """The board refused a request (NACK), or the link failed. Names the port and the command."""

    def __init__(self, message: str, *, port: str, command: str,
                 nack: pb.NackCode | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.port = port
        self.command = command
        self.nack = nack
        self.detail = detail


class BoardTimeout(BoardError, TimeoutError):
    """No valid reply after every retry."""


@dataclass
class BoardStats:
    """What the client saw on the wire (counters only grow)."""

    requests: int = 0  # requests issued (each with a new sequence number)
    attempts: int = 0  # frames sent, retries included
    retries: int = 0  # attempts beyond the first of each request
    timeouts: int = 0  # attempts that ended without any usable reply
    corrupt_replies: int = 0  # undecodable frames received
    transient_nacks: int = 0  # bad_crc / bad_frame / busy NACKs received
    discarded: int = 0  # valid frames with another sequence number (late duplicates) or wrong type
    serial_errors: int = 0


TargetLike = pb.CellTarget | pb.MaskTarget | tuple[int, int]
LineLike = pb.LineRef | tuple[str, int] | None


class BoardClient:
    """Talks to a controller board on ``port`` (a device path, or a pyserial URL such as ``loop://``).

    ``timeout`` is the wait per attempt; a request makes at most ``1 + retries`` attempts, so a dead
    board raises :class:`BoardTimeout` after about ``timeout * (1 + retries)`` seconds.
    ``seq_start`` defaults to a random number, so that a restarted host does not reuse the numbers
    (and identical requests) the board still holds in its reply cache.
    """

    def __init__(self, port: str, *, timeout: float = 0.2, retries: int = 20, baudrate: int = 115200,
                 seq_start: int | None = None) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self.port = port
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.stats = BoardStats()
        self._seq = pb.SequenceCounter(secrets.randbelow(pb.SEQ_MODULUS) if seq_start is None else seq_start)
        self._decoder = pb.FrameDecoder()
        try:
            if "://" in port:
                self._serial = serial.serial_for_url(port, baudrate=baudrate, timeout=self.timeout,
                                                     write_timeout=self.timeout)
            else:
                self._serial = serial.Serial(port, baudrate=baudrate, timeout=self.timeout,
                                             write_timeout=self.timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardError(f"board {port}: cannot open the port: {exc}", port=port, command="open",
                             detail=str(exc)) from exc
        self._info: pb.IdentifyReply | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._serial.is_open:
            self._serial.close()

    def __enter__(self) -> BoardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BoardClient({self.port!r})"

    # -- commands -------------------------------------------------------------------------------

    def identify(self) -> pb.IdentifyReply:
        """Firmware, geometry and capabilities (also kept as :attr:`info`)."""
        reply = self.request(pb.Identify())
        assert isinstance(reply, pb.IdentifyReply)
        self._info = reply
        return reply

    @property
    def info(self) -> pb.IdentifyReply:
        """The last :meth:`identify` reply (identifies first if there is none)."""
        return self._info if self._info is not None else self.identify()

    def reset(self) -> None:
        self.request(pb.Reset())

    def select(self, mode: pb.SelectMode | str, row: int | None = None, col: int | None = None,
               bias: pb.Bias | str = pb.Bias.V_HALF) -> None:
        """Select a cell (row and col), a row or a column; ``bias`` sets the unselected lines."""
        self.request(pb.Select(pb.SelectMode(mode), row, col, pb.Bias(bias)))

    def route(self, pulse: LineLike = None, smu: LineLike = None) -> None:
        """Connect the pulse-generator and SMU lines to a row or column: ``("row", 3)`` or a LineRef."""
        self.request(pb.Route(_line(pulse), _line(smu)))

    def pulse(self, target: TargetLike, polarity: int, count: int = 1, *, amplitude: float,
              width: float) -> None:
        """``count`` on-board pulses of ``polarity * amplitude`` V on a cell ``(row, col)`` or masks."""
        self.request(pb.Pulse(polarity, count, amplitude, width, _target(target)))

    def pulse_masks(self, rows: Iterable[int], cols: Iterable[int], polarity: int, count: int = 1, *,
                    amplitude: float, width: float) -> None:
        """Coincidence update of every (row, col) crossing (needs ``parallel_update``)."""
        self.pulse(pb.MaskTarget(frozenset(rows), frozenset(cols)), polarity, count,
                   amplitude=amplitude, width=width)

    def read(self, mode: pb.ReadMode | str = pb.ReadMode.CELL, row: int | None = None,
             col: int | None = None, voltage: float = 0.1) -> NDArray[np.float64]:
        """Currents (A) with shape (1, 1), (1, cols), (rows, 1) or (rows, cols)."""
        reply = self.request(pb.Read(pb.ReadMode(mode), row, col, voltage))
        assert isinstance(reply, pb.ReadReply)
        return np.asarray(reply.values, dtype=np.float64).reshape(reply.shape)

    def read_cell(self, row: int, col: int, voltage: float = 0.1) -> float:
        return float(self.read(pb.ReadMode.CELL, row, col, voltage)[0, 0])

    def errors(self) -> list[tuple[int, str]]:
        """Drain the board's error queue: ``(code, message)``, oldest first."""
        reply = self.request(pb.ReadErrors())
        assert isinstance(reply, pb.ErrorsReply)
        return list(reply.errors)

    # -- the retry loop -------------------------------------------------------------------------

    def request(self, message: pb.Message) -> pb.Message:
        """Send ``message`` and return its reply; retries reuse the sequence number and the frame."""
        expected = pb.REPLY_TYPES.get(type(message))
        if expected is None:
            raise TypeError(f"not a board request: {message!r}")
        seq = self._seq.next()
        wire = b"\x00" + pb.encode_frame(seq, message)  # leading delimiter flushes line noise
        self.stats.requests += 1
        debug = log.isEnabledFor(logging.DEBUG)
        last_problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.attempts += 1
            if debug:
                log.debug("%s -> seq=%d attempt=%d %r [%s]", self.port, seq, attempt + 1, message,
                          wire.hex(" "))
            deadline = time.monotonic() + self.timeout
            try:
                self._serial.write(wire)
                outcome = self._await(seq, message, expected, deadline, debug)
            except (serial.SerialException, OSError) as exc:
                self.stats.serial_errors += 1
                outcome = f"serial error: {exc}"
                time.sleep(max(0.0, deadline - time.monotonic()))  # no tight loop on a dead port
            if isinstance(outcome, pb.Message):
                if isinstance(outcome, pb.Nack):
                    raise BoardError(
                        f"board {self.port}: {_name(message)} refused with NACK "
                        f"{outcome.error.name.lower()} ({int(outcome.error)}): {outcome.message} "
                        f"[request {message!r}]",
                        port=self.port, command=repr(message), nack=outcome.error, detail=outcome.message)
                return outcome
            last_problem = outcome
            if outcome.startswith("timeout"):
                self.stats.timeouts += 1
            elif outcome.startswith("nack busy"):
                time.sleep(_BUSY_BACKOFF)
        raise BoardTimeout(
            f"board {self.port}: no valid reply to {_name(message)} (seq {seq}) after "
            f"{self.retries + 1} attempts of {self.timeout:g} s; last problem: {last_problem} "
            f"[last command {message!r}]",
            port=self.port, command=repr(message), detail=last_problem)

    def _await(self, seq: int, message: pb.Message, expected: type[pb.Message], deadline: float,
               debug: bool) -> pb.Message | str:
        """The reply to ``seq``, or a string saying why this attempt should be retried."""
        ser = self._serial
        while True:
            data = ser.read(ser.in_waiting or 1)
            for item in self._decoder.feed(data):
                if isinstance(item, pb.ProtocolError):
                    self.stats.corrupt_replies += 1
                    if debug:
                        log.debug("%s <- undecodable frame: %s", self.port, item)
                    self._flush()
                    return f"corrupt reply ({item})"
                if debug:
                    log.debug("%s <- seq=%d %r", self.port, item.seq, item.message)
                reply = item.message
                # The sequence number of a bad_crc/bad_frame NACK is untrusted; with one request in
                # flight it answers a copy of this request, so it means "send it again".
                if (isinstance(reply, pb.Nack) and reply.error in _TRANSIENT
                        and (item.seq == seq or reply.error is not pb.NackCode.BUSY)):
                    self.stats.transient_nacks += 1
                    self._flush()
                    return f"nack {reply.error.name.lower()}: {reply.message}"
                if item.seq != seq:
                    self.stats.discarded += 1
                    continue
                if isinstance(reply, pb.Nack):
                    return reply
                if not isinstance(reply, expected) or (
                        isinstance(reply, pb.Ack) and reply.command != message.CODE):
                    self.stats.discarded += 1
                    self._flush()
                    return f"mismatched reply {reply!r}"
                return reply
            if time.monotonic() >= deadline:
                return f"timeout after {self.timeout:g} s"

    def _flush(self) -> None:
        """Drop what is left of a garbled reply before the retry (its retry answer comes fresh)."""
        self._serial.reset_input_buffer()
        self._decoder.reset()


def _name(message: pb.Message) -> str:
    return type(message).__name__


def _target(target: TargetLike) -> pb.CellTarget | pb.MaskTarget:
    if isinstance(target, pb.CellTarget | pb.MaskTarget):
        return target
    row, col = target
    return pb.CellTarget(int(row), int(col))


def _line(line: LineLike) -> pb.LineRef | None:
    if line is None or isinstance(line, pb.LineRef):
        return line
    axis, index = line
    return pb.LineRef(pb.Axis(axis), int(index))
