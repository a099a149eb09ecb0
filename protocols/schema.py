"""The one strict base of every validated settings model (configs, station files).

Unknown keys are refused (a typo is an error that lists the valid keys, never a silently ignored
setting), models are frozen, and no float field takes NaN or infinity. Fields with an alias
(``in`` of a task) are filled by either name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown keys, is frozen and takes only finite floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True)
