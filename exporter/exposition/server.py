"""The exporter's HTTP server: `/metrics`, `/healthz`, `/readyz`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from exporter.exposition.collector import TokenwattCollector
from exporter.exposition.render import SharedRender
from exporter.exposition.web_config import (
    AUTHENTICATED,
    basic_auth_middleware,
    client_cert_middleware,
)

_INDEX = """<html><head><title>tokenwatt</title></head><body><h1>tokenwatt</h1>
<p>Joules per token, per model, per server, per GPU.</p>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li></ul></body></html>
"""


def make_app(
    collector: TokenwattCollector,
    ready: Callable[[], str | None],
    users: Mapping[str, bytes] | None = None,
    *,
    require_client_cert: bool = False,
) -> web.Application:
    """An aiohttp application serving the collector.

    `ready` returns None when the exporter is ready, or a sentence saying what it still waits for.
    `users` (name -> bcrypt hash), when given, guards `/metrics` with basic auth, and `/readyz`
    says what it waits for only to a client that sent valid credentials. `require_client_cert`
    keeps every path but `/healthz` and `/readyz` from clients without a verified certificate
    (and `/readyz`'s details too).
    """
    render = SharedRender(collector.snapshot)

    async def metrics(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=await render.body(), headers={"Content-Type": CONTENT_TYPE_LATEST})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=_INDEX, content_type="text/html")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        waiting = ready()
        if waiting is None:
            return web.Response(text="ready\n")
        guarded = bool(users) or require_client_cert
        if guarded and not request.get(AUTHENTICATED):  # what it waits for names servers: not for anyone
            return web.Response(status=503, text="not ready\n")
        return web.Response(status=503, text=f"not ready: {waiting}\n")

    middlewares = [client_cert_middleware()] if require_client_cert else []
    if users:
        middlewares.append(basic_auth_middleware(users))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
