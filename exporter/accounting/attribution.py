"""Every joule of a GPU, attributed to a server or counted as unattributed.

The servers' shares of a GPU are piecewise constant on the grid of its energy readings: each
reading opens a *share step* from the previous reading to itself, whose shares the placement
decided when the reading arrived (from the activity measured over that stretch, or a fixed
split). The shares of one step add up to at most one.

A server's measured interval claims its share of the GPU's energy between two instants (a
*claim*): within each share step it overlaps, the step's share of the energy used there. Each GPU
classifies its energy in order up to a settled horizon: within each stretch, the claimed shares
go to the servers and the rest (no server on the GPU, a tenant nobody stands for, an unmeasured
interval, time before a server's first scrape) is unattributed. So, for every GPU and at every
horizon,

    attributed + unattributed == energy measured from the first reading to the horizon,

and both sides only grow. Claims are accepted only ahead of the horizon, only over share steps
already known and only where the same server has not claimed yet; since every instant's shares
come from one step, servers whose scrapes are not aligned never claim more than the whole GPU,
and no joule is counted twice or taken back.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise

from exporter.accounting.tracks import EnergyTrack

_SHARE_TOLERANCE = 1e-9
_NO_SHARES: Mapping[str, float] = {}


@dataclass(frozen=True, slots=True)
class ShareStep:
    """The servers' shares of a GPU's energy over (t_start, t_end], constant within it."""

    t_start: float
    t_end: float
    shares: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Claim:
    """A server's measured interval on one GPU: its shares of the energy between two instants."""

    server: str
    t_start: float
    t_end: float


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
        self._claimed_to: dict[str, float] = {}
        """Server -> end of its latest claim ahead of the horizon."""
        self._steps: deque[ShareStep] = deque()

    @property
    def horizon_t(self) -> float | None:
        """Instant up to which every joule is classified (the first reading at first); None before it."""
        return self._horizon_t if self._horizon_t is not None else self.track.first_t

    def add_step(self, t_start: float, t_end: float, shares: Mapping[str, float]) -> None:
        """The shares in force from the reading at `t_start` to the next one, at `t_end`.

        `shares` is kept, not copied: the caller must not change it afterwards.
        """
        last = self._steps[-1] if self._steps else None
        if last is not None and last.t_end == t_start and (last.shares is shares or last.shares == shares):
            self._steps[-1] = ShareStep(last.t_start, t_end, last.shares)
            return
        if any(v < 0 for v in shares.values()) or sum(shares.values()) > 1 + _SHARE_TOLERANCE:
            raise ValueError(f"shares of one GPU must be non-negative and add up to at most 1: {shares}")
        self._steps.append(ShareStep(t_start, t_end, shares))

    def can_claim(self, server: str, t_start: float, t_end: float) -> bool:
        """True when `server` may claim its shares of the energy in [t_start, t_end].

        A server's claims follow one another in time, so one that starts before the end of the
        server's latest claim overlaps it (or goes back in time): refused.
        """
        if self.horizon_t is None or t_start < self.horizon_t or t_end <= t_start:
            return False
        if not self._steps or t_end > self._steps[-1].t_end:
            return False
        return t_start >= self._claimed_to.get(server, -math.inf)

    def claim(self, claim: Claim) -> None:
        self._claims.append(claim)
        self._claimed_to[claim.server] = max(claim.t_end, self._claimed_to.get(claim.server, -math.inf))

    def claim_j(self, claim: Claim, since_t: float | None = None) -> float:
        """Energy the claim attributes to its server (from `since_t` on, where given)."""
        start = claim.t_start if since_t is None else max(claim.t_start, since_t)
        track = self.track
        return sum(
            shares.get(claim.server, 0.0) * (track.energy_spanning(b) - track.energy_spanning(a))
            for a, b, shares in self._pieces(start, claim.t_end)
        )

    def settle(self, horizon_t: float) -> None:
        """Classify the energy up to `horizon_t` (clamped to the latest reading)."""
        start, latest = self.horizon_t, self.track.latest_t
        if start is None or latest is None:
            return
        end = min(horizon_t, latest)
        if end <= start:
            return
        # One sweep over the instants where a claim or a share step starts or ends: in between,
        # the servers with a claim there take their step's shares, the rest is unattributed.
        inside = {c.t_start for c in self._claims} | {c.t_end for c in self._claims}
        inside |= {s.t_start for s in self._steps} | {s.t_end for s in self._steps}
        points = sorted({start, end} | {t for t in inside if start < t < end})
        starting: dict[float, list[str]] = {}
        ending: dict[float, list[str]] = {}
        for c in self._claims:
            starting.setdefault(max(c.t_start, start), []).append(c.server)
            ending.setdefault(c.t_end, []).append(c.server)
        # The active servers' shares are summed as servers come and go, and summed anew only where
        # the shares change (a new step), so the sweep costs O(points + steps x servers), not
        # O(points x servers).
        active: set[str] = set()
        claimed_sum = 0.0
        current: Mapping[str, float] | None = None
        steps = self._steps
        i = 0
        energy_prev = self.track.energy_spanning(start)
        for lo, hi in pairwise(points):
            while i < len(steps) and steps[i].t_end <= lo:
                i += 1
            shares = steps[i].shares if i < len(steps) and steps[i].t_start <= lo else _NO_SHARES
            ended, started = ending.get(lo, ()), starting.get(lo, ())
            if shares is current:  # the same step: only the servers that come or go change the sum
                for server in ended:
                    if server in active:
                        active.remove(server)
                        claimed_sum -= shares.get(server, 0.0)
                for server in started:
                    if server not in active:
                        active.add(server)
                        claimed_sum += shares.get(server, 0.0)
            else:
                active.difference_update(ended)
                active.update(started)
                current = shares
                claimed_sum = math.fsum(shares.get(server, 0.0) for server in active)
            energy_hi = self.track.energy_spanning(hi)
            used = energy_hi - energy_prev
            claimed = min(1.0, max(0.0, claimed_sum))
            self.attributed_j += used * claimed
            self.unattributed_j += used - used * claimed
            energy_prev = energy_hi
        self.settled_j = energy_prev
        self._horizon_t = end
        self._claims = [c for c in self._claims if c.t_end > end]
        self._claimed_to = {server: t for server, t in self._claimed_to.items() if t > end}
        while self._steps and self._steps[0].t_end <= end:
            self._steps.popleft()

    def pending_j(self) -> float:
        """Energy claimed ahead of the horizon (attributed to servers, not yet settled here)."""
        h = self.horizon_t
        return 0.0 if h is None else sum(self.claim_j(c, h) for c in self._claims)

    def _pieces(self, t0: float, t1: float) -> Iterator[tuple[float, float, Mapping[str, float]]]:
        """[t0, t1] cut where the share steps change: (from, to, the shares in force there).

        Time no step covers (none should be) has no shares: its energy stays unattributed.
        """
        steps = self._steps
        i = bisect_right([s.t_end for s in steps], t0)
        at = t0
        while at < t1:
            if i < len(steps) and steps[i].t_start <= at:
                b = min(t1, steps[i].t_end)
                yield at, b, steps[i].shares
                i += 1
            else:
                b = min(t1, steps[i].t_start) if i < len(steps) else t1
                yield at, b, _NO_SHARES
            at = b
