"""`tokenwatt demo` with an electricity price and a carbon intensity, for the live Prometheus test.

The demo's own pieces and defaults (load schedule, simulated GPUs, simulated vLLM server over
loopback); only the config gains what the demo leaves out, so the cost and carbon rules have data.

    python -m tests.deploy.priced_demo --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import time

from exporter.app import Daemon, serve_until_signalled
from exporter.config import CarbonConfig, EnergySplitConfig, PricingConfig
from exporter.demo import SimulatedVllmServer, demo_config
from exporter.energy.simulated import DEFAULT_PHASES, LoadSchedule, SimulatedSource, simulated_fleet

PRICING = PricingConfig(price_per_kwh=0.25, currency="EUR")
CARBON = CarbonConfig(grams_per_kwh=350.0)
PUE = 1.2


async def run_priced_demo(stop: asyncio.Event, listen: str) -> None:
    schedule = LoadSchedule(DEFAULT_PHASES, start=time.time())
    inference = SimulatedVllmServer(schedule)
    url = await inference.start()
    try:
        # One-second fit blocks: the prefill/decode fit reports after 20 s instead of 100 s.
        split = EnergySplitConfig.model_validate({"block": "1s"})
        config = demo_config(url, listen).model_copy(
            update={"pricing": PRICING, "carbon": CARBON, "pue": PUE, "energy_split": split}
        )
        daemon = Daemon(config, SimulatedSource(simulated_fleet(config.energy, schedule)))
        await daemon.run(stop)
    finally:
        await inference.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    listen: str = parser.parse_args().listen
    asyncio.run(serve_until_signalled(lambda stop: run_priced_demo(stop, listen)))


if __name__ == "__main__":
    main()
