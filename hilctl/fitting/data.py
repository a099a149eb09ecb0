"""Measured pulse responses, read from the two formats labs keep them in.

Every format becomes one :class:`PulseData`: each device's readings in order, and the
direction of the pulse before each reading. All devices must share the pulse sequence (the same
number of readings and the same directions), as a characterisation of an array gives them.

- **characterize JSON**: what ``hilctl characterize --per-cell --json`` prints (or ``--out``
  writes): the key ``per_cell`` holds the weight of every cell after programming (``start``) and
  after each pulse (``weights``, the up pulses first).
- **long-format CSV**: one row per reading, columns ``device`` (any id), ``pulse`` (index in the
  sequence), ``direction`` (``up`` or ``down``: the pulse that led to this reading), either
  ``weight`` (weight units) or ``conductance`` (siemens), and optionally ``cycle`` (several
  up/down cycles of a device, in order). A device's readings, ordered by cycle and pulse, form
  one sequence; its first reading is where it started (its direction is not used). With
  conductances the weights are ``(G - g_ref) / g_scale``, with ``g_ref`` and ``g_scale`` chosen so
  that the mean conductance range maps to ``[-1, 1]`` (:class:`ConductanceMapping`).

A file that is not a pulse response raises :class:`DataError` with one line naming the problem.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hilctl.errors import HilctlError

Array = NDArray[np.float64]

#: A conductance above this (siemens) is not a conductance in siemens: probably microsiemens, or
#: weights in a column called ``conductance``.
MAX_CONDUCTANCE = 1.0
#: Fewest pulses of each direction a fit needs: one pulse cannot separate a step from its noise.
MIN_PULSES = 3


class DataError(HilctlError):
    """A measurement file is not a pulse response hilctl can fit (exit 2)."""


@dataclass(frozen=True)
class ConductanceMapping:
    """How measured conductances became weights: ``w = (G - g_ref) / g_scale`` (siemens).

    The station file's ``[mapping]`` section uses the same two terms.
    """

    g_ref: float
    g_scale: float

    def to_weights(self, conductance: Array) -> Array:
        return (conductance - self.g_ref) / self.g_scale

    def to_conductance(self, weight: float) -> float:
        return self.g_ref + self.g_scale * weight


@dataclass(frozen=True)
class PulseData:
    """The readings of ``devices`` devices through one shared pulse sequence.

    Attributes:
        weights: ``(devices, pulses + 1)`` weights (weight units): column 0 is each device's
            start, column ``k`` the reading after pulse ``k``.
        directions: ``(pulses,)`` +1 for an up pulse, -1 for a down pulse.
        device_ids: one label per device (``row,col`` for a characterised tile).
        source: where the data came from, for messages and the fit record.
        mapping: the conductance-to-weight mapping, where the file held conductances.
        shape: ``(rows, cols)`` of the tile where the data is a characterised tile, else None.
    """

    weights: Array
    directions: NDArray[np.int8]
    device_ids: tuple[str, ...]
    source: str
    mapping: ConductanceMapping | None = None
    shape: tuple[int, int] | None = None

    @property
    def devices(self) -> int:
        return int(self.weights.shape[0])

    @property
    def pulses(self) -> int:
        return int(self.directions.size)

    @property
    def before(self) -> Array:
        """``(devices, pulses)`` the weight before each pulse."""
        return self.weights[:, :-1]

    @cached_property
    def steps(self) -> Array:
        """``(devices, pulses)`` the change of the weight by each pulse (computed once: every
        fit reads it several times)."""
        return np.diff(self.weights, axis=1)

    def coverage(self) -> dict[str, float]:
        """Share of the weight range (the mean over devices of lowest to highest reading) that
        the up and the down pulses started from: below 1, the response of that direction is
        extrapolated over the rest."""
        low, high = self.weights.min(axis=1), self.weights.max(axis=1)
        span = np.where(high > low, high - low, 1.0)
        shares = {}
        for sign, name in ((1, "up"), (-1, "down")):
            before = self.before[:, self.directions == sign]
            shares[name] = float(np.mean((before.max(axis=1) - before.min(axis=1)) / span))
        return shares

    def sweep(self) -> tuple[int, int] | None:
        """``(up, down)`` where the sequence is up pulses then down pulses (a characterisation's
        sweep, which the emulated twin can repeat), else None."""
        up = int(np.sum(self.directions > 0))
        if np.all(self.directions[:up] > 0) and np.all(self.directions[up:] < 0):
            return up, self.pulses - up
        return None


def check(data: PulseData) -> PulseData:
    """``data`` if it can be fitted; else :class:`DataError` naming what is wrong."""
    where = data.source
    if not np.all(np.isfinite(data.weights)):
        device, column = np.argwhere(~np.isfinite(data.weights))[0]
        raise DataError(f"{where}: device {data.device_ids[device]} has a reading that is not "
                        f"a finite number (reading {column})")
    for sign, name in ((1, "up"), (-1, "down")):
        count = int(np.sum(data.directions == sign))
        if count < MIN_PULSES:
            raise DataError(f"{where}: {count} {name} pulse(s); a fit needs at least "
                            f"{MIN_PULSES} up and {MIN_PULSES} down pulses")
    moved = np.ptp(data.weights, axis=1) > 0
    if not np.any(moved):
        raise DataError(f"{where}: no device moved (every reading of a device is the same): "
                        "the pulses did not reach the cells, or were below their threshold")
    return data


# ---------------------------------------------------------------------------------------------
# characterize JSON
# ---------------------------------------------------------------------------------------------


def _number_lists(value: Any, name: str, where: str) -> Array:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {name} must hold only numbers") from None
    return array


def from_characterize(record: Mapping[str, Any], source: str) -> PulseData:
    """The per-cell traces of a ``hilctl characterize --per-cell`` record."""
    cells = record.get("per_cell")
    if not isinstance(cells, Mapping):
        raise DataError(f"{source}: no per-cell traces (key 'per_cell'); measure with "
                        "'hilctl characterize --per-cell --out FILE.json'")
    for key in ("rows", "cols", "start", "weights"):
        if key not in cells:
            raise DataError(f"{source}: per_cell has no {key!r}")
    up, down = record.get("up"), record.get("down")
    if not isinstance(up, int) or not isinstance(down, int):
        raise DataError(f"{source}: 'up' and 'down' (pulse counts) must be integers")
    rows, cols = cells["rows"], cells["cols"]
    if not isinstance(rows, int) or not isinstance(cols, int) or rows < 1 or cols < 1:
        raise DataError(f"{source}: per_cell rows and cols must be positive integers")
    start = _number_lists(cells["start"], "per_cell.start", source)
    after = _number_lists(cells["weights"], "per_cell.weights", source)
    if start.shape != (rows * cols,):
        raise DataError(f"{source}: per_cell.start must hold rows * cols = {rows * cols} "
                        f"weights; got shape {start.shape}")
    if after.shape != (up + down, rows * cols) and not (up + down == 0 and after.size == 0):
        raise DataError(f"{source}: per_cell.weights must hold up + down = {up + down} lists "
                        f"of {rows * cols} weights; got shape {after.shape}")
    weights = np.column_stack([start, after.reshape(up + down, rows * cols).T])
    directions = np.concatenate([np.ones(up), -np.ones(down)]).astype(np.int8)
    ids = tuple(f"{r},{c}" for r in range(rows) for c in range(cols))
    return check(PulseData(weights, directions, ids, source, shape=(rows, cols)))


# ---------------------------------------------------------------------------------------------
# long-format CSV
# ---------------------------------------------------------------------------------------------

_REQUIRED = ("device", "pulse", "direction")
_VALUES = ("weight", "conductance")


def _int_field(text: str, column: str, line: int, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}, line {line}: {column} must be an integer; got {text!r}") from None


def _float_field(text: str, column: str, line: int, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}, line {line}: {column} must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}, line {line}: {column} is {text!r}, not a finite number")
    return value


def _columns(header: Sequence[str] | None, where: str) -> tuple[dict[str, int], str]:
    if not header:
        raise DataError(f"{where}: empty file; expected a header with columns "
                        "device, pulse, direction and weight or conductance")
    names = [name.strip().lower() for name in header]
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise DataError(f"{where}: column {twice[0]!r} appears more than once in the header")
    index = {name: i for i, name in enumerate(names)}
    missing = [c for c in _REQUIRED if c not in index]
    values = [c for c in _VALUES if c in index]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; a pulse response "
                        "has columns device, pulse, direction, weight or conductance "
                        "(and optionally cycle)")
    if len(values) != 1:
        what = "both" if values else "neither"
        raise DataError(f"{where}: {what} of the columns weight and conductance; give exactly "
                        "one (mixed units cannot be fitted together)")
    return index, values[0]


def from_csv(path: Path) -> PulseData:
    """The readings of a long-format CSV (see the module docstring)."""
    where = str(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        index, unit = _columns(next(reader, None), where)
        needed = 1 + max(index[c] for c in (*_REQUIRED, unit, *(("cycle",) if "cycle" in index
                                                                   else ())))
        per_device: dict[str, list[tuple[int, int, int, float]]] = {}
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < needed:
                raise DataError(f"{where}, line {line}: {len(row)} fields, the header has "
                                f"{len(index)}")
            direction = row[index["direction"]].strip().lower()
            if direction not in ("up", "down"):
                raise DataError(f"{where}, line {line}: direction must be up or down; got "
                                f"{row[index['direction']]!r}")
            cycle = _int_field(row[index["cycle"]], "cycle", line, where) if "cycle" in index else 0
            per_device.setdefault(row[index["device"]].strip(), []).append((
                cycle,
                _int_field(row[index["pulse"]], "pulse", line, where),
                1 if direction == "up" else -1,
                _float_field(row[index[unit]], unit, line, where),
            ))
    if not per_device:
        raise DataError(f"{where}: no readings below the header")
    sequences = {device: sorted(rows) for device, rows in per_device.items()}
    first_id, first = next(iter(sequences.items()))
    order = [(cycle, pulse, sign) for cycle, pulse, sign, _ in first]
    for device, rows in sequences.items():
        if [(c, p, s) for c, p, s, _ in rows] != order:
            raise DataError(f"{where}: device {device!r} has another pulse sequence than device "
                            f"{first_id!r} ({len(rows)} against {len(first)} readings, or other "
                            "pulse numbers or directions); every device must go through the "
                            "same sequence")
    values = np.array([[value for *_, value in rows] for rows in sequences.values()])
    directions = np.array([sign for _, _, sign in order[1:]], dtype=np.int8)
    mapping = None
    if unit == "conductance":
        mapping = _conductance_mapping(values, where)
        values = mapping.to_weights(values)
    return check(PulseData(values, directions, tuple(sequences), where, mapping))


def _conductance_mapping(conductance: Array, where: str) -> ConductanceMapping:
    """The mapping that puts the mean conductance range (over devices, of each device's lowest
    and highest reading) at weights ``[-1, 1]``."""
    largest = float(np.max(np.abs(conductance)))
    if largest > MAX_CONDUCTANCE or np.any(conductance < 0):
        raise DataError(f"{where}: conductance must be in siemens (0 to {MAX_CONDUCTANCE} S); "
                        f"got values up to {largest:.4g} (microsiemens? weights?)")
    low = float(np.mean(conductance.min(axis=1)))
    high = float(np.mean(conductance.max(axis=1)))
    if not high > low:
        raise DataError(f"{where}: no device's conductance changed: every cell is flat")
    return ConductanceMapping(g_ref=(high + low) / 2, g_scale=(high - low) / 2)


# ---------------------------------------------------------------------------------------------


def load_pulse_data(path: str | Path) -> PulseData:
    """The pulse response in ``path``: a characterize JSON (``.json``) or a long-format CSV
    (any other name); :class:`DataError` if it cannot be read or is not a pulse response."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
            if not isinstance(record, Mapping):
                raise DataError(f"{path}: expected a JSON object from hilctl characterize")
            return from_characterize(record, str(path))
        return from_csv(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
