"""Emulate your own chip: fit device models to measured pulse responses (``hilctl fit``).

:mod:`~hilctl.fitting.data` reads the measurements, :mod:`~hilctl.fitting.cells` fits each
cell, :mod:`~hilctl.fitting.population` turns the cells into a model's means, spreads and noise,
:mod:`~hilctl.fitting.fit` ties them together and chooses a model, and
:mod:`~hilctl.fitting.twin` replays the measurement on the emulator to judge the fit.
"""

from hilctl.fitting.cells import NotConverged
from hilctl.fitting.data import DataError, PulseData, load_pulse_data
from hilctl.fitting.fit import DEFAULT_NODES, DeviceFit, choose_model, fit_device
from hilctl.fitting.twin import Quality, compare

__all__ = [
    "DEFAULT_NODES",
    "DataError",
    "DeviceFit",
    "NotConverged",
    "PulseData",
    "Quality",
    "choose_model",
    "compare",
    "fit_device",
    "load_pulse_data",
]
