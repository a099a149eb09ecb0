"""The training tasks: streaming least squares (:mod:`~hilctl.tasks.least_squares`) and the
MNIST classifiers, a fully connected network and a LeNet-like CNN (:mod:`~hilctl.tasks.mnist`).

:data:`TaskConfig` is the one declaration of the registry; :data:`TASKS` (by name) is derived
from it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hilctl.config import registry
from hilctl.tasks.base import Reporter, TaskResult, TaskRun, TaskSettings, WeightFactory
from hilctl.tasks.least_squares import LeastSquaresConfig, least_squares
from hilctl.tasks.mnist import MnistCnnConfig, MnistFcnConfig, lenet, mnist_cnn, mnist_fcn

TaskConfig = Annotated[LeastSquaresConfig | MnistFcnConfig | MnistCnnConfig, Field(discriminator="name")]
#: Every task's config by name (``--task``), in the order of :data:`TaskConfig`.
TASKS = registry(TaskConfig, "name", TaskSettings)

__all__ = [
    "TASKS",
    "LeastSquaresConfig",
    "MnistCnnConfig",
    "MnistFcnConfig",
    "Reporter",
    "TaskConfig",
    "TaskResult",
    "TaskRun",
    "TaskSettings",
    "WeightFactory",
    "least_squares",
    "lenet",
    "mnist_cnn",
    "mnist_fcn",
]
