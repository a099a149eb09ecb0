"""``hilctl reproduce``: regenerate the results of Wu et al. (NeurIPS 2024) on the emulator.

- :mod:`~hilctl.reproduce.core`: rows, claims, the experiment registry, running (in worker
  processes when asked);
- :mod:`~hilctl.reproduce.least_squares`: Figs. 1, 3, 4 and the theory check;
- :mod:`~hilctl.reproduce.successors`: Tiki-Taka's successors on least squares;
- :mod:`~hilctl.reproduce.mnist`: Fig. 5, MNIST FCN and CNN;
- :mod:`~hilctl.reproduce.report`: the saved results and the tables rebuilt from them.

Importing this package registers every experiment, in the order the tables list them.
"""

from hilctl.reproduce import least_squares, mnist, successors
from hilctl.reproduce.core import (
    EXPERIMENTS,
    GROUPS,
    Claim,
    Experiment,
    ExperimentResult,
    Row,
    RunContext,
    all_passed,
    expand,
    register_experiment,
    run_experiments,
)

for _experiment in (*least_squares.ALL, *successors.ALL, *mnist.ALL):
    register_experiment(_experiment)
GROUPS[mnist.GROUP[0]] = mnist.GROUP[1]

__all__ = ["EXPERIMENTS", "GROUPS", "Claim", "Experiment", "ExperimentResult", "Row",
           "RunContext", "all_passed", "expand", "register_experiment", "run_experiments"]
