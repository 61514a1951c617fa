"""The read side of the accounting: one consistent set of figures, as the exposition and replay read them.

Frozen values built by `Accountant.snapshot`; nothing here changes the accounting. The ratio rule
(`per_token`) lives here so the exporter's gauges and `tokenwatt replay` divide the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.accounting.gate import Rejections
from exporter.accounting.split import EnergySplit
from exporter.accounting.tariff import Tariff
from exporter.placement import Share
from exporter.values import Gpu, TokenType

MIN_RATIO_TOKENS = 1.0
"""A per-token ratio needs at least one whole token in its window: counters that creep up by
fractions of a token would otherwise divide real energy by almost nothing."""


def per_token(energy_j: float, tokens: float) -> float | None:
    return energy_j / tokens if tokens >= MIN_RATIO_TOKENS else None


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Sums over the measured intervals that ended inside one window (one model, or one band)."""

    window_s: float
    energy_j: float
    input_tokens: float
    output_tokens: float
    idle_energy_j: float = 0.0

    def joules_per_token(self, token_type: TokenType) -> float | None:
        """All-in joules per `output`, `input` or `all` tokens (idle included); None without tokens."""
        return per_token(self.energy_j, self._tokens(token_type))

    def active_joules_per_token(self, token_type: TokenType) -> float | None:
        """Joules per token over the intervals that did work (idle intervals left out)."""
        return per_token(self.energy_j - self.idle_energy_j, self._tokens(token_type))

    def _tokens(self, token_type: TokenType) -> float:
        match token_type:
            case TokenType.OUTPUT:
                return self.output_tokens
            case TokenType.INPUT:
                return self.input_tokens
            case TokenType.ALL:
                return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class BandFigures:
    """One load band of one model: cumulative counters and their windows."""

    band: str
    energy_j: float
    input_tokens: float
    output_tokens: float
    windows: tuple[WindowFigures, ...]


@dataclass(frozen=True, slots=True)
class ModelFigures:
    model: str | None
    energy_j: float
    """Energy of the measured intervals, idle included."""
    input_tokens: float
    output_tokens: float
    requests: float | None
    running: float | None
    windows: tuple[WindowFigures, ...]
    idle_energy_j: float = 0.0
    measured_input_tokens: float = 0.0
    """Input tokens of the measured intervals: the denominator that goes with `energy_j`."""
    measured_output_tokens: float = 0.0
    cached_input_tokens: float | None = None
    bands: tuple[BandFigures, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerWindow:
    """A server's energy and time over one window (measured intervals only)."""

    window_s: float
    energy_j: float
    measured_s: float
    idle_energy_j: float
    idle_s: float

    @property
    def power_w(self) -> float | None:
        return self.energy_j / self.measured_s if self.measured_s > 0 else None

    @property
    def idle_power_w(self) -> float | None:
        return self.idle_energy_j / self.idle_s if self.idle_s > 0 else None


@dataclass(frozen=True, slots=True)
class ServerFigures:
    server: str
    idle_energy_j: float
    idle_s: float
    unmeasured_s: float
    models: tuple[ModelFigures, ...]
    energy_j: float = 0.0
    first_t: float | None = None
    last_t: float | None = None
    """Instants of the first and latest applied scrapes."""
    windows: tuple[ServerWindow, ...] = ()
    split: EnergySplit | None = None
    """The prefill/decode/static fit; None while it is ill-conditioned."""


@dataclass(frozen=True, slots=True)
class GpuFigures:
    gpu: Gpu
    energy_j: float
    """Energy measured from the first reading to the latest."""
    power_w: float | None
    t: float
    settled_t: float | None = None
    """Horizon up to which the GPU's energy is classified."""
    settled_energy_j: float = 0.0
    """Energy from the first reading to the horizon: attributed plus unattributed."""
    attributed_j: float = 0.0
    unattributed_j: float = 0.0
    shares: tuple[Share, ...] = ()
    """The servers' shares of the GPU over the stretch up to the latest reading, with their method."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    gpus: tuple[GpuFigures, ...]
    servers: tuple[ServerFigures, ...]
    tariff: Tariff = field(default_factory=Tariff)
    band_labels: tuple[str, ...] = ()
    rejections: Rejections = field(default_factory=Rejections)
    dropped_models: tuple[tuple[str, int], ...] = ()
    """(server, models left out by its `max_models` cap so far, one per model per scrape)."""
