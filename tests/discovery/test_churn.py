"""A crowded node and pod churn: 100 inference pods discovered, placed and scraped, then a pod created
every ~0.3 s and deleted soon after (20 s under CI, 6 s otherwise). Once the last churned pod's grace
period is over, the daemon holds exactly what it held before: tasks, HTTP sessions, sockets, series,
and the per-server state of every layer. The figures are printed for the record."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from dataclasses import dataclass

import aiohttp
from structlog.testing import capture_logs

from exporter.accounting.book import Accountant
from exporter.accounting.cardinality import ModelLimit
from exporter.app import Daemon
from exporter.demo import SimulatedVllmServer
from exporter.energy.simulated import LoadPhase, LoadSchedule
from exporter.values import ModelTokens, TokenSample
from tests.conftest import UNDER_CI
from tests.discovery.cluster import NODE, UUIDS, Cluster, cluster
from tests.fakes.kube_api import PODS, pod
from tests.fakes.kubelet import FakePod
from tests.helpers import Series, one, series_of

PODS_ON_NODE = 100
CHURN_S = 20.0 if UNDER_CI else 6.0
CHURN_EVERY_S = 0.3
CHURN_LIFE_S = 0.9
STEADY = (LoadPhase(1.0, input_tps=900.0, output_tps=150.0, running=6, requests_ps=3.0),)
"""One load, so each pod's series are all there after its first intervals (one load band)."""
POLLERS = ("target:", "energy", "placement", "discovery")
"""The names of the supervisor's tasks."""


@dataclass(frozen=True)
class Footprint:
    tasks: int
    """The event loop's tasks, but those of the stand-in servers."""
    pollers: tuple[str, ...]
    """The names of the daemon's supervised tasks (one per poller)."""
    sessions: int
    sockets: int
    series: frozenset[Series]
    """Every series on /metrics (name and labels)."""
    churn_series: int
    """Series that name a churned pod."""
    servers: int
    """Per-server entries in every layer of the daemon (accounting, pollers, placement, gate, discovery)."""

    def __str__(self) -> str:
        return (f"tasks {self.tasks} ({len(self.pollers)} pollers), open aiohttp sessions {self.sessions}, "
                f"sockets {self.sockets}, series {len(self.series)} ({self.churn_series} of churned pods), "
                f"per-server state entries {self.servers}")


def sockets() -> int:
    """The process's open sockets (the listing's own descriptor is gone by the time it is read)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            continue
    return count


def server_state(d: Daemon) -> int:
    """The per-server entries the daemon's layers hold, all together."""
    assert d.kubelet is not None and d.discovery is not None
    gate = d.accountant.gate
    return (len(d.accountant.ledgers) + len(d.targets) + len(d.supervisor.pollers) + len(d.kubelet.pods)
            + len(d.kubelet.devices) + len(d.accountant.model_cap._servers) + len(gate._scrapes)
            + len(gate._logged) + len(d.roster.current) + len(d.roster.departed) + len(d.discovery.servers)
            + len(d.discovery.rejected) + len(d.accountant.placement.holdings))


async def footprint(c: Cluster) -> Footprint:
    found = await c.scrape()
    gc.collect()
    sessions = sum(1 for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed)
    tasks = [t for t in asyncio.all_tasks() if not _transient(t)]
    pollers = tuple(sorted(t.get_name() for t in tasks if t.get_name().startswith(POLLERS)))
    churn = sum(1 for _, labels in found if "churn-" in dict(labels).get("pod", ""))
    state = server_state(c.daemon)
    return Footprint(len(tasks), pollers, sessions, sockets(), frozenset(found), churn, state)


def _transient(task: asyncio.Task[object]) -> bool:
    """A task that comes and goes with the scrapes: one of the in-process servers that stand in for the
    pods, the API server and the kubelet (one per connection, one per request in flight), a call to
    the kubelet in flight, or an energy read taken beside a scrape."""
    name = getattr(task.get_coro(), "__qualname__", "")
    return name.startswith(("RequestHandler.", "AioServer.", "UnaryUnaryCall.", "EnergyPoller.read"))


async def settled(c: Cluster) -> None:
    """Until the page has every series of the running pods (ratios appear once intervals settle): until
    the series count holds for three scrapes a second apart."""
    counts: list[int] = []
    deadline = time.monotonic() + 60.0
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        assert time.monotonic() < deadline, f"the page never settled: {counts}"
        counts.append(len(await c.scrape()))
        await asyncio.sleep(1.0)


def replica(k: int) -> str:
    """A time-sliced replica of one of the node's GPUs, as the NVIDIA device plugin names them."""
    return f"{UUIDS[k % len(UUIDS)]}::{k // len(UUIDS)}"


async def test_a_hundred_pods_and_churn() -> None:
    async with cluster(interval="1s", grace_period="1s") as c:
        shared = SimulatedVllmServer(LoadSchedule(STEADY, time.time()), model="small")
        await shared.start()
        port = shared.url.rsplit(":", 1)[1].split("/")[0]
        notes = {"tokenwatt.io/scrape": "true", "tokenwatt.io/port": port}
        try:
            started = time.monotonic()
            for i in range(PODS_ON_NODE):
                c.kubelet.pods.append(FakePod("fleet", f"model-{i}", {"nvidia.com/gpu": [replica(i)]}))
                c.api.put(PODS, pod("fleet", f"model-{i}", NODE, annotations=notes))
            found = await c.until(
                lambda f: sum(series_of(f, "tokenwatt_target_up").values()) == PODS_ON_NODE
                and len(series_of(f, "tokenwatt_server_gpu_info")) == PODS_ON_NODE,
                "the node's 100 pods were not all discovered, placed and scraped", limit_s=60.0,
            )
            took = time.monotonic() - started
            print(f"\n{PODS_ON_NODE} pods discovered, placed and scraped in {took:.1f}s")
            assert one(found, "tokenwatt_discovered_servers", source="kubernetes") == PODS_ON_NODE
            await settled(c)
            now = time.time()
            latest = series_of(await c.scrape(), "tokenwatt_target_last_success_timestamp_seconds")
            ages = sorted(now - v for v in latest.values())
            print(f"latest scrape of each pod: median {ages[len(ages) // 2]:.2f}s ago, "
                  f"oldest {ages[-1]:.2f}s (interval 1s)")
            before = await footprint(c)

            churned = 0
            living: list[tuple[float, str]] = []
            ends = time.monotonic() + CHURN_S
            with capture_logs() as logs:
                while time.monotonic() < ends or living:
                    t = time.monotonic()
                    if t < ends:
                        name = f"churn-{churned}"
                        c.kubelet.pods.append(FakePod("fleet", name, {"nvidia.com/gpu": [replica(churned)]}))
                        c.api.put(PODS, pod("fleet", name, NODE, annotations=notes))
                        living.append((t + CHURN_LIFE_S, name))
                        churned += 1
                    while living and living[0][0] <= t:
                        _, name = living.pop(0)
                        c.api.delete(PODS, name, "fleet")
                        c.kubelet.pods = [p for p in c.kubelet.pods if p.name != name]
                    await asyncio.sleep(CHURN_EVERY_S)
                await c.until(lambda f: not c.daemon.roster.departed, "the churned pods' grace never ended")
                await asyncio.sleep(1.5)  # a kubelet refresh and a scrape of every pod since
            after = await footprint(c)
            added = sum(1 for e in logs if e["event"] == "server added" and "churn-" in e["server"])
            up = sum(1 for e in logs if e["event"] == "target up" and "churn-" in e["server"])
            expired = sum(1 for e in logs if e["event"] == "server's series removed")
            print(f"{churned} pods churned over {CHURN_S:.0f}s: {added} discovered, {up} scraped, "
                  f"{expired} removed after their grace period")
            print(f"before: {before}")
            print(f"after:  {after}")
            assert not c.daemon.supervisor.internal_errors  # no poller crashed
            assert added == expired == churned and up > churned // 2
            assert (after.pollers, after.sessions, after.churn_series, after.servers) == (
                before.pollers, before.sessions, 0, before.servers
            )
            # The same series, but that a loaded machine may add a count of failures (a scrape or a call
            # past its deadline); no series of a churned pod.
            new = {name for name, _ in after.series - before.series}
            assert not before.series - after.series and all(n.endswith("_errors_total") for n in new), new
            assert after.tasks <= before.tasks + 2  # besides the pollers: a wait or a call in flight
            assert after.sockets <= before.sockets + 3  # keep-alive connections come and go; a leak per
            # churned pod would be `churned` more
        finally:
            await shared.stop()


def test_a_removed_server_leaves_nothing_in_the_gate() -> None:
    """A churned pod whose page was rejected: once its server is removed, neither its rejection count
    (a series) nor its logged state stays behind."""
    accountant = Accountant([], [60.0], 5.0)
    accountant.add_server("fleet/churn-0", ModelLimit(4, 600.0))
    accountant.add_tokens([TokenSample("fleet/churn-0", 1.0, ModelTokens("m", math.nan, 1.0))])
    assert accountant.gate.rejections().scrapes == (("fleet/churn-0", "non_finite", 1),)
    accountant.remove_server("fleet/churn-0")
    assert accountant.gate.rejections().scrapes == () and not accountant.gate._logged
