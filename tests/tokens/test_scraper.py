"""Scraping over real HTTP on loopback: every failure is a `ScrapeError` with its reason, never a crash."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exporter.tokens.profiles import PROFILES, ServerProfile, generic_profile, series
from exporter.tokens.scraper import ScrapeError, TokenScraper, fetch_server_page, probe

FIXTURES = Path(__file__).parent.parent / "fixtures"
VLLM_PAGE = (FIXTURES / "vllm-0.32.0-cpu.metrics.txt").read_text()
PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CAP = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def text(body: str, content_type: str = PROM_TEXT, status: int = 200) -> Handler:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body.encode(), status=status, headers={"Content-Type": content_type})

    return handle


async def gzipped(request: web.Request) -> web.StreamResponse:
    assert "gzip" in request.headers.get("Accept-Encoding", "")
    return web.Response(
        body=gzip.compress(VLLM_PAGE.encode()),
        headers={"Content-Type": PROM_TEXT, "Content-Encoding": "gzip"},
    )


async def slow(_: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response(text=VLLM_PAGE)


async def streamed_big(request: web.Request) -> web.StreamResponse:
    """No Content-Length: the cap has to be enforced while reading."""
    resp = web.StreamResponse(headers={"Content-Type": PROM_TEXT})
    await resp.prepare(request)
    for _ in range(2 * CAP // 1024 + 1):
        await resp.write(b"# padding " + b"x" * 1013 + b"\n")
    await resp.write_eof()
    return resp


async def gzip_bomb(_: web.Request) -> web.StreamResponse:
    """Small on the wire, over the cap once decompressed."""
    body = gzip.compress(b"#" + b" " * (4 * CAP) + b"\n")
    return web.Response(body=body, headers={"Content-Type": PROM_TEXT, "Content-Encoding": "gzip"})


cut = VLLM_PAGE.index("vllm:generation_tokens_total{") + len(
    'vllm:generation_tokens_total{engine="0",model_name="tiny"} 61'
)


async def latin1(_: web.Request) -> web.StreamResponse:
    body = 'vllm:prompt_tokens_total{model_name="café"} 1\n'.encode("latin-1")
    return web.Response(body=body, headers={"Content-Type": PROM_TEXT})


ROUTES: dict[str, Handler] = {
    "/latin1": latin1,
    "/metrics": text(VLLM_PAGE),
    "/gzip": gzipped,
    "/slow": slow,
    "/big": text(VLLM_PAGE * 200),
    "/big-streamed": streamed_big,
    "/gzip-bomb": gzip_bomb,
    "/llamacpp": text("Error: This server does not support metrics endpoint.", "text/plain", 501),
    "/html": text("<html>login</html>", "text/html"),
    "/json": text('{"iter": 1}', "application/json"),
    "/truncated": text(VLLM_PAGE[:cut]),
    "/non-numeric": text(VLLM_PAGE.replace("} 612.0", "} six-hundred")),
    "/duplicate": text(VLLM_PAGE + 'vllm:prompt_tokens_total{engine="0",model_name="tiny"} 1.0\n'),
    "/openmetrics": text(VLLM_PAGE + "# EOF\n", "application/openmetrics-text; version=1.0.0; charset=utf-8"),
}


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def base() -> AsyncIterator[str]:
    runner, url = await serve(ROUTES)
    yield url
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def scraper(session: aiohttp.ClientSession, url: str, profile: ServerProfile | None = None) -> TokenScraper:
    return TokenScraper("llama", url, profile, session, timeout_s=0.5, max_bytes=CAP)


async def test_scrapes_the_real_vllm_page_and_keeps_the_detected_kind(
    base: str, session: aiohttp.ClientSession
) -> None:
    s = scraper(session, base + "/metrics")
    assert s.kind == "auto"
    before = time.time()
    (sample,) = await s.scrape()
    after = time.time()
    assert s.kind == "vllm"
    assert sample.server == "llama"
    assert before <= sample.t <= after
    assert (sample.tokens.model, sample.tokens.input_tokens, sample.tokens.output_tokens) == (
        "tiny",
        608,
        612,
    )
    assert (sample.tokens.requests, sample.tokens.running, sample.tokens.cached_input_tokens) == (43, 0, 0)


@pytest.mark.parametrize("path", ["/gzip", "/openmetrics"])
async def test_gzip_and_openmetrics_pages(base: str, session: aiohttp.ClientSession, path: str) -> None:
    (sample,) = await scraper(session, base + path, PROFILES["vllm"]).scrape()
    assert (sample.tokens.input_tokens, sample.tokens.output_tokens) == (608, 612)


async def test_a_generic_profile_scrapes_what_the_config_names(
    base: str, session: aiohttp.ClientSession
) -> None:
    profile = generic_profile(
        model_label="model_name",
        input_tokens=[series("vllm:prompt_tokens_by_source_total", source="local_compute")],
        output_tokens=[series("vllm:request_generation_tokens_sum")],
    )
    s = scraper(session, base + "/metrics", profile)
    (sample,) = await s.scrape()
    assert s.kind == "generic"
    assert (sample.tokens.input_tokens, sample.tokens.output_tokens, sample.tokens.requests) == (
        608,
        612,
        None,
    )


@pytest.mark.parametrize(
    ("path", "reason", "message"),
    [
        ("/slow", "timeout", "did not answer within 0.5s"),
        ("/big", "too_large", f"larger than the {CAP}-byte cap"),
        ("/big-streamed", "too_large", f"larger than the {CAP}-byte cap"),
        ("/gzip-bomb", "too_large", f"larger than the {CAP}-byte cap"),
        ("/nowhere", "http_status", "404 Not Found: check the metrics path"),
        ("/llamacpp", "http_status", "llama-server serves /metrics only when started with --metrics"),
        ("/html", "content_type", "Content-Type 'text/html', not a Prometheus text page"),
        ("/json", "content_type", "its Prometheus page is /prometheus/metrics"),
        ("/truncated", "parse", "truncated"),
        ("/non-numeric", "parse", "value 'six-hundred' of vllm:generation_tokens_total is not a number"),
        ("/duplicate", "parse", 'duplicate series vllm:prompt_tokens_total{engine="0",model_name="tiny"}'),
        ("/latin1", "encoding", "not UTF-8"),
    ],
)
async def test_a_bad_target_is_a_scrape_error_with_its_reason(
    base: str, session: aiohttp.ClientSession, path: str, reason: str, message: str
) -> None:
    with pytest.raises(ScrapeError) as e:
        await scraper(session, base + path).scrape()
    assert e.value.reason == reason
    assert message in str(e.value)


async def test_the_line_of_a_malformed_counter_is_named(base: str, session: aiohttp.ClientSession) -> None:
    line = VLLM_PAGE[: VLLM_PAGE.index("} 612.0")].count("\n") + 1
    with pytest.raises(ScrapeError, match=f"line {line}: "):
        await scraper(session, base + "/non-numeric", PROFILES["vllm"]).scrape()


async def test_a_closed_port_is_a_connection_error(session: aiohttp.ClientSession) -> None:
    runner, url = await serve({})
    await runner.cleanup()
    with pytest.raises(ScrapeError) as e:
        await fetch_server_page(session, url + "/metrics", 1.0, CAP)
    assert e.value.reason == "connection"


async def test_probe_tries_the_known_paths_of_a_base_url(session: aiohttp.ClientSession) -> None:
    nim = (FIXTURES / "nim_datadog-integrations-core-nvidia_nim-fixture.txt").read_text()
    trtllm = (FIXTURES / "written_trtllm-serve-main.txt").read_text()
    for routes, found, kind in [
        ({"/v1/metrics": text(nim)}, "/v1/metrics", "nim"),
        (
            {"/metrics": text("[]", "application/json"), "/prometheus/metrics": text(trtllm)},
            "/prometheus/metrics",
            "trtllm",
        ),
        ({"/metrics": text(VLLM_PAGE)}, "/metrics", "vllm"),
    ]:
        runner, url = await serve(routes)
        try:
            used, reading = await probe(session, url + "/", 1.0, CAP)
        finally:
            await runner.cleanup()
        assert used == url + found
        assert reading.profile.kind == kind


async def test_probe_of_a_base_url_with_no_page_lists_every_path_tried(
    session: aiohttp.ClientSession,
) -> None:
    runner, url = await serve({"/metrics": text("", status=501)})
    try:
        with pytest.raises(ScrapeError) as e:
            await probe(session, url, 1.0, CAP)
    finally:
        await runner.cleanup()
    message = str(e.value)
    assert message.startswith("no metrics page found:")
    assert "501 Not Implemented: llama-server" in message
    assert f"{url}/v1/metrics answered 404" in message
    assert f"{url}/prometheus/metrics answered 404" in message


async def test_probe_of_a_url_with_a_path_tries_only_that_path(session: aiohttp.ClientSession) -> None:
    runner, url = await serve({"/v1/metrics": text(VLLM_PAGE)})
    try:
        with pytest.raises(ScrapeError) as e:
            await probe(session, url + "/metrics", 1.0, CAP)
    finally:
        await runner.cleanup()
    assert e.value.reason == "http_status"
    assert str(e.value).startswith(f"{url}/metrics answered 404")
