"""Energy from power readings, for GPUs whose energy counter is missing or not to be trusted.

This is the fallback, not the norm: a polled power reading sees only the instants it samples, so
the integral is an estimate (GPUs before Volta have no energy counter; some AMD parts have one that
runs at the wrong rate). Samples carry `method="power_integration"` so users can tell.
"""

from __future__ import annotations

from exporter.energy import gpu_read_error
from exporter.values import Gpu, GpuSample


class PowerIntegral:
    """Cumulative energy of one GPU by the trapezoid rule over its power readings.

    Two readings further apart than `max_step_s` are not joined: nothing is known of the power in
    between, and a gap must stay a gap rather than become invented energy.
    """

    def __init__(self, max_step_s: float) -> None:
        self.max_step_s = max_step_s
        self.energy_j = 0.0
        self._t: float | None = None
        self._power_w = 0.0

    def add(self, t: float, power_w: float) -> float:
        """Record a power reading at `t` and return the energy integrated up to `t`."""
        if self._t is not None:
            if t <= self._t:
                return self.energy_j
            step = t - self._t
            if step <= self.max_step_s:
                self.energy_j += (self._power_w + power_w) / 2.0 * step
        self._t = t
        self._power_w = power_w
        return self.energy_j

    def sample(self, gpu: Gpu, t: float, power_w: float | None) -> GpuSample:
        """The GPU's sample at `t` from a power reading; a failed read where there is none."""
        if power_w is None:
            raise gpu_read_error(gpu, "no_power", "no power reading to integrate")
        return GpuSample(gpu, t, self.add(t, power_w), power_w)
