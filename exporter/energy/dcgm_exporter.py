"""The `dcgm_exporter` source: energy read from an NVIDIA dcgm-exporter that is already deployed.

Many clusters run dcgm-exporter through the GPU Operator and do not let anything else talk to the
GPUs or the host engine. Its page carries what we need, with three catches this module handles:

- Names and labels vary by version: `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ) or, from DCGM 4.6,
  possibly `DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL` (J); `DCGM_FI_DEV_POWER_USAGE` or
  `DCGM_FI_DEV_BOARD_POWER_WATTS` (W); the `dcgm_*` names of `--use-old-namespace`; the GPU's UUID in
  `UUID` or `uuid`; the node in `Hostname` or `hostname`.
- In MIG mode every GPU instance gets a row repeating its parent GPU's value: rows are keyed by
  the parent's UUID and each GPU is counted once.
- Values change only once per collect interval (30 s by default) and carry no timestamp. A value
  that did not change is not a new reading. A changed value is dated at the midpoint between the
  last read that still showed the old value and the first that showed the new one, and the first
  value seen only sets the baseline, since its age is unknown. The observed time between changes is
  exposed so that users see how stale the readings are. The GPUs of the page are known from the
  first read, each with the time its value has not changed; a page on which no value changed for
  `STALE_COLLECTS` collect intervals is a failed read (`reason="stale"`), not a source that is up.

The page is fetched and parsed by the same code as the inference servers' pages (`exporter.pages`).
The HTTP client loads when the source opens, as the GPU libraries of the other sources do, so that
checking a config (which reads this module's settings) does not load it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from exporter.config import Duration, EnergyConfig, Strict, Url
from exporter.energy import EnergyReadError, Registered
from exporter.energy.activity import instance_activity
from exporter.pages.parser import ParseError, parse_samples
from exporter.values import Gpu, GpuActivity, GpuSample

if TYPE_CHECKING:
    import aiohttp

ENERGY_MJ_NAMES = ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "dcgm_total_energy_consumption")
ENERGY_J_NAMES = ("DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL", "dcgm_gpu_energy_joules_total")
POWER_W_NAMES = (
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_BOARD_POWER_WATTS",
    "dcgm_power_usage",
    "dcgm_board_power_watts",
)
_WANTED = frozenset(ENERGY_MJ_NAMES + ENERGY_J_NAMES + POWER_W_NAMES)
STALE_COLLECTS = 3
"""A page whose values have not changed for this many collect intervals is stale."""


class DcgmExporterSettings(Strict):
    """`energy.dcgm_exporter:`: the page to scrape and how often its values change."""

    url: Url = "http://localhost:9400/metrics"
    timeout: Duration = 5.0
    collect_interval: Duration = 30.0
    """The exporter's own --collect-interval: how often its values change."""
    node_name: str | None = None
    """Keep only series whose Hostname label is this node (the exporter may serve several nodes)."""
    max_page_bytes: int = Field(16 * 1024 * 1024, ge=1024)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU's values on one page (first row per UUID; MIG rows repeat it)."""

    gpu: Gpu
    hostname: str | None
    energy_j: float | None
    power_w: float | None


class _Row:
    def __init__(self, gpu: Gpu, hostname: str | None) -> None:
        self.gpu = gpu
        self.hostname = hostname
        self.energy_mj: float | None = None
        self.energy_j: float | None = None
        self.power_w: float | None = None


def parse_page(text: str) -> list[GpuReading]:
    """The energy and power of every GPU on a dcgm-exporter page, one reading per UUID.

    Raises `ParseError` when a wanted line is malformed.
    """
    rows: dict[str, _Row] = {}
    for sample in parse_samples(text, _WANTED):
        labels = dict(sample.labels)
        uuid = labels.get("UUID") or labels.get("uuid")
        if not uuid:
            continue
        row = rows.get(uuid)
        if row is None:
            gpu_label = labels.get("gpu", "")
            gpu = Gpu(
                index=int(gpu_label) if gpu_label.isdigit() else len(rows),
                uuid=uuid,
                model=labels.get("modelName", ""),
            )
            row = rows[uuid] = _Row(gpu, labels.get("Hostname", labels.get("hostname")))
        if sample.name in ENERGY_MJ_NAMES and row.energy_mj is None:
            row.energy_mj = sample.value
        elif sample.name in ENERGY_J_NAMES and row.energy_j is None:
            row.energy_j = sample.value
        elif sample.name in POWER_W_NAMES and row.power_w is None:
            row.power_w = sample.value
    return [
        GpuReading(
            row.gpu,
            row.hostname,
            # The integer mJ counter is exact; the joules field, where present, carries the same.
            row.energy_mj / 1000.0 if row.energy_mj is not None else row.energy_j,
            row.power_w,
        )
        for row in rows.values()
    ]


@dataclass(slots=True)
class _Tracked:
    """What we know of one GPU's value on the page."""

    gpu: Gpu
    energy_j: float
    first_seen_t: float
    """Instant of the read that first showed `energy_j`."""
    last_seen_t: float
    """Instant of the latest read that showed `energy_j`."""
    changed_t: float | None = None
    """Estimated instant at which `energy_j` appeared; None while it is only the baseline."""
    period_s: float | None = None
    """Time between the two latest changes."""


class DcgmExporterSource:
    """Scrapes one dcgm-exporter `/metrics` page per read."""

    name = "dcgm_exporter"
    reads_fresh = False

    def __init__(
        self,
        cfg: DcgmExporterSettings,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._session = session
        self._clock = clock
        self._tracked: dict[str, _Tracked] = {}
        self.activity: tuple[GpuActivity, ...] = ()
        """MIG instances' activity on the latest page (`DCGM_FI_PROF_GR_ENGINE_ACTIVE`)."""

    @classmethod
    async def open(cls, cfg: EnergyConfig, clock: Callable[[], float] = time.time) -> DcgmExporterSource:
        """Scrape `energy.dcgm_exporter`; its GPUs are known from the first page read."""
        import aiohttp

        settings = cfg.section(cls.name, DcgmExporterSettings)
        return cls(settings, aiohttp.ClientSession(auto_decompress=True), clock)

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(sorted((t.gpu for t in self._tracked.values()), key=lambda g: g.index))

    @property
    def nominal_refresh_s(self) -> float:
        return self.cfg.collect_interval

    @property
    def refresh_period_s(self) -> float | None:
        periods = [t.period_s for t in self._tracked.values() if t.period_s is not None]
        return max(periods) if periods else None

    def unchanged_s(self, now: float) -> tuple[tuple[Gpu, float], ...]:
        """Every GPU the page listed, with how long its value has shown no change."""
        return tuple(
            (t.gpu, max(0.0, now - t.first_seen_t))
            for t in sorted(self._tracked.values(), key=lambda t: t.gpu.index)
        )

    async def read(self) -> list[GpuSample]:
        sent = self._clock()
        text = await self._fetch()
        t = (sent + self._clock()) / 2.0
        try:
            readings = parse_page(text)
            self.activity = instance_activity(text, t)
        except (ParseError, ValueError) as e:
            raise EnergyReadError("parse", f"{self.cfg.url}: not a metrics page: {e}") from None
        if self.cfg.node_name is not None:
            nodes = sorted({r.hostname or "(no hostname label)" for r in readings})
            readings = [r for r in readings if r.hostname == self.cfg.node_name]
            if not readings and nodes:
                raise EnergyReadError(
                    "other_node",
                    f"{self.cfg.url} serves {', '.join(nodes)}, not {self.cfg.node_name}: reach this "
                    "node's exporter (a Service with internalTrafficPolicy: Local, or the pod's address)",
                )
        if not any(r.energy_j is not None for r in readings):
            raise EnergyReadError(
                "no_energy_metric",
                f"{self.cfg.url} has no {ENERGY_MJ_NAMES[0]} series with a UUID label: enable that "
                "field in the exporter's counters CSV",
            )
        samples = []
        for r in readings:
            if r.energy_j is not None and (changed_t := self._track(r.gpu, r.energy_j, t)) is not None:
                samples.append(GpuSample(gpu=r.gpu, t=changed_t, energy_j=r.energy_j, power_w=r.power_w))
        self._check_fresh(t)
        return samples

    def _track(self, gpu: Gpu, energy_j: float, t: float) -> float | None:
        """Record the value read at `t`; return the instant it appeared, None while it is the baseline."""
        seen = self._tracked.get(gpu.uuid)
        if seen is None:
            self._tracked[gpu.uuid] = _Tracked(gpu, energy_j, t, t)
            return None
        if energy_j != seen.energy_j:
            changed_t = (seen.last_seen_t + t) / 2.0
            if seen.changed_t is not None:
                seen.period_s = changed_t - seen.changed_t
            seen.energy_j = energy_j
            seen.changed_t = changed_t
            seen.first_seen_t = t
        seen.last_seen_t = t
        return seen.changed_t

    def _check_fresh(self, t: float) -> None:
        """Fail the read when no value on the page changed for `STALE_COLLECTS` collect intervals."""
        limit_s = STALE_COLLECTS * self.cfg.collect_interval
        ages = [a for _, a in self.unchanged_s(t)]
        if ages and min(ages) > limit_s:
            raise EnergyReadError(
                "stale",
                f"{self.cfg.url}: no energy value changed for {min(ages):.0f}s (more than "
                f"{STALE_COLLECTS} x energy.dcgm_exporter.collect_interval = {limit_s:g}s): the exporter "
                "serves values it no longer collects",
            )

    async def _fetch(self) -> str:
        from exporter.pages.fetch import FetchError, fetch_page

        try:
            page = await fetch_page(self._session, self.cfg.url, self.cfg.timeout, self.cfg.max_page_bytes)
        except FetchError as e:
            raise EnergyReadError(e.reason, str(e)) from None
        return page.text

    async def close(self) -> None:
        await self._session.close()


SOURCE = Registered(
    DcgmExporterSource.name, DcgmExporterSource.open, auto=False, settings=DcgmExporterSettings
)
