"""Consistent Overhead Byte Stuffing (COBS).

COBS rewrites a byte string so that it contains no 0x00 byte, which leaves 0x00 free to delimit
frames on a byte stream. The encoding is a sequence of blocks; each block is a *code* byte ``c``
(1..255) followed by ``c - 1`` data bytes. A block with ``c < 255`` stands for its data bytes
followed by one zero byte, except the last block of the encoding, whose implied zero is dropped.
A block with ``c == 255`` stands for its 254 data bytes and no zero.

The overhead is at most one byte per 254 bytes of input, plus one (:func:`max_encoded_length`).
The delimiter itself is not part of the encoding: callers append ``b"\\x00"``.

:func:`decode` is strict: it accepts exactly the strings :func:`encode` can produce, so that
``encode(decode(x)) == x`` whenever ``decode(x)`` succeeds, and raises :class:`CobsError` for
anything else (a zero byte, a block that runs past the end, an empty input).
"""

from __future__ import annotations

__all__ = ["CobsError", "decode", "encode", "max_encoded_length"]

_MAX_BLOCK = 0xFF  # code byte of a full block: 254 data bytes, no implied zero


class CobsError(ValueError):
    """Malformed COBS input."""


def max_encoded_length(n: int) -> int:
    """Largest possible length of the COBS encoding of ``n`` bytes (without the delimiter)."""
    if n < 0:
        raise ValueError("length must be >= 0")
    return n + n // 254 + 1


def encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode ``data``; the result contains no 0x00 byte and is never empty."""
    out = bytearray(b"\x00")  # placeholder for the first code byte
    code_pos = 0
    code = 1
    closed_full = False  # the last step closed a full block (254 data bytes)
    for byte in bytes(data):
        closed_full = False
        if byte == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == _MAX_BLOCK:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
            closed_full = True
    if closed_full:
        del out[code_pos]  # input ended with a full block: no empty block after it
    else:
        out[code_pos] = code
    return bytes(out)


def decode(data: bytes | bytearray | memoryview) -> bytes:
    """Decode one COBS-encoded frame (without its 0x00 delimiter).

    Raises :class:`CobsError` if ``data`` is empty, contains a zero byte, has a block whose code
    byte announces more bytes than remain, or is not the canonical encoding :func:`encode` makes
    (an empty last block right after a full block).
    """
    src = bytes(data)
    n = len(src)
    if n == 0:
        raise CobsError("empty COBS frame")
    zero = src.find(0)
    if zero >= 0:
        raise CobsError(f"zero byte at offset {zero}")
    out = bytearray()
    pos = 0
    prev_code = 0
    while pos < n:
        code = src[pos]
        end = pos + code
        if end > n:
            raise CobsError(f"block at offset {pos} announces {code - 1} bytes, only {n - pos - 1} remain")
        out += src[pos + 1 : end]
        if end < n and code != _MAX_BLOCK:
            out.append(0)
        if end == n and code == 1 and prev_code == _MAX_BLOCK:
            raise CobsError("non-canonical empty block after a full block at the end")
        prev_code = code
        pos = end
    return bytes(out)
