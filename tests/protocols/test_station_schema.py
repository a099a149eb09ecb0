"""The station schema refuses what would open a bench: non-finite or absurd limits (beyond the
ceilings of :class:`StationLimits`) and tile regions that share cells."""

from __future__ import annotations

import math
import re

import pytest
from pydantic import ValidationError

from protocols.station import StationConfig, StationLimits


def _station(tiles: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {"board": {"port": "/dev/null"}, "chip": {"rows": 8, "cols": 8}, "tiles": tiles, **extra}


def test_an_infinite_pulse_width_is_refused():
    for bad in (math.inf, math.nan, -math.inf):
        with pytest.raises(ValidationError, match="max_pulse_width"):
            StationConfig.model_validate(_station([{"name": "a", "rows": 8, "cols": 8}],
                                                  limits={"max_pulse_width": bad}))


@pytest.mark.parametrize("field,ceiling,beyond", [
    ("max_pulse_amplitude", 10.0, 10.000000000000002), ("max_pulse_width", 1.0, 1.0000000000000002),
    ("max_read_voltage", 2.0, 2.0000000000000004), ("max_compliance", 0.1, 0.10000000000000002),
    ("max_burst_count", 65535, 65536),
])
def test_every_limit_has_a_ceiling(field, ceiling, beyond):
    assert getattr(StationLimits.model_validate({field: ceiling}), field) == ceiling
    with pytest.raises(ValidationError, match=field):
        StationLimits.model_validate({field: beyond})
    assert "ceiling" in (StationLimits.model_fields[field].description or "")


def test_the_shortest_pulse_is_at_least_a_nanosecond():
    assert StationLimits(min_pulse_width=1e-9).min_pulse_width == 1e-9
    with pytest.raises(ValidationError, match="min_pulse_width"):
        StationLimits(min_pulse_width=0.9e-9)
    with pytest.raises(ValidationError, match="min_pulse_width must not exceed max_pulse_width"):
        StationLimits(min_pulse_width=1e-3, max_pulse_width=1e-6)


def test_overlapping_tiles_are_refused_naming_both_and_the_overlap():
    tiles = [{"name": "fast", "rows": 4, "cols": 8}, {"name": "slow", "row": 2, "rows": 4, "cols": 8}]
    with pytest.raises(ValidationError) as info:
        StationConfig.model_validate(_station(tiles))
    text = str(info.value)
    assert "tiles.fast and tiles.slow overlap at rows 2..3, cols 0..7" in text


def test_a_tile_inside_another_and_a_corner_overlap_are_refused():
    inside = [{"name": "big", "rows": 8, "cols": 8},
              {"name": "small", "row": 3, "col": 3, "rows": 1, "cols": 1}]
    with pytest.raises(ValidationError, match=re.escape("tiles.big and tiles.small overlap at rows 3..3, "
                                                        "cols 3..3")):
        StationConfig.model_validate(_station(inside))
    corner = [{"name": "a", "rows": 3, "cols": 3}, {"name": "b", "row": 2, "col": 2, "rows": 3, "cols": 3},
              {"name": "c", "row": 6, "rows": 2, "cols": 8}]
    overlap = re.escape("tiles.a and tiles.b overlap at rows 2..2, cols 2..2")
    with pytest.raises(ValidationError, match=overlap):
        StationConfig.model_validate(_station(corner))


def test_tiles_that_touch_without_sharing_cells_are_fine():
    tiles = [{"name": "fast", "rows": 4, "cols": 4}, {"name": "slow", "row": 4, "rows": 4, "cols": 4},
             {"name": "c", "col": 4, "rows": 8, "cols": 4}]
    station = StationConfig.model_validate(_station(tiles))
    assert [t.name for t in station.tiles] == ["fast", "slow", "c"]
