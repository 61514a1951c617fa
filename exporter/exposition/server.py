"""The exporter's HTTP server: `/metrics`, `/healthz`, `/readyz`, and `POST /-/reload` when enabled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from exporter.exposition.collector import TokenwattCollector
from exporter.exposition.render import CONTENT_TYPE, SharedRender
from exporter.exposition.web_config import (
    AUTHENTICATED,
    Authenticator,
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
    not_ready: Callable[[], list[str]],
    auth: Authenticator,
    reload: Callable[[], Awaitable[str | None]] | None = None,
    *,
    require_client_cert: bool = False,
) -> web.Application:
    """An aiohttp application serving the collector.

    `not_ready` lists what keeps the exporter from being ready (empty when ready); `/readyz` shows
    the list only to a client that authenticated, where basic auth or client certificates are
    configured. `auth` guards the protected paths when it has users. `reload`, when given, enables
    `POST /-/reload`: it reloads the config and returns None, or the reason the new config was not
    applied. `require_client_cert` keeps every path but `/healthz` and `/readyz` from clients
    without a verified certificate.
    """
    render = SharedRender(collector)

    async def metrics(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=await render.body(), headers={"Content-Type": CONTENT_TYPE})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=_INDEX, content_type="text/html")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        problems = not_ready()
        if not problems:
            return web.Response(text="ready\n")
        guarded = bool(auth.users) or require_client_cert
        if guarded and not request.get(AUTHENTICATED):  # the problems name servers: not for anyone
            return web.Response(status=503, text="not ready\n")
        return web.Response(status=503, text="not ready:\n" + "".join(f"- {p}\n" for p in problems))

    async def reload_config(_: web.Request) -> web.Response:
        if reload is None:
            return web.Response(
                status=403, text="reloading over HTTP is off: start with --web.enable-lifecycle\n"
            )
        failed = await reload()
        if failed is None:
            return web.Response(text="reloaded\n")
        return web.Response(status=500, text=f"reload failed, the running config is kept: {failed}\n")

    middlewares = [client_cert_middleware()] if require_client_cert else []
    middlewares.append(basic_auth_middleware(auth))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/-/reload", reload_config)
    return app
