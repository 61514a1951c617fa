"""Bounds on the models a server may bring into the accounting, so a page cannot bloat us.

Every model a server's page names becomes a ledger and a dozen series per window and band. A
page that invents model names (a bug, or a hostile server) would grow memory and `/metrics`
without end, so each server has:

- a cap on its models (`servers[].max_models`): a model beyond it is left out of the accounting,
  counted in `tokenwatt_server_dropped_models_total` and logged once per overflow episode;
- a cap on the length of a model name: a longer one is cut to `MAX_LABEL_CHARS` characters and
  marked with a short hash of the whole, so two long names stay distinct;
- an expiry (`servers[].model_expiry`): a model not seen on the page for that long is dropped from
  the accounting and the exposition. The expiry is minutes while Prometheus scrapes every few
  seconds, so the model's last values were exported before its series vanish.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import structlog

from exporter.config import DEFAULT_MAX_MODELS, DEFAULT_MODEL_EXPIRY_S
from exporter.values import ModelTokens

log = structlog.get_logger("tokenwatt")

MAX_LABEL_CHARS = 128


@dataclass(frozen=True, slots=True)
class ModelLimit:
    max_models: int = DEFAULT_MAX_MODELS
    expiry_s: float = DEFAULT_MODEL_EXPIRY_S


def short_label(value: str) -> str:
    """`value`, or, when longer than `MAX_LABEL_CHARS`, its start and a hash of the whole."""
    if len(value) <= MAX_LABEL_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{value[: MAX_LABEL_CHARS - 14]}~{digest}"


class _ServerModels:
    __slots__ = ("dropped", "limit", "overflowing", "seen")

    def __init__(self, limit: ModelLimit) -> None:
        self.limit = limit
        self.seen: dict[str | None, float] = {}
        """Model -> instant of the latest scrape that named it."""
        self.dropped = 0
        self.overflowing = False


class ModelCap:
    """Admits each server's models up to its cap and expires the ones no longer seen."""

    def __init__(self, servers: Iterable[str], limits: dict[str, ModelLimit] | None = None) -> None:
        limits = limits or {}
        self._servers = {s: _ServerModels(limits.get(s, ModelLimit())) for s in servers}

    def add(self, server: str, limit: ModelLimit) -> None:
        """Cap a server added by a config reload."""
        self._servers[server] = _ServerModels(limit)

    def remove(self, server: str) -> None:
        del self._servers[server]

    def admit(self, server: str, t: float, models: Iterable[ModelTokens]) -> tuple[ModelTokens, ...]:
        """The models of one scrape that may enter the accounting, their names shortened."""
        state = self._servers[server]
        admitted: list[ModelTokens] = []
        dropped = 0
        for m in models:
            if m.model is not None and len(m.model) > MAX_LABEL_CHARS:
                m = dataclasses.replace(m, model=short_label(m.model))
            if m.model in state.seen or len(state.seen) < state.limit.max_models:
                state.seen[m.model] = max(t, state.seen.get(m.model, t))
                admitted.append(m)
            else:
                dropped += 1
        state.dropped += dropped
        if dropped and not state.overflowing:
            log.warning(
                "too many models",
                server=server,
                max_models=state.limit.max_models,
                dropped=dropped,
                hint="raise servers[].max_models if the server really serves this many",
            )
        elif not dropped and state.overflowing:
            log.info("models within the cap again", server=server, max_models=state.limit.max_models)
        state.overflowing = bool(dropped)
        return tuple(admitted)

    def expire(self, now: float) -> Iterator[tuple[str, str | None]]:
        """Forget, and yield as (server, model), every model unseen for longer than its expiry."""
        for server, state in self._servers.items():
            stale = [m for m, t in state.seen.items() if now - t > state.limit.expiry_s]
            for model in stale:
                del state.seen[model]
                yield server, model

    def dropped(self) -> tuple[tuple[str, int], ...]:
        """(server, models left out so far): one count per model per scrape."""
        return tuple((s, state.dropped) for s, state in self._servers.items())
