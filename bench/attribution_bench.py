"""Benchmark: settling one GPU that N servers share, against N.

    python bench/attribution_bench.py [--servers 200,1000] [--seconds 10] [--readings 20]

One GPU drawing 300 W, read `--readings` times a second; N servers with equal shares of it, each
claiming the second since its previous claim at its own instant (spread evenly over the second);
the GPU settled once a second, as the daemon's energy poller does. Printed per N: CPU milliseconds
of `GpuLedger.settle` per simulated second, and the energy attributed and unattributed (the same
whatever the code's speed). Where every server uses every GPU (a config without `gpus:`), this is
the work each GPU costs every second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.accounting.attribution import Claim, GpuLedger
from exporter.accounting.tracks import EnergyTrack
from exporter.values import Gpu, GpuSample

POWER_W = 300.0


def settle_ms_per_second(servers: int, seconds: int, readings: int) -> tuple[float, float, float]:
    gpu = Gpu(0, "GPU-00000000-0000-0000-0000-000000000000", "Benchmark GPU")
    track = EnergyTrack(gpu)
    ledger = GpuLedger(track)
    names = [f"server-{i:04d}" for i in range(servers)]
    shares = {name: 1.0 / servers for name in names}
    track.add(GpuSample(gpu, 0.0, 0.0, POWER_W))
    previous_t = 0.0
    claimed_to = dict.fromkeys(names, 0.0)
    cpu_s = 0.0
    for second in range(seconds):
        for k in range(1, readings + 1):
            t = second + k / readings
            track.add(GpuSample(gpu, t, POWER_W * t, POWER_W))
            ledger.add_step(previous_t, t, shares)
            previous_t = t
        for i, name in enumerate(names):
            end = second + (i + 0.5) / servers
            if ledger.can_claim(name, claimed_to[name], end):
                ledger.claim(Claim(name, claimed_to[name], end))
                claimed_to[name] = end
        started = time.process_time()
        ledger.settle(second + 0.5 / servers)
        cpu_s += time.process_time() - started
    return cpu_s / seconds * 1000, ledger.attributed_j, ledger.unattributed_j


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="200,1000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--readings", type=int, default=20, help="energy readings per second")
    args = parser.parse_args()
    for n in (int(s) for s in args.servers.split(",")):
        ms, attributed, unattributed = settle_ms_per_second(n, args.seconds, args.readings)
        print(f"N={n:5d}: settle {ms:7.2f} ms CPU per second; attributed {attributed:.1f} J, "
              f"unattributed {unattributed:.1f} J")


if __name__ == "__main__":
    main()
