"""ArC TWO's channel layout, as its library (libarc2 0.6, under pyarc2) fixes it.

Both sides read it: the ArC TWO driver (``drivers/arc2.py``) to find a cell's current in what a
slice read returns, and its stand-in (``sim/instruments/arc2.py``) to return it in that order.

ArC TWO has 64 channels, 0-63, in two groups of 32. libarc2 calls channels 0-15 and 32-47 the
*bit* channels (the rows of its standard 32 x 32 array) and 16-31 and 48-63 the *word* channels
(its columns). ``read_slice(chan, vread)`` and ``pulse_slice(chan, ...)`` take ``chan`` as the
low channel and act on every channel of the *other* group; ``read_slice`` returns 32 currents in
the other group's order (:func:`slice_channels`). So a chip whose rows sit on one group and whose
columns sit on the other can be read one row per call.
"""

from __future__ import annotations

__all__ = ["BIT_CHANNELS", "CHANNELS", "WORD_CHANNELS", "group_of", "slice_channels"]

#: Every channel number.
CHANNELS = range(64)
#: libarc2's bit channels (``ALL_BITS``), in the order a slice read returns them.
BIT_CHANNELS: tuple[int, ...] = (*range(0, 16), *range(32, 48))
#: libarc2's word channels (``ALL_WORDS``), in the order a slice read returns them.
WORD_CHANNELS: tuple[int, ...] = (*range(16, 32), *range(48, 64))


def group_of(channel: int) -> str:
    """``"bits"`` or ``"words"``: the group of ``channel`` (0-63)."""
    if channel not in CHANNELS:
        raise ValueError(f"ArC TWO channel {channel!r}: allowed 0-63")
    return "bits" if channel in BIT_CHANNELS else "words"


def slice_channels(low: int) -> tuple[int, ...]:
    """The channels ``read_slice(low, ...)`` reads, in the order of the 32 currents it returns:
    the group ``low`` is not in."""
    return WORD_CHANNELS if group_of(low) == "bits" else BIT_CHANNELS
