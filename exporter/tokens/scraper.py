"""Fetching an inference server's metrics page and turning it into token samples.

A scrape either returns samples or raises `ScrapeError` with a short `reason` (the label of the
error counter) and a message a person can act on. The daemon turns that into `target_up 0`; the
last good counters stay where they were.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from exporter.model import ModelTokens, TokenSample
from exporter.tokens.parser import ParseError, parse_samples
from exporter.tokens.profiles import PROFILES, ProfileError, ServerProfile, all_sample_names, detect

ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
_TEXT_TYPES = ("text/plain", "application/openmetrics-text")


class ScrapeError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Page:
    text: str
    t: float
    """Midpoint between sending the request and receiving the last byte."""


@dataclass(frozen=True, slots=True)
class PageReading:
    profile: ServerProfile
    models: list[ModelTokens]


async def fetch_page(session: aiohttp.ClientSession, url: str, timeout_s: float, max_bytes: int) -> Page:
    """GET a metrics page (gzip accepted), refusing pages over `max_bytes` once decompressed."""
    sent = time.time()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, headers={"Accept": ACCEPT}) as resp:
                if resp.status != 200:
                    raise ScrapeError("http_status", _status_message(url, resp.status))
                content_type = resp.headers.get("Content-Type", "")
                if content_type and not content_type.lower().startswith(_TEXT_TYPES):
                    raise ScrapeError(
                        "content_type",
                        f"{url} answered with Content-Type {content_type!r}, not a Prometheus text page",
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise ScrapeError("too_large", _too_large(url, max_bytes))
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise ScrapeError("too_large", _too_large(url, max_bytes))
    except TimeoutError:
        raise ScrapeError("timeout", f"{url} did not answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as e:
        raise ScrapeError("connection", f"{url}: {e}") from None
    received = time.time()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScrapeError("encoding", f"{url}: the page is not UTF-8 ({e})") from None
    return Page(text=text, t=(sent + received) / 2.0)


def read_page(text: str, kind: str) -> PageReading:
    """Parse a page and map it through the profile `kind` (or the detected one for `auto`)."""
    try:
        if kind == "auto":
            samples = parse_samples(text, all_sample_names())
            profile = detect(samples)
            samples = [s for s in samples if s.name in profile.sample_names()]
        else:
            profile = PROFILES[kind]
            samples = parse_samples(text, profile.sample_names())
        return PageReading(profile, profile.extract(samples))
    except ParseError as e:
        raise ScrapeError("parse", f"malformed page: {e}") from None
    except ProfileError as e:
        raise ScrapeError(e.reason, str(e)) from None


class TokenScraper:
    """Scrapes one server. With `kind="auto"` the kind is detected once and then kept."""

    def __init__(
        self,
        server: str,
        url: str,
        kind: str,
        session: aiohttp.ClientSession,
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self.server = server
        self.url = url
        self.kind = kind
        self._session = session
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes

    async def scrape(self) -> list[TokenSample]:
        page = await fetch_page(self._session, self.url, self._timeout_s, self._max_bytes)
        reading = read_page(page.text, self.kind)
        self.kind = reading.profile.kind
        return [TokenSample(server=self.server, t=page.t, tokens=m) for m in reading.models]


def _status_message(url: str, status: int) -> str:
    if status == 404:
        return f"{url} answered 404 Not Found: check the metrics path"
    return f"{url} answered HTTP {status}"


def _too_large(url: str, max_bytes: int) -> str:
    return f"{url}: page larger than the {max_bytes}-byte cap (servers[].max_page_bytes)"
