"""Fetching an inference server's metrics page and turning it into token samples.

A scrape either returns samples or raises `ScrapeError` with a short `reason` (the label of the
error counter) and a message a person can act on. The daemon turns that into `target_up 0`; the
last good counters stay where they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from exporter.config import AUTO_KIND
from exporter.pages.fetch import FetchError, Page, fetch_page
from exporter.pages.parser import ParseError, parse_samples, sample_names
from exporter.tokens.profiles import (
    ProfileError,
    ServerProfile,
    Timing,
    all_sample_names,
    detect,
    near_misses,
)
from exporter.values import ModelTokens, TokenSample

PROBE_PATHS = ("/metrics", "/v1/metrics", "/prometheus/metrics")
"""Where servers keep their page: most at /metrics, NIM at /v1/metrics, trtllm-serve at
/prometheus/metrics (its /metrics is JSON)."""


class ScrapeError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PageReading:
    profile: ServerProfile
    models: tuple[ModelTokens, ...]
    input_timing: Timing | None
    output_timing: Timing | None


async def fetch_server_page(
    session: aiohttp.ClientSession, url: str, timeout_s: float, max_bytes: int
) -> Page:
    """Fetch an inference server's page; a failure is a `ScrapeError` with a hint for that server."""
    try:
        return await fetch_page(session, url, timeout_s, max_bytes)
    except FetchError as e:
        raise ScrapeError(e.reason, _hinted(e, url)) from None


def read_page(text: str, profile: ServerProfile | None) -> PageReading:
    """Parse a page and map it through `profile`, or with None the profile detected from the page."""
    try:
        if profile is None:
            samples = parse_samples(text, all_sample_names())
            profile = detect(samples)
            wanted = profile.sample_names()
            samples = [s for s in samples if s.name in wanted]
        else:
            samples = parse_samples(text, profile.sample_names())
        counts = profile.extract(samples)
    except ParseError as e:
        raise ScrapeError("parse", f"malformed page: {e}") from None
    except ProfileError as e:
        message = str(e)
        if e.reason in ("unknown_kind", "missing_family"):
            message += _what_the_page_has(text)
        raise ScrapeError(e.reason, message) from None
    return PageReading(profile, counts.models, counts.input_timing, counts.output_timing)


async def probe(
    session: aiohttp.ClientSession, url: str, timeout_s: float, max_bytes: int
) -> tuple[str, PageReading]:
    """Read one page and detect its kind. A URL without a path tries each of `PROBE_PATHS`.

    Returns the URL that answered with a known server's page and what it says.
    """
    parts = urlsplit(url)
    if parts.path in ("", "/") and not parts.query:
        base = url.rstrip("/")
        candidates = [base + path for path in PROBE_PATHS]
    else:
        candidates = [url]
    failures: list[ScrapeError] = []
    for candidate in candidates:
        try:
            page = await fetch_server_page(session, candidate, timeout_s, max_bytes)
            return candidate, read_page(page.text, None)
        except ScrapeError as e:
            failures.append(e)
            if e.reason in ("timeout", "connection"):  # the host, not the path: other paths fail alike
                break
    if len(failures) == 1:
        raise failures[0]
    raise ScrapeError(failures[-1].reason, "no metrics page found:\n" + "\n".join(f"  {e}" for e in failures))


class TokenScraper:
    """Scrapes one server. Without a profile the kind is detected from the first page and then kept."""

    def __init__(
        self,
        server: str,
        url: str,
        profile: ServerProfile | None,
        session: aiohttp.ClientSession,
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self.server = server
        self.url = url
        self._profile = profile
        self._session = session
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes

    @property
    def kind(self) -> str:
        """The server's kind, `auto` until a page has shown it."""
        return self._profile.kind if self._profile else AUTO_KIND

    async def scrape(self) -> list[TokenSample]:
        page = await fetch_server_page(self._session, self.url, self._timeout_s, self._max_bytes)
        reading = read_page(page.text, self._profile)
        self._profile = reading.profile
        return [TokenSample(server=self.server, t=page.t, tokens=m) for m in reading.models]


def _what_the_page_has(text: str) -> str:
    names = sample_names(text)
    if not names:
        return "; the page has no samples at all"
    clues = near_misses(names)
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return "; " + "; ".join([*clues, f"the page has: {shown}"])


def _hinted(e: FetchError, url: str) -> str:
    """The fetcher's message, with what usually causes it on an inference server."""
    if e.status == 404:
        return (
            f"{url} answered 404 Not Found: check the metrics path (most servers use /metrics, NIM "
            "/v1/metrics, trtllm-serve /prometheus/metrics); SGLang serves /metrics only when "
            "started with --enable-metrics"
        )
    if e.status == 501:
        return (
            f"{url} answered 501 Not Implemented: llama-server serves /metrics only when started "
            "with --metrics (or LLAMA_ARG_ENDPOINT_METRICS=1)"
        )
    if e.reason == "content_type" and "json" in str(e).lower():
        return f"{e} (trtllm-serve's /metrics is JSON; its Prometheus page is /prometheus/metrics)"
    if e.reason == "too_large":
        return f"{e}: raise servers[].max_page_bytes"
    return str(e)
