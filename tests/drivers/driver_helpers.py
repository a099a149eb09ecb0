"""Settings the SCPI driver tests share: the station limits and short timeouts."""

from __future__ import annotations

from protocols.station import StationLimits

LIMITS = StationLimits(max_pulse_amplitude=3.0, min_pulse_width=20e-9, max_pulse_width=1e-3,
                       max_read_voltage=0.5, max_compliance=1e-3, max_burst_count=1000)
#: Driver keywords: timeouts short enough that a dead link is found in a fraction of a second.
FAST = {"timeout_ms": 250, "open_timeout_ms": 500, "retries": 2, "backoff_s": 0.01}
