"""Limits on the exporter's own HTTP server, so slow or hostile clients cannot exhaust it.

aiohttp parses requests well but waits for a half-sent request forever and accepts connections
until the process runs out of file descriptors. `GuardedSite` is aiohttp's TCP site with a guard
in front of every connection:

- at most `MAX_CONNECTIONS` open at once; a connection beyond it is closed at once;
- the head of each request (request line and headers) must arrive within `HEADER_TIMEOUT_S` of
  its first byte (of the connection, for the first request): a slowloris client is cut off;

and `RUNNER_LIMITS` (for `web.AppRunner`) bound the rest: a connection idle between requests is
closed after `IDLE_TIMEOUT_S`; request lines and header fields are capped in size and number.
Each refused or timed-out connection is one log line; malformed requests are answered 400 by
aiohttp and logged as one line by the bridge in `exporter.logs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("tokenwatt")

MAX_CONNECTIONS = 256
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
RUNNER_LIMITS: dict[str, Any] = {
    "keepalive_timeout": IDLE_TIMEOUT_S,
    "max_line_size": 8190,
    "max_field_size": 8190,
    "max_headers": 64,
}
"""Keyword arguments for `web.AppRunner`: the idle timeout and request-head size limits."""

_HEAD_END = b"\r\n\r\n"


class _Connections:
    def __init__(self, limit: int, header_timeout_s: float) -> None:
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.refused = 0
        self.timed_out = 0


class _Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: counts it, and times the head of each request."""

    def __init__(self, inner: asyncio.Protocol, connections: _Connections) -> None:
        self._inner = inner
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        self._counted = False
        self._peer: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        connections = self._connections
        if connections.open >= connections.limit:
            connections.refused += 1
            log.warning(
                "connection refused",
                reason="too_many_connections",
                limit=connections.limit,
                peer=str(self._peer),
            )
            transport.abort()
            return
        connections.open += 1
        self._counted = True
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._deadline is None:
            self._arm()  # the first byte of a new request
        scan = self._tail + data
        if _HEAD_END in scan:
            self._disarm()
            # Bytes after the head belong to its body or to the next request; a pipelined next
            # request re-arms the deadline when its own head ends.
        self._tail = scan[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._counted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self._connections.open -= 1
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._connections.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self._connections.timed_out += 1
        log.warning(
            "connection closed",
            reason="header_timeout",
            timeout_s=self._connections.header_timeout_s,
            peer=str(self._peer),
        )
        if self._transport is not None:
            self._transport.abort()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` with a connection cap and a deadline on each request's head."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        ssl_context: Any = None,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.connections = _Connections(max_connections, header_timeout_s)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = server
        connections = self.connections
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guard(factory(), connections),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=connections.header_timeout_s if self._ssl_context else None,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def bound_addresses(addresses: list[Any]) -> list[str]:
    """The addresses the server's sockets are bound to, as HOST:PORT (`[HOST]:PORT` for IPv6)."""
    shown = []
    for address in addresses:
        host, port = address[0], address[1]
        shown.append(f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}")
    return shown
