"""The daemon end to end on shared GPUs: a time-sliced GPU split by the pods' activity, a MIG GPU
split by its instances' activity (with an instance no server holds), four vLLM-format servers
over real HTTP, static placement by GPU and MIG UUIDs. The simulator knows each tenant's true
energy (its own work plus the idle power split by activity instant by instant), so every server's
exported J/token is checked against it, per share method, and the attribution invariant with it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from exporter.app import Daemon
from exporter.config_file import validate_config
from exporter.demo import SimulatedVllmServer
from exporter.energy.simulated import LoadPhase, LoadSchedule, SharedFleet, SharedGpu, SimulatedSource, Tenant
from tests.helpers import get_text, samples, value

FULL_W = 400.0
UIDS = {"ts-a": "0a0a0a0a-0000-4000-8000-00000000000a", "ts-b": "0b0b0b0b-0000-4000-8000-00000000000b"}


def _phases(scale: float, period: float) -> tuple[LoadPhase, ...]:
    """Always busy, with load that changes off the energy reading grid."""
    return (
        LoadPhase(period, input_tps=1200 * scale, output_tps=250 * scale, running=12, requests_ps=4.0),
        LoadPhase(period * 0.6, input_tps=3000 * scale, output_tps=520 * scale, running=40, requests_ps=9.0),
        LoadPhase(period * 0.9, input_tps=300 * scale, output_tps=60 * scale, running=3, requests_ps=1.0),
    )


async def test_shared_and_mig_gpus_are_split_by_measured_activity() -> None:
    start = time.time()
    schedules = {
        "ts-a": LoadSchedule(_phases(1.0, 1.3), start),
        "ts-b": LoadSchedule(_phases(0.35, 0.7), start),
        "mig-c": LoadSchedule(_phases(0.8, 1.1), start),
        "mig-d": LoadSchedule(_phases(0.25, 0.9), start),
    }
    stranger = LoadSchedule(_phases(0.3, 0.5), start)  # MIG instance 5: a pod tokenwatt does not serve
    fleet = SharedFleet(
        [
            SharedGpu(
                60.0,
                (
                    Tenant(schedules["ts-a"], 0.05, 0.7, FULL_W, pod_uid=UIDS["ts-a"]),
                    Tenant(schedules["ts-b"], 0.05, 0.7, FULL_W, pod_uid=UIDS["ts-b"]),
                ),
            ),
            SharedGpu(
                55.0,
                (
                    Tenant(schedules["mig-c"], 0.04, 0.5, FULL_W, mig=(1, "3g.40gb")),
                    Tenant(schedules["mig-d"], 0.04, 0.5, FULL_W, mig=(2, "2g.20gb")),
                    Tenant(stranger, 0.04, 0.5, FULL_W, mig=(5, "1g.10gb")),
                ),
            ),
        ],
        start,
    )
    gpu0, gpu1 = fleet.gpus
    mig = {m.gpu_instance: m.uuid for m in fleet.mig_devices}
    placed = {"ts-a": [gpu0.uuid], "ts-b": [gpu0.uuid], "mig-c": [mig[1]], "mig-d": [mig[2]]}
    tenant_of = {"ts-a": (0, 0), "ts-b": (0, 1), "mig-c": (1, 0), "mig-d": (1, 1)}

    servers = {name: SimulatedVllmServer(s, model="llama-test") for name, s in schedules.items()}
    urls = {name: await server.start() for name, server in servers.items()}
    config = validate_config(
        {
            "listen": "127.0.0.1:0",
            "energy": {"source": "simulated", "interval": "200ms"},
            "servers": [
                {"name": n, "url": urls[n], "kind": "vllm", "interval": "300ms", "gpus": placed[n]}
                | ({"pod_uid": UIDS[n]} if n in UIDS else {})
                for n in schedules
            ],
            "windows": ["1m"],
        }
    )
    try:
        async with Daemon(config, SimulatedSource(fleet)) as daemon:
            await asyncio.sleep(6.0)
            assert daemon.url is not None
            found = samples(await get_text(daemon.url))
    finally:
        for server in servers.values():
            await server.stop()

    method = {"ts-a": "activity", "ts-b": "activity", "mig-c": "mig_activity", "mig-d": "mig_activity"}
    acc = daemon.accountant
    for name in servers:
        model = {"server": name, "model": "llama-test"}
        gpu, tenant = tenant_of[name]
        # The intervals behind the exported figures (the daemon may apply more before it stops),
        # and the truth over those it measured: a server's first interval on a GPU whose horizon
        # another server already moved past is unmeasured, and left out of its ratios.
        exported = value(found, "tokenwatt_server_tokens_total", token_type="output", **model)
        intervals, counted = [], 0.0
        for i in acc.ledgers[name].intervals:
            if counted == exported:
                break
            counted += sum(m.output_tokens for m in i.models)
            intervals.append(i)
        assert counted == exported
        measured = [i for i in intervals if i.energy_j is not None]
        truth = sum(fleet.tenant_energy(gpu, tenant, i.t_start, i.t_end) for i in measured)
        gpu_j = sum(fleet.energy_at(gpu, i.t_end) - fleet.energy_at(gpu, i.t_start) for i in measured)
        out_tokens = sum(m.output_tokens for i in measured for m in i.models)
        assert out_tokens > 300 and acc.ledgers[name].unmeasured_s < 1.0
        assert abs(gpu_j / 2 / truth - 1) > 0.05, "equal shares must be clearly wrong here"
        energy = value(found, "tokenwatt_server_energy_joules_total", **model)
        assert energy == pytest.approx(truth, rel=0.01), name
        jpt = value(found, "tokenwatt_joules_per_token", token_type="output", window="1m", **model)
        error = abs(jpt / (truth / out_tokens) - 1)
        print(f"{name} ({method[name]}): {jpt:.6f} J/token, truth {truth / out_tokens:.6f}, {error:.3%}")
        assert error < 0.01, name
        gpu_labels = {"gpu": str(gpu), "uuid": fleet.gpus[gpu].uuid}
        share = value(found, "tokenwatt_gpu_share", server=name, method=method[name], **gpu_labels)
        assert 0 < share < 1

    # The invariant: per GPU, what the servers were given is what the ledger attributed (settled or
    # pending), and attributed + unattributed is the energy up to the horizon; the busy MIG
    # instance nobody holds left energy unattributed.
    for gpu, names in ((gpu0, ("ts-a", "ts-b")), (gpu1, ("mig-c", "mig-d"))):
        ledger = acc.gpu_ledgers[gpu.uuid]
        given = sum(acc.ledgers[n].energy_j for n in names)
        assert given == pytest.approx(ledger.attributed_j + ledger.pending_j(), rel=1e-9)
        assert ledger.attributed_j + ledger.unattributed_j == pytest.approx(ledger.settled_j, rel=1e-9)
    assert acc.gpu_ledgers[gpu1.uuid].unattributed_j > acc.gpu_ledgers[gpu0.uuid].unattributed_j
