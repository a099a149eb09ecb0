"""COBS: round trip, no zero bytes, bounded overhead, known vectors, strict rejection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import cobs

# Vectors of the COBS paper / common references: (data, encoding)
VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
]

zero_heavy = st.lists(st.sampled_from([0, 1, 0xFE, 0xFF]), max_size=800).map(bytes)


@pytest.mark.parametrize(("data", "encoded"), VECTORS)
def test_known_vectors(data: bytes, encoded: bytes) -> None:
    assert cobs.encode(data) == encoded
    assert cobs.decode(encoded) == data


@given(st.binary(max_size=2000) | zero_heavy)
def test_round_trip_no_zeros_bounded_overhead(data: bytes) -> None:
    enc = cobs.encode(data)
    assert 0 not in enc
    assert len(data) + 1 <= len(enc) <= cobs.max_encoded_length(len(data))
    assert cobs.decode(enc) == data


@given(st.binary(max_size=600))
def test_decode_is_strict_inverse(data: bytes) -> None:
    """decode either raises CobsError or returns bytes that encode back to the same input."""
    try:
        out = cobs.decode(data)
    except cobs.CobsError:
        return
    assert cobs.encode(out) == data


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00",
        b"\x02",
        b"\x03\x11",
        b"\x02\x11\x00",
        b"\x05\x11\x00\x22\x33",
        b"\xff" + b"\x01" * 254 + b"\x01",  # non-canonical empty block after a full block
    ],
)
def test_malformed_raises(bad: bytes) -> None:
    with pytest.raises(cobs.CobsError):
        cobs.decode(bad)


def test_cobs_error_is_value_error() -> None:
    assert issubclass(cobs.CobsError, ValueError)
