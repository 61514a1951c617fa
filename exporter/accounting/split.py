"""The split of a server's energy into prefill, decode and static cost.

Over the recent measured intervals of a server we fit, by non-negative least squares,

    ΔE = a*Δinput_computed + b*Δoutput + c*Δt

where `a` is joules per computed prompt token (prefill), `b` joules per generated token (decode)
and `c` the static power in watts. Prompt tokens served from a prefix cache are not computed and
do not count. With three unknowns the exact non-negative optimum is found by solving the normal
equations on every subset of the coefficients and keeping the best feasible solution.

Consecutive intervals are summed into blocks of at least `block_s` (5 s by default) before
fitting: the energy at each token instant is interpolated between energy readings, and that
small error at every boundary would otherwise dominate one-second intervals.

A fit is reported only when it is well conditioned: enough blocks, columns that vary
independently (steady traffic with a fixed prompt/output mix cannot tell prefill from decode),
and coefficients whose standard error is small next to their value. No number is better than a
wrong one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

from exporter.accounting.totals import SCALE, fixed

if TYPE_CHECKING:  # the ledger keeps its blocks here: a runtime import would be circular
    from exporter.accounting.ledger import Interval

BLOCK_S = 5.0
"""Consecutive measured intervals are summed into blocks at least this long."""
MIN_SAMPLES = 20
"""Fewer blocks than this give no fit."""
MAX_CONDITION = 1e4
"""Largest condition number of the column-scaled normal matrix for which a fit is reported."""
MAX_RELATIVE_ERROR = 0.05
"""Largest standard error of a fitted (non-zero) coefficient, relative to its value."""


@dataclass(frozen=True, slots=True)
class EnergySplit:
    """A well-conditioned fit of a server's energy to its work."""

    prefill_j_per_token: float
    decode_j_per_token: float
    static_w: float
    r_squared: float
    samples: int


@dataclass(frozen=True, slots=True)
class _Sums:
    """Normal equations of the fit: X'X, X'y, y'y, Σy and the sample count."""

    xtx: tuple[tuple[float, float, float], ...]
    xty: tuple[float, float, float]
    yty: float
    y_sum: float
    n: int


def fit_energy_split(
    intervals: Iterable[Interval], since_t: float, block_s: float = BLOCK_S
) -> EnergySplit | None:
    """Fit the measured intervals that ended after `since_t`; None when the fit is ill-conditioned."""
    blocks = SplitBlocks(block_s)
    for interval in intervals:
        if interval.t_end > since_t:
            blocks.add(interval)
    return blocks.fit(since_t)


class SplitBlocks:
    """A server's blocks of measured intervals and the sums of their normal equations, kept as they go.

    A block enters the sums when it closes and leaves them once it ended before the fit's window, so
    a fit costs the same whatever the window. The sums are integers in billionths, as in `totals`:
    a block leaves exactly what it added, so they never drift. The fit is computed again only when
    the blocks changed.
    """

    def __init__(self, block_s: float = BLOCK_S, window_s: float = math.inf) -> None:
        """`window_s`: blocks older than this behind the latest interval are dropped as intervals come,
        so they do not pile up between fits."""
        self.block_s = block_s
        self.window_s = window_s
        self._blocks: deque[_Block] = deque()
        self._x = [0.0, 0.0, 0.0]
        self._y = 0.0
        self._end: float | None = None
        self._sums = _RunningSums()
        self._fit: EnergySplit | None = None
        self._stale = False

    def add(self, interval: Interval) -> None:
        """Add a measured interval to the open block (an unmeasured one breaks the run)."""
        if interval.energy_j is None:
            return
        if self._end is not None and interval.t_start != self._end:
            self._x, self._y = [0.0, 0.0, 0.0], 0.0  # not contiguous: a new block
        x = self._x
        x[0] += sum(m.computed_input_tokens for m in interval.models)
        x[1] += sum(m.output_tokens for m in interval.models)
        x[2] += interval.duration_s
        self._y += interval.energy_j
        self._end = interval.t_end
        if x[2] >= self.block_s:
            block = _Block(interval.t_end, (x[0], x[1], x[2]), self._y)
            self._blocks.append(block)
            self._sums.add(block, 1)
            self._x, self._y = [0.0, 0.0, 0.0], 0.0
            self._stale = True
            self._drop_before(interval.t_end - self.window_s)

    def fit(self, since_t: float) -> EnergySplit | None:
        """The fit over the blocks that ended after `since_t`."""
        self._drop_before(since_t)
        if self._stale:
            self._fit = _fit(self._sums.frozen())
            self._stale = False
        return self._fit

    def _drop_before(self, since_t: float) -> None:
        blocks = self._blocks
        while blocks and blocks[0].t_end <= since_t:
            self._sums.add(blocks.popleft(), -1)
            self._stale = True


@dataclass(frozen=True, slots=True)
class _Block:
    t_end: float
    x: tuple[float, float, float]
    """Δinput computed, Δoutput, Δt."""
    y: float
    """ΔE."""


class _RunningSums:
    """X'X, X'y, y'y and Σy of the blocks, in billionths (see `totals`)."""

    __slots__ = ("n", "xtx", "xty", "y_sum", "yty")

    def __init__(self) -> None:
        self.xtx = [[0] * 3 for _ in range(3)]
        self.xty = [0] * 3
        self.yty = self.y_sum = 0
        self.n = 0

    def add(self, block: _Block, sign: int) -> None:
        x, y = block.x, block.y
        for i in range(3):
            self.xty[i] += sign * fixed(x[i] * y)
            for j in range(3):
                self.xtx[i][j] += sign * fixed(x[i] * x[j])
        self.yty += sign * fixed(y * y)
        self.y_sum += sign * fixed(y)
        self.n += sign

    def frozen(self) -> _Sums | None:
        if self.n == 0:
            return None
        xtx = tuple((r[0] / SCALE, r[1] / SCALE, r[2] / SCALE) for r in self.xtx)
        xty = (self.xty[0] / SCALE, self.xty[1] / SCALE, self.xty[2] / SCALE)
        return _Sums(xtx, xty, self.yty / SCALE, self.y_sum / SCALE, self.n)


def _fit(sums: _Sums | None) -> EnergySplit | None:
    if sums is None or sums.n < MIN_SAMPLES or _condition(sums.xtx) > MAX_CONDITION:
        return None
    best: tuple[float, tuple[float, float, float]] | None = None
    for size in (3, 2, 1):
        for support in combinations(range(3), size):
            coef = _solve_on(sums, support)
            if coef is None or any(c < 0 for c in coef):
                continue
            residual = _residual(sums, coef)
            if best is None or residual < best[0]:
                best = (residual, coef)
    if best is None or not _determined(sums, best[1], best[0]):
        return None
    residual, (a, b, c) = best
    total = sums.yty - sums.y_sum**2 / sums.n
    r_squared = 1.0 - residual / total if total > 0 else 0.0
    return EnergySplit(a, b, c, r_squared, sums.n)


def _determined(sums: _Sums, coef: tuple[float, float, float], residual: float) -> bool:
    """True when every non-zero coefficient's standard error is small next to its value."""
    support = tuple(i for i in range(3) if coef[i] > 0)
    if not support or sums.n <= len(support):
        return False
    variance = residual / (sums.n - len(support))
    for pos, i in enumerate(support):
        unit = tuple(1.0 if j == pos else 0.0 for j in range(len(support)))
        column = _solve(sums, support, unit)
        if column is None or variance * column[pos] > (MAX_RELATIVE_ERROR * coef[i]) ** 2:
            return False
    return True


def _condition(xtx: tuple[tuple[float, float, float], ...]) -> float:
    """Condition number of X'X after scaling every column to unit length (inf when singular)."""
    d = [math.sqrt(xtx[i][i]) for i in range(3)]
    if min(d) == 0:
        return math.inf
    m = [[xtx[i][j] / (d[i] * d[j]) for j in range(3)] for i in range(3)]
    eig = _symmetric_eigenvalues(m)
    return math.inf if eig[0] <= 0 else eig[2] / eig[0]


def _symmetric_eigenvalues(m: list[list[float]]) -> tuple[float, float, float]:
    """Eigenvalues of a symmetric 3x3 matrix, ascending (closed form, trigonometric method)."""
    p1 = m[0][1] ** 2 + m[0][2] ** 2 + m[1][2] ** 2
    q = (m[0][0] + m[1][1] + m[2][2]) / 3
    if p1 == 0:
        values = sorted((m[0][0], m[1][1], m[2][2]))
        return values[0], values[1], values[2]
    p2 = (m[0][0] - q) ** 2 + (m[1][1] - q) ** 2 + (m[2][2] - q) ** 2 + 2 * p1
    p = math.sqrt(p2 / 6)
    b = [[(m[i][j] - (q if i == j else 0.0)) / p for j in range(3)] for i in range(3)]
    r = _det3(b) / 2
    phi = math.acos(max(-1.0, min(1.0, r))) / 3
    largest = q + 2 * p * math.cos(phi)
    smallest = q + 2 * p * math.cos(phi + 2 * math.pi / 3)
    return smallest, 3 * q - largest - smallest, largest


def _det3(m: list[list[float]]) -> float:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def _solve_on(sums: _Sums, support: tuple[int, ...]) -> tuple[float, float, float] | None:
    """Least squares restricted to the coefficients in `support` (others zero)."""
    solution = _solve(sums, support, tuple(sums.xty[i] for i in support))
    if solution is None:
        return None
    coef = [0.0, 0.0, 0.0]
    for pos, i in enumerate(support):
        coef[i] = solution[pos]
    return coef[0], coef[1], coef[2]


def _solve(sums: _Sums, support: tuple[int, ...], rhs: tuple[float, ...]) -> list[float] | None:
    """Solve X'X restricted to `support` against `rhs`, by Gauss-Jordan elimination."""
    k = len(support)
    a = [[sums.xtx[i][j] for j in support] + [rhs[pos]] for pos, i in enumerate(support)]
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        if a[pivot][col] == 0:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(k):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col], strict=True)]
    return [a[pos][k] / a[pos][pos] for pos in range(k)]


def _residual(sums: _Sums, coef: tuple[float, float, float]) -> float:
    """Σ(y - Xβ)² from the normal equations: y'y - 2β'X'y + β'X'Xβ."""
    fitted = sum(coef[i] * sums.xty[i] for i in range(3))
    quad = sum(coef[i] * sums.xtx[i][j] * coef[j] for i in range(3) for j in range(3))
    return max(0.0, sums.yty - 2 * fitted + quad)
