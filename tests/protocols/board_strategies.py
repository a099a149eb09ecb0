"""Hypothesis strategies of board messages (imported as ``board_strategies``)."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from protocols import board as b

index = st.integers(0, b.MAX_INDEX)
small_index = st.integers(0, 300)
text = st.text(max_size=60).filter(lambda s: len(s.encode("utf-8")) <= b.MAX_TEXT)


def f32(lo: float | None = None, hi: float | None = None, inf: bool = False, **kw) -> st.SearchStrategy:
    return st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=inf, **kw)


positive_f32 = f32(0.0, 1.0e3, exclude_min=True)

identify = st.just(b.Identify())
reset = st.just(b.Reset())
read_errors = st.just(b.ReadErrors())


@st.composite
def select(draw) -> b.Select:
    mode = draw(st.sampled_from(list(b.SelectMode)))
    row = draw(index) if mode in (b.SelectMode.CELL, b.SelectMode.ROW) else None
    col = draw(index) if mode in (b.SelectMode.CELL, b.SelectMode.COLUMN) else None
    return b.Select(mode, row, col, draw(st.sampled_from(list(b.Bias))))


line = st.builds(b.LineRef, st.sampled_from(list(b.Axis)), index)
route = st.builds(b.Route, st.none() | line, st.none() | line)
mask = st.frozensets(small_index, min_size=1, max_size=20)
target = st.builds(b.CellTarget, index, index) | st.builds(b.MaskTarget, mask, mask)
polarity = st.sampled_from([1, -1])
pulse = st.builds(b.Pulse, polarity, st.integers(1, 0xFFFF), positive_f32, positive_f32, target)


@st.composite
def read(draw) -> b.Read:
    mode = draw(st.sampled_from(list(b.ReadMode)))
    row = draw(index) if mode in (b.ReadMode.CELL, b.ReadMode.ROW) else None
    col = draw(index) if mode in (b.ReadMode.CELL, b.ReadMode.COLUMN) else None
    return b.Read(mode, row, col, draw(f32(-64.0, 64.0)))


@st.composite
def mvm(draw) -> b.Mvm:
    driven, sensed = draw(mask), draw(mask)
    count = draw(st.integers(1, 4))
    vectors = draw(st.lists(st.lists(f32(-2.0, 2.0), min_size=len(driven), max_size=len(driven)),
                            min_size=count, max_size=count))
    return b.Mvm(draw(st.sampled_from(list(b.Axis))), driven, sensed, vectors, draw(positive_f32),
                 draw(positive_f32))


train_slot = st.builds(b.TrainSlot, polarity, st.builds(b.MaskTarget, mask, mask))
pulse_train = st.builds(b.PulseTrain, positive_f32, positive_f32,
                        st.lists(train_slot, min_size=1, max_size=8).map(tuple))

ack = st.builds(b.Ack, st.integers(0, 0xFF))
capabilities = st.sets(st.sampled_from([c for c in b.Capability if c]))
geometry = st.integers(0, 0xFFFF)
identify_reply = st.builds(b.IdentifyReply, text, geometry, geometry, capabilities)


@st.composite
def read_reply(draw) -> b.ReadReply:
    rows, cols = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    n = rows * cols
    values = draw(st.lists(f32(inf=True) | f32(-1.0, 1.0), min_size=n, max_size=n))
    return b.ReadReply((rows, cols), values)


errors_reply = st.builds(
    b.ErrorsReply, st.lists(st.tuples(st.integers(-0x8000, 0x7FFF), text), max_size=8).map(tuple)
)
nack = st.builds(b.Nack, st.sampled_from(list(b.NackCode)), text)

requests = st.one_of(identify, reset, select(), route, pulse, read(), read_errors, mvm(),
                     pulse_train)
replies = st.one_of(ack, identify_reply, read_reply(), errors_reply, nack)
messages = requests | replies
seqs = st.integers(0, 0xFFFF)
frames = st.builds(b.Frame, seqs, messages)


def is_f32(x: float) -> bool:
    return struct.unpack(">f", struct.pack(">f", x))[0] == x
