"""Cost and carbon of energy.

Both start from the energy the GPUs used and scale it to the facility with the power usage
effectiveness (PUE: facility energy / IT energy), then convert to kilowatt-hours:

    cost   = joules * PUE / 3.6e6 * price per kWh
    carbon = joules * PUE / 3.6e6 * grid intensity (gCO2e per kWh)
"""

from __future__ import annotations

from dataclasses import dataclass

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class Tariff:
    """Price and grid intensity of the energy; either may be unknown (None)."""

    pue: float = 1.0
    price_per_kwh: float | None = None
    currency: str | None = None
    grams_per_kwh: float | None = None

    def cost(self, joules: float) -> float | None:
        if self.price_per_kwh is None:
            return None
        return joules * self.pue / JOULES_PER_KWH * self.price_per_kwh

    def carbon_grams(self, joules: float) -> float | None:
        if self.grams_per_kwh is None:
            return None
        return joules * self.pue / JOULES_PER_KWH * self.grams_per_kwh
