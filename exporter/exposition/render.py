"""`/metrics` rendered off the event loop, one render shared by every reader that asks meanwhile.

The snapshot (frozen value objects) is taken on the event loop, where the accounting lives, so it
is consistent; turning it into text, the costly part for a large page, runs in a worker thread
while polling goes on. Readers that arrive while a render is running wait for that render instead
of starting their own, so N concurrent scrapes cost one render.

The text (format 0.0.4) is written directly: each series' name and label text is built once and
kept while the series stays on the page, so a render formats only the values.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping

from exporter.accounting.figures import Snapshot
from exporter.config import Derived
from exporter.exposition.collector import Family, FamilySamples, Health, TokenwattCollector, families
from exporter.values import PodLabels

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of what `PageWriter` writes: Prometheus' text format 0.0.4."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(family: Family) -> str:
    help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {family.name} {help_text}\n# TYPE {family.name} {family.type}\n"


def _series(family: Family, values: tuple[str, ...], extra: tuple[tuple[str, str], ...]) -> str:
    """`name{label="value",...} `: the sample line up to its value, labels sorted by name."""
    labels = sorted((*zip(family.labels, values, strict=True), *extra))
    if not labels:
        return f"{family.name} "
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return f"{family.name}{{{text}}} "


def _value(value: float) -> str:
    """The value in Go's notation, as Prometheus' own clients write it: Python's shortest repr, but
    with an exponent from 1e6 up ("9.1e+07", not "91000000.0"), and "+Inf", "-Inf", "NaN"."""
    if type(value) is float and -1e6 < value < 1e6:  # most values: the fast path
        return repr(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    digits = text.find(".")  # digits before the point; repr() uses an exponent from 1e16 up
    if value < 1e6 or "e" in text:
        return text
    mantissa = f"{text[0]}.{text[1:digits]}{text[digits + 1 :]}".rstrip("0").rstrip(".")
    return f"{mantissa}e+{digits - 1:02d}"


class PageWriter:
    """Writes families as exposition text, keeping each series' text from one page to the next.

    What it keeps is the series of the latest page only: a series that leaves the page is dropped
    at the next render, so memory follows the page, not its history. Not thread-safe: one render
    at a time (`SharedRender` runs one).
    """

    def __init__(self) -> None:
        self._series: dict[str, dict[tuple[str, ...], str]] = {}
        """Per family, per label values: the series' text up to its value."""
        self._extras: dict[str, tuple[tuple[str, str], ...]] = {}
        """The pod labels of each server, as the kept text has them."""

    def write(self, families: Iterable[FamilySamples], pods: Mapping[str, PodLabels]) -> bytes:
        extras = {server: pod.items() for server, pod in pods.items()}
        # Servers whose kept text has other pod labels than they have now: their text is rebuilt.
        moved = {s for s in extras.keys() | self._extras.keys() if extras.get(s) != self._extras.get(s)}
        kept: dict[str, dict[tuple[str, ...], str]] = {}
        out: list[str] = []
        for family, samples in families:
            out.append(_header(family))
            known = self._series.get(family.name, {})
            kept[family.name] = series = {}
            server_at = family.server_at
            for values, value in samples:
                text = known.get(values)
                if text is None or (moved and server_at >= 0 and values[server_at] in moved):
                    text = _series(
                        family, values, extras.get(values[server_at], ()) if server_at >= 0 else ()
                    )
                series[values] = text
                out.append(f"{text}{_value(value)}\n")
        self._series, self._extras = kept, extras
        return "".join(out).encode()


def render_text(snapshot: Snapshot, health: Health, derived: Derived = Derived.ALL) -> bytes:
    """The exposition (text format 0.0.4) of one snapshot, from a fresh writer."""
    return PageWriter().write(families(snapshot, health, derived), dict(health.pods))


class SharedRender:
    """Renders the latest snapshot in a thread; concurrent callers share the render in flight."""

    def __init__(self, collector: TokenwattCollector) -> None:
        self._collector = collector
        self._writer = PageWriter()
        self._in_flight: asyncio.Future[bytes] | None = None
        self.renders = 0
        """Renders started so far."""

    async def body(self) -> bytes:
        if self._in_flight is None:
            self.renders += 1
            snapshot, health = self._collector.snapshot()
            page = families(snapshot, health, self._collector.derived)
            render = asyncio.to_thread(self._writer.write, page, dict(health.pods))
            future = asyncio.ensure_future(render)
            future.add_done_callback(self._done)
            self._in_flight = future
        # A reader that goes away must not cancel the render the others wait for.
        return await asyncio.shield(self._in_flight)

    def _done(self, _: asyncio.Future[bytes]) -> None:
        self._in_flight = None
