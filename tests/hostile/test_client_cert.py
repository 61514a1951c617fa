"""Client-certificate mode: every path needs a verified certificate, except the kubelet probes'."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import aiohttp

from exporter.app import Daemon
from exporter.config_file import load_config
from exporter.energy.select import open_source
from exporter.exposition.web_config import load_web_config
from tests.conftest import require_tool
from tests.exposition.test_web_config import cert, write_configs

__all__ = ["cert"]  # the fixture, shared with the web config tests


def _client_cert(folder: Path) -> tuple[Path, Path]:
    """A client certificate signed by the server's self-signed certificate, used as the CA."""
    openssl = require_tool("openssl")
    key, csr, crt = folder / "client.key", folder / "client.csr", folder / "client.crt"
    subprocess.run(
        [openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=prometheus",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(folder / "server.crt"),
         "-CAkey", str(folder / "server.key"), "-CAcreateserial", "-days", "2", "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


async def test_probes_need_no_certificate_and_metrics_needs_one(cert: Path) -> None:
    crt, key = _client_cert(cert)
    config = load_config(
        write_configs(
            cert,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_ca_file: server.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
        )
    )
    assert config.web_config_file is not None
    web = load_web_config(config.web_config_file)
    async with Daemon(config, await open_source(config.energy), web=web) as daemon:
        assert daemon.url is not None
        url = daemon.url
        anonymous = ssl.create_default_context(cafile=str(cert / "server.crt"))
        holder = ssl.create_default_context(cafile=str(cert / "server.crt"))
        holder.load_cert_chain(crt, key)
        async with aiohttp.ClientSession() as session:

            async def status(path: str, context: ssl.SSLContext) -> int:
                async with session.get(url.replace("/metrics", path), ssl=context) as resp:
                    await resp.read()
                    return resp.status

            assert await status("/healthz", anonymous) == 200  # kubelet probes carry no certificate
            async with session.get(url.replace("/metrics", "/readyz"), ssl=anonymous) as resp:
                assert (await resp.text()).startswith(("ready", "not ready"))
                assert "energy source" not in await resp.text()  # no details without a certificate
            assert await status("/metrics", anonymous) == 403
            assert await status("/", anonymous) == 403
            assert await status("/metrics", holder) == 200
