"""The accounting invariant, over random traces.

For every GPU, energy attributed to servers plus unattributed energy equals the GPU's measured
energy up to its settled horizon; what the servers were given equals what the GPUs attributed
(settled or still ahead of the horizon); and no cumulative figure ever decreases. The traces mix
counter resets on both sides, gaps in the energy readings, late scrapes, idle stretches, shared
GPUs, a GPU that serves nobody and placement changes; shares that change at every reading (pods'
activity on a time-sliced GPU, MIG instances' activity, a pod nobody stands for), activity that
stops being reported (equal and slice shares then) and servers whose pod is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from pytest import approx

from exporter.accounting.book import Accountant
from exporter.accounting.figures import Snapshot
from exporter.placement import Holding, Placement
from exporter.values import Gpu, GpuActivity, GpuSample, ModelTokens, PodRef, TokenSample
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
    activity: tuple[float, float, float, float] | None  # pods a, b, c and a stranger; None: none measured


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
        place=st.sampled_from([None] * 15 + [0, 1, 2, 3]),
        activity=st.none() | st.tuples(*[st.sampled_from([0.0, 0.05, 0.3, 1.0]) | st.floats(0.0, 1.0)] * 4),
    ),
    min_size=20,
    max_size=120,
)

WHOLE_0, WHOLE_1 = Holding(GPU0.uuid), Holding(GPU1.uuid)
MIG_1, MIG_2 = Holding(GPU1.uuid, 1, 3), Holding(GPU1.uuid, 2, 2)
PODS = {s: PodRef("ns", s, f"uid-{s}") for s in SERVERS}
PLACEMENTS = (
    # GPU0 time-sliced by three pods, GPU1 exclusive.
    ({"a": [WHOLE_0], "b": [WHOLE_0], "c": [WHOLE_0, WHOLE_1]}, PODS),
    # GPU1 in MIG mode, instances 1 and 2 held (3 unheld), GPU0 exclusive.
    ({"a": [WHOLE_0, MIG_1], "b": [], "c": [MIG_2]}, PODS),
    ({"a": [WHOLE_0], "b": [WHOLE_1], "c": []}, PODS),
    # b's pod UID unknown: GPU0 in equal shares whatever the activity.
    ({"a": [WHOLE_0], "b": [WHOLE_0, MIG_1], "c": [MIG_2]}, {"a": PODS["a"]}),
)


def _placement(choice: int) -> Placement:
    holdings, pods = PLACEMENTS[choice % len(PLACEMENTS)]
    return Placement({s: frozenset(holdings[s]) for s in SERVERS}, pods)


def _activity(gpu: Gpu, t: float, busy: tuple[float, float, float, float]) -> GpuActivity:
    """Pods' activity on GPU0, instances' on GPU1 (a source reports one kind per GPU)."""
    scale = max(1.0, sum(busy))
    if gpu is GPU0:
        pods = {f"uid-{k}": v / scale for k, v in zip("abcx", busy, strict=True)}
        return GpuActivity(gpu.uuid, t, pods=pods)
    return GpuActivity(gpu.uuid, t, instances={i: v / scale for i, v in enumerate(busy[:3], start=1)})


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
        if step.activity is not None:
            acc.add_activity([_activity(gpu, now, step.activity) for gpu in GPUS])
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
