"""The API stand-in on loopback, granting what the chart's ClusterRole grants, and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lightkube import AsyncClient

from exporter.kube.client import open_client
from tests.discovery.cluster import READ, TOKEN
from tests.fakes.kube_api import FakeKubeApi


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApi]:
    fake = FakeKubeApi()
    fake.grant(TOKEN, READ)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(api: FakeKubeApi, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    c = open_client(api.kubeconfig(tmp_path / "kubeconfig", TOKEN), timeout_s=2.0)
    yield c
    await c.close()
