"""What the real-vLLM test reads back from tokenwatt, and its check for J/token spikes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.helpers import get_text, samples

SERVER = "tiny"
MODEL = "tiny-llama"


@dataclass(frozen=True)
class Exported:
    """One scrape of tokenwatt's /metrics: the server's counters and its J/output token."""

    t: float
    """Wall-clock time once the page was read: every figure on it is of an earlier instant."""
    input_tokens: float
    output_tokens: float
    requests: float
    energy_j: float
    jpt_output: float | None


async def read_exported(url: str) -> Exported:
    found = samples(await get_text(url))
    values: dict[tuple[str, str], float] = {}
    for (name, labels), v in found.items():
        label = dict(labels)
        if label.get("server") != SERVER:
            continue
        assert label.get("model", MODEL) == MODEL, (name, labels)
        values[(name, label.get("token_type", ""))] = v
    return Exported(
        time.time(),
        values.get(("tokenwatt_server_tokens_total", "input"), 0.0),
        values.get(("tokenwatt_server_tokens_total", "output"), 0.0),
        values.get(("tokenwatt_server_requests_total", ""), 0.0),
        values.get(("tokenwatt_server_energy_joules_total", ""), 0.0),
        values.get(("tokenwatt_joules_per_token", "output")),
    )


def spikes(polled: list[Exported], true_energy_j: Callable[[float], float]) -> list[Exported]:
    """The polls whose J/output token exceeds the truth bound by more than 1 %.

    With a window that holds the whole run, a right J/output token is energy over output tokens,
    both counted from the first applied scrape. The energy counted by a poll cannot exceed what the
    GPU truly used from that scrape to the instant of the poll (`true_energy_j(t)`), so neither can
    the ratio exceed that energy over the output tokens the poll shows. Energy counted twice, or a
    ratio whose tokens started again from zero after a restart, breaks the bound.
    """
    return [
        p
        for p in polled
        if p.jpt_output is not None
        and p.output_tokens > 0
        and p.jpt_output > 1.01 * true_energy_j(p.t) / p.output_tokens
    ]
