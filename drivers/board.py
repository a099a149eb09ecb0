"""Client of the crossbar controller board over a serial line (pyserial).

Guarantees:

- Limits at the wire. A client made with ``limits=`` (the station's
  :class:`~protocols.station.StationLimits`) checks every request right before it is encoded --
  ``pulse``, ``pulse_masks``, ``read``, ``read_cell`` and a raw :meth:`BoardClient.request`
  alike: pulse amplitude (the magnitude, > 0), width and count, and the read voltage. The wire
  carries float32, so the convenience methods first compare the requested float64 value exactly
  with the limits (one float64 ulp beyond is refused, exactly at the limit passes) and then send
  the float32 nearest to it on the safe side (:func:`drivers.limits.float32_within`: a width of
  exactly ``max_pulse_width`` = 1e-3 s goes out as 0.00099999993 s, not 0.0010000000475 s);
  :meth:`BoardClient.request` compares the float32 values the frame carries. A refusal raises
  :class:`~drivers.limits.LimitError` and sends nothing. A client without limits (identifying a
  station's board, say) may identify, reset, select, route and drain the error queue, and
  refuses every pulse and read: nothing that sets a level leaves without limits. An analog MVM
  (:meth:`BoardClient.mvm`, protocol 2) is checked the same way, every voltage of every vector
  against the read-voltage limit, and its integration time and ADC range against
  :data:`MVM_INTEGRATION_TIME` and :data:`MVM_ADC_RANGE`; it is sent only to a board whose
  ``Identify`` reports ``analog_mvm``. A board that speaks only protocol 1 answers an MVM frame
  with NACK ``bad_version``: a :class:`BoardError` saying the board speaks protocol 1. A pulse
  train (:meth:`BoardClient.pulse_train`, protocol 2) is checked as a mask pulse for each of its
  slots (amplitude, width, every line within the board's array) and is sent only to a board
  whose ``Identify`` reports ``pulse_train``.
- Replies are checked against their requests. A ``ReadReply`` must have the shape the read asks
  for -- (1, 1) for a cell, (1, cols) for a row, (rows, 1) for a column, (rows, cols) for the
  array, with the geometry of the board's ``Identify`` (the client identifies first if it has
  not) -- and an ``IdentifyReply`` must report at least one row and one column. A mismatch is a
  :class:`BoardError` naming the port, the command and what was expected and received; it is not
  retried (the board would answer the same sequence number from its reply cache) and never
  returned as data.
- Exactly once. Every request gets a fresh sequence number from
  :class:`~protocols.board.SequenceCounter`. The client then waits up to ``timeout`` seconds for
  the reply carrying that number. On a timeout, an undecodable reply, a reply of the wrong type,
  or a transient NACK (``bad_crc``, ``bad_frame``, ``busy``) it sends the *identical* frame
  again, with the *same* sequence number, up to ``retries`` more times. The board answers a
  repeated number from its reply cache without executing the request again, so a pulse is
  applied exactly once however many frames are lost on the way (``protocols/BOARD.md``,
  "Idempotent retry"). Replies with another sequence number (late duplicates of earlier
  retries) are discarded.
- :meth:`BoardClient.reset` is the board's safe state: selection cleared, every line grounded,
  routes open, error queue cleared. :meth:`BoardClient.link_stats` gives the counters a run
  reports, among them ``round_trips`` (requests the board answered, once each however many
  attempts it took; the attempts beyond the first are ``retries``) and ``wait_seconds`` (time
  spent in :meth:`BoardClient.request`, waiting on the board, retries and refusals included).

A definite NACK (out of range, unsupported, bad payload, ...) raises :class:`BoardError`; no
valid reply after all attempts raises :class:`BoardTimeout`. Both name the port and the command.
Frames are logged at DEBUG on ``hilctl.instrument.board``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import serial
from numpy.typing import NDArray

from drivers.limits import LimitError, check, float32_within
from hilctl.errors import BenchError
from protocols import board as pb
from protocols.station import StationLimits

__all__ = ["MVM_ADC_RANGE", "MVM_INTEGRATION_TIME", "BoardClient", "BoardError", "BoardStats",
           "BoardTimeout"]

log = logging.getLogger("hilctl.instrument.board")

#: NACK codes that mean "not executed, send the same frame again".
_TRANSIENT = frozenset({pb.NackCode.BAD_CRC, pb.NackCode.BAD_FRAME, pb.NackCode.BUSY})
_BUSY_BACKOFF = 0.005  # s to wait before retrying after NACK busy
_F32_TINY = float(np.nextafter(np.float32(0), np.float32(1)))  # smallest positive float32 (V)
#: The integration times (s) and ADC ranges (A) an MVM may ask for: a nanosecond to a second, as
#: pulses; a current range up to the 0.1 A ceiling of any station's compliance.
MVM_INTEGRATION_TIME = (1e-9, 1.0)
MVM_ADC_RANGE = (0.0, 0.1)  # the lower end excluded
#: Payload bytes of an MVM besides the voltages: drive, two masks (u16 count each), f32 x 2, u16.
_MVM_FIXED = 1 + 2 + 2 + 4 + 4 + 2
#: Payload bytes of a pulse train besides its slots: amplitude, width (f32 each), slot count u16.
_TRAIN_FIXED = 4 + 4 + 2
#: What a protocol-2 command does, for the message that a board of protocol 1 refused it.
_FEATURES = {pb.Mvm: "analog MVM", pb.PulseTrain: "pulse trains"}


class BoardError(BenchError):
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
    round_trips: int = 0  # requests answered (a reply or a NACK), once each whatever the attempts
    wait_seconds: float = 0.0  # s spent in request(): on the wire and waiting for the reply


TargetLike = pb.CellTarget | pb.MaskTarget | tuple[int, int]
#: One slot of a pulse train: the rows, the columns and the polarity (+1 / -1) of its mask pulse.
SlotLike = tuple[Iterable[int], Iterable[int], int]
LineLike = pb.LineRef | tuple[str, int] | None


class BoardClient:
    """Talks to a controller board on ``port`` (a device path, or a pyserial URL such as ``loop://``).

    ``timeout`` is the wait per attempt; a request makes at most ``1 + retries`` attempts, so a dead
    board raises :class:`BoardTimeout` after about ``timeout * (1 + retries)`` seconds.
    ``seq_start`` defaults to a random number, so that a restarted host does not reuse the numbers
    (and identical requests) the board still holds in its reply cache. ``limits`` are the
    station's hard limits; without them no pulse or read is sent (module docstring).
    """

    def __init__(self, port: str, *, timeout: float = 0.2, retries: int = 20, baudrate: int = 115200,
                 seq_start: int | None = None, limits: StationLimits | None = None) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self.port = port
        self.baudrate = int(baudrate)
        self.limits = limits
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
        """The board's safe state: selection cleared, lines grounded, routes open (the pulse
        generator and the SMU reach no cell), error queue cleared. Needs no limits."""
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
        """``count`` on-board pulses of ``polarity * amplitude`` V, ``width`` s, on a cell
        ``(row, col)`` or masks; ``amplitude`` is the magnitude (> 0). Checked against the
        limits and rounded to float32 towards safety before anything is sent."""
        amplitude32, width32, n = self._pulse_values(amplitude, width, count)
        self.request(pb.Pulse(polarity, n, amplitude32, width32, _target(target)))

    def pulse_masks(self, rows: Iterable[int], cols: Iterable[int], polarity: int, count: int = 1, *,
                    amplitude: float, width: float) -> None:
        """Coincidence update of every (row, col) crossing (needs ``parallel_update``)."""
        self.pulse(pb.MaskTarget(frozenset(rows), frozenset(cols)), polarity, count,
                   amplitude=amplitude, width=width)

    def pulse_train(self, slots: Iterable[SlotLike], *, amplitude: float, width: float) -> None:
        """One mask pulse of ``polarity * amplitude`` V, ``width`` s per slot ``(rows, cols,
        polarity)``, in order, in as few ``PulseTrain`` frames as :meth:`payload_budget` allows
        (needs ``pulse_train``). Amplitude and width are checked against the limits and every
        line against the board's array before anything is sent; a train that spans frames
        stops at the first refused frame (the frames before it were applied)."""
        amplitude32, width32, _ = self._pulse_values(amplitude, width, 1)
        where = f"board {self.port}, PulseTrain"
        info = self.info
        if pb.Capability.PULSE_TRAIN not in info.capabilities:
            raise BoardError(f"{where}: the board does not report the pulse_train capability (a "
                             "board of protocol 1 has none; pulse trains need protocol 2); nothing "
                             "was sent", port=self.port, command="PulseTrain",
                             nack=pb.NackCode.UNSUPPORTED, detail="no pulse_train capability")
        train = []
        for k, (rows, cols, polarity) in enumerate(slots):
            target = pb.MaskTarget(frozenset(int(r) for r in rows), frozenset(int(c) for c in cols))
            for quantity, lines, size in (("row", target.rows, info.rows),
                                          ("column", target.cols, info.cols)):
                if max(lines) >= size:
                    raise LimitError(f"{quantity} index", max(lines), f"< {size}, the board's "
                                     f"{quantity}s", where=f"{where}, slot {k}")
            train.append(pb.TrainSlot(polarity, target))
        for frame in self._train_frames(train):
            self.request(pb.PulseTrain(amplitude32, width32, tuple(frame)))

    def _train_frames(self, slots: list[pb.TrainSlot]) -> list[list[pb.TrainSlot]]:
        """``slots`` in order, split into frames of at most :meth:`payload_budget` bytes (at
        least one slot each) and 65,535 slots."""
        budget = self.payload_budget()
        frames: list[list[pb.TrainSlot]] = []
        size = budget + 1  # start a frame with the first slot
        for slot in slots:
            need = 1 + 4 + (max(slot.target.rows) >> 3) + 1 + (max(slot.target.cols) >> 3) + 1
            if size + need > budget or len(frames[-1]) == 0xFFFF:
                frames.append([])
                size = _TRAIN_FIXED
            frames[-1].append(slot)
            size += need
        return frames

    def read(self, mode: pb.ReadMode | str = pb.ReadMode.CELL, row: int | None = None,
             col: int | None = None, voltage: float = 0.1) -> NDArray[np.float64]:
        """Currents (A) at ``voltage`` (V) with shape (1, 1), (1, cols), (rows, 1) or (rows, cols)
        (checked against the request and the board's geometry)."""
        limits = self._require_limits("Read", "read voltage (V)", voltage)
        try:
            check(limits, read_voltage=voltage)
        except LimitError as exc:
            raise LimitError(exc.quantity, exc.value, exc.limit, where=f"board {self.port}, Read") from None
        v32 = float32_within(voltage, -limits.max_read_voltage, limits.max_read_voltage,
                             name="read voltage (V)")
        reply = self.request(pb.Read(pb.ReadMode(mode), row, col, v32))
        assert isinstance(reply, pb.ReadReply)
        return np.asarray(reply.values, dtype=np.float64).reshape(reply.shape)

    def read_cell(self, row: int, col: int, voltage: float = 0.1) -> float:
        """The current (A) of one cell at ``voltage`` (V)."""
        return float(self.read(pb.ReadMode.CELL, row, col, voltage)[0, 0])

    def mvm(self, drive: pb.Axis | str, driven: NDArray[np.intp], sensed: NDArray[np.intp],
            voltages: NDArray[np.float64], *, integration_time: float, adc_range: float
            ) -> NDArray[np.float64]:
        """Analog matrix-vector products: ``voltages`` ``(batch, len(driven))`` (V) on the
        ``driven`` lines of axis ``drive`` (in ascending line order), the currents (A) of the
        ``sensed`` lines of the other axis, ``(batch, len(sensed))`` in ascending line order.

        Every voltage is checked against the station's read-voltage limit and sent as the
        float32 nearest it on the safe side; the vectors go in as few frames as
        :meth:`payload_budget` allows. Needs ``analog_mvm`` (else :class:`BoardError`,
        nothing sent).
        """
        where = f"board {self.port}, Mvm"
        limits = self._require_limits("Mvm", "read voltage (V)", voltages)
        if pb.Capability.ANALOG_MVM not in self.info.capabilities:
            raise BoardError(f"{where}: the board does not report the analog_mvm capability (a board "
                             "of protocol 1 has none; analog MVM needs protocol 2); nothing was sent",
                             port=self.port, command="Mvm", nack=pb.NackCode.UNSUPPORTED,
                             detail="no analog_mvm capability")
        values = np.asarray(voltages, dtype=np.float64)
        driven_lines, sensed_lines = sorted(int(i) for i in driven), sorted(int(i) for i in sensed)
        if values.ndim != 2 or values.shape[1] != len(driven_lines) or len(set(driven_lines)) != len(
                driven_lines) or len(set(sensed_lines)) != len(sensed_lines):
            raise ValueError(f"{where}: voltages must be (batch, {len(driven_lines)}) for distinct "
                             f"driven lines, got shape {values.shape}")
        volts32 = _voltages32(values, limits.max_read_voltage, where)
        lo, hi = MVM_INTEGRATION_TIME
        if not (math.isfinite(integration_time) and lo <= integration_time <= hi):
            raise LimitError("MVM integration time (s)", integration_time, f"{lo!r} <= time <= {hi!r}",
                             where=where)
        if not (math.isfinite(adc_range) and MVM_ADC_RANGE[0] < adc_range <= MVM_ADC_RANGE[1]):
            raise LimitError("MVM ADC range (A)", adc_range, f"0 < range <= {MVM_ADC_RANGE[1]!r}",
                             where=where)
        time32 = float32_within(integration_time, lo, hi, name="MVM integration time (s)")
        range32 = float32_within(adc_range, _F32_TINY, MVM_ADC_RANGE[1], name="MVM ADC range (A)")
        per_frame = self._vectors_per_frame(len(driven_lines), len(sensed_lines))
        out = []
        for start in range(0, volts32.shape[0], per_frame):
            chunk = volts32[start:start + per_frame]
            reply = self.request(pb.Mvm(pb.Axis(drive), frozenset(driven_lines),
                                        frozenset(sensed_lines), tuple(map(tuple, chunk.tolist())),
                                        time32, range32))
            assert isinstance(reply, pb.ReadReply)
            out.append(np.asarray(reply.values, dtype=np.float64).reshape(reply.shape))
        return np.concatenate(out) if out else np.zeros((0, len(sensed_lines)))

    def payload_budget(self) -> int:
        """The most payload bytes a large frame (an MVM or a pulse train, a reply of many
        currents) takes: what the link carries in half the reply timeout at its baud rate (10
        bits a byte), so that a frame and its reply arrive before the timeout, within the
        protocol's 65,535 (at least 1,024)."""
        return max(1024, min(pb.DEFAULT_MAX_PAYLOAD, int(self.baudrate / 10 * self.timeout / 2)))

    def _vectors_per_frame(self, n_driven: int, n_sensed: int) -> int:
        """The most MVM vectors one request and its reply carry within :meth:`payload_budget`
        (at least one)."""
        budget = self.payload_budget()
        masks = 2 * (n_driven + n_sensed)  # bytes, generous: a mask is at most (index + 8) / 8
        request = (budget - _MVM_FIXED - masks) // (4 * n_driven)
        reply = (budget - 4) // (4 * n_sensed)
        return max(1, min(request, reply, 0xFFFF))

    def errors(self) -> list[tuple[int, str]]:
        """Drain the board's error queue: ``(code, message)``, oldest first."""
        reply = self.request(pb.ReadErrors())
        assert isinstance(reply, pb.ErrorsReply)
        return list(reply.errors)

    def link_stats(self) -> dict[str, float]:
        """Counters a run can report: ``retries``, ``timeouts``, ``reconnects`` (always 0: a serial
        link is never reopened), and the other :class:`BoardStats` counters (integers but for
        ``wait_seconds``)."""
        return {"retries": self.stats.retries, "timeouts": self.stats.timeouts, "reconnects": 0,
                **{k: v for k, v in dataclasses.asdict(self.stats).items()
                   if k not in ("retries", "timeouts")}}

    # -- limits and reply checks ----------------------------------------------------------------

    def _require_limits(self, command: str, quantity: str, value: object) -> StationLimits:
        if self.limits is None:
            raise LimitError(quantity, value, "no station limits were given (BoardClient(limits=...)); "
                             "pulses and reads need them", where=f"board {self.port}, {command}")
        return self.limits

    def _pulse_values(self, amplitude: float, width: float, count: int) -> tuple[float, float, int]:
        """The float32 amplitude and width and the count to send, or :class:`LimitError`."""
        limits = self._require_limits("Pulse", "pulse amplitude (V)", amplitude)
        where = f"board {self.port}, Pulse"
        try:
            check(limits, amplitude=amplitude, width=width, count=count)
        except LimitError as exc:
            raise LimitError(exc.quantity, exc.value, exc.limit, where=where) from None
        if not amplitude > 0:
            raise LimitError("pulse amplitude (V)", amplitude, "> 0: the magnitude (the sign is polarity)",
                             where=where)
        # an amplitude below the smallest positive float32 (1.4e-45 V) goes out as that
        amplitude32 = float32_within(max(float(amplitude), _F32_TINY), _F32_TINY, limits.max_pulse_amplitude,
                                     name="pulse amplitude (V)")
        width32 = float32_within(width, limits.min_pulse_width, limits.max_pulse_width,
                                 name="pulse width (s)")
        return amplitude32, width32, int(count)

    def _vet(self, message: pb.Message) -> None:
        """The last check before the wire: the values the frame carries (float32) within limits."""
        if isinstance(message, pb.Pulse):
            limits = self._require_limits("Pulse", "pulse amplitude (V)", message.amplitude)
            values = {"amplitude": message.amplitude, "width": message.width, "count": message.count}
        elif isinstance(message, pb.Read):
            limits = self._require_limits("Read", "read voltage (V)", message.voltage)
            values = {"read_voltage": message.voltage}
        elif isinstance(message, pb.PulseTrain):
            limits = self._require_limits("PulseTrain", "pulse amplitude (V)", message.amplitude)
            values = {"amplitude": message.amplitude, "width": message.width}
        elif isinstance(message, pb.Mvm):
            limits = self._require_limits("Mvm", "read voltage (V)", message.voltages)
            peak = max((abs(v) for vector in message.voltages for v in vector), default=0.0)
            values = {"read_voltage": peak}
        else:
            return
        try:
            check(limits, **values)
        except LimitError as exc:
            raise LimitError(exc.quantity, exc.value, f"{exc.limit}, compared as the float32 the "
                             "frame carries", where=f"board {self.port}, {_name(message)}") from None

    def _expected_shape(self, message: pb.Read) -> tuple[int, int]:
        info = self.info
        return {pb.ReadMode.CELL: (1, 1), pb.ReadMode.ROW: (1, info.cols),
                pb.ReadMode.COLUMN: (info.rows, 1), pb.ReadMode.ARRAY: (info.rows, info.cols)}[message.mode]

    def _check_reply(self, message: pb.Message, reply: pb.Message,
                     shape: tuple[int, int] | None) -> None:
        problem = None
        if isinstance(reply, pb.ReadReply) and shape is not None and tuple(reply.shape) != shape:
            problem = f"expected a reply of shape {shape}, received shape {tuple(reply.shape)}"
        elif isinstance(reply, pb.IdentifyReply) and (reply.rows < 1 or reply.cols < 1):
            problem = (f"expected a geometry of at least 1 x 1, received {reply.rows} x {reply.cols} "
                       f"(firmware {reply.firmware!r})")
        if problem is not None:
            raise BoardError(f"board {self.port}: {_name(message)}: {problem}; a board fault, the "
                             f"reply is not used [request {message!r}]", port=self.port,
                             command=repr(message), detail=problem)

    # -- the retry loop -------------------------------------------------------------------------

    def request(self, message: pb.Message) -> pb.Message:
        """Send ``message`` and return its reply; retries reuse the sequence number and the frame.

        Pulses and reads are checked against the limits first (as the float32 values the frame
        carries), and the reply against the request (module docstring).
        """
        expected = pb.REPLY_TYPES.get(type(message))
        if expected is None:
            raise TypeError(f"not a board request: {message!r}")
        self._vet(message)
        shape = (self._expected_shape(message) if isinstance(message, pb.Read)
                 else message.reply_shape if isinstance(message, pb.Mvm) else None)
        started = time.perf_counter()
        try:
            reply = self._exchange(message, expected)
        finally:
            self.stats.wait_seconds += time.perf_counter() - started
        self._check_reply(message, reply, shape)
        return reply

    def _exchange(self, message: pb.Message, expected: type[pb.Message]) -> pb.Message:
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
                self.stats.round_trips += 1
                if isinstance(outcome, pb.Nack):
                    older = (outcome.error is pb.NackCode.BAD_VERSION and message.VERSION > 1)
                    why = (f"the board speaks protocol 1; {_name(message)} "
                           f"({_FEATURES.get(type(message), 'this command')}) needs "
                           f"{message.VERSION}. " if older else "")
                    raise BoardError(
                        f"board {self.port}: {_name(message)} refused with NACK "
                        f"{outcome.error.name.lower()} ({int(outcome.error)}): {why}{outcome.message} "
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


def _voltages32(voltages: NDArray[np.float64], limit: float, where: str) -> NDArray[np.float32]:
    """Voltages checked exactly against ``|v| <= limit`` (:class:`LimitError` naming the first
    beyond it), then as float32 rounded towards zero where the nearest would pass the limit."""
    bad = ~np.isfinite(voltages) | (np.abs(voltages) > limit)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LimitError("read voltage (V)", float(voltages[index]), f"|voltage| <= {limit}",
                         where=f"{where}, voltage {index}")
    near = voltages.astype(np.float32)
    beyond = np.abs(near.astype(np.float64)) > limit
    near[beyond] = np.nextafter(near[beyond], np.float32(0))
    return near


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
