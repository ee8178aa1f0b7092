"""Rates with their uncertainty: every number a verdict reads is a ``Rate`` (value, n, 95% Wilson interval), and a
gate compares the interval, not the point, with its threshold (``docs/methods.md``, "Uncertainty").

A rate measured on n queries and averaged over the last k evaluations keeps n as its sample size: the k evaluations
score the same queries, so they are not k x n independent draws (the interval is, if anything, conservative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from grokscope.metrics import thresholds as th

Z95 = 1.959963984540054  # two-sided 95%
FINAL_EVALS = 3  # a run's final value: the mean of its last k evaluations

ABOVE, BELOW, UNDECIDED = "above", "below", "undecided"


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed on ``n`` trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(p, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """A measured proportion, its sample size (None when unknown) and where it came from."""

    value: float
    n: int | None = None
    evals: int = 1  # how many evaluations were averaged

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if not self.n else wilson(self.value, self.n)

    def against(self, threshold: float) -> str:
        """``above`` when the whole interval is at or above ``threshold``, ``below`` when it is below it, otherwise
        ``undecided`` (the interval straddles it). Without n, the point value decides."""
        lo, hi = self.interval or (self.value, self.value)
        if lo >= threshold:
            return ABOVE
        if hi < threshold:
            return BELOW
        return UNDECIDED

    def text(self, digits: int = 2, compact: bool = False) -> str:
        """``0.91 [0.86, 0.95] (n=162, mean of 3 evaluations)``; ``compact``: ``0.91 [0.86, 0.95] n=162`` (tables that
        say once how many evaluations are averaged)."""
        ci = self.interval
        body = f"{self.value:.{digits}f}"
        if ci is not None:
            body += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
        if compact:
            return f"{body} n={self.n}" if self.n else f"{body} n unknown"
        extra = [f"n={self.n}" if self.n else "n unknown"]
        if self.evals > 1:
            extra.append(f"mean of {self.evals} evaluations")
        return f"{body} ({', '.join(extra)})"


def final_rate(rows: list[dict], metric: str, k: int = FINAL_EVALS, n: int | None = None) -> Rate | None:
    """The mean of ``metric`` over the last ``k`` evaluations that measured it, with its n (the row's ``n/<metric>``,
    else ``n``); None when it was never measured."""
    values = [(r[metric], r.get(f"n/{metric}")) for r in rows if r.get(metric) is not None]
    if not values:
        return None
    tail = values[-k:]
    ns = [int(m) for _, m in tail if m]
    return Rate(sum(v for v, _ in tail) / len(tail), min(ns) if ns else n, len(tail))


def rate_at(row: dict, metric: str, n: int | None = None) -> Rate | None:
    """One evaluation's ``metric`` as a Rate (None when not measured)."""
    value = row.get(metric)
    if value is None:
        return None
    m = row.get(f"n/{metric}")
    return Rate(value, int(m) if m else n)


def mean_rate(rates: list[Rate]) -> Rate | None:
    """The mean of several evaluations' rates of one measure, with the smallest n among them."""
    if not rates:
        return None
    ns = [r.n for r in rates if r.n]
    return Rate(sum(r.value for r in rates) / len(rates), min(ns) if ns else None, len(rates))


def curve_agreement(a_rows: list[dict], b_rows: list[dict], metric: str, margin: float, n_a: int | None = None,
                    n_b: int | None = None, draws: int = th.BOOTSTRAP_DRAWS, seed: int = 0) -> dict | None:
    """Do two curves of ``metric`` agree within ``margin``? Their mean |difference| over the evaluation steps both
    measured, with a seeded bootstrap interval (each point resampled as a binomial share of its n: ``n/<metric>`` in
    the row, else ``n_a`` / ``n_b``; without n the point decides). ``outcome``: ABOVE when the 90% interval lies at
    or above the margin (they differ), BELOW when under it (they agree), else UNDECIDED. None without shared steps."""
    b_at = {r["step"]: r for r in b_rows if r.get(metric) is not None}
    pairs = [(r, b_at[r["step"]]) for r in a_rows if r.get(metric) is not None and r["step"] in b_at]
    if not pairs:
        return None
    rng = np.random.default_rng(seed)

    def draw(rows, n):
        p = np.array([r[metric] for r in rows], float)
        ns = np.array([int(r.get(f"n/{metric}") or n or 0) for r in rows])
        if not ns.all():
            return np.broadcast_to(p, (draws, len(p)))
        return rng.binomial(ns, np.clip(p, 0, 1), (draws, len(p))) / ns
    a, b = draw([x for x, _ in pairs], n_a), draw([y for _, y in pairs], n_b)
    boot = np.abs(a - b).mean(axis=1)
    value = float(np.mean([abs(x[metric] - y[metric]) for x, y in pairs]))
    lo, hi = float(np.quantile(boot, 0.05)), float(np.quantile(boot, 0.95))
    lo, hi = min(lo, value), max(hi, value)
    side = ABOVE if lo >= margin else BELOW if hi < margin else UNDECIDED
    return {"metric": metric, "distance": value, "interval": [lo, hi], "steps": len(pairs), "margin": margin,
            "outcome": side}
