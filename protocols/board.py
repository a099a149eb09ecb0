"""Crossbar controller board wire protocol (pure: bytes in, typed messages out).

The command set, frame layout and retry rule are documented in ``protocols/BOARD.md``.

A frame on the wire is ``COBS(body) + b"\\x00"`` where ``body`` is::

    version (u8) | seq (u16) | code (u8) | length (u16) | payload (length bytes) | crc (u16)

all big endian; ``crc`` is CRC-16/CCITT (polynomial 0x1021, init 0xFFFF, no reflection, no final
xor; ``binascii.crc_hqx(data, 0xFFFF)``) over every byte of the body before it.

Messages are frozen dataclasses. Floats travel as IEEE-754 float32; constructors round float
fields to float32 so that ``decode(encode(m)) == m`` holds exactly.

Versions: ``version`` is the protocol version that defines the frame's code (``Message.VERSION``).
Protocol 2 adds the analog matrix-vector product (:class:`Mvm`) and the pulse train of a
coincidence update (:class:`PulseTrain`) and nothing else, so every version-1 message still
travels in a version-1 frame, byte for byte as before; only those two requests travel in
version-2 frames. A board that speaks only protocol 1 answers them with ``NACK bad_version``,
which the host reports as "needs protocol 2".
"""

from __future__ import annotations

import binascii
import enum
import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from protocols import cobs

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "HEADER_SIZE",
    "MAX_INDEX",
    "NO_INDEX",
    "PROTOCOL_VERSION",
    "REPLY_TYPES",
    "SEQ_MODULUS",
    "TRAILER_SIZE",
    "Ack",
    "Axis",
    "Bias",
    "Capability",
    "CellTarget",
    "Code",
    "ErrorsReply",
    "Frame",
    "FrameDecoder",
    "Identify",
    "IdentifyReply",
    "LineRef",
    "MaskTarget",
    "Message",
    "Mvm",
    "Nack",
    "NackCode",
    "ProtocolError",
    "ProtocolErrorKind",
    "Pulse",
    "PulseTrain",
    "Read",
    "ReadErrors",
    "ReadMode",
    "ReadReply",
    "ReplyCache",
    "Reset",
    "Route",
    "Select",
    "SelectMode",
    "SequenceCounter",
    "SequenceTracker",
    "TrainSlot",
    "decode_frame",
    "decode_message",
    "encode_frame",
    "encode_frames",
    "encode_message",
    "max_frame_size",
    "pack_body",
    "seq_diff",
    "seq_next",
    "unpack_body",
    "version_of",
]

PROTOCOL_VERSION = 2  # the newest version this module speaks; frames of 1..2 decode
HEADER_SIZE = 6  # version, seq, code, length
TRAILER_SIZE = 2  # crc
SEQ_MODULUS = 1 << 16
NO_INDEX = 0xFFFF  # wire value of an absent row/column index
MAX_INDEX = NO_INDEX - 1
DEFAULT_MAX_PAYLOAD = 65535  # the u16 length field: a 127 x 128 float32 array read (65,028 bytes) fits
MAX_TEXT = 255  # bytes of UTF-8 in a length-prefixed string
MAX_ERRORS = 255


def _crc(data: bytes | bytearray | memoryview) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def max_frame_size(max_payload: int = DEFAULT_MAX_PAYLOAD) -> int:
    """Largest COBS-encoded frame (without the delimiter) for payloads up to ``max_payload``."""
    return cobs.max_encoded_length(HEADER_SIZE + max_payload + TRAILER_SIZE)


# ---------------------------------------------------------------------------------------------
# Codes and enums


class Code(enum.IntEnum):
    """Command codes (0x01..0x7F) and reply codes (0x80..0xFF)."""

    IDENTIFY = 0x01
    RESET = 0x02
    SELECT = 0x03
    ROUTE = 0x04
    PULSE = 0x05
    READ = 0x06
    READ_ERRORS = 0x07
    MVM = 0x08  # protocol 2
    PULSE_TRAIN = 0x09  # protocol 2
    ACK = 0x80
    IDENTIFY_REPLY = 0x81
    READ_REPLY = 0x82
    ERRORS_REPLY = 0x83
    NACK = 0xFF


class Bias(enum.StrEnum):
    """Bias of the unselected lines while a cell, row or column is selected."""

    V_HALF = "v/2"  # unselected rows and columns at V/2
    V_THIRD = "v/3"  # unselected rows at V/3, unselected columns at 2V/3
    FLOAT = "float"  # unselected lines left floating


_BIAS_WIRE = {Bias.V_HALF: 1, Bias.V_THIRD: 2, Bias.FLOAT: 3}


class SelectMode(enum.StrEnum):
    CELL = "cell"
    ROW = "row"
    COLUMN = "column"


_SELECT_WIRE = {SelectMode.CELL: 1, SelectMode.ROW: 2, SelectMode.COLUMN: 3}


class ReadMode(enum.StrEnum):
    CELL = "cell"
    ROW = "row"
    COLUMN = "column"
    ARRAY = "array"


_READ_WIRE = {ReadMode.CELL: 1, ReadMode.ROW: 2, ReadMode.COLUMN: 3, ReadMode.ARRAY: 4}


class Axis(enum.StrEnum):
    ROW = "row"
    COLUMN = "column"


_AXIS_WIRE = {Axis.ROW: 1, Axis.COLUMN: 2}


class Capability(enum.Flag):
    """Capability flags an :class:`IdentifyReply` reports (one wire byte, bits 0..5)."""

    NONE = 0
    PARALLEL_UPDATE = 0x01  # Pulse with a MaskTarget (coincidence update of many cells at once)
    PARALLEL_READ = 0x02  # Read of a row, a column or the array in one command
    ON_BOARD_PULSER = 0x04  # Pulse is generated on the board (else: route an external generator)
    ON_BOARD_ADC = 0x08  # Read is measured on the board (else: route an external SMU)
    ANALOG_MVM = 0x10  # Mvm: an analog matrix-vector product on the board (protocol 2)
    PULSE_TRAIN = 0x20  # PulseTrain: many mask pulses in one command (protocol 2)


_CAPABILITY_BITS = 0x3F


class NackCode(enum.IntEnum):
    """Why a board refused a request (the first byte of a NACK payload)."""

    BAD_CRC = 0x01  # frame failed its CRC (seq of the reply is the one received, untrusted)
    BAD_FRAME = 0x02  # bad COBS, truncated, bad length, oversize
    BAD_VERSION = 0x03
    UNKNOWN_COMMAND = 0x04
    BAD_PAYLOAD = 0x05  # payload does not parse as the command's layout
    OUT_OF_RANGE = 0x06  # an index, amplitude, width, count or voltage beyond the board's limits
    UNSUPPORTED = 0x07  # the board lacks the capability the command needs
    BUSY = 0x08  # transient: retry later (never cached)
    INTERNAL = 0x09


# ---------------------------------------------------------------------------------------------
# Errors


class ProtocolErrorKind(enum.StrEnum):
    BAD_COBS = "bad_cobs"
    TRUNCATED = "truncated"  # shorter than a header + CRC, or shorter than its length field says
    BAD_LENGTH = "bad_length"  # longer than its length field says
    BAD_CRC = "bad_crc"
    BAD_VERSION = "bad_version"
    UNKNOWN_CODE = "unknown_code"
    BAD_PAYLOAD = "bad_payload"  # CRC fine, but the payload does not parse as the code's layout
    OVERSIZE = "oversize"  # more bytes than the maximum frame size before a delimiter


class ProtocolError(Exception):
    """A frame that could not be decoded.

    ``seq`` is set only when the frame passed its CRC (so the number is trustworthy): a board can
    then answer with a NACK carrying that sequence number.
    """

    def __init__(self, kind: ProtocolErrorKind, detail: str = "", seq: int | None = None):
        self.kind = ProtocolErrorKind(kind)
        self.detail = detail
        self.seq = seq
        super().__init__(f"{self.kind.value}: {detail}" if detail else self.kind.value)

    def __repr__(self) -> str:
        return f"ProtocolError({self.kind.value!r}, {self.detail!r}, seq={self.seq})"

    def nack_code(self) -> NackCode:
        """The NACK code a board answers this error with."""
        return {
            ProtocolErrorKind.BAD_CRC: NackCode.BAD_CRC,
            ProtocolErrorKind.BAD_VERSION: NackCode.BAD_VERSION,
            ProtocolErrorKind.UNKNOWN_CODE: NackCode.UNKNOWN_COMMAND,
            ProtocolErrorKind.BAD_PAYLOAD: NackCode.BAD_PAYLOAD,
        }.get(self.kind, NackCode.BAD_FRAME)


# ---------------------------------------------------------------------------------------------
# Field helpers


def _f32(x: float, name: str) -> float:
    """``x`` rounded to float32; finite values only (a float32 overflow is an error)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    try:
        return struct.unpack(">f", struct.pack(">f", x))[0]
    except OverflowError:
        raise ValueError(f"{name} {x} does not fit a float32") from None


def _is_int(x: object, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _index(x: int, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if not 0 <= x <= MAX_INDEX:
        raise ValueError(f"{name} must be in 0..{MAX_INDEX}, got {x}")
    return x


def _lines(values: Iterable[int], name: str) -> frozenset[int]:
    """A non-empty set of line indices (rows or columns of a mask), each checked."""
    lines = frozenset(values)
    if not lines:
        raise ValueError(f"{name} must not be empty")
    for i in lines:
        _index(i, name)
    return lines


def _opt_index(x: int | None, name: str, required: bool) -> None:
    if required and x is None:
        raise ValueError(f"{name} is required")
    if not required and x is not None:
        raise ValueError(f"{name} must be None")
    if x is not None:
        _index(x, name)


def _text(s: str, name: str) -> str:
    if not isinstance(s, str):
        raise TypeError(f"{name} must be a str")
    if len(s.encode("utf-8")) > MAX_TEXT:
        raise ValueError(f"{name} exceeds {MAX_TEXT} bytes of UTF-8")
    return s


def _mask_bytes(lines: frozenset[int]) -> bytes:
    if not lines:
        return b""
    out = bytearray((max(lines) >> 3) + 1)
    for i in lines:
        out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def _mask_lines(data: bytes) -> frozenset[int]:
    return frozenset(8 * i + b for i, byte in enumerate(data) for b in range(8) if byte >> b & 1)


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, x: int) -> _Writer:
        self.buf += struct.pack(">B", x)
        return self

    def i8(self, x: int) -> _Writer:
        self.buf += struct.pack(">b", x)
        return self

    def u16(self, x: int) -> _Writer:
        self.buf += struct.pack(">H", x)
        return self

    def i16(self, x: int) -> _Writer:
        self.buf += struct.pack(">h", x)
        return self

    def f32(self, x: float) -> _Writer:
        self.buf += struct.pack(">f", x)
        return self

    def text(self, s: str) -> _Writer:
        raw = s.encode("utf-8")
        self.u8(len(raw))
        self.buf += raw
        return self

    def blob16(self, raw: bytes) -> _Writer:
        self.u16(len(raw))
        self.buf += raw
        return self


class _Reader:
    """Reads payload fields; every failure is a ``ProtocolError(BAD_PAYLOAD)``."""

    def __init__(self, data: bytes, seq: int | None) -> None:
        self.data = data
        self.pos = 0
        self.seq = seq

    def fail(self, detail: str) -> ProtocolError:
        return ProtocolError(ProtocolErrorKind.BAD_PAYLOAD, detail, self.seq)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"payload ends at byte {len(self.data)}, field needs {self.pos + n}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _unpack(self, fmt: str, n: int) -> int | float:
        return struct.unpack(fmt, self.take(n))[0]

    def u8(self) -> int:
        return int(self._unpack(">B", 1))

    def i8(self) -> int:
        return int(self._unpack(">b", 1))

    def u16(self) -> int:
        return int(self._unpack(">H", 2))

    def i16(self) -> int:
        return int(self._unpack(">h", 2))

    def f32(self) -> float:
        return float(self._unpack(">f", 4))

    def text(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"bad UTF-8: {exc}") from None

    def blob16(self) -> bytes:
        return self.take(self.u16())

    def index(self) -> int | None:
        v = self.u16()
        return None if v == NO_INDEX else v

    def enum(self, table: dict, name: str):  # wire value -> member
        v = self.u8()
        for member, wire in table.items():
            if wire == v:
                return member
        raise self.fail(f"unknown {name} {v}")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing payload bytes")


def _idx_wire(x: int | None) -> int:
    return NO_INDEX if x is None else x


# ---------------------------------------------------------------------------------------------
# Messages


class Message:
    """Base of every board message; ``CODE`` is its wire code, ``VERSION`` the protocol version
    that defines it (and the version byte of its frames)."""

    CODE: ClassVar[Code]
    VERSION: ClassVar[int] = 1

    def _encode(self, w: _Writer) -> None:  # pragma: no cover - overridden when there is a payload
        pass

    @classmethod
    def _decode(cls, r: _Reader) -> Message:
        return cls()

    @property
    def is_request(self) -> bool:
        return self.CODE < 0x80


@dataclass(frozen=True)
class Identify(Message):
    """Ask for firmware version, geometry and capabilities. Reply: :class:`IdentifyReply`."""

    CODE: ClassVar[Code] = Code.IDENTIFY


@dataclass(frozen=True)
class Reset(Message):
    """All lines to ground, routes open, error queue cleared (not the reply cache). Reply: :class:`Ack`."""

    CODE: ClassVar[Code] = Code.RESET


@dataclass(frozen=True)
class Select(Message):
    """Select a cell (``row`` and ``col``), a row (``row``) or a column (``col``).

    The unselected lines are biased by ``bias``. Reply: :class:`Ack`.
    """

    CODE: ClassVar[Code] = Code.SELECT
    mode: SelectMode
    row: int | None = None
    col: int | None = None
    bias: Bias = Bias.V_HALF

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SelectMode(self.mode))
        object.__setattr__(self, "bias", Bias(self.bias))
        _opt_index(self.row, "row", self.mode in (SelectMode.CELL, SelectMode.ROW))
        _opt_index(self.col, "col", self.mode in (SelectMode.CELL, SelectMode.COLUMN))

    def _encode(self, w: _Writer) -> None:
        w.u8(_SELECT_WIRE[self.mode]).u16(_idx_wire(self.row)).u16(_idx_wire(self.col))
        w.u8(_BIAS_WIRE[self.bias])

    @classmethod
    def _decode(cls, r: _Reader) -> Select:
        mode = r.enum(_SELECT_WIRE, "select mode")
        row, col = r.index(), r.index()
        return cls(mode, row, col, r.enum(_BIAS_WIRE, "bias"))


@dataclass(frozen=True)
class LineRef:
    """One row or column line of the array."""

    axis: Axis
    index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", Axis(self.axis))
        _index(self.index, "index")


@dataclass(frozen=True)
class Route(Message):
    """Connect the pulse-generator line and the SMU line to a row or column (``None``: open).

    Reply: :class:`Ack`.
    """

    CODE: ClassVar[Code] = Code.ROUTE
    pulse: LineRef | None = None
    smu: LineRef | None = None

    def __post_init__(self) -> None:
        for name in ("pulse", "smu"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, LineRef):
                raise TypeError(f"{name} must be a LineRef or None")

    def _encode(self, w: _Writer) -> None:
        for line in (self.pulse, self.smu):
            if line is None:
                w.u8(0).u16(0)
            else:
                w.u8(_AXIS_WIRE[line.axis]).u16(line.index)

    @classmethod
    def _decode(cls, r: _Reader) -> Route:
        lines: list[LineRef | None] = []
        for name in ("pulse", "smu"):
            axis, index = r.u8(), r.u16()
            if axis == 0:
                if index != 0:
                    raise r.fail(f"{name}: open route with index {index}")
                lines.append(None)
                continue
            members = [a for a, wire in _AXIS_WIRE.items() if wire == axis]
            if not members or index > MAX_INDEX:
                raise r.fail(f"{name}: bad line axis {axis} index {index}")
            lines.append(LineRef(members[0], index))
        return cls(lines[0], lines[1])


@dataclass(frozen=True)
class CellTarget:
    row: int
    col: int

    def __post_init__(self) -> None:
        _index(self.row, "row")
        _index(self.col, "col")


@dataclass(frozen=True)
class MaskTarget:
    """Rows and columns driven together: every cell at a (row, column) crossing takes the pulse."""

    rows: frozenset[int]
    cols: frozenset[int]

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            object.__setattr__(self, name, _lines(getattr(self, name), name))


_TARGET_CELL, _TARGET_MASK = 1, 2


@dataclass(frozen=True)
class Pulse(Message):
    """Apply ``count`` pulses of ``polarity * amplitude`` volts and ``width`` seconds.

    ``amplitude`` is the magnitude (> 0, volts), ``polarity`` is +1 or -1. The target is one cell,
    or row and column masks for a parallel coincidence update (needs ``PARALLEL_UPDATE``).
    Reply: :class:`Ack`.
    """

    CODE: ClassVar[Code] = Code.PULSE
    polarity: int
    count: int
    amplitude: float
    width: float
    target: CellTarget | MaskTarget

    def __post_init__(self) -> None:
        if self.polarity not in (1, -1) or isinstance(self.polarity, bool):
            raise ValueError(f"polarity must be +1 or -1, got {self.polarity!r}")
        object.__setattr__(self, "polarity", int(self.polarity))
        if not _is_int(self.count, 1, 0xFFFF):
            raise ValueError(f"count must be an int in 1..65535, got {self.count!r}")
        for name in ("amplitude", "width"):
            v = _f32(getattr(self, name), name)
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
            object.__setattr__(self, name, v)
        if not isinstance(self.target, CellTarget | MaskTarget):
            raise TypeError("target must be a CellTarget or a MaskTarget")

    def _encode(self, w: _Writer) -> None:
        w.i8(self.polarity).u16(self.count).f32(self.amplitude).f32(self.width)
        if isinstance(self.target, CellTarget):
            w.u8(_TARGET_CELL).u16(self.target.row).u16(self.target.col)
        else:
            w.u8(_TARGET_MASK).blob16(_mask_bytes(self.target.rows)).blob16(_mask_bytes(self.target.cols))

    @classmethod
    def _decode(cls, r: _Reader) -> Pulse:
        polarity, count, amplitude, width = r.i8(), r.u16(), r.f32(), r.f32()
        kind = r.u8()
        target: CellTarget | MaskTarget
        if kind == _TARGET_CELL:
            target = CellTarget(r.u16(), r.u16())
        elif kind == _TARGET_MASK:
            target = MaskTarget(_mask_lines(r.blob16()), _mask_lines(r.blob16()))
        else:
            raise r.fail(f"unknown pulse target kind {kind}")
        return cls(polarity, count, amplitude, width, target)


@dataclass(frozen=True)
class TrainSlot:
    """One slot of a :class:`PulseTrain`: a pulse of ``polarity`` (+1 / -1) on row and column
    masks, as a :class:`Pulse` of count 1 with that :class:`MaskTarget` would apply it."""

    polarity: int
    target: MaskTarget

    def __post_init__(self) -> None:
        if self.polarity not in (1, -1) or isinstance(self.polarity, bool):
            raise ValueError(f"polarity must be +1 or -1, got {self.polarity!r}")
        object.__setattr__(self, "polarity", int(self.polarity))
        if not isinstance(self.target, MaskTarget):
            raise TypeError("target must be a MaskTarget")


@dataclass(frozen=True)
class PulseTrain(Message):
    """The pulses of a coincidence update in one command (protocol 2, needs ``PULSE_TRAIN`` and
    ``PARALLEL_UPDATE``). Reply: :class:`Ack`.

    Every slot is one pulse of ``slot.polarity * amplitude`` volts and ``width`` seconds on the
    slot's row and column masks; the board applies the slots in order, each exactly as a
    :class:`Pulse` of count 1 on those masks would (the lines a slot does not drive at the bias
    scheme in force). ``amplitude`` is the magnitude (> 0, volts).
    """

    CODE: ClassVar[Code] = Code.PULSE_TRAIN
    VERSION: ClassVar[int] = 2
    amplitude: float
    width: float
    slots: tuple[TrainSlot, ...]

    def __post_init__(self) -> None:
        for name in ("amplitude", "width"):
            v = _f32(getattr(self, name), name)
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
            object.__setattr__(self, name, v)
        slots = tuple(self.slots)
        if not 1 <= len(slots) <= 0xFFFF:
            raise ValueError(f"1..65535 slots are needed, got {len(slots)}")
        if not all(isinstance(slot, TrainSlot) for slot in slots):
            raise TypeError("every slot must be a TrainSlot")
        object.__setattr__(self, "slots", slots)

    def _encode(self, w: _Writer) -> None:
        w.f32(self.amplitude).f32(self.width).u16(len(self.slots))
        for slot in self.slots:
            w.i8(slot.polarity).blob16(_mask_bytes(slot.target.rows))
            w.blob16(_mask_bytes(slot.target.cols))

    @classmethod
    def _decode(cls, r: _Reader) -> PulseTrain:
        amplitude, width, count = r.f32(), r.f32(), r.u16()
        slots = tuple(TrainSlot(r.i8(), MaskTarget(_mask_lines(r.blob16()), _mask_lines(r.blob16())))
                      for _ in range(count))
        return cls(amplitude, width, slots)


@dataclass(frozen=True)
class Read(Message):
    """Read currents at ``voltage`` volts: a cell (``row``, ``col``), a row, a column or the array.

    Reply: :class:`ReadReply` with shape (1, 1), (1, cols), (rows, 1) or (rows, cols).
    """

    CODE: ClassVar[Code] = Code.READ
    mode: ReadMode
    row: int | None = None
    col: int | None = None
    voltage: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ReadMode(self.mode))
        _opt_index(self.row, "row", self.mode in (ReadMode.CELL, ReadMode.ROW))
        _opt_index(self.col, "col", self.mode in (ReadMode.CELL, ReadMode.COLUMN))
        object.__setattr__(self, "voltage", _f32(self.voltage, "voltage"))

    def _encode(self, w: _Writer) -> None:
        w.u8(_READ_WIRE[self.mode]).u16(_idx_wire(self.row)).u16(_idx_wire(self.col)).f32(self.voltage)

    @classmethod
    def _decode(cls, r: _Reader) -> Read:
        mode = r.enum(_READ_WIRE, "read mode")
        return cls(mode, r.index(), r.index(), r.f32())


@dataclass(frozen=True)
class ReadErrors(Message):
    """Drain the board's error queue. Reply: :class:`ErrorsReply`."""

    CODE: ClassVar[Code] = Code.READ_ERRORS


@dataclass(frozen=True)
class Mvm(Message):
    """Analog matrix-vector products (protocol 2, needs ``ANALOG_MVM``). Reply: :class:`ReadReply`.

    ``drive`` is the axis whose lines carry the voltages (``row``: the product of the chip's
    conductances with row voltages, currents summed on the columns; ``column``: its transpose).
    ``driven`` and ``sensed`` are the lines of the two axes involved; every other line floats.
    ``voltages`` holds one vector per product, each in ascending order of the driven lines (V).
    ``integration_time`` (s) is how long the sense amplifiers integrate, ``adc_range`` (A) the
    current at which their ADCs saturate. The reply's shape is (vectors, sensed lines): the
    currents (A) of each product in ascending order of the sensed lines.
    """

    CODE: ClassVar[Code] = Code.MVM
    VERSION: ClassVar[int] = 2
    drive: Axis
    driven: frozenset[int]
    sensed: frozenset[int]
    voltages: tuple[tuple[float, ...], ...]
    integration_time: float
    adc_range: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "drive", Axis(self.drive))
        for name in ("driven", "sensed"):
            object.__setattr__(self, name, _lines(getattr(self, name), name))
        vectors = tuple(tuple(_f32(v, "voltage") for v in vector) for vector in self.voltages)
        if not 1 <= len(vectors) <= 0xFFFF:
            raise ValueError(f"1..65535 voltage vectors are needed, got {len(vectors)}")
        if any(len(vector) != len(self.driven) for vector in vectors):
            raise ValueError(f"every voltage vector needs one value per driven line ({len(self.driven)})")
        object.__setattr__(self, "voltages", vectors)
        for name in ("integration_time", "adc_range"):
            v = _f32(getattr(self, name), name)
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
            object.__setattr__(self, name, v)

    @property
    def reply_shape(self) -> tuple[int, int]:
        """(vectors, sensed lines): the shape of the :class:`ReadReply` that answers it."""
        return (len(self.voltages), len(self.sensed))

    def _encode(self, w: _Writer) -> None:
        w.u8(_AXIS_WIRE[self.drive]).blob16(_mask_bytes(self.driven)).blob16(_mask_bytes(self.sensed))
        w.f32(self.integration_time).f32(self.adc_range).u16(len(self.voltages))
        for vector in self.voltages:
            w.buf += struct.pack(f">{len(vector)}f", *vector)

    @classmethod
    def _decode(cls, r: _Reader) -> Mvm:
        drive = r.enum(_AXIS_WIRE, "drive axis")
        driven, sensed = _mask_lines(r.blob16()), _mask_lines(r.blob16())
        integration_time, adc_range, count = r.f32(), r.f32(), r.u16()
        n = len(driven)
        flat = struct.unpack(f">{count * n}f", r.take(4 * count * n))
        vectors = tuple(flat[k * n:(k + 1) * n] for k in range(count))
        return cls(drive, driven, sensed, vectors, integration_time, adc_range)


@dataclass(frozen=True)
class Ack(Message):
    """Success of a command that returns no data; ``command`` is the acknowledged code."""

    CODE: ClassVar[Code] = Code.ACK
    command: int

    def __post_init__(self) -> None:
        if not _is_int(self.command, 0, 0xFF):
            raise ValueError(f"command must be a code byte, got {self.command!r}")

    def _encode(self, w: _Writer) -> None:
        w.u8(self.command)

    @classmethod
    def _decode(cls, r: _Reader) -> Ack:
        return cls(r.u8())


@dataclass(frozen=True)
class IdentifyReply(Message):
    CODE: ClassVar[Code] = Code.IDENTIFY_REPLY
    firmware: str
    rows: int
    cols: int
    capabilities: Capability = Capability.NONE

    def __post_init__(self) -> None:
        _text(self.firmware, "firmware")
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not _is_int(v, 0, MAX_INDEX + 1):
                raise ValueError(f"{name} must be an int in 0..{MAX_INDEX + 1}, got {v!r}")
        caps = self.capabilities
        if not isinstance(caps, Capability):
            caps = Capability.NONE
            for c in self.capabilities:  # an iterable of flags or names
                caps |= c if isinstance(c, Capability) else Capability[str(c).upper()]
        object.__setattr__(self, "capabilities", caps)

    def _encode(self, w: _Writer) -> None:
        w.u16(self.rows).u16(self.cols).u8(self.capabilities.value).text(self.firmware)

    @classmethod
    def _decode(cls, r: _Reader) -> IdentifyReply:
        rows, cols = r.u16(), r.u16()
        caps = Capability(r.u8() & _CAPABILITY_BITS)  # unknown (future) bits are ignored
        return cls(r.text(), rows, cols, caps)


@dataclass(frozen=True)
class ReadReply(Message):
    """Currents in amperes (float32), row-major, with ``shape`` (rows, cols)."""

    CODE: ClassVar[Code] = Code.READ_REPLY
    shape: tuple[int, int]
    values: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 2 or not all(_is_int(s, 0, 0xFFFF) for s in shape):
            raise ValueError(f"shape must be two ints in 0..65535, got {self.shape!r}")
        values = tuple(float(v) for v in self.values)
        if len(values) != shape[0] * shape[1]:
            raise ValueError(f"{len(values)} values do not fill shape {shape}")
        try:
            packed = struct.pack(f">{len(values)}f", *values)
        except OverflowError:
            raise ValueError("a value does not fit a float32") from None
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "values", struct.unpack(f">{len(values)}f", packed))

    def as_rows(self) -> list[list[float]]:
        """The values as a list of rows."""
        _, c = self.shape
        return [list(self.values[i : i + c]) for i in range(0, len(self.values), c)] if c else []

    def _encode(self, w: _Writer) -> None:
        w.u16(self.shape[0]).u16(self.shape[1])
        w.buf += struct.pack(f">{len(self.values)}f", *self.values)

    @classmethod
    def _decode(cls, r: _Reader) -> ReadReply:
        rows, cols = r.u16(), r.u16()
        n = rows * cols
        return cls((rows, cols), struct.unpack(f">{n}f", r.take(4 * n)))


@dataclass(frozen=True)
class ErrorsReply(Message):
    """The drained error queue, oldest first: ``(code, message)`` pairs (code int16)."""

    CODE: ClassVar[Code] = Code.ERRORS_REPLY
    errors: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        errors = tuple((int(c), m) for c, m in self.errors)
        if len(errors) > MAX_ERRORS:
            raise ValueError(f"at most {MAX_ERRORS} errors per reply")
        for c, m in errors:
            if not -0x8000 <= c <= 0x7FFF:
                raise ValueError(f"error code {c} does not fit int16")
            _text(m, "message")
        object.__setattr__(self, "errors", errors)

    def _encode(self, w: _Writer) -> None:
        w.u8(len(self.errors))
        for c, m in self.errors:
            w.i16(c).text(m)

    @classmethod
    def _decode(cls, r: _Reader) -> ErrorsReply:
        return cls(tuple((r.i16(), r.text()) for _ in range(r.u8())))


@dataclass(frozen=True)
class Nack(Message):
    """Refusal: the request was not executed (or failed before it did anything)."""

    CODE: ClassVar[Code] = Code.NACK
    error: NackCode
    message: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", NackCode(self.error))
        _text(self.message, "message")

    def _encode(self, w: _Writer) -> None:
        w.u8(self.error).text(self.message)

    @classmethod
    def _decode(cls, r: _Reader) -> Nack:
        code = r.u8()
        if code not in NackCode._value2member_map_:
            raise r.fail(f"unknown NACK code {code}")
        return cls(NackCode(code), r.text())


_MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.CODE: cls
    for cls in (Identify, Reset, Select, Route, Pulse, Read, ReadErrors, Mvm, PulseTrain,
                Ack, IdentifyReply, ReadReply, ErrorsReply, Nack)
}

#: The reply type a successful request gets (any request may instead get a :class:`Nack`).
REPLY_TYPES: dict[type[Message], type[Message]] = {
    Identify: IdentifyReply,
    Reset: Ack,
    Select: Ack,
    Route: Ack,
    Pulse: Ack,
    Read: ReadReply,
    ReadErrors: ErrorsReply,
    Mvm: ReadReply,
    PulseTrain: Ack,
}


def encode_message(message: Message) -> tuple[int, bytes]:
    """``(code, payload)`` of a message."""
    if type(message) not in _MESSAGE_TYPES.values():
        raise TypeError(f"not a board message: {message!r}")
    w = _Writer()
    message._encode(w)
    return int(message.CODE), bytes(w.buf)


def decode_message(code: int, payload: bytes, seq: int | None = None,
                   version: int = PROTOCOL_VERSION) -> Message:
    """The message of a code and payload in a frame of protocol ``version``; raises
    :class:`ProtocolError` (UNKNOWN_CODE, also for a code a later version defines; BAD_PAYLOAD)."""
    cls = _MESSAGE_TYPES.get(code)
    if cls is None:
        raise ProtocolError(ProtocolErrorKind.UNKNOWN_CODE, f"code 0x{code:02x}", seq)
    if version < cls.VERSION:
        raise ProtocolError(ProtocolErrorKind.UNKNOWN_CODE,
                            f"code 0x{code:02x} is not in protocol {version}", seq)
    r = _Reader(bytes(payload), seq)
    try:
        message = cls._decode(r)
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, struct.error, KeyError) as exc:
        raise r.fail(f"{cls.__name__}: {exc}") from None
    r.end()
    return message


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its sequence number and its message."""

    seq: int
    message: Message


def _check_seq(seq: int) -> int:
    if not _is_int(seq, 0, SEQ_MODULUS - 1):
        raise ValueError(f"seq must be an int in 0..65535, got {seq!r}")
    return seq


def version_of(code: int) -> int:
    """The protocol version that defines ``code`` (1 for a code no version defines)."""
    cls = _MESSAGE_TYPES.get(code)
    return 1 if cls is None else cls.VERSION


def pack_body(seq: int, code: int, payload: bytes, version: int | None = None) -> bytes:
    """The unstuffed frame body (header, payload, CRC) without COBS or delimiter; the version
    byte is the version that defines ``code`` unless ``version`` is given."""
    _check_seq(seq)
    version = version_of(code) if version is None else version
    if len(payload) > 0xFFFF:
        raise ValueError("payload longer than 65535 bytes")
    head = struct.pack(">BHBH", version, seq, code, len(payload)) + bytes(payload)
    return head + struct.pack(">H", _crc(head))


def unpack_body(body: bytes, max_version: int = PROTOCOL_VERSION) -> tuple[int, int, bytes]:
    """``(seq, code, payload)`` of an unstuffed frame body; checks length, CRC and version
    (1..``max_version``: a board that speaks only protocol 1 decodes with ``max_version=1``)."""
    n = len(body)
    if n < HEADER_SIZE + TRAILER_SIZE:
        raise ProtocolError(ProtocolErrorKind.TRUNCATED, f"{n} bytes, a frame has at least 8")
    version, seq, code, length = struct.unpack_from(">BHBH", body)
    have = n - HEADER_SIZE - TRAILER_SIZE
    if length > have:
        raise ProtocolError(ProtocolErrorKind.TRUNCATED, f"length field {length}, {have} payload bytes")
    if length < have:
        raise ProtocolError(ProtocolErrorKind.BAD_LENGTH, f"length field {length}, {have} payload bytes")
    (crc,) = struct.unpack_from(">H", body, n - TRAILER_SIZE)
    expect = _crc(body[: n - TRAILER_SIZE])
    if crc != expect:
        raise ProtocolError(ProtocolErrorKind.BAD_CRC, f"crc 0x{crc:04x}, computed 0x{expect:04x}")
    if not 1 <= version <= max_version:
        raise ProtocolError(ProtocolErrorKind.BAD_VERSION,
                            f"version {version}; this side speaks 1..{max_version}", seq)
    return seq, code, bytes(body[HEADER_SIZE : n - TRAILER_SIZE])


def encode_frame(seq: int, message: Message) -> bytes:
    """Wire bytes of one frame: COBS-encoded body followed by the 0x00 delimiter."""
    code, payload = encode_message(message)
    return cobs.encode(pack_body(seq, code, payload)) + b"\x00"


def decode_frame(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_version: int = PROTOCOL_VERSION) -> Frame:
    """Decode one COBS-encoded frame (a single trailing 0x00 delimiter is allowed) of a protocol
    version up to ``max_version``.

    Raises :class:`ProtocolError` and nothing else.
    """
    data = bytes(data)
    if data.endswith(b"\x00"):
        data = data[:-1]
    if len(data) > max_frame_size(max_payload):
        raise ProtocolError(ProtocolErrorKind.OVERSIZE, f"{len(data)} encoded bytes")
    try:
        body = cobs.decode(data)
    except cobs.CobsError as exc:
        raise ProtocolError(ProtocolErrorKind.BAD_COBS, str(exc)) from None
    seq, code, payload = unpack_body(body, max_version)
    if len(payload) > max_payload:
        raise ProtocolError(ProtocolErrorKind.OVERSIZE, f"payload of {len(payload)} bytes", seq)
    return Frame(seq, decode_message(code, payload, seq, version=body[0]))


class FrameDecoder:
    """Streaming decoder: feed arbitrary chunks, get :class:`Frame` or :class:`ProtocolError` items.

    Bytes accumulate until a 0x00 delimiter; the bytes before it are decoded as one frame. Empty
    frames (consecutive delimiters) are skipped silently, so a sender may prefix a frame with a
    delimiter to flush line noise. A frame that grows beyond :func:`max_frame_size` yields one
    ``OVERSIZE`` error and the rest of it is discarded up to the next delimiter, so the buffer never
    holds more than ``max_frame_size(max_payload)`` bytes. Frames of a version beyond
    ``max_version`` are ``BAD_VERSION`` errors (an old board's decoder). Decoding never raises.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_version: int = PROTOCOL_VERSION) -> None:
        self.max_payload = max_payload
        self.max_version = max_version
        self.max_encoded = max_frame_size(max_payload)
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held waiting for a delimiter."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | ProtocolError]:
        """Decode the frames completed by ``data``."""
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes | bytearray | memoryview) -> Iterator[Frame | ProtocolError]:
        chunk = bytes(data)
        start = 0
        n = len(chunk)
        while start <= n:
            end = chunk.find(0, start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self._discarding:
                room = self.max_encoded - len(self._buf)
                if len(piece) > room:
                    self._buf.clear()
                    self._discarding = True
                    yield ProtocolError(ProtocolErrorKind.OVERSIZE, f"frame exceeds {self.max_encoded} bytes")
                else:
                    self._buf += piece
            if end < 0:
                return
            # delimiter reached
            if self._discarding:
                self._discarding = False
            elif self._buf:
                frame_bytes = bytes(self._buf)
                self._buf.clear()
                yield self._decode(frame_bytes)
            start = end + 1

    def _decode(self, frame_bytes: bytes) -> Frame | ProtocolError:
        try:
            return decode_frame(frame_bytes, self.max_payload, self.max_version)
        except ProtocolError as exc:
            return exc
        except Exception as exc:  # defensive: the decoder's contract is "never raises"
            return ProtocolError(ProtocolErrorKind.BAD_PAYLOAD, f"internal decode failure: {exc!r}")


# ---------------------------------------------------------------------------------------------
# Sequence numbers and idempotent retry


def seq_next(seq: int) -> int:
    """The sequence number after ``seq`` (65535 wraps to 0)."""
    return (_check_seq(seq) + 1) % SEQ_MODULUS


def seq_diff(a: int, b: int) -> int:
    """Signed serial-number distance ``a - b`` in -32768..32767 (RFC 1982 style)."""
    d = (_check_seq(a) - _check_seq(b)) % SEQ_MODULUS
    return d - SEQ_MODULUS if d >= SEQ_MODULUS // 2 else d


class SequenceCounter:
    """Host side: hands out sequence numbers 0, 1, ..., 65535, 0, ...

    A retry of a request reuses the number it got from :meth:`next`; only a new request calls it.
    """

    def __init__(self, start: int = 0) -> None:
        self._next = _check_seq(start)
        self._last: int | None = None

    def next(self) -> int:
        seq = self._next
        self._next = seq_next(seq)
        self._last = seq
        return seq

    def peek(self) -> int:
        """The number :meth:`next` will return."""
        return self._next

    @property
    def last(self) -> int | None:
        """The number most recently handed out (what a retry reuses)."""
        return self._last


class ReplyCache:
    """Device side: executes each request once and answers retries from a cache.

    The cache keeps the last ``depth`` executed ``(seq, request) -> reply`` entries (insertion
    order, oldest evicted first). A request whose sequence number *and* content match a cached
    entry is a retry: the cached reply is returned and the request is not executed. A request with
    a cached number but different content (a host restart that reused numbers) is executed as new
    and replaces the entry. Sequence numbers wrap at 65536; ``depth`` is capped at 32768 so a
    number seen before the wrap is evicted long before it can come round again. A ``Nack(BUSY)``
    reply is transient and never cached. With one request outstanding at a time, any ``depth >= 1``
    keeps the retry guarantee; the default keeps room for pipelining.
    """

    def __init__(self, depth: int = 256) -> None:
        if not 1 <= depth <= SEQ_MODULUS // 2:
            raise ValueError("depth must be in 1..32768")
        self.depth = depth
        self._entries: OrderedDict[int, tuple[Message, Message]] = OrderedDict()
        self.hits = 0
        self.executions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, seq: int) -> bool:
        return seq in self._entries

    def lookup(self, seq: int, request: Message) -> Message | None:
        """The cached reply of a retry of ``request`` with ``seq``, else ``None``."""
        entry = self._entries.get(seq)
        if entry is not None and entry[0] == request:
            return entry[1]
        return None

    def store(self, seq: int, request: Message, reply: Message) -> None:
        _check_seq(seq)
        if isinstance(reply, Nack) and reply.error == NackCode.BUSY:
            return
        self._entries.pop(seq, None)
        self._entries[seq] = (request, reply)
        while len(self._entries) > self.depth:
            self._entries.popitem(last=False)

    def handle(self, seq: int, request: Message, execute: Callable[[Message], Message]) -> Message:
        """The reply to ``request``: cached for a retry, else ``execute(request)`` (then cached)."""
        cached = self.lookup(seq, request)
        if cached is not None:
            self.hits += 1
            return cached
        self.executions += 1
        reply = execute(request)
        self.store(seq, request, reply)
        return reply

    def clear(self) -> None:
        self._entries.clear()


#: Alias: the device-side tracker of executed sequence numbers is the reply cache.
SequenceTracker = ReplyCache


def encode_frames(frames: Iterable[tuple[int, Message]]) -> bytes:
    """Wire bytes of several ``(seq, message)`` frames back to back."""
    return b"".join(encode_frame(seq, m) for seq, m in frames)
