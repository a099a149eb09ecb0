"""SCPI helpers: number/boolean/error parsing, safe formatting, tokenizer, header matcher."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import scpi
from protocols.scpi import ErrorCode, HeaderPattern, Quoted, ScpiParseError

# ---- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5.0),
        ("+5", 5.0),
        ("-113", -113.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("+1.000000E-06", 1e-6),
        ("-2.5e+3", -2500.0),
        ("1E3", 1000.0),
        ("  +1.234E-01\n", 0.1234),
        ("9.9E37", 9.9e37),
        ("+9.90000000E+37", 9.9e37),
        ("INF", math.inf),
        ("ninf", -math.inf),
    ],
)
def test_parse_number_examples(text: str, value: float) -> None:
    assert scpi.parse_number(text) == value
    assert scpi.parse_number(text.encode()) == value


@pytest.mark.parametrize(
    "text", ["", "abc", "1.2.3", "1e", "e5", "0x10", "1_000", "--1", "1,2", "nan1", "-INF"]
)
def test_parse_number_rejects(text: str) -> None:
    with pytest.raises(ScpiParseError):
        scpi.parse_number(text)


def test_overflow_markers() -> None:
    assert scpi.is_overflow(scpi.parse_number("9.9E37"))
    assert scpi.is_overflow(scpi.parse_number("-9.9E37"))
    assert not scpi.is_overflow(scpi.parse_number("1.0E-3"))
    assert scpi.parse_number("9.9E37", markers=True) == math.inf
    assert scpi.parse_number("-9.9E37", markers=True) == -math.inf
    assert math.isnan(scpi.parse_number("9.91E37", markers=True))
    assert math.isnan(scpi.parse_number("NAN"))


def test_parse_numbers_and_int() -> None:
    assert scpi.parse_numbers("+1.0E-06,+2.0E-06, 3") == [1e-6, 2e-6, 3.0]
    assert scpi.parse_numbers(" \n") == []
    assert scpi.parse_int("+17") == 17 and scpi.parse_int("1.0E1") == 10
    with pytest.raises(ScpiParseError):
        scpi.parse_int("1.5")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("0", False), ("ON", True), ("off", False), (" On\n", True), ("+1", True), ("0.4", False)],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert scpi.parse_bool(text) is value


@pytest.mark.parametrize("text", ["", "yes", "TRUE", "INF", "O N"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(ScpiParseError):
        scpi.parse_bool(text)


# ---- error queue entries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ('-113,"Undefined header"', (-113, "Undefined header")),
        ('0,"No error"', (0, "No error")),
        ('+0,"No error"\n', (0, "No error")),
        ('-222,"Data out of range;VOLT:HIGH 99"', (-222, "Data out of range;VOLT:HIGH 99")),
        ('-100,"Command error; ""X"" unknown"', (-100, 'Command error; "X" unknown')),
        ("-350,Queue overflow", (-350, "Queue overflow")),
        ("-102", (-102, "")),
    ],
)
def test_parse_error(text: str, entry: tuple[int, str]) -> None:
    assert scpi.parse_error(text) == entry


@pytest.mark.parametrize("text", ["", "Undefined header", '"-113","x"', '-113,"unterminated'])
def test_parse_error_rejects(text: str) -> None:
    with pytest.raises(ScpiParseError):
        scpi.parse_error(text)


printable = st.characters(blacklist_categories=["Cs", "Cc"])


@given(code=st.integers(-32768, 32767), message=st.text(alphabet=printable))
def test_error_entry_round_trip(code: int, message: str) -> None:
    code_out, message_out = scpi.parse_error(scpi.format_error(code, message))
    assert (code_out, message_out) == (code, message)


def test_standard_codes() -> None:
    assert [ErrorCode.COMMAND_ERROR, ErrorCode.SYNTAX_ERROR, ErrorCode.UNDEFINED_HEADER] == [-100, -102, -113]
    assert ErrorCode.DATA_OUT_OF_RANGE == -222 and ErrorCode.QUEUE_OVERFLOW == -350
    assert scpi.format_error(ErrorCode.UNDEFINED_HEADER) == '-113,"Undefined header"'
    assert scpi.format_error(0) == '0,"No error"'


def test_error_queue_overflow() -> None:
    q = scpi.ErrorQueue(size=3)
    assert q.pop() == (0, "No error")
    for code in (-113, -222, -102, -100, -101):
        q.push(code)
    assert [q.pop() for _ in range(4)] == [
        (-113, "Undefined header"),
        (-222, "Data out of range"),
        (-350, "Queue overflow"),
        (0, "No error"),
    ]


# ---- formatting ------------------------------------------------------------------------------


def test_format_command_examples() -> None:
    assert scpi.format_command("VOLT:HIGH", 1.5) == "VOLT:HIGH 1.5"
    assert scpi.format_command("VOLT:LOW", 0.0) == "VOLT:LOW 0"
    assert scpi.format_command("FUNC:PULS:WIDT", 1e-6) == "FUNC:PULS:WIDT 1e-06"
    assert scpi.format_command("BURS:NCYC", 100) == "BURS:NCYC 100"
    assert scpi.format_command("OUTP", True) == "OUTP 1"
    assert scpi.format_command("TRIG:SOUR", "BUS") == "TRIG:SOUR BUS"
    assert scpi.format_command(":SENS:FUNC", Quoted("CURR")) == ':SENS:FUNC "CURR"'
    assert scpi.format_command("*OPC?") == "*OPC?"
    assert scpi.format_command("DATA", Quoted('a"b')) == 'DATA "a""b"'


def test_format_number_never_uses_an_object_repr() -> None:
    class Wrapped:
        def __float__(self) -> float:
            return 0.25

        def __repr__(self) -> str:
            return "Wrapped(0.25)"

    assert scpi.format_command("VOLT", Wrapped()) == "VOLT 0.25"
    np = pytest.importorskip("numpy")
    assert scpi.format_command("VOLT", np.float64(1.5), np.int64(3)) == "VOLT 1.5,3"


@pytest.mark.parametrize(
    ("header", "args"),
    [("VOLT HIGH", ()), ("VOLT;*RST", ()), ("VOLT\n", ()), ("", ()), ("VOLT", ("BUS;*RST",)), ("V", ("a b",)),
     ("V", (math.nan,)), ("V", (math.inf,)), ("V", (None,))],
)
def test_format_command_refuses_unsafe(header: str, args: tuple) -> None:
    with pytest.raises((ValueError, TypeError)):
        scpi.format_command(header, *args)


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(finite)
def test_format_then_parse_is_exact(x: float) -> None:
    text = scpi.format_number(x)
    assert re.fullmatch(r"-?\d+(\.\d+)?(e[+-]\d+)?", text), text
    assert scpi.parse_number(text) == x


@given(st.integers(-(10**30), 10**30))
def test_format_int_round_trip(n: int) -> None:
    assert scpi.parse_int(scpi.format_number(n)) == n


# ---- tokenizer -------------------------------------------------------------------------------


def test_split_commands_reference_strings() -> None:
    line = "FUNC PULS; OUTP:LOAD INF; FUNC:PULS:PER 1e-3; FUNC:PULS:WIDT 1e-6; FUNC:PULS:TRAN:BOTH 1e-8\n"
    cmds = [scpi.parse_command(c) for c in scpi.split_commands(line)]
    headers = ["FUNC", "OUTP:LOAD", "FUNC:PULS:PER", "FUNC:PULS:WIDT", "FUNC:PULS:TRAN:BOTH"]
    assert [c.header for c in cmds] == headers
    assert cmds[0].args == ("PULS",) and cmds[3].args == ("1e-6",)
    assert not any(c.query for c in cmds)
    cmds = [scpi.parse_command(c) for c in scpi.split_commands('*TRG; *OPC?;:SENS:FUNC "CURR;VOLT"')]
    assert cmds[1] == scpi.Command("*OPC", (), True)
    assert cmds[2].args == ('"CURR;VOLT"',) and scpi.unquote(cmds[2].args[0]) == "CURR;VOLT"


def test_parse_command_args_and_queries() -> None:
    c = scpi.parse_command(":SOUR:VOLT:LEV   0.1 ")
    assert c == scpi.Command("SOUR:VOLT:LEV", ("0.1",), False)
    assert scpi.parse_command("syst:err?") == scpi.Command("syst:err", (), True)
    assert scpi.parse_command("DATA 1, 2 ,'a,b'").args == ("1", "2", "'a,b'")
    assert scpi.parse_command("MEAS:CURR? DEF").query
    for bad in ["", "VOLT 1,,2", "VOLT::X 1", "1VOLT", "VOLT:", ":"]:
        with pytest.raises(ScpiParseError):
            scpi.parse_command(bad)


@given(st.lists(st.sampled_from(["VOLT 1", "*RST", ':SENS:FUNC "A;B"', "OUTP ON", "READ?"]), max_size=6))
def test_split_join_round_trip(cmds: list[str]) -> None:
    assert scpi.split_commands(";".join(cmds)) == cmds


# ---- header matcher --------------------------------------------------------------------------

PATTERNS = [
    "[SOURce]:VOLTage[:LEVel]",
    "[:SOURce]:VOLTage:ILIMit",
    "FUNCtion:PULSe:WIDTh",
    "FUNCtion:PULSe:TRANsition[:BOTH]",
    "BURSt:NCYCles",
    "[:SENSe]:CURRent[:DC]:NPLCycles",
    "SYSTem:ERRor[:NEXT]?",
    "OUTPut[:STATe]",
    "*IDN?",
    "READ?",
]


def cases(word: str) -> st.SearchStrategy[str]:
    """``word`` in every mix of upper and lower case."""
    return st.integers(0, 2 ** len(word) - 1).map(
        lambda bits: "".join(c.lower() if bits >> i & 1 else c.upper() for i, c in enumerate(word))
    )


@st.composite
def accepted_header(draw, pattern: HeaderPattern) -> str:
    parts = []
    for node in pattern.nodes:
        if node.optional and draw(st.booleans()):
            continue
        parts.append(draw(cases(draw(st.sampled_from([node.short, node.long])))))
    header = ":".join(parts)
    if draw(st.booleans()) and not header.startswith("*"):
        header = ":" + header
    if pattern.query_only or draw(st.booleans()):
        header += "?"
    return header


@pytest.mark.parametrize("text", PATTERNS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_matcher_accepts_every_short_long_combination(text: str, data) -> None:
    pattern = HeaderPattern(text)
    header = data.draw(accepted_header(pattern))
    assert pattern.matches(header), header


@pytest.mark.parametrize("text", PATTERNS)
def test_matcher_forms_are_exhaustive(text: str) -> None:
    pattern = HeaderPattern(text)
    q = "?" if pattern.query_only else ""
    for form in pattern.forms():
        assert pattern.matches(form + q) and pattern.matches(":" + form.lower() + q)


@st.composite
def near_miss_header(draw, pattern: HeaderPattern) -> str:
    """Headers built from prefixes of the pattern's keywords (near misses) and random words."""
    words = [n.long for n in pattern.nodes]
    token = st.one_of(
        st.sampled_from(words).flatmap(lambda w: st.integers(1, len(w)).map(lambda k: w[:k])),
        st.sampled_from(words).flatmap(lambda w: st.sampled_from("AXS").map(lambda c: w + c)),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6),
    )
    tokens = draw(st.lists(token, min_size=1, max_size=len(words) + 1))
    header = ":".join(draw(cases(t)) for t in tokens)
    return (":" if draw(st.booleans()) else "") + header + ("?" if draw(st.booleans()) else "")


@pytest.mark.parametrize("text", PATTERNS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matcher_rejects_everything_else(text: str, data) -> None:
    """A header is accepted exactly when it is one of the pattern's forms (any case, colon, '?')."""
    pattern = HeaderPattern(text)
    header = data.draw(near_miss_header(pattern))
    forms = set(pattern.forms())
    bare = header.lstrip(":").rstrip("?").upper()
    expected = bare in forms and (header.endswith("?") or not pattern.query_only)
    assert pattern.matches(header) == expected


@pytest.mark.parametrize(
    ("text", "header"),
    [
        ("FUNCtion:PULSe:WIDTh", "FUNCT:PULS:WIDT"),  # neither short nor long
        ("FUNCtion:PULSe:WIDTh", "FUN:PULS:WIDT"),
        ("FUNCtion:PULSe:WIDTh", "FUNC:PULS"),  # missing a required node
        ("FUNCtion:PULSe:WIDTh", "FUNC:PULS:WIDT:X"),  # extra node
        ("FUNCtion:PULSe:WIDTh", "FUNC::PULS:WIDT"),
        ("[SOURce]:VOLTage[:LEVel]", "SOUR"),
        ("[SOURce]:VOLTage[:LEVel]", "LEV:VOLT"),  # order matters
        ("SYSTem:ERRor[:NEXT]?", "SYST:ERR"),  # query-only
        ("*IDN?", "IDN?"),
    ],
)
def test_matcher_rejects_examples(text: str, header: str) -> None:
    assert not HeaderPattern(text).matches(header)


def test_matcher_on_commands_and_equivalence() -> None:
    width = HeaderPattern("FUNCtion:PULSe:WIDTh")
    assert width.matches("FUNC:PULS:WIDT") and width.matches("FUNCtion:PULSe:WIDTh")
    assert width.matches(scpi.parse_command("func:puls:widt 1e-6"))
    assert HeaderPattern("*IDN?").matches(scpi.parse_command("*idn?"))
    for bad in ["", "[VOLT", "volt", "[SOUR]", "VOLT-X"]:
        with pytest.raises(ValueError):
            HeaderPattern(bad)
