"""TLS and basic auth from an exporter-toolkit web config file, over real HTTPS on loopback."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from exporter.app import Daemon
from exporter.config import load_config
from exporter.energy.select import open_source
from exporter.exposition import web_config
from exporter.exposition.render import render_text
from exporter.exposition.web_config import (
    FAILURE_WINDOW_S,
    MAX_FAILURES,
    Authenticator,
    WebConfigError,
    load_web_config,
)
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(folder / "server.key"), "-out", str(folder / "server.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


def write_configs(folder: Path, web: str) -> Path:
    (folder / "web.yml").write_text(web)
    config = folder / "tokenwatt.yml"
    config.write_text(
        "listen: 127.0.0.1:0\nweb_config_file: web.yml\nenergy: {source: simulated, interval: 200ms}\n"
    )
    return config


async def test_tls_and_basic_auth_guard_metrics_only(cert: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    config = load_config(
        write_configs(
            cert,
            f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            f"basic_auth_users:\n  prometheus: '{hashed}'\n",
        )
    )
    assert config.web_config_file == cert / "web.yml"
    web = load_web_config(config.web_config_file)
    daemon = Daemon(config, await open_source(config.energy), web=web)
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(stop, listening.set_result))
    try:
        url = await asyncio.wait_for(listening, 5)
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert / "server.crt"))
        async with aiohttp.ClientSession() as session:

            async def status(path: str, auth: tuple[str, str] | None = None) -> int:
                headers = (
                    {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
                    if auth
                    else {}
                )
                async with session.get(url.replace("/metrics", path), ssl=trust, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            assert await status("/metrics") == 401
            assert await status("/metrics", ("prometheus", "wrong")) == 401
            assert await status("/metrics", ("nobody", "s3cret")) == 401
            assert await status("/metrics", ("prometheus", "s3cret")) == 200
            assert await status("/healthz") == 200  # kubelet probes carry no credentials
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is refused by the TLS listener
                async with session.get(url.replace("https://", "http://")) as resp:
                    await resp.read()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ("tls_server_config: {cert_file: server.crt}\n", "tls_server_config.key_file: required"),
        (
            "tls_server_config: {cert_file: nope.crt, key_file: server.key}\n",
            "cannot load cert_file/key_file",
        ),
        (
            "tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS10}\n",
            "min_version: 'TLS10' is not allowed; use TLS12 or TLS13",
        ),
        (
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "client_auth_type: RequireAndVerifyClientCert}\n",
            "client_ca_file: required with client_auth_type RequireAndVerifyClientCert",
        ),
        ("basic_auth_users: {alice: plaintext}\n", "basic_auth_users.alice: expected a bcrypt hash"),
        ("http_server_config: {}\n", "unknown key 'http_server_config'"),
    ],
)
def test_bad_web_configs_are_named(cert: Path, web: str, message: str) -> None:
    (cert / "web.yml").write_text(web)
    with pytest.raises(WebConfigError, match=message.replace("(", r"\(")):
        load_web_config(cert / "web.yml")


def test_check_config_validates_the_web_config(cert: Path) -> None:
    config = write_configs(cert, "basic_auth_users: {alice: plaintext}\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "check-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "web_config_file" in result.stdout and "expected a bcrypt hash" in result.stdout


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_password_checks_run_in_a_thread_and_successes_are_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    calls: list[bool] = []
    real = bcrypt.checkpw

    def recording(password: bytes, stored: bytes) -> bool:
        calls.append(threading.current_thread() is threading.main_thread())
        return real(password, stored)

    monkeypatch.setattr(web_config.bcrypt, "checkpw", recording)
    auth = Authenticator({"prometheus": hashed})
    assert await auth.check(basic("prometheus", "s3cret"), "10.0.0.1")
    assert await auth.check(basic("prometheus", "s3cret"), "10.0.0.1")  # from the cache
    assert calls == [False]  # one bcrypt round, off the event loop's thread
    assert not await auth.check(basic("prometheus", "guess"), "10.0.0.2")
    assert not await auth.check(basic("nobody", "s3cret"), "10.0.0.2")  # unknown users cost a round too
    assert calls == [False, False, False]
    auth.users = {"prometheus": bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4))}  # a reloaded web config
    assert not await auth.check(basic("prometheus", "s3cret"), "10.0.0.1")  # the old cache entry is void
    assert await auth.check(basic("prometheus", "rotated"), "10.0.0.1")


async def test_failed_logins_are_rate_limited_per_client(cert: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = load_config(write_configs(cert, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))
    daemon = Daemon(config, await open_source(config.energy), web=load_web_config(cert / "web.yml"))
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(stop, listening.set_result))
    try:
        url = await asyncio.wait_for(listening, 5)
        async with aiohttp.ClientSession() as session:

            async def status(password: str) -> tuple[int, str | None]:
                headers = {"Authorization": basic("prometheus", password)}
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("Retry-After")

            assert await status("s3cret") == (200, None)
            assert [await status(f"guess-{i}") for i in range(MAX_FAILURES)] == [(401, None)] * MAX_FAILURES
            assert await status("guess-again") == (429, str(int(FAILURE_WINDOW_S)))
            assert await status("s3cret") == (429, str(int(FAILURE_WINDOW_S)))  # until the window passes
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert b"\ntokenwatt_http_auth_rate_limited_total 2.0\n" in render_text(*daemon.collector.snapshot())
