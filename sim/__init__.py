"""The emulated backend: device physics, pulse trains and read periphery in numpy.

``sim.backend.open_tile`` is registered as backend ``sim``; see :class:`sim.tile.EmulatedTile`.
"""
