"""hilctl: hardware-in-the-loop training of neural networks on analog crossbar tiles.

The core package holds the tile interface (:mod:`hilctl.tile`), validated configuration
(:mod:`hilctl.config`), the backend registry (:mod:`hilctl.backends`), the training algorithms,
tasks and controller, the run store and the command line (:mod:`hilctl.cli`). Backends live in
the sibling packages ``sim`` (emulator) and ``drivers`` (lab instruments) and are found through
entry points, never imported here (docs/architecture.md).
"""

__version__ = "0.1.0"
