"""The chaos test's daemon: `tokenwatt run` whose energy source fails at random.

    python -m tests.faults.chaos_daemon CONFIG SEED REPORT

Runs the real daemon (signals, reload, HTTP) on a `FaultySource` whose fault changes every 0.5 to
3 s. On SIGTERM it stops like `tokenwatt run` and writes REPORT (JSON): for every GPU, its energy up
to the settled horizon and the energy attributed and unattributed within it, and what the servers
were given against what the GPUs' ledgers claimed for them, for the attribution invariant.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

from exporter.app import Daemon, serve_until_signalled
from exporter.config_file import load_config
from exporter.energy.simulated import SimulatedSource, simulated_fleet
from exporter.logs import configure_logging
from tests.faults.parts import FaultySource

CHAOS_SOURCE_FAULTS = ("ok",) * 6 + ("raise", "hang", "slow", "error", "reset")


async def flip_faults(source: FaultySource, rng: random.Random) -> None:
    while True:
        source.mode = rng.choice(CHAOS_SOURCE_FAULTS)
        await asyncio.sleep(rng.uniform(0.5, 3.0))


async def run(config_path: Path, seed: int, report: Path) -> int:
    config = load_config(config_path)
    source = FaultySource(SimulatedSource(simulated_fleet(config.energy)), slow_s=2 * config.energy.timeout)
    daemon = Daemon(config, source, config_path=config_path)
    chaos = asyncio.create_task(flip_faults(source, random.Random(seed)))
    code = await serve_until_signalled(daemon.run, daemon.reload)
    chaos.cancel()
    snap = daemon.accountant.snapshot(time.time())
    gpus = [
        {"uuid": g.gpu.uuid, "energy_j": g.energy_j, "settled_j": g.settled_energy_j,
         "attributed_j": g.attributed_j, "unattributed_j": g.unattributed_j}
        for g in snap.gpus
    ]  # fmt: skip
    servers_j = sum(s.energy_j for s in snap.servers)
    claimed_j = sum(gl.attributed_j + gl.pending_j() for gl in daemon.accountant.gpu_ledgers.values())
    found = {"gpus": gpus, "servers_j": servers_j, "claimed_j": claimed_j, "source_reads": source.reads}
    report.write_text(json.dumps(found))
    return code


def main() -> int:
    config_path, seed, report = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    configure_logging("info", "json")
    return asyncio.run(run(config_path, seed, report))


if __name__ == "__main__":
    sys.exit(main())
