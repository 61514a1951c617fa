"""Discovery's faults, each a clear state, log line and metric, with the last good view kept and the
rest of the node unaffected: the API server down (at start and mid-run), RBAC forbidding a request
(403), a watch that drops or expires (410), and pods whose annotations are wrong."""

from __future__ import annotations

import aiohttp
from structlog.testing import capture_logs

from tests.discovery.cluster import Cluster, cluster
from tests.fakes.kube_api import DEPLOYMENTS, PODS, REPLICASETS, deployment, owner, replicaset
from tests.helpers import Samples, one, series_of

UP = "tokenwatt_discovery_up"
ERRORS = "tokenwatt_discovery_errors_total"


def errors(found: Samples, request: str, reason: str) -> float:
    matches = series_of(found, ERRORS, request=request, reason=reason)
    return next(iter(matches.values()), 0.0)


def scraped(found: Samples) -> set[str]:
    return {dict(ls)["server"] for ls, v in series_of(found, "tokenwatt_target_up").items() if v == 1.0}


async def readyz(c: Cluster) -> tuple[int, str]:
    url = c.metrics_url.replace("/metrics", "/readyz")
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.text()


def lists(c: Cluster) -> int:
    return sum(1 for r in c.api.requests if r.resource == "pods" and r.verb == "list")


async def test_an_api_server_down_at_start_and_mid_run() -> None:
    async with cluster(api_up=False) as c:
        await c.run_pod("llm", "vllm-0", 0)
        down = await c.until(lambda f: errors(f, "list", "unavailable") >= 1, "no failed list counted")
        assert one(down, UP, source="kubernetes") == 0.0
        status, text = await readyz(c)
        assert status == 503 and "no list yet of the pods of node gpu-node-1" in text

        await c.api.start()
        up = await c.until(lambda f: scraped(f) == {"llm/vllm-0"}, "no pods found once the API was up")
        assert one(up, UP, source="kubernetes") == 1.0
        assert (await readyz(c))[0] == 200

        # The API server goes away mid-run: discovery is down, the servers it found are still scraped.
        with capture_logs() as logs:
            await c.api.stop()
            gone = await c.until(lambda f: one(f, UP, source="kubernetes") == 0.0, "discovery still up")
        assert scraped(gone) == {"llm/vllm-0"}
        assert one(gone, "tokenwatt_discovered_servers", source="kubernetes") == 1.0
        downs = [e for e in logs if e["event"] == "discovery down, keeping the last view of the pods"]
        assert len(downs) == 1 and "unavailable" in downs[0]["error"]
        assert (await readyz(c))[0] == 200  # the last view serves on

        # Meanwhile a pod comes: it is found once the API server is back.
        await c.run_pod("llm", "vllm-1", 1)
        await c.api.start()
        back = await c.until(lambda f: scraped(f) == {"llm/vllm-0", "llm/vllm-1"}, "no relist after outage")
        assert one(back, UP, source="kubernetes") == 1.0


async def test_forbidden_requests() -> None:
    """No `watch`: the list's view is kept and discovery is down, saying why. No `get replicasets`:
    the Deployment is named from the ReplicaSet's name and the pod-template-hash."""
    async with cluster(permissions={"pods": ["get", "list"]}) as c:
        dep = c.api.put(DEPLOYMENTS, deployment("llm", "vllm"))
        rs = c.api.put(REPLICASETS, replicaset("llm", "vllm-7b9f6d5c4", dep, "7b9f6d5c4"))
        with capture_logs() as logs:
            await c.run_pod("llm", "vllm-7b9f6d5c4-h2x8p", 0, labels={"pod-template-hash": "7b9f6d5c4"},
                            owners=[owner("ReplicaSet", "vllm-7b9f6d5c4", rs["metadata"]["uid"])])
            found = await c.until(
                lambda f: errors(f, "watch", "forbidden") >= 1 and bool(scraped(f)), "no forbidden watch"
            )
        assert one(found, UP, source="kubernetes") == 0.0
        assert one(found, "tokenwatt_target_up", server="llm/vllm-7b9f6d5c4-h2x8p", workload="vllm") == 1.0
        assert errors(found, "owner", "forbidden") == 1.0
        events = [e["event"] for e in logs]
        assert "not allowed to read pod owners: naming workloads from their pods" in events
        downs = [e for e in logs if e["event"] == "discovery down, keeping the last view of the pods"]
        assert downs[0]["error"] == "watch forbidden: API server answered 403 to GET /api/v1/pods"


async def test_a_watch_that_drops_or_expires() -> None:
    async with cluster() as c:
        await c.run_pod("llm", "vllm-0", 0)
        await c.until(lambda f: scraped(f) == {"llm/vllm-0"}, "not discovered")
        listed = lists(c)

        # The API server ends the watch cleanly: the client watches on from where it was, no relist.
        c.api.drop_watches()
        await c.run_pod("llm", "vllm-1", 1)
        found = await c.until(lambda f: "llm/vllm-1" in scraped(f), "a pod after a clean drop was missed")
        assert lists(c) == listed and not series_of(found, ERRORS)

        # The connection is cut mid-stream: an error, a relist, and discovery up again.
        c.api.drop_watches(abort=True)
        await c.run_pod("llm", "vllm-2", 2)
        cut = await c.until(lambda f: "llm/vllm-2" in scraped(f) and one(f, UP, source="kubernetes") == 1.0,
                            "no recovery from a cut watch")
        assert errors(cut, "watch", "unavailable") == 1.0 and lists(c) == listed + 1

        # History compacted while the watch reconnects: 410 Expired, a relist at once, never down.
        with capture_logs() as logs:
            c.api.compact()
            c.api.drop_watches()
            await c.run_pod("llm", "vllm-3", 3)
            expired = await c.until(lambda f: "llm/vllm-3" in scraped(f), "no relist after 410")
        assert [e["event"] for e in logs if "watch" in e["event"] or "discovery" in e["event"]] == [
            "watch expired: listing the pods again"
        ]
        assert errors(expired, "watch", "expired") == 1.0 and lists(c) == listed + 2
        assert one(expired, UP, source="kubernetes") == 1.0
        assert scraped(expired) == {"llm/vllm-0", "llm/vllm-1", "llm/vllm-2", "llm/vllm-3"}


async def test_pods_with_wrong_annotations_are_skipped_alone() -> None:
    async with cluster() as c:
        await c.run_pod("llm", "good-0", 0)
        with capture_logs() as logs:
            await c.run_pod("llm", "bad-port-0", 1, annotations={"tokenwatt.io/port": "http-metrics"})
            await c.run_pod("llm", "bad-kind-0", 2, annotations={"tokenwatt.io/kind": "vllm-nightly"})
            found = await c.until(
                lambda f: len(series_of(f, "tokenwatt_discovery_rejected_pods")) == 2 and bool(scraped(f)),
                "no rejected pods",
            )
            c.api.put(PODS, c.api.get(PODS, "bad-kind-0", "llm"))  # an update of the pod, still wrong
            await c.until(lambda f: c.daemon.discovery is not None
                          and c.daemon.discovery.resource_version == str(c.api.revision), "update not seen")
        assert one(found, "tokenwatt_discovery_rejected_pods", reason="bad_port") == 1.0
        assert one(found, "tokenwatt_discovery_rejected_pods", reason="unknown_kind") == 1.0
        assert scraped(found) == {"llm/good-0"}
        skipped = {e["pod"]: e["error"] for e in logs if e["event"].startswith("pod skipped")}
        port, kind = skipped["llm/bad-port-0"], skipped["llm/bad-kind-0"]
        assert port == "tokenwatt.io/port 'http-metrics' is not a port number from 1 to 65535"
        assert kind.startswith("tokenwatt.io/kind 'vllm-nightly' is not one of auto, vllm,")
        assert len([e for e in logs if e["event"].startswith("pod skipped")]) == 2  # once per pod

        # The annotation is fixed: the pod is a server, and no longer counted as skipped.
        fixed = c.api.get(PODS, "bad-port-0", "llm")
        port = c.servers["llm/bad-port-0"].url.rsplit(":", 1)[1].split("/")[0]
        fixed["metadata"]["annotations"]["tokenwatt.io/port"] = port
        c.api.put(PODS, fixed)
        after = await c.until(lambda f: "llm/bad-port-0" in scraped(f), "the fixed pod was not discovered")
        assert [dict(ls) for ls in series_of(after, "tokenwatt_discovery_rejected_pods")] == [
            {"source": "kubernetes", "reason": "unknown_kind"}
        ]
