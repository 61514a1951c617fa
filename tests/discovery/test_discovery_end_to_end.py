"""Discovery end to end: the daemon finds the annotated pods of its node through the Kubernetes API
stand-in, places them through the fake kubelet and scrapes them; a Deployment scales 1 -> 3 -> 1 and a
pod is deleted mid-run. Energy and token counts are checked against the simulated ground truth, and
nothing of a gone pod outlives its grace period."""

from __future__ import annotations

import asyncio

import pytest

from tests.discovery.cluster import NODE, Cluster, cluster, servers_on_page
from tests.fakes.kube_api import DEPLOYMENTS, JOBS, PODS, REPLICASETS, deployment, job, owner, pod, replicaset
from tests.helpers import Samples, assert_promtool_accepts, get_text, one, series_of

HASH = "5d8f7c9b6"
A = "llm/vllm-a-5d8f7c9b6-x2x9q"


def page_of(c: Cluster, server: str, tokens_out: float) -> tuple[float, float, float]:
    """The page of the server whose output count (counted from its first page) is `tokens_out`:
    its time and its input and output counts since the first page."""
    served = c.served(server)
    first = served[0]
    page = next(p for p in served if p.output_tokens - first.output_tokens == tokens_out)
    return page.t, page.input_tokens - first.input_tokens, tokens_out


def counted(found: Samples, server: str) -> tuple[float, float, float]:
    """The server's accounted energy and its input and output token counts."""
    energy = one(found, "tokenwatt_server_energy_joules_total", server=server)
    tokens_in = one(found, "tokenwatt_server_tokens_total", server=server, token_type="input")
    tokens_out = one(found, "tokenwatt_server_tokens_total", server=server, token_type="output")
    return energy, tokens_in, tokens_out


def check_against_truth(c: Cluster, before: Samples, after: Samples, server: str, gpu: int) -> None:
    """Between two scrapes of /metrics: the tokens counted are exactly those served, and the energy
    and J/token those of the pod's GPU over the same pages."""
    e0, _, out0 = counted(before, server)
    e1, in1, out1 = counted(after, server)
    t0, _, _ = page_of(c, server, out0)
    t1, served_in, served_out = page_of(c, server, out1)
    assert (in1, out1) == (served_in, served_out)  # every token served, counted once
    truth = c.gpus.used(gpu, t0, t1)
    jpt, true_jpt = (e1 - e0) / (out1 - out0), truth / (out1 - out0)
    print(f"{server}: J/output token {jpt:.5f}, ground truth {true_jpt:.5f}, error {jpt / true_jpt - 1:.4%}")
    assert e1 - e0 == pytest.approx(truth, rel=0.01)


@pytest.mark.tools  # promtool
async def test_pods_discovered_placed_scaled_and_deleted() -> None:
    async with cluster(pod_labels=["team", "app.kubernetes.io/name"]) as c:
        api = c.api
        dep = api.put(DEPLOYMENTS, deployment("llm", "vllm-a"))
        rs = api.put(REPLICASETS, replicaset("llm", f"vllm-a-{HASH}", dep, HASH))
        rs_owner = [owner("ReplicaSet", f"vllm-a-{HASH}", rs["metadata"]["uid"])]
        a_labels = {"app.kubernetes.io/name": "vllm-a", "team": "search", "pod-template-hash": HASH}
        cron = owner("CronJob", "nightly-eval", "5b0c2a3e-0000-4000-8000-000000000001", "batch/v1")
        eval_job = api.put(JOBS, job("batch", "nightly-eval-29000000", [cron]))
        job_owner = [owner("Job", "nightly-eval-29000000", eval_job["metadata"]["uid"], "batch/v1")]
        sts_owner = [owner("StatefulSet", "chat", "5b0c2a3e-0000-4000-8000-000000000002")]

        # Three annotated pods, each finding its port another way; one pod without the annotation;
        # an annotated pod on another node.
        await c.run_pod("llm", "vllm-a-5d8f7c9b6-x2x9q", 0, model="llama-a", labels=a_labels, owners=rs_owner)
        await c.run_pod("llm", "chat-0", 1, model="chat", owners=sts_owner, port_from="metrics")
        await c.run_pod("batch", "nightly-eval-29000000-8kq2z", 2, model="eval", owners=job_owner,
                        port_from="prometheus.io/port")
        await c.run_pod("llm", "sidecar-free", 3, annotations={"tokenwatt.io/scrape": "false"})
        await c.run_pod("llm", "elsewhere-0", 4, node="gpu-node-2")

        servers = {A, "llm/chat-0", "batch/nightly-eval-29000000-8kq2z"}
        first = await c.until(
            lambda f: {s for s in servers if series_of(f, "tokenwatt_joules_per_token", server=s)} == servers,
            "the three annotated pods of the node were not all discovered and measured",
        )
        assert servers_on_page(first) == servers  # not the unannotated pod, not the other node's
        assert one(first, "tokenwatt_discovery_up", source="kubernetes") == 1.0
        assert one(first, "tokenwatt_discovered_servers", source="kubernetes") == 3.0

        # Labels: namespace, pod, workload resolved through the owners, allowlisted pod labels.
        a_series = series_of(first, "tokenwatt_joules_per_token", server=A, token_type="output")
        assert [dict(ls) for ls in a_series] == [{
            "server": A, "model": "llama-a", "token_type": "output", "window": "1m",
            "namespace": "llm", "pod": "vllm-a-5d8f7c9b6-x2x9q", "workload": "vllm-a",
            "label_team": "search", "label_app_kubernetes_io_name": "vllm-a",
        }]
        assert one(first, "tokenwatt_target_up", server="llm/chat-0", workload="chat", pod="chat-0") == 1.0
        assert one(first, "tokenwatt_target_up", namespace="batch", workload="nightly-eval") == 1.0
        gpus = {dict(ls)["server"]: dict(ls)["gpu"] for ls in series_of(first, "tokenwatt_server_gpu_info")}
        assert gpus == {A: "0", "llm/chat-0": "1", "batch/nightly-eval-29000000-8kq2z": "2"}

        await asyncio.sleep(2.0)
        steady = await c.scrape()
        await asyncio.sleep(2.5)
        later = await c.scrape()
        for server, gpu in ((A, 0), ("llm/chat-0", 1), ("batch/nightly-eval-29000000-8kq2z", 2)):
            check_against_truth(c, steady, later, server, gpu)

        # Scale the Deployment to three pods: two more servers, same workload, their own GPUs.
        await c.run_pod("llm", "vllm-a-5d8f7c9b6-b7k4m", 5, model="llama-a", labels=a_labels, owners=rs_owner)
        await c.run_pod("llm", "vllm-a-5d8f7c9b6-q9w2e", 6, model="llama-a", labels=a_labels, owners=rs_owner)
        scaled = {A, "llm/vllm-a-5d8f7c9b6-b7k4m", "llm/vllm-a-5d8f7c9b6-q9w2e"}
        up3 = await c.until(
            lambda f: len(series_of(f, "tokenwatt_server_gpu_info", workload="vllm-a")) == 3,
            "the Deployment's new pods were not discovered and placed",
        )
        up = series_of(up3, "tokenwatt_target_up", workload="vllm-a")
        assert {dict(ls)["server"] for ls in up} == scaled
        gets = [r for r in api.requests if r.verb == "get" and r.resource == "replicasets"]
        assert len(gets) == 1  # the ReplicaSet's Deployment was read once, then cached
        await asyncio.sleep(1.0)  # from a page after the placement: one before it is partly unmeasured
        placed = await c.scrape()
        await asyncio.sleep(2.0)
        busy = await c.scrape()
        for server, gpu in (("llm/vllm-a-5d8f7c9b6-b7k4m", 5), ("llm/vllm-a-5d8f7c9b6-q9w2e", 6)):
            check_against_truth(c, placed, busy, server, gpu)

        # Back to one pod, and the StatefulSet's pod deleted mid-run: scraping stops at once, the
        # counters stay for the grace period, then every series of the gone pods goes.
        gone = {"llm/vllm-a-5d8f7c9b6-b7k4m", "llm/vllm-a-5d8f7c9b6-q9w2e", "llm/chat-0"}
        last = {s: counted(busy, s) for s in gone}
        for s in gone:
            await c.delete_pod(*s.split("/"))
        during = await c.until(
            lambda f: not any(series_of(f, "tokenwatt_target_up", server=s) for s in gone),
            "the deleted pods are still scraped",
        )
        for s in gone:
            e, tokens_in, tokens_out = counted(during, s)
            assert e >= last[s][0] and tokens_out >= last[s][2]  # kept, and past every page served
            assert (tokens_in, tokens_out) == page_of(c, s, tokens_out)[1:]
        assert not series_of(during, "tokenwatt_server_gpu_info", server="llm/chat-0")  # its GPU is free
        after = await c.until(lambda f: not servers_on_page(f) & gone, "a gone pod's series outlived grace")
        assert servers_on_page(after) == {A, "batch/nightly-eval-29000000-8kq2z"}
        daemon = c.daemon
        assert set(daemon.accountant.ledgers) == set(daemon.targets) == servers_on_page(after)
        assert daemon.kubelet is not None and set(daemon.kubelet.pods) == servers_on_page(after)
        assert {p for p in daemon.supervisor.pollers if p.startswith("target:")} == {
            f"target:{s}" for s in servers_on_page(after)
        }
        assert not daemon.roster.departed
        check_against_truth(c, busy, after, A, 0)  # the remaining pod ran on, untouched

        text = await get_text(c.metrics_url)
    assert_promtool_accepts(text)


async def test_a_label_selector_chooses_the_pods() -> None:
    """The selector goes to the API server; with require_annotation: false it alone chooses, and
    `tokenwatt.io/scrape: "false"` opts a pod out."""
    async with cluster(label_selector="tier in (gpu),!canary", require_annotation=False) as c:
        gpu = {"tier": "gpu"}
        await c.run_pod("llm", "chosen-0", 0, labels=gpu)
        await c.run_pod("llm", "canary-0", 1, labels={**gpu, "canary": "yes"})
        await c.run_pod("llm", "cpu-0", 2, labels={"tier": "cpu"})
        await c.run_pod("llm", "opted-out-0", 3, labels=gpu, annotations={"tokenwatt.io/scrape": "false"})
        port = c.servers["llm/chosen-0"].url.rsplit(":", 1)[1].removesuffix("/metrics")
        notes = {"tokenwatt.io/port": port}
        c.api.put(PODS, pod("llm", "unannotated-0", NODE, labels=gpu, annotations=notes))
        found = await c.until(lambda f: len(series_of(f, "tokenwatt_target_up")) == 2, "pods not chosen")
        await asyncio.sleep(1.0)
        assert servers_on_page(await c.scrape()) == {"llm/chosen-0", "llm/unannotated-0"}
        listed = [r.query for r in c.api.requests if r.resource == "pods" and r.verb == "list"]
        assert listed[0]["labelSelector"] == "tier in (gpu),!canary"
        assert listed[0]["fieldSelector"] == f"spec.nodeName={NODE}"
        assert one(found, "tokenwatt_discovered_servers", source="kubernetes") == 2.0
