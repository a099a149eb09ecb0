"""Board frames: typed round trips, streaming decoder, error detection, defined errors only."""

from __future__ import annotations

import binascii
import itertools
import math
import re
import struct
from pathlib import Path

import board_strategies as bs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import board as b
from protocols import cobs

K = b.ProtocolErrorKind

EXAMPLES: list[b.Message] = [
    b.Identify(),
    b.Reset(),
    b.Select("cell", 3, 4, "v/3"),
    b.Select(b.SelectMode.ROW, row=2, bias=b.Bias.FLOAT),
    b.Select("column", col=7),
    b.Route(b.LineRef("row", 1), b.LineRef("column", 6)),
    b.Route(pulse=b.LineRef(b.Axis.COLUMN, 0)),
    b.Route(),
    b.Pulse(+1, 10, 1.2, 1e-6, b.CellTarget(0, 5)),
    b.Pulse(-1, 3, 0.9, 5e-7, b.MaskTarget({0, 2, 9}, {1, 15})),
    b.Read("cell", 1, 2, 0.1),
    b.Read("row", row=1, voltage=0.2),
    b.Read("column", col=3, voltage=-0.1),
    b.Read("array", voltage=0.05),
    b.ReadErrors(),
    b.Mvm("row", {0, 1}, {0, 1, 2}, [[0.1, -0.05]], 1e-6, 1e-3),
    b.Mvm(b.Axis.COLUMN, {3}, {0, 9}, [[0.2], [-0.2], [0.0]], 1e-5, 2e-4),
    b.PulseTrain(1.5, 1e-6, [b.TrainSlot(-1, b.MaskTarget({0, 9}, {2})),
                             b.TrainSlot(1, b.MaskTarget({1}, {0, 3}))]),
    b.Ack(b.Code.PULSE),
    b.IdentifyReply("xbar-fw 2.1.0", 32, 64, {"parallel_update", "on_board_adc"}),
    b.ReadReply((2, 3), [1e-6, -2e-6, 0.0, math.inf, 5e-9, 1.0]),
    b.ErrorsReply([(-222, "amplitude out of range"), (7, "überhitzt")]),
    b.Nack(b.NackCode.OUT_OF_RANGE, "row 99 >= 32"),
]

MESSAGE_STRATEGIES = {
    "identify": bs.identify,
    "reset": bs.reset,
    "select": bs.select(),
    "route": bs.route,
    "pulse": bs.pulse,
    "read": bs.read(),
    "read_errors": bs.read_errors,
    "mvm": bs.mvm(),
    "pulse_train": bs.pulse_train,
    "ack": bs.ack,
    "identify_reply": bs.identify_reply,
    "read_reply": bs.read_reply(),
    "errors_reply": bs.errors_reply,
    "nack": bs.nack,
}


def only_frames(items: list) -> list[b.Frame]:
    assert all(isinstance(i, b.Frame) for i in items), items
    return items


# ---- typed round trips -----------------------------------------------------------------------


def test_every_code_has_an_example_and_a_strategy() -> None:
    assert {type(m).CODE for m in EXAMPLES} == set(b.Code)
    assert len(MESSAGE_STRATEGIES) == len(b.Code)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_example_round_trip(message: b.Message) -> None:
    wire = b.encode_frame(513, message)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    assert b.decode_frame(wire) == b.Frame(513, message)
    assert b.decode_message(*b.encode_message(message)) == message


@pytest.mark.parametrize("name", sorted(MESSAGE_STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data(), seq=bs.seqs)
def test_round_trip_each_type(name: str, data, seq: int) -> None:
    message = data.draw(MESSAGE_STRATEGIES[name])
    assert b.decode_frame(b.encode_frame(seq, message)) == b.Frame(seq, message)


def test_board_md_documents_every_code() -> None:
    doc = (Path(b.__file__).parent / "BOARD.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| 0x([0-9A-F]{2}) \| (\w+)", doc, flags=re.MULTILINE))
    assert {int(k, 16): v for k, v in rows.items()} == {int(c): c.name for c in b.Code}


def test_float_fields_are_float32() -> None:
    p = b.Pulse(1, 1, 0.1, 1e-6, b.CellTarget(0, 0))
    assert p.amplitude == struct.unpack(">f", struct.pack(">f", 0.1))[0] != 0.1
    assert bs.is_f32(p.width) and bs.is_f32(b.Read("array", voltage=0.3).voltage)


def test_golden_identify_frame() -> None:
    """The layout of BOARD.md: version 1, seq 0x0102, code 0x01, length 0, CRC big endian."""
    head = bytes([0x01, 0x01, 0x02, 0x01, 0x00, 0x00])
    body = head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "big")
    assert b.pack_body(0x0102, 0x01, b"") == body
    assert b.encode_frame(0x0102, b.Identify()) == cobs.encode(body) + b"\x00"


def test_golden_pulse_payload() -> None:
    """The worked example in BOARD.md."""
    code, payload = b.encode_message(b.Pulse(-1, 10, 1.5, 1e-6, b.MaskTarget({0, 9}, {2})))
    assert code == 0x05
    assert payload.hex(" ") == "ff 00 0a 3f c0 00 00 35 86 37 bd 02 00 02 01 02 00 01 04"


def test_golden_mvm_frame() -> None:
    """The worked example in BOARD.md: a version-2 frame; replies to it stay version 1."""
    message = b.Mvm("row", {0, 1}, {0, 1, 2}, [[0.1, -0.05]], 1e-6, 1e-3)
    code, payload = b.encode_message(message)
    assert code == 0x08
    assert payload.hex(" ") == ("01 00 01 03 00 01 07 35 86 37 bd 3a 83 12 6f 00 01 3d cc cc cd "
                                "bd 4c cc cd")
    body = b.pack_body(7, code, payload)
    assert body.hex(" ") == f"02 00 07 08 00 19 {payload.hex(' ')} 8d 36"
    assert cobs.decode(b.encode_frame(7, message)[:-1]) == body
    assert cobs.decode(b.encode_frame(7, b.ReadReply((1, 3), [0.0] * 3))[:-1])[0] == 1


def test_golden_pulse_train_frame() -> None:
    """The worked example in BOARD.md: a version-2 frame of two slots."""
    message = b.PulseTrain(1.5, 1e-6, [b.TrainSlot(-1, b.MaskTarget({0, 9}, {2})),
                                       b.TrainSlot(1, b.MaskTarget({1}, {0, 3}))])
    code, payload = b.encode_message(message)
    assert code == 0x09
    assert payload.hex(" ") == ("3f c0 00 00 35 86 37 bd 00 02 ff 00 02 01 02 00 01 04 "
                                "01 00 01 02 00 01 09")
    body = b.pack_body(7, code, payload)
    assert body.hex(" ") == f"02 00 07 09 00 19 {payload.hex(' ')} b3 78"
    assert cobs.decode(b.encode_frame(7, message)[:-1]) == body


def test_version_1_frames_are_unchanged_and_an_old_decoder_refuses_mvm() -> None:
    """Every version-1 message goes out in a version-1 frame (what a version-1 board reads); a
    decoder of protocol 1 answers an MVM or a pulse-train frame with bad_version and its
    trusted number."""
    for message in EXAMPLES:
        newer = isinstance(message, b.Mvm | b.PulseTrain)
        version = cobs.decode(b.encode_frame(3, message)[:-1])[0]
        assert version == (2 if newer else 1)
        old = b.FrameDecoder(max_version=1).feed(b.encode_frame(3, message))
        if newer:
            (error,) = old
            assert error.kind == K.BAD_VERSION and error.seq == 3
            assert error.nack_code() == b.NackCode.BAD_VERSION
        else:
            assert old == [b.Frame(3, message)]


def test_capability_bit_4_is_analog_mvm_and_unknown_bits_are_ignored() -> None:
    reply = b.IdentifyReply("fw", 4, 4, {"analog_mvm"})
    assert b.encode_message(reply)[1][4] == 0x10
    code, payload = b.encode_message(reply)
    future = payload[:4] + bytes([0xD0]) + payload[5:]  # bits 6 and 7 unknown
    assert b.decode_message(code, future).capabilities == b.Capability.ANALOG_MVM


def test_capability_bit_5_is_pulse_train() -> None:
    reply = b.IdentifyReply("fw", 4, 4, {"pulse_train"})
    assert b.encode_message(reply)[1][4] == 0x20
    assert b.decode_message(*b.encode_message(reply)).capabilities == b.Capability.PULSE_TRAIN


@pytest.mark.parametrize(
    ("factory", "exc"),
    [
        (lambda: b.Select("cell", 1), ValueError),  # col missing
        (lambda: b.Select("row", 1, 2), ValueError),  # col given for a row
        (lambda: b.Select("diagonal", 1), ValueError),
        (lambda: b.Select("cell", 1, 2, "v/4"), ValueError),
        (lambda: b.Select("row", 0xFFFF), ValueError),  # 0xFFFF is the "absent" wire value
        (lambda: b.Pulse(0, 1, 1.0, 1e-6, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(True, 1, 1.0, 1e-6, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(1, 0, 1.0, 1e-6, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(1, 70000, 1.0, 1e-6, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(1, 1, -1.0, 1e-6, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(1, 1, math.nan, 1e-6, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(1, 1, 1.0, 1e39, b.CellTarget(0, 0)), ValueError),
        (lambda: b.Pulse(1, 1, 1.0, 1e-6, (0, 0)), TypeError),
        (lambda: b.MaskTarget(frozenset(), {1}), ValueError),
        (lambda: b.Read("array", row=1), ValueError),
        (lambda: b.Read("cell", 1, 1, math.inf), ValueError),
        (lambda: b.ReadReply((2, 2), [1.0]), ValueError),
        (lambda: b.ReadReply((1, 1), [1e39]), ValueError),
        (lambda: b.IdentifyReply("x" * 256, 1, 1), ValueError),
        (lambda: b.ErrorsReply([(40000, "x")]), ValueError),
        (lambda: b.Nack(99, "x"), ValueError),
        (lambda: b.Ack(256), ValueError),
        (lambda: b.Mvm("row", set(), {0}, [[]], 1e-6, 1e-3), ValueError),  # no driven line
        (lambda: b.Mvm("row", {0}, set(), [[0.1]], 1e-6, 1e-3), ValueError),  # no sensed line
        (lambda: b.Mvm("row", {0, 1}, {0}, [[0.1]], 1e-6, 1e-3), ValueError),  # one value short
        (lambda: b.Mvm("row", {0}, {0}, [], 1e-6, 1e-3), ValueError),  # no vector
        (lambda: b.Mvm("row", {0}, {0}, [[math.nan]], 1e-6, 1e-3), ValueError),
        (lambda: b.Mvm("row", {0}, {0}, [[0.1]], 0.0, 1e-3), ValueError),  # integration time
        (lambda: b.Mvm("row", {0}, {0}, [[0.1]], 1e-6, -1e-3), ValueError),  # ADC range
        (lambda: b.Mvm("diagonal", {0}, {0}, [[0.1]], 1e-6, 1e-3), ValueError),
        (lambda: b.PulseTrain(1.0, 1e-6, []), ValueError),  # no slot
        (lambda: b.PulseTrain(0.0, 1e-6, [b.TrainSlot(1, b.MaskTarget({0}, {0}))]), ValueError),
        (lambda: b.PulseTrain(1.0, -1e-6, [b.TrainSlot(1, b.MaskTarget({0}, {0}))]), ValueError),
        (lambda: b.PulseTrain(1.0, 1e-6, [(1, {0}, {0})]), TypeError),
        (lambda: b.TrainSlot(0, b.MaskTarget({0}, {0})), ValueError),
        (lambda: b.TrainSlot(True, b.MaskTarget({0}, {0})), ValueError),
        (lambda: b.TrainSlot(1, b.CellTarget(0, 0)), TypeError),
    ],
)
def test_constructors_validate(factory, exc) -> None:
    with pytest.raises(exc):
        factory()


def test_encode_rejects_bad_seq() -> None:
    for seq in (-1, 0x10000, True):
        with pytest.raises(ValueError):
            b.encode_frame(seq, b.Identify())


# ---- streaming decoder -----------------------------------------------------------------------


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[i:j] for i, j in itertools.pairwise(edges)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(bs.frames, max_size=6), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_decoder_frames_in_any_chunking(frames: list[b.Frame], cuts: list[int]) -> None:
    wire = b.encode_frames((f.seq, f.message) for f in frames)
    dec = b.FrameDecoder()
    out = []
    for chunk in chunked(wire, cuts):
        out += dec.feed(chunk)
    assert only_frames(out) == frames
    assert dec.buffered == 0


def test_several_frames_in_one_chunk_and_byte_by_byte() -> None:
    wire = b.encode_frames(enumerate(EXAMPLES))
    assert [f.message for f in only_frames(b.FrameDecoder().feed(wire))] == EXAMPLES
    dec = b.FrameDecoder()
    out = [item for i in range(len(wire)) for item in dec.feed(wire[i : i + 1])]
    assert [(f.seq, f.message) for f in only_frames(out)] == list(enumerate(EXAMPLES))


def test_split_frame_waits_for_delimiter() -> None:
    wire = b.encode_frame(9, b.Read("array", voltage=0.2))
    dec = b.FrameDecoder()
    assert dec.feed(wire[:5]) == []
    assert dec.buffered == 5
    assert dec.feed(wire[5:-1]) == []
    assert only_frames(dec.feed(wire[-1:])) == [b.Frame(9, b.Read("array", voltage=0.2))]


def test_empty_frames_are_skipped() -> None:
    wire = b"\x00\x00" + b.encode_frame(1, b.Reset()) + b"\x00"
    assert only_frames(b.FrameDecoder().feed(wire)) == [b.Frame(1, b.Reset())]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_any_bytes_yield_only_frames_or_protocol_errors(data: bytes, cuts: list[int]) -> None:
    """Any byte string in any chunking: only Frame / ProtocolError items, nothing raised."""
    dec = b.FrameDecoder(max_payload=256)
    for chunk in chunked(data, cuts):
        for item in dec.feed(chunk):
            assert isinstance(item, b.Frame | b.ProtocolError)
            if isinstance(item, b.ProtocolError):
                assert item.kind in set(K)
        assert dec.buffered <= dec.max_encoded


@settings(max_examples=300, deadline=None)
@given(head=st.binary(min_size=8, max_size=8), count=st.integers(0, 4), rest=st.binary(max_size=60))
def test_garbage_pulse_train_payloads_decode_or_fail_as_bad_payload(head: bytes, count: int,
                                                                     rest: bytes) -> None:
    """Any bytes after a pulse train's slot count: a PulseTrain that encodes back to a payload
    of the same meaning, or BAD_PAYLOAD with the trusted number; nothing else."""
    payload = head + count.to_bytes(2, "big") + rest
    try:
        message = b.decode_message(0x09, payload, seq=5)
    except b.ProtocolError as exc:
        assert exc.kind == K.BAD_PAYLOAD and exc.seq == 5
    else:
        assert isinstance(message, b.PulseTrain) and len(message.slots) == count
        assert b.decode_message(*b.encode_message(message)) == message


@settings(max_examples=300, deadline=None)
@given(seq=bs.seqs, code=st.integers(0, 255), payload=st.binary(max_size=120))
def test_well_framed_random_payloads_yield_frame_or_error(seq: int, code: int, payload: bytes) -> None:
    """Valid CRC and length around any code and payload: exercises every payload parser."""
    wire = cobs.encode(b.pack_body(seq, code, payload)) + b"\x00"
    (item,) = b.FrameDecoder().feed(wire)
    if isinstance(item, b.ProtocolError):
        assert item.kind in (K.UNKNOWN_CODE, K.BAD_PAYLOAD)
        assert item.seq == seq  # the CRC passed, so the number is trustworthy
    else:
        assert item.seq == seq
        assert code == item.message.CODE
        assert b.encode_message(item.message)[0] == code


@settings(max_examples=200, deadline=None)
@given(message=bs.messages, seq=bs.seqs, cut=st.integers(0, 10**6), extra=st.binary(min_size=1, max_size=4))
def test_mangled_payloads_yield_defined_errors(message, seq: int, cut: int, extra: bytes) -> None:
    code, payload = b.encode_message(message)
    for mangled in (payload[: cut % (len(payload) + 1)], payload + extra):
        if mangled == payload:
            continue
        (item,) = b.FrameDecoder().feed(cobs.encode(b.pack_body(seq, code, mangled)) + b"\x00")
        assert isinstance(item, b.Frame | b.ProtocolError)
        if isinstance(item, b.ProtocolError):
            assert item.kind == K.BAD_PAYLOAD and item.seq == seq


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=500), frame=bs.frames)
def test_resynchronises_after_garbage(garbage: bytes, frame: b.Frame) -> None:
    wire = garbage + b"\x00" + b.encode_frame(frame.seq, frame.message)
    out = b.FrameDecoder().feed(wire)
    assert out[-1] == frame
    assert all(isinstance(i, b.ProtocolError) for i in out[:-1]) or garbage.count(0) > 0


def test_oversize_frame_is_discarded_until_delimiter() -> None:
    dec = b.FrameDecoder(max_payload=16)
    limit = dec.max_encoded
    assert limit == b.max_frame_size(16) == cobs.max_encoded_length(24)
    out = dec.feed(b"\x05" * (limit + 1))
    assert [e.kind for e in out] == [K.OVERSIZE]
    assert dec.buffered == 0
    assert dec.feed(b"\x07" * 10_000) == []  # still discarding: no growth, no more errors
    assert dec.buffered == 0
    good = b.encode_frame(4, b.Ack(5))
    assert only_frames(dec.feed(b"\x07\x00" + good)) == [b.Frame(4, b.Ack(5))]


def test_largest_allowed_frame_passes_and_one_more_payload_byte_is_oversize() -> None:
    dec = b.FrameDecoder(max_payload=64)
    ok = b.ReadReply((4, 4), [1e-6] * 16)  # 4 + 64 bytes > 64: too big
    (err,) = dec.feed(b.encode_frame(1, ok))
    assert err.kind == K.OVERSIZE
    small = b.ReadReply((3, 5), [1e-6] * 15)  # 4 + 60 = 64 bytes
    assert only_frames(dec.feed(b.encode_frame(2, small))) == [b.Frame(2, small)]


@pytest.mark.parametrize(
    ("wire_body", "kind"),
    [
        (b"\x01\x00\x01", K.TRUNCATED),
        (b.pack_body(1, 0x01, b"")[:-3] + b.pack_body(1, 0x01, b"")[-2:], K.TRUNCATED),
        (struct.pack(">BHBH", 1, 1, 1, 5) + b"ab" + b"\x00\x00", K.TRUNCATED),
        (struct.pack(">BHBH", 1, 1, 1, 0) + b"ab" + b"\x00\x00", K.BAD_LENGTH),
        (b.pack_body(1, 0x01, b"")[:-1] + b"\x00", K.BAD_CRC),
        (b.pack_body(1, 0x01, b"", version=3), K.BAD_VERSION),
        (b.pack_body(1, 0x01, b"", version=0), K.BAD_VERSION),
        (b.pack_body(1, 0x08, b.encode_message(b.Mvm("row", {0}, {0}, [[0.1]], 1e-6, 1e-3))[1],
                     version=1), K.UNKNOWN_CODE),  # MVM is not in protocol 1
        (b.pack_body(1, 0x09, bytes.fromhex("3f c0 00 00 35 86 37 bd 00 01 01 00 01 01 00 01 01"),
                     version=1), K.UNKNOWN_CODE),  # nor is PULSE_TRAIN
        (b.pack_body(1, 0x09, bytes.fromhex("3f c0 00 00 35 86 37 bd 00 02 01 00 01 01 00 01 01")),
         K.BAD_PAYLOAD),  # two slots announced, one sent
        (b.pack_body(1, 0x09, bytes.fromhex("3f c0 00 00 35 86 37 bd 00 01 00 00 01 01 00 01 01")),
         K.BAD_PAYLOAD),  # polarity 0
        (b.pack_body(1, 0x09, bytes.fromhex("3f c0 00 00 35 86 37 bd 00 01 01 00 00 00 01 01")),
         K.BAD_PAYLOAD),  # empty row mask
        (b.pack_body(1, 0x42, b""), K.UNKNOWN_CODE),
        (b.pack_body(1, 0x01, b"x"), K.BAD_PAYLOAD),
        (b.pack_body(1, 0x03, b"\x09\x00\x01\x00\x02\x01"), K.BAD_PAYLOAD),  # select mode 9
    ],
)
def test_each_error_kind(wire_body: bytes, kind) -> None:
    (item,) = b.FrameDecoder().feed(cobs.encode(wire_body) + b"\x00")
    assert isinstance(item, b.ProtocolError) and item.kind == kind
    with pytest.raises(b.ProtocolError):
        b.decode_frame(cobs.encode(wire_body))


def test_bad_cobs_error() -> None:
    (item,) = b.FrameDecoder().feed(b"\x09\x01\x02\x00")
    assert item.kind == K.BAD_COBS and item.seq is None
    assert item.nack_code() == b.NackCode.BAD_FRAME


# ---- error detection -------------------------------------------------------------------------
#
# Guarantee tested:
# (1) Body level (before COBS): CRC-16/CCITT detects every error burst of at most 16 bits, so every
#     single-byte substitution anywhere in the body (header, payload or CRC) is detected; tested at
#     every position, five XOR patterns, for hypothesis-drawn messages of every type.
# (2) Wire level (after COBS): every single-byte substitution, including one that turns a byte
#     into the 0x00 delimiter, yields at least one ProtocolError and no frame at all; tested for
#     all positions and all 255 non-zero XOR values, one example frame of every message type.
#     A data byte changed to another non-zero value is a one-byte body error (caught by (1)); a
#     byte changed to 0x00 cuts a block short (bad COBS) or leaves a prefix shorter than its length
#     field (truncated); only a COBS code byte rewritten to another non-zero value relies on the
#     length field plus CRC, with a residual miss rate near 2**-16 (none occurs in this set).


@settings(max_examples=25, deadline=None)
@given(message=bs.messages, seq=bs.seqs)
def test_every_single_byte_error_in_the_body_is_detected(message, seq: int) -> None:
    body = bytearray(b.pack_body(seq, *b.encode_message(message)))
    for pos in range(len(body)):
        for xor in (0x01, 0x80, 0xFF, 0x5A, 0x24):
            bad = bytearray(body)
            bad[pos] ^= xor
            with pytest.raises(b.ProtocolError) as info:
                b.unpack_body(bytes(bad))
            assert info.value.kind in (K.BAD_CRC, K.TRUNCATED, K.BAD_LENGTH)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_single_byte_error_on_the_wire_is_detected(message) -> None:
    wire = b.encode_frame(0x1234, message)
    for pos in range(len(wire) - 1):  # not the delimiter itself
        for xor in range(1, 256):
            bad = bytearray(wire)
            bad[pos] ^= xor
            out = b.FrameDecoder().feed(bytes(bad))
            assert any(isinstance(i, b.ProtocolError) for i in out), (pos, xor)
            assert not any(isinstance(i, b.Frame) for i in out), (pos, xor, out)
