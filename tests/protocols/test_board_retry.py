"""Idempotent retry: device-side reply cache, host-side sequence counter, uint16 wrap-around."""

from __future__ import annotations

import board_strategies as bs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import board as b


class Board:
    """A toy device: counts executions and pulses, answers through a ReplyCache."""

    def __init__(self, depth: int = 8) -> None:
        self.cache = b.ReplyCache(depth)
        self.executed: list[b.Message] = []
        self.pulses = 0

    def execute(self, request: b.Message) -> b.Message:
        self.executed.append(request)
        if isinstance(request, b.Pulse):
            self.pulses += request.count
        return b.Ack(request.CODE)

    def on_frame(self, wire: bytes) -> bytes:
        (frame,) = b.FrameDecoder().feed(wire)
        reply = self.cache.handle(frame.seq, frame.message, self.execute)
        return b.encode_frame(frame.seq, reply)


def pulse(n: int = 1, row: int = 0) -> b.Pulse:
    return b.Pulse(1, n, 1.0, 1e-6, b.CellTarget(row, 0))


def test_repeated_sequence_number_returns_cached_reply_without_executing() -> None:
    board = Board()
    wire = b.encode_frame(42, pulse(5))
    first = board.on_frame(wire)
    for _ in range(3):  # host retries: lost reply
        assert board.on_frame(wire) == first
    assert len(board.executed) == 1 and board.pulses == 5
    assert board.cache.executions == 1 and board.cache.hits == 3


def test_new_sequence_number_executes_again() -> None:
    board = Board()
    board.on_frame(b.encode_frame(1, pulse(2)))
    board.on_frame(b.encode_frame(2, pulse(2)))
    assert board.pulses == 4


def test_same_number_different_request_is_executed() -> None:
    """A host restart that reuses a number with another request is not answered from the cache."""
    board = Board()
    board.on_frame(b.encode_frame(7, pulse(1, row=0)))
    board.on_frame(b.encode_frame(7, pulse(1, row=1)))
    assert len(board.executed) == 2
    assert board.cache.lookup(7, pulse(1, row=1)) == b.Ack(b.Code.PULSE)
    assert board.cache.lookup(7, pulse(1, row=0)) is None


def test_busy_nack_is_not_cached() -> None:
    cache = b.ReplyCache()
    replies = iter([b.Nack(b.NackCode.BUSY, "busy"), b.Ack(5)])
    calls = []

    def execute(m):
        calls.append(m)
        return next(replies)

    assert cache.handle(3, pulse(), execute) == b.Nack(b.NackCode.BUSY, "busy")
    assert cache.handle(3, pulse(), execute) == b.Ack(5)
    assert cache.handle(3, pulse(), execute) == b.Ack(5)
    assert len(calls) == 2


def test_out_of_range_nack_is_cached() -> None:
    cache = b.ReplyCache()
    n = []
    nack = b.Nack(b.NackCode.OUT_OF_RANGE, "row")
    for _ in range(2):
        assert cache.handle(3, pulse(), lambda m: n.append(m) or nack) == nack
    assert len(n) == 1


def test_depth_evicts_oldest() -> None:
    cache = b.ReplyCache(depth=4)
    for seq in range(6):
        cache.store(seq, pulse(), b.Ack(5))
    assert len(cache) == 4 and 0 not in cache and 1 not in cache and 5 in cache
    with pytest.raises(ValueError):
        b.ReplyCache(depth=0)
    with pytest.raises(ValueError):
        b.ReplyCache(depth=40000)


def test_wrap_around() -> None:
    board = Board(depth=16)
    counter = b.SequenceCounter(start=0xFFFA)
    seqs = [counter.next() for _ in range(12)]
    assert seqs == [*range(0xFFFA, 0x10000), *range(6)]
    for s in seqs:
        board.on_frame(b.encode_frame(s, pulse()))
    assert board.pulses == 12  # 0..5 after the wrap are new numbers, executed
    for s in (0xFFFF, 0, 5):  # retries across the wrap are still recognised
        board.on_frame(b.encode_frame(s, pulse()))
    assert board.pulses == 12
    assert b.seq_next(0xFFFF) == 0
    assert b.seq_diff(0, 0xFFFF) == 1 and b.seq_diff(0xFFFF, 0) == -1
    assert b.seq_diff(0x8000, 0) == -0x8000 and b.seq_diff(0x7FFF, 0) == 0x7FFF


def test_full_cycle_of_numbers_reexecutes_after_eviction() -> None:
    """After 65536 new requests the same number is a new request (the old entry was evicted)."""
    board = Board(depth=64)
    counter = b.SequenceCounter()
    first = counter.next()
    board.cache.handle(first, pulse(), board.execute)
    for _ in range(0xFFFF):
        board.cache.handle(counter.next(), pulse(), board.execute)
    again = counter.next()
    assert again == first
    board.cache.handle(again, pulse(), board.execute)
    assert board.pulses == 0x10000 + 1
    assert len(board.cache) == 64


def test_sequence_counter() -> None:
    c = b.SequenceCounter()
    assert c.last is None and c.peek() == 0
    assert [c.next(), c.next()] == [0, 1]
    assert c.last == 1 and c.peek() == 2
    c = b.SequenceCounter(0xFFFF)
    assert [c.next(), c.next()] == [0xFFFF, 0]
    with pytest.raises(ValueError):
        b.SequenceCounter(0x10000)


def test_sequence_tracker_alias() -> None:
    assert b.SequenceTracker is b.ReplyCache


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(1, 20), st.integers(0, 3)), min_size=1, max_size=40),
    start=bs.seqs,
    drop=st.lists(st.booleans(), max_size=200),
)
def test_lossy_link_applies_each_pulse_exactly_once(plan, start: int, drop: list[bool]) -> None:
    """Host retries with the same number until a reply arrives; replies (or requests) get lost.

    Whatever is lost, the board applies exactly the pulses the host intended.
    """
    board = Board(depth=4)
    counter = b.SequenceCounter(start)
    losses = iter(drop)
    intended = 0
    for count, retries_lost in plan:
        request = pulse(count)
        seq = counter.next()
        intended += count
        for attempt in range(retries_lost + 1):
            lose_request = next(losses, False)
            if lose_request:
                continue
            reply_wire = board.on_frame(b.encode_frame(seq, request))
            if attempt < retries_lost:
                continue  # the reply is lost: the host retries with the same number
            (frame,) = b.FrameDecoder().feed(reply_wire)
            assert frame == b.Frame(seq, b.Ack(b.Code.PULSE))
            break
        else:
            board.on_frame(b.encode_frame(seq, request))  # final retry gets through
    assert board.pulses == intended
