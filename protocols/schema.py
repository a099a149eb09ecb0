"""The one strict base of every validated settings model (configs, station files).

Unknown keys are refused (a typo is an error that lists the valid keys, never a silently ignored
setting), models are frozen, no float field takes NaN or infinity, and numbers are strict: a
boolean is not a number (``steps = true`` is refused, not read as 1) and an integer field takes
only integers (``2.5`` is refused, not truncated). Fields with an alias (``in`` of a task) are
filled by either name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown keys, is frozen, and takes only finite floats and
    strict numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True,
                              populate_by_name=True)
