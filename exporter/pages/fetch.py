"""Fetching a Prometheus text page over HTTP, with a deadline and a size cap.

A fetch either returns the page or raises `FetchError` with a short machine-readable `reason`
(`timeout`, `connection`, `http_status`, `content_type`, `too_large`, `encoding`); each layer turns
it into its own error (`ScrapeError`, `EnergyReadError`) with the same reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
_TEXT_TYPES = ("text/plain", "application/openmetrics-text")
_CHUNK = 64 * 1024


class FetchError(Exception):
    """A page could not be fetched; `status` is the HTTP status where one was answered."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Page:
    text: str
    t: float
    """Midpoint between sending the request and receiving the last byte (Unix seconds)."""


async def fetch_page(session: aiohttp.ClientSession, url: str, timeout_s: float, max_bytes: int) -> Page:
    """GET a metrics page (gzip accepted) within `timeout_s`, refusing pages over `max_bytes`.

    The cap applies to the declared Content-Length and to the decompressed body as it arrives.
    """
    sent = time.time()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, headers={"Accept": ACCEPT}) as resp:
                if resp.status != 200:
                    raise FetchError("http_status", f"{url} answered HTTP {resp.status}", resp.status)
                content_type = resp.headers.get("Content-Type", "")
                if content_type and not content_type.lower().startswith(_TEXT_TYPES):
                    raise FetchError(
                        "content_type",
                        f"{url} answered with Content-Type {content_type!r}, not a Prometheus text page",
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise FetchError("too_large", _too_large(url, max_bytes))
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError("too_large", _too_large(url, max_bytes))
    except TimeoutError:
        raise FetchError("timeout", f"{url} did not answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as e:
        raise FetchError("connection", f"{url}: {e or type(e).__name__}") from None
    received = time.time()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FetchError("encoding", f"{url}: the page is not UTF-8 ({e})") from None
    return Page(text=text, t=(sent + received) / 2.0)


def _too_large(url: str, max_bytes: int) -> str:
    return f"{url}: page larger than the {max_bytes}-byte cap (max_page_bytes)"
