"""The emulated backend: device physics, pulse trains and read periphery in numpy
(docs/emulator.md), and simulated instruments that speak the lab's wire protocols.

:class:`sim.backend.SimBackend` is registered as backend ``sim``; see :class:`sim.tile.EmulatedTile`.
"""
