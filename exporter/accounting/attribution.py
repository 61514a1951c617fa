"""Every joule of a GPU, attributed to a server or counted as unattributed.

A server's measured interval claims its share of the GPU's energy between two instants (a
*claim*). Each GPU classifies its energy in order up to a settled horizon: within each stretch,
the claimed shares go to the servers and the rest (no server on the GPU, an unmeasured interval,
time before a server's first scrape) is unattributed. So, for every GPU and at every horizon,

    attributed + unattributed == energy measured from the first reading to the horizon,

and both sides only grow. Claims are accepted only ahead of the horizon and only while the shares
claimed at any instant add up to at most one, so no joule is counted twice or taken back.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from exporter.accounting.energy import EnergyTrack

_SHARE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Claim:
    """A server's share of a GPU's energy over one measured interval."""

    server: str
    t_start: float
    t_end: float
    share: float


class GpuLedger:
    """The attributed and unattributed energy of one GPU up to its settled horizon."""

    def __init__(self, track: EnergyTrack) -> None:
        self.track = track
        self._horizon_t: float | None = None
        self.settled_j = 0.0
        """Energy from the first reading to the horizon."""
        self.attributed_j = 0.0
        self.unattributed_j = 0.0
        self._claims: list[Claim] = []

    @property
    def horizon_t(self) -> float | None:
        """Instant up to which every joule is classified (the first reading at first); None before it."""
        return self._horizon_t if self._horizon_t is not None else self.track.first_t

    def can_claim(self, t_start: float, t_end: float, share: float) -> bool:
        """True when `share` of the energy in [t_start, t_end] is still free to attribute."""
        if self.horizon_t is None or t_start < self.horizon_t or share <= 0:
            return False
        overlapping = [c for c in self._claims if c.t_start < t_end and t_start < c.t_end]
        # The claimed share is piecewise constant and changes only where a claim starts.
        points = {t_start} | {c.t_start for c in overlapping if c.t_start > t_start}
        return all(
            share + sum(c.share for c in overlapping if c.t_start <= p < c.t_end) <= 1 + _SHARE_TOLERANCE
            for p in points
        )

    def claim(self, claim: Claim) -> None:
        self._claims.append(claim)

    def settle(self, horizon_t: float) -> None:
        """Classify the energy up to `horizon_t` (clamped to the latest reading)."""
        start, latest = self.horizon_t, self.track.latest_t
        if start is None or latest is None:
            return
        end = min(horizon_t, latest)
        if end <= start:
            return
        cuts = sorted(
            {start, end}
            | {c.t_start for c in self._claims if start < c.t_start < end}
            | {c.t_end for c in self._claims if start < c.t_end < end}
        )
        energy_prev = self.track.energy_spanning(start)
        for a, b in pairwise(cuts):
            energy_b = self.track.energy_spanning(b)
            used = energy_b - energy_prev
            claimed = min(1.0, sum(c.share for c in self._claims if c.t_start <= a and b <= c.t_end))
            self.attributed_j += used * claimed
            self.unattributed_j += used - used * claimed
            energy_prev = energy_b
        self.settled_j = energy_prev
        self._horizon_t = end
        self._claims = [c for c in self._claims if c.t_end > end]

    def pending_j(self) -> float:
        """Energy claimed ahead of the horizon (attributed to servers, not yet settled here)."""
        if self.horizon_t is None:
            return 0.0
        h = self.horizon_t
        track = self.track
        return sum(
            c.share * (track.energy_spanning(c.t_end) - track.energy_spanning(max(c.t_start, h)))
            for c in self._claims
        )
