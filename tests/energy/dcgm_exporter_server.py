"""A dcgm-exporter look-alike on loopback: its pages, and its habit of refreshing only now and then.

Pages follow dcgm-exporter's renderer (`internal/pkg/rendermetrics`): `# HELP`/`# TYPE` per field,
labels `gpu`, `UUID` (or `uuid` with `--use-old-namespace`), `pci_bus_id`, `device`, `modelName`,
`GPU_I_PROFILE`/`GPU_I_ID` on MIG rows, `Hostname` (releases up to 4.5.x) or `hostname` (later),
the driver version as a label field and pod labels; integers printed with %d and doubles with %f.
In MIG mode every GPU instance row repeats the parent GPU's power and energy.

Values are collected only when `collect()` is called, like the exporter's 30 s collect interval:
between collects every scrape returns the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class ExporterGpu:
    index: int
    uuid: str
    model: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 0
    power_w: float = 70.0
    mig_instances: tuple[tuple[str, int], ...] = ()
    """(profile, GPU instance id) per MIG instance; empty when MIG is off."""
    pod: str | None = None
    engine_active: dict[int, float] = field(default_factory=dict)
    """GPU instance id -> `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (ratio); rendered on MIG rows that have one."""


@dataclass
class ExporterStyle:
    old_namespace: bool = False
    """`--use-old-namespace`: `dcgm_*` names and a `uuid` label."""
    hostname_label: str | None = "Hostname"
    """`Hostname` (<= 4.5.x), `hostname` (later), or None with `--no-hostname`."""
    hostname: str = "gpu-node-1"
    energy_joules_field: bool = False
    """Also (or, with `energy_mj_field=False`, only) DCGM 4.6's DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL."""
    energy_mj_field: bool = True
    power_field: str = "DCGM_FI_DEV_POWER_USAGE"


@dataclass
class FakeDcgmExporter:
    gpus: list[ExporterGpu]
    style: ExporterStyle = field(default_factory=ExporterStyle)
    status: int = 200
    scrapes: int = 0
    _page: str = ""

    def collect(self) -> None:
        """The exporter's collect tick: the page now shows the GPUs' current values."""
        self._page = render(self.gpus, self.style)

    async def start(self) -> tuple[web.AppRunner, str]:
        self.collect()

        async def metrics(_: web.Request) -> web.Response:
            self.scrapes += 1
            return web.Response(text=self._page, status=self.status, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"


def _name(style: ExporterStyle, field_name: str) -> str:
    return "dcgm_" + field_name.removeprefix("DCGM_FI_DEV_").lower() if style.old_namespace else field_name


def render(gpus: list[ExporterGpu], style: ExporterStyle) -> str:
    fields: list[tuple[str, str, str, str]] = [  # name, type, help, attribute
        ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "clock"),
        (style.power_field, "gauge", "Power draw (in W).", "power"),
        ("DCGM_FI_DEV_POWER_USAGE_INSTANT", "gauge", "Current instantaneous power usage (in W).", "instant"),
    ]
    if style.energy_mj_field:
        fields.append(
            (
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                "counter",
                "Total energy consumption since boot (in mJ).",
                "energy_mj",
            )
        )
    if style.energy_joules_field:
        fields.append(
            (
                "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL",
                "counter",
                "Total energy consumption since the driver was loaded (in J).",
                "energy_j",
            )
        )
    fields.append(("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "util"))
    if any(gpu.engine_active for gpu in gpus) and not style.old_namespace:
        help_text = "Ratio of time the graphics engine is active."
        fields.append(("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", help_text, "active"))
    lines: list[str] = []
    for field_name, kind, help_text, attr in fields:
        name = _name(style, field_name)
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for gpu in gpus:
            value = {
                "clock": "1980",
                "power": f"{gpu.power_w:f}",
                "instant": f"{gpu.power_w + 3.25:f}",
                "energy_mj": f"{gpu.energy_mj:d}",
                "energy_j": f"{gpu.energy_mj / 1000:f}",
                "util": "87",
                "active": "",
            }[attr]
            for mig in gpu.mig_instances or (None,):
                if attr == "util" and mig is not None:
                    continue  # not supported per MIG instance: the series is left out
                if attr == "active":
                    if mig is None or mig[1] not in gpu.engine_active:
                        continue
                    value = f"{gpu.engine_active[mig[1]]:f}"
                lines.append(f"{name}{{{_labels(gpu, style, mig)}}} {value}")
    return "\n".join(lines) + "\n"


def _labels(gpu: ExporterGpu, style: ExporterStyle, mig: tuple[str, int] | None) -> str:
    labels = [
        ("gpu", str(gpu.index)),
        ("uuid" if style.old_namespace else "UUID", gpu.uuid),
        ("pci_bus_id", f"00000000:{0x18 + gpu.index:02X}:00.0"),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", gpu.model),
    ]
    if mig is not None:
        labels += [("GPU_I_PROFILE", mig[0]), ("GPU_I_ID", str(mig[1]))]
    if style.hostname_label is not None:
        labels.append((style.hostname_label, style.hostname))
    labels.append(("DCGM_FI_DRIVER_VERSION", "570.124.06"))
    if gpu.pod is not None:
        pod_keys = (
            ("pod_name", "pod_namespace", "container_name")
            if style.old_namespace
            else ("pod", "namespace", "container")
        )
        labels += list(zip(pod_keys, (gpu.pod, "inference", "vllm"), strict=True))
    return ",".join(f'{k}="{v}"' for k, v in labels)
