"""The accounting invariant, over random traces.

For every GPU, energy attributed to servers plus unattributed energy equals the GPU's measured
energy up to its settled horizon; what the servers were given equals what the GPUs attributed
(settled or still ahead of the horizon); and no cumulative figure ever decreases. The traces mix
counter resets on both sides, gaps in the energy readings, late scrapes, idle stretches, shared
GPUs, a GPU that serves nobody and placement changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from pytest import approx

from exporter.accounting.book import Accountant, Snapshot
from exporter.model import GpuSample, ModelTokens, TokenSample
from exporter.placement import Holding, Placement
from tests.accounting.builders import GPU0, GPU1

GPUS = (GPU0, GPU1)
SERVERS = ("a", "b", "c")


@dataclass(frozen=True)
class Step:
    """One tick of a trace: time passes, the GPUs are read, one server may be scraped."""

    dt: float
    read_gpus: tuple[bool, bool]
    joules: tuple[float, float]
    energy_reset: bool
    scrape: int | None  # the server scraped in this tick, if any
    tokens: float
    token_reset: bool
    lag: float  # how long before the tick the scrape was taken (the midpoint of a request)
    place: int | None  # a new placement, if any


steps = st.lists(
    st.builds(
        Step,
        dt=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.25, 0.15, 6.0]),
        read_gpus=st.tuples(st.booleans(), st.booleans()) | st.just((True, True)),
        joules=st.tuples(st.floats(0.0, 500.0), st.floats(0.0, 500.0)),
        energy_reset=st.sampled_from([False] * 9 + [True]),
        scrape=st.none() | st.integers(0, len(SERVERS) - 1),
        tokens=st.sampled_from([0.0, 0.0, 1.0, 7.5]) | st.floats(0.0, 300.0),
        token_reset=st.sampled_from([False] * 9 + [True]),
        lag=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 1.0, 2.5]),
        place=st.sampled_from([None] * 15 + [0, 1, 2]),
    ),
    min_size=20,
    max_size=120,
)

PLACEMENTS = (
    {"a": [GPU0], "b": [GPU0], "c": [GPU0, GPU1]},
    {"a": [GPU0, GPU1], "b": [], "c": [GPU1]},
    {"a": [GPU0], "b": [GPU1], "c": []},
)


def _placement(choice: int) -> Placement:
    chosen = PLACEMENTS[choice % len(PLACEMENTS)]
    return Placement({s: frozenset(Holding(g.uuid) for g in chosen[s]) for s in SERVERS})


def _cumulative(snap: Snapshot) -> dict[tuple[str, ...], float]:
    """Every cumulative figure of a snapshot, by name."""
    values: dict[tuple[str, ...], float] = {}
    for g in snap.gpus:
        for name in ("energy_j", "settled_energy_j", "attributed_j", "unattributed_j"):
            values[(g.gpu.uuid, name)] = getattr(g, name)
    for s in snap.servers:
        for name in ("energy_j", "idle_energy_j", "idle_s", "unmeasured_s"):
            values[(s.server, name)] = getattr(s, name)
        for m in s.models:
            for name in ("energy_j", "idle_energy_j", "input_tokens", "output_tokens"):
                values[(s.server, str(m.model), name)] = getattr(m, name)
            for b in m.bands:
                values[(s.server, str(m.model), b.band)] = b.energy_j
    return values


@settings(max_examples=100, deadline=None)
@given(steps)
def test_every_joule_is_attributed_once_and_ledgers_never_decrease(trace: list[Step]) -> None:
    acc = Accountant(list(SERVERS), [10.0], gap_limit_s=4.0, hold_s=20.0)
    acc.set_placement(_placement(0))
    energy = dict.fromkeys(range(len(GPUS)), 1000.0)
    inputs = dict.fromkeys(SERVERS, 0.0)
    outputs = dict.fromkeys(SERVERS, 0.0)
    last_scrape = dict.fromkeys(SERVERS, -1.0)
    now = 0.0
    previous: dict[tuple[str, ...], float] = {}
    for step in trace:
        now += step.dt
        for i, gpu in enumerate(GPUS):
            if step.read_gpus[i]:
                energy[i] = step.joules[i] if step.energy_reset else energy[i] + step.joules[i]
                acc.add_energy([GpuSample(gpu, now, energy[i], None)])
        if step.scrape is not None:
            server = SERVERS[step.scrape]
            t = max(now - step.lag, last_scrape[server] + 1e-3)
            last_scrape[server] = t
            inputs[server] = step.tokens if step.token_reset else inputs[server] + step.tokens
            outputs[server] = step.tokens / 4 if step.token_reset else outputs[server] + step.tokens / 4
            running = float(int(step.tokens) % 3)
            sample = ModelTokens("m", inputs[server], outputs[server], running=running)
            acc.add_tokens([TokenSample(server, t, sample)])
        if step.place is not None:
            acc.set_placement(_placement(step.place))
        acc.settle(now)
        snap = acc.snapshot(now)

        for g in snap.gpus:
            assert g.attributed_j + g.unattributed_j == approx(g.settled_energy_j, rel=1e-9, abs=1e-6)
            assert g.settled_energy_j <= g.energy_j + 1e-6
            assert g.attributed_j >= 0 and g.unattributed_j >= -1e-6
        given_to_servers = sum(s.energy_j for s in snap.servers)
        claimed = sum(gl.attributed_j + gl.pending_j() for gl in acc.gpu_ledgers.values())
        assert given_to_servers == approx(claimed, rel=1e-9, abs=1e-6)
        for s in snap.servers:
            assert sum(m.energy_j for m in s.models) == approx(s.energy_j, rel=1e-9, abs=1e-6)

        current = _cumulative(snap)
        for key, value in previous.items():
            assert current[key] >= value - 1e-6 * max(1.0, abs(value)), key
        previous = current
