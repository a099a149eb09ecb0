"""SCPI helpers shared by the instrument drivers and the simulated instruments (pure).

Parsing of responses (numbers, booleans, error-queue entries), safe formatting of commands, and
for the simulated instruments: splitting a program message into commands, headers and
arguments, matching headers against SCPI patterns with short and long forms, the standard error
codes and an error queue with SCPI overflow semantics.
"""

from __future__ import annotations

import enum
import math
import operator
import re
from collections import deque
from dataclasses import dataclass

__all__ = [
    "NAN_MARKER",
    "OVERFLOW",
    "STANDARD_MESSAGES",
    "Command",
    "ErrorCode",
    "ErrorQueue",
    "HeaderPattern",
    "Quoted",
    "ScpiParseError",
    "format_command",
    "format_error",
    "format_number",
    "format_value",
    "is_overflow",
    "parse_bool",
    "parse_command",
    "parse_error",
    "parse_int",
    "parse_number",
    "parse_numbers",
    "split_arguments",
    "split_commands",
    "unquote",
]

OVERFLOW = 9.9e37  # SCPI "overflow" / infinity marker an instrument returns
NAN_MARKER = 9.91e37  # SCPI "not a number" marker


class ScpiParseError(ValueError):
    """Text that is not the SCPI element it was parsed as."""


class ErrorCode(enum.IntEnum):
    """Standard SCPI error codes (SCPI-99 volume 2, chapter 21) used by the simulated instruments."""

    NO_ERROR = 0
    COMMAND_ERROR = -100
    INVALID_CHARACTER = -101
    SYNTAX_ERROR = -102
    DATA_TYPE_ERROR = -104
    PARAMETER_NOT_ALLOWED = -108
    MISSING_PARAMETER = -109
    UNDEFINED_HEADER = -113
    EXECUTION_ERROR = -200
    SETTINGS_CONFLICT = -221
    DATA_OUT_OF_RANGE = -222
    QUEUE_OVERFLOW = -350
    QUERY_INTERRUPTED = -410
    QUERY_UNTERMINATED = -420


STANDARD_MESSAGES: dict[int, str] = {
    ErrorCode.NO_ERROR: "No error",
    ErrorCode.COMMAND_ERROR: "Command error",
    ErrorCode.INVALID_CHARACTER: "Invalid character",
    ErrorCode.SYNTAX_ERROR: "Syntax error",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.PARAMETER_NOT_ALLOWED: "Parameter not allowed",
    ErrorCode.MISSING_PARAMETER: "Missing parameter",
    ErrorCode.UNDEFINED_HEADER: "Undefined header",
    ErrorCode.EXECUTION_ERROR: "Execution error",
    ErrorCode.SETTINGS_CONFLICT: "Settings conflict",
    ErrorCode.DATA_OUT_OF_RANGE: "Data out of range",
    ErrorCode.QUEUE_OVERFLOW: "Queue overflow",
    ErrorCode.QUERY_INTERRUPTED: "Query INTERRUPTED",
    ErrorCode.QUERY_UNTERMINATED: "Query UNTERMINATED",
}

# ---------------------------------------------------------------------------------------------
# Numbers and booleans

# NR1 (integer), NR2 (fixed point), NR3 (exponent); at least one digit in the mantissa.
_NRF = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NR1 = re.compile(r"[+-]?\d+")
_SPECIAL = {"INF": math.inf, "INFINITY": math.inf, "NINF": -math.inf, "NINFINITY": -math.inf,
            "NAN": math.nan}


def parse_number(text: str | bytes, *, markers: bool = False) -> float:
    """A float from SCPI numeric response data: NR1, NR2 or NR3, e.g. ``+1.000000E-06``.

    Surrounding whitespace (and a line terminator) is ignored. The keywords ``INF``, ``NINF`` and
    ``NAN`` are accepted. With ``markers=True`` the instrument markers ``+-9.9E37`` map to
    ``+-inf`` and ``9.91E37`` to ``nan``; otherwise they come back as the numbers they are (test
    with :func:`is_overflow`). Python-only spellings (``1_0``, ``0x10``, ``inf``-as-``Infinity``
    variants other than the SCPI ones) raise :class:`ScpiParseError`.
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("ascii", errors="replace")
    s = text.strip()
    special = _SPECIAL.get(s.upper().lstrip("+"))
    if special is not None and not s.startswith("-"):
        return special
    if not _NRF.fullmatch(s):
        raise ScpiParseError(f"not an SCPI number: {text!r}")
    value = float(s)
    if markers:
        if value == NAN_MARKER:
            return math.nan
        if abs(value) == OVERFLOW:
            return math.copysign(math.inf, value)
    return value


def parse_numbers(text: str | bytes, *, markers: bool = False) -> list[float]:
    """Comma-separated numbers, e.g. the elements of a ``:READ?`` or ``FETCh?`` response."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("ascii", errors="replace")
    if not text.strip():
        return []
    return [parse_number(part, markers=markers) for part in text.split(",")]


def parse_int(text: str | bytes) -> int:
    """An NR1 integer (``+5``, ``-113``); NR2/NR3 forms with an integral value are accepted too."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("ascii", errors="replace")
    s = text.strip()
    if _NR1.fullmatch(s):
        return int(s)
    value = parse_number(s)
    if not math.isfinite(value) or value != int(value):
        raise ScpiParseError(f"not an integer: {text!r}")
    return int(value)


def is_overflow(value: float) -> bool:
    """Whether an instrument reading is the overflow (9.9E37) or NaN (9.91E37) marker or beyond."""
    return not math.isfinite(value) or abs(value) >= OVERFLOW


def parse_bool(text: str | bytes) -> bool:
    """SCPI boolean: ``ON``/``OFF`` (any case) or a number (non-zero after rounding is true)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("ascii", errors="replace")
    s = text.strip().upper()
    if s == "ON":
        return True
    if s == "OFF":
        return False
    try:
        value = parse_number(s)
    except ScpiParseError:
        raise ScpiParseError(f"not an SCPI boolean: {text!r}") from None
    if not math.isfinite(value):
        raise ScpiParseError(f"not an SCPI boolean: {text!r}")
    return round(value) != 0


# ---------------------------------------------------------------------------------------------
# Error queue entries


def parse_error(text: str | bytes) -> tuple[int, str]:
    """``(code, message)`` of an error-queue entry such as ``-113,"Undefined header"``.

    ``0,"No error"`` gives ``(0, "No error")``. A doubled quote inside the message stands for one
    quote. Vendor detail after the message (``-222,"Data out of range;VOLT 99"``) stays in the
    message. An unquoted message is taken as is; a bare code gives an empty message.
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    s = text.strip()
    code_part, sep, rest = s.partition(",")
    try:
        code = parse_int(code_part)
    except ScpiParseError:
        raise ScpiParseError(f"not an SCPI error entry: {text!r}") from None
    rest = rest.strip()
    if not sep:
        return code, ""
    if rest.startswith('"'):
        message, end = _read_quoted(rest, 0)
        if end is None:
            raise ScpiParseError(f"unterminated message in {text!r}")
        tail = rest[end:].strip().lstrip(",;").strip()
        return code, f"{message} {tail}" if tail else message
    return code, rest


def format_error(code: int, message: str | None = None) -> str:
    """An error-queue entry as an instrument sends it: ``-113,"Undefined header"``."""
    if message is None:
        message = STANDARD_MESSAGES.get(code, "Unknown error")
    return f'{int(code)},{Quoted(message).scpi()}'


def _read_quoted(s: str, start: int) -> tuple[str, int | None]:
    """The string of a quoted token at ``s[start]`` (either quote kind, doubled quotes escape)."""
    q = s[start]
    out: list[str] = []
    i = start + 1
    while i < len(s):
        c = s[i]
        if c == q:
            if i + 1 < len(s) and s[i + 1] == q:
                out.append(q)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), None


def unquote(arg: str) -> str:
    """The content of a quoted string argument (``"CURR"`` -> ``CURR``); other text unchanged."""
    s = arg.strip()
    if len(s) >= 2 and s[0] in "\"'":
        content, end = _read_quoted(s, 0)
        if end == len(s):
            return content
    return s


# ---------------------------------------------------------------------------------------------
# Formatting commands


class Quoted(str):
    """A string argument sent as SCPI string data: ``Quoted("CURR")`` formats as ``"CURR"``."""

    __slots__ = ()

    def scpi(self) -> str:
        return '"' + str(self).replace('"', '""') + '"'


_MNEMONIC = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_HEADER = re.compile(r"(?:\*[A-Za-z]+\??|:?[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][A-Za-z0-9]*)*\??)")


def format_number(value: float | int) -> str:
    """Shortest text that parses back to exactly ``value``: ``1.5``, ``1e-06``, ``5``.

    Goes through :class:`float` / :class:`int` first, so numpy scalars and other number-likes
    never leak a ``repr`` such as ``np.float64(1.5)``. Non-finite values raise :class:`ValueError`
    (never send ``inf`` or ``nan`` to an instrument).
    """
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, float)):
        try:
            return str(operator.index(value))
        except TypeError:
            pass
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"cannot send a non-finite number: {x}")
    if x == 0:
        return "0"
    text = str(x)  # Python's shortest round-trip representation of a float
    if text.endswith(".0"):
        text = text[:-2]
    return text


def format_value(value: object) -> str:
    """One argument: a number, a bool (``1``/``0``), a :class:`Quoted` string or a mnemonic."""
    if isinstance(value, Quoted):
        return value.scpi()
    if isinstance(value, str):
        if not _MNEMONIC.fullmatch(value):
            raise ValueError(f"not a character-data mnemonic (wrap strings in Quoted): {value!r}")
        return value
    if isinstance(value, bool | int | float) or hasattr(value, "__float__") or hasattr(value, "__index__"):
        return format_number(value)  # type: ignore[arg-type]
    raise TypeError(f"cannot format {type(value).__name__} as an SCPI argument")


def format_command(header: str, *args: object) -> str:
    """A command line without terminator: ``format_command("VOLT:HIGH", 1.5)`` -> ``VOLT:HIGH 1.5``.

    The header is checked (no spaces, separators or terminators can sneak in), arguments are
    formatted with :func:`format_value` and joined with commas.
    """
    if not _HEADER.fullmatch(header):
        raise ValueError(f"not an SCPI header: {header!r}")
    if not args:
        return header
    return header + " " + ",".join(format_value(a) for a in args)


# ---------------------------------------------------------------------------------------------
# Tokenizing program messages (simulated instruments)


@dataclass(frozen=True)
class Command:
    """One command of a program message: its header, argument texts and whether it is a query."""

    header: str  # as received, without leading colon and trailing '?'
    args: tuple[str, ...]
    query: bool

    @property
    def text(self) -> str:
        return self.header + ("?" if self.query else "") + (" " + ",".join(self.args) if self.args else "")


def _split_outside_quotes(s: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    for c in s:
        if quote is not None:
            cur.append(c)
            if c == quote:
                quote = None  # a doubled quote re-opens on the next char, which is right
        elif c in "\"'":
            quote = c
            cur.append(c)
        elif c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def split_commands(message: str | bytes) -> list[str]:
    """The commands of a program message: split on ``;`` outside quotes, stripped, empties dropped.

    Every command is taken as rooted (``VOLT:LOW 0; VOLT:HIGH 1.5`` is two full headers), as the
    command strings of the drivers are written.
    """
    if isinstance(message, bytes | bytearray):
        message = bytes(message).decode("ascii", errors="replace")
    return [p.strip() for p in _split_outside_quotes(message.strip("\r\n"), ";") if p.strip()]


def split_arguments(text: str) -> tuple[str, ...]:
    """Comma-separated argument texts (outside quotes), stripped; ``""`` gives ``()``."""
    if not text.strip():
        return ()
    return tuple(p.strip() for p in _split_outside_quotes(text, ","))


def parse_command(text: str) -> Command:
    """Header and arguments of one command, e.g. ``:SOUR:VOLT:LEV 0.1`` or ``SYST:ERR?``.

    Raises :class:`ScpiParseError` (-102 syntax error) for an empty or malformed header.
    """
    s = text.strip()
    if not s:
        raise ScpiParseError("empty command")
    parts = s.split(None, 1)
    head, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    if not _HEADER.fullmatch(head):
        raise ScpiParseError(f"malformed header: {head!r}")
    query = head.endswith("?")
    header = head.rstrip("?").lstrip(":")
    args = split_arguments(rest)
    if any(a == "" for a in args):
        raise ScpiParseError(f"empty argument in {text!r}")
    return Command(header, args, query)


# ---------------------------------------------------------------------------------------------
# Header matching


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    optional: bool

    def accepts(self, token: str) -> bool:
        t = token.upper()
        return t == self.short or t == self.long


_KEYWORD = re.compile(r"\*?[A-Za-z][A-Za-z0-9]*")


class HeaderPattern:
    """A SCPI header pattern such as ``[SOURce]:VOLTage[:LEVel]`` or ``FUNCtion:PULSe:WIDTh``.

    Each keyword matches its short form (its upper-case letters and digits up to the first
    lower-case letter) or its long form, in any case; ``[...]`` marks an optional keyword. A
    header matches with or without a leading colon. A trailing ``?`` on the pattern makes it
    query-only; without it, the pattern matches both the setting and the query form (see
    :attr:`Command.query`).
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        p = pattern.strip()
        self.query_only = p.endswith("?")
        p = p.rstrip("?")
        nodes: list[_Node] = []
        i = 0
        while i < len(p):
            c = p[i]
            if c == ":":
                i += 1
                continue
            optional = c == "["
            if optional:
                end = p.find("]", i)
                if end < 0:
                    raise ValueError(f"unbalanced '[' in {pattern!r}")
                word = p[i + 1 : end].strip(":")
                i = end + 1
            else:
                m = _KEYWORD.match(p, i)
                if m is None:
                    raise ValueError(f"bad character {c!r} in {pattern!r}")
                word = m.group()
                i = m.end()
            if not _KEYWORD.fullmatch(word):
                raise ValueError(f"bad keyword {word!r} in {pattern!r}")
            short = re.match(r"\*?[A-Z0-9]*", word).group()  # type: ignore[union-attr]
            if not short or short == "*":
                raise ValueError(f"keyword {word!r} has no upper-case short form")
            nodes.append(_Node(short, word.upper(), optional))
        if not nodes or all(n.optional for n in nodes):
            raise ValueError(f"pattern {pattern!r} needs a required keyword")
        self.nodes = tuple(nodes)

    def __repr__(self) -> str:
        return f"HeaderPattern({self.pattern!r})"

    def matches(self, header: str | Command) -> bool:
        """Whether a header (``:SOUR:VOLT:LEV``, ``volt?``, a :class:`Command`) fits the pattern."""
        if isinstance(header, Command):
            query, h = header.query, header.header
        else:
            h = header.strip()
            query = h.endswith("?")
            h = h[:-1] if query else h
            h = h[1:] if h.startswith(":") else h
        if self.query_only and not query:
            return False
        tokens = h.split(":")
        if any(not t for t in tokens):
            return False
        return self._match(0, tokens, 0)

    def _match(self, i: int, tokens: list[str], j: int) -> bool:
        if i == len(self.nodes):
            return j == len(tokens)
        node = self.nodes[i]
        if j < len(tokens) and node.accepts(tokens[j]) and self._match(i + 1, tokens, j + 1):
            return True
        return node.optional and self._match(i + 1, tokens, j)

    def forms(self) -> list[str]:
        """Every header the pattern accepts, upper case, without a leading colon (for tests/docs)."""
        out = [""]
        for node in self.nodes:
            choices = [node.short, node.long] if node.short != node.long else [node.short]
            nxt = [f"{o}:{c}" if o else c for o in out for c in choices]
            out = nxt + (out if node.optional else [])
        return sorted(set(out))


# ---------------------------------------------------------------------------------------------
# Error queue (simulated instruments)


class ErrorQueue:
    """An instrument's error queue: first in, first out, ``SYST:ERR?`` pops the oldest.

    When the queue is full, the newest entry is replaced by ``-350,"Queue overflow"`` and further
    errors are dropped until there is room, as SCPI-99 specifies.
    """

    def __init__(self, size: int = 10) -> None:
        if size < 2:
            raise ValueError("size must be >= 2")
        self.size = size
        self._q: deque[tuple[int, str]] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def push(self, code: int, message: str | None = None) -> None:
        if message is None:
            message = STANDARD_MESSAGES.get(code, "Unknown error")
        if len(self._q) < self.size:
            self._q.append((int(code), message))
            return
        if self._q[-1][0] != ErrorCode.QUEUE_OVERFLOW:
            self._q[-1] = (int(ErrorCode.QUEUE_OVERFLOW), STANDARD_MESSAGES[ErrorCode.QUEUE_OVERFLOW])

    def pop(self) -> tuple[int, str]:
        """The oldest entry, or ``(0, "No error")``."""
        return self._q.popleft() if self._q else (0, STANDARD_MESSAGES[ErrorCode.NO_ERROR])

    def clear(self) -> None:
        self._q.clear()
