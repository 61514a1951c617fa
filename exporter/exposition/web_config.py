"""TLS and basic auth for the exporter's HTTP server, from a web config file.

The file has the format of the Prometheus exporter-toolkit (`--web.config.file` of
node_exporter and friends), so operators reuse what they already have:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt              # optional: verify client certificates
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...             # bcrypt hash

Relative paths are resolved against the file's own folder. Basic auth guards `/metrics` and
`/-/reload`; the health endpoints stay open for kubelet probes, which carry no credentials
(`/readyz` says what it waits for only to a client with valid credentials). With
`RequireAndVerifyClientCert` the certificate is required per request, on every path but the probes'.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.config import show
from exporter.safe_yaml import YamlInputError, load_yaml_file

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
PROTECTED_PATHS = frozenset({"/metrics", "/-/reload"})
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_REQUIRE = "RequireAndVerifyClientCert"
DETAIL_PATHS = frozenset({"/readyz"})
"""Open to all, but with details only for a client whose credentials check out."""
AUTHENTICATED = web.RequestKey("authenticated", bool)
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class WebConfigError(Exception):
    """The web config file is unusable; the message names the key, the value and what is allowed."""


@dataclass(frozen=True, slots=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes]
    """User name -> bcrypt hash."""
    require_client_cert: bool = False
    """`RequireAndVerifyClientCert`: every path but the probes' needs a verified client certificate."""


def load_web_config(path: Path) -> WebConfig:
    try:
        data = load_yaml_file(path) or {}
    except YamlInputError as e:
        raise WebConfigError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: the top level must be a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise WebConfigError(
            f"{path}: unknown key {show(sorted(map(str, unknown))[0])}; "
            "allowed: tls_server_config, basic_auth_users"
        )
    tls = data.get("tls_server_config")
    return WebConfig(
        ssl_context=_ssl_context(path, tls) if tls is not None else None,
        users=_users(path, data.get("basic_auth_users") or {}),
        require_client_cert=isinstance(tls, dict) and tls.get("client_auth_type") == _REQUIRE,
    )


def _ssl_context(path: Path, tls: Any) -> ssl.SSLContext:
    where = f"{path}: tls_server_config"
    if not isinstance(tls, dict):
        raise WebConfigError(f"{where} must be a mapping")
    unknown = set(tls) - _TLS_KEYS
    if unknown:
        raise WebConfigError(
            f"{where}.{show(sorted(map(str, unknown))[0])}: unknown key; "
            f"allowed: {', '.join(sorted(_TLS_KEYS))}"
        )
    for key in ("cert_file", "key_file"):
        if not isinstance(tls.get(key), str):
            raise WebConfigError(f"{where}.{key}: required (a file path)")
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{where}.client_auth_type: {show(auth)} is not allowed; use one of {', '.join(_CLIENT_AUTH)}"
        )
    version = tls.get("min_version", "TLS12")
    if version not in _TLS_VERSIONS:
        raise WebConfigError(f"{where}.min_version: {show(version)} is not allowed; use TLS12 or TLS13")
    base = path.parent
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[version]
    try:
        context.load_cert_chain(base / tls["cert_file"], base / tls["key_file"])
    except (OSError, ssl.SSLError) as e:
        raise WebConfigError(f"{where}: cannot load cert_file/key_file: {e}") from None
    # Required certificates are checked per request (`client_cert_middleware`), not in the handshake,
    # so that kubelet probes, which have none, still reach /healthz and /readyz.
    context.verify_mode = ssl.CERT_OPTIONAL if auth == _REQUIRE else _CLIENT_AUTH[auth]
    if auth != "NoClientCert":
        ca = tls.get("client_ca_file")
        if not isinstance(ca, str):
            raise WebConfigError(f"{where}.client_ca_file: required with client_auth_type {auth}")
        try:
            context.load_verify_locations(base / ca)
        except (OSError, ssl.SSLError) as e:
            raise WebConfigError(f"{where}.client_ca_file: cannot load {show(ca)}: {e}") from None
    return context


def _users(path: Path, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise WebConfigError(f"{path}: basic_auth_users must map user names to bcrypt hashes")
    out: dict[str, bytes] = {}
    for name, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise WebConfigError(
                f"{path}: basic_auth_users.{show(str(name))[1:-1]}: expected a bcrypt hash, whole: "
                "$2a$, $2b$ or $2y$, a cost from 04 to 31, $ and 53 characters of ./A-Za-z0-9 "
                "(htpasswd -nbBC 10 USER PASS)"
            )
        out[str(name)] = hashed.encode()
    return out


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CACHE_SIZE = 64
"""Successful checks remembered (exporter-toolkit keeps a cache of this kind too)."""
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
"""A client with `MAX_FAILURES` failed checks within this window is refused without a check."""
MAX_CLIENTS = 4096
"""Clients whose failures are remembered; the oldest are forgotten first."""


class Authenticator:
    """Basic-auth checks for `PROTECTED_PATHS`, off the event loop.

    bcrypt is slow on purpose (tens of milliseconds a check), so each check runs in a worker
    thread, never on the event loop. A credential that checked out is remembered in a small cache
    keyed by a SHA-256 of the user, the password and the stored hash (never the password itself), so a
    scrape every few seconds costs one hash, not one bcrypt round; a changed hash (a reloaded web
    config) misses the cache. Failed checks are counted per client address: a client with
    `MAX_FAILURES` failures within `FAILURE_WINDOW_S` is answered 429 without a check until the
    window has passed, so guessing passwords neither stalls the exporter nor goes fast.
    """

    def __init__(self, users: Mapping[str, bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        """User name -> bcrypt hash; empty means no authentication. Replaced on a reload."""
        self._clock = clock
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.refused = 0
        """Requests refused because their client had too many failures."""

    def limited(self, client: str) -> bool:
        seen = self._failures.get(client)
        if seen is None:
            return False
        since, count = seen
        if self._clock() - since > FAILURE_WINDOW_S:
            del self._failures[client]
            return False
        return count >= MAX_FAILURES

    async def check(self, header: str, client: str) -> bool:
        credentials = _credentials(header)
        if credentials is None:
            self._failed(client)
            return False
        user, password = credentials
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return True
        # An unknown user costs a bcrypt round too, so user names cannot be probed by timing.
        ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or _dummy_hash())
        if ok and hashed is not None:
            self._verified[key] = None
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
            return True
        self._failed(client)
        return False

    def _failed(self, client: str) -> None:
        now = self._clock()
        since, count = self._failures.pop(client, (now, 0))
        if now - since > FAILURE_WINDOW_S:
            since, count = now, 0
        self._failures[client] = (since, count + 1)
        if len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)


def basic_auth_middleware(auth: Authenticator) -> Middleware:
    """Require one of `auth.users`, when there are any, on the protected paths."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        protected = request.path in PROTECTED_PATHS
        if not auth.users or not (protected or (header and request.path in DETAIL_PATHS)):
            return await handler(request)
        client = request.remote or ""
        if auth.limited(client):
            auth.refused += 1
            return web.Response(
                status=429,
                text="too many failed logins: try again later\n",
                headers={"Retry-After": str(int(FAILURE_WINDOW_S))},
            )
        if await auth.check(header, client):
            request[AUTHENTICATED] = True
            return await handler(request)
        if not protected:
            return await handler(request)
        return web.Response(
            status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="tokenwatt"'}
        )

    return middleware


def client_cert_middleware() -> Middleware:
    """Answer 403 on every path but the probes' to a client that showed no verified certificate.

    With `RequireAndVerifyClientCert` the TLS handshake verifies a certificate when one is shown
    (a bad one fails the handshake) and lets a connection without one through; this middleware then
    keeps such a connection to `/healthz` and `/readyz`, which kubelet probes need.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport.get_extra_info("peercert"):
            request[AUTHENTICATED] = True
            return await handler(request)
        if request.path in PROBE_PATHS:
            return await handler(request)
        return web.Response(status=403, text="a client certificate is required\n")

    return middleware


def _credentials(header: str) -> tuple[str, bytes] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password.encode()


@functools.cache
def _dummy_hash() -> bytes:
    return bcrypt.hashpw(b"tokenwatt", bcrypt.gensalt(rounds=10))
