"""Simulated instruments that speak the real wire protocols, acting on one emulated chip.

The simulated board (serial, on a pseudo-terminal), pulse generator and SMU (SCPI over TCP on
127.0.0.1) let the lab drivers in ``drivers/`` run unchanged against the emulator: CI tests the
very code that drives a bench.
"""
