"""Do two checkpoints use the same inference path? The statistic behind He et al.'s Finding 1, torch-free so that the
analysis computes it and the report can re-decide it from the stored profiles and maps (``docs/methods.md``).

A path is where the family's bridge measure lives across stages (the bridge profile) plus Wang et al.'s
causal-strength map (stage x position):

- a checkpoint "has a bridge path" when its profile peaks at ``PATH_MIN_LEVEL`` or higher; exactly one with a path:
  different; neither: undetermined;
- both with a path: "same path" when the Pearson r of the profiles, and of the causal maps over the cells not
  saturated in both, are each at least ``SAME_PATH_R`` and their mean is more than chance would give: a permutation
  test (the stages of one profile and the cells of one map shuffled) must give p < ``PATH_ALPHA``. With a 4-point
  profile a high r is easy to get by chance; the permutation p says how easy.
- ``moved_path_control``: a checkpoint against its own path moved by one stage and one position (same level, other
  place). It must come out "different"; otherwise the statistic cannot tell paths apart on this data.
"""

from __future__ import annotations

import numpy as np

from grokscope.metrics import thresholds as th

PERMUTATIONS = 2000  # random draws of the null; the finest p is 1 / 2001


def _corr(a, b) -> float | None:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _unsaturated(map_a, map_b, saturated: float):
    if map_a is None or map_b is None:
        return None, None
    a, b = np.asarray(map_a, float), np.asarray(map_b, float)
    keep = ~((a >= saturated) & (b >= saturated)) & np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _row_corr(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson r of ``x`` with every row of ``ys`` (nan where a row is constant)."""
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / (np.sqrt((yc ** 2).sum(axis=1)) * np.sqrt((xc ** 2).sum()))


def _shuffled(x: np.ndarray, draws: int, rng) -> np.ndarray:
    return np.take(x, np.argsort(rng.random((draws, len(x))), axis=1))


def permutation_p(profile_a, profile_b, cells_a, cells_b, observed: float, draws: int = PERMUTATIONS,
                  seed: int = 0) -> float:
    """P(mean r under the null >= observed): profile_b's stages and cells_b shuffled independently. Seeded, so the
    same inputs give the same p."""
    rng = np.random.default_rng(seed)
    pa, pb = np.asarray(profile_a, float), np.asarray(profile_b, float)
    rs = []
    if _corr(pa, pb) is not None:
        rs.append(_row_corr(pa, _shuffled(pb, draws, rng)))
    if cells_a is not None and _corr(cells_a, cells_b) is not None:
        rs.append(_row_corr(np.asarray(cells_a, float), _shuffled(np.asarray(cells_b, float), draws, rng)))
    null = np.nanmean(np.stack(rs), axis=0) if rs else np.full(draws, -np.inf)
    return float((np.sum(null >= observed - 1e-12) + 1) / (draws + 1))


def path_verdict(profile_a: list[float], profile_b: list[float], map_a, map_b,
                 min_level: float = th.PATH_MIN_LEVEL, threshold: float = th.SAME_PATH_R,
                 saturated: float = th.SATURATED_CELL, alpha: float = th.PATH_ALPHA) -> dict:
    """The comparison statistic and verdict from two bridge profiles and two causal maps ([stages, 3] or None)."""
    level_a, level_b = max(profile_a, default=0.0), max(profile_b, default=0.0)
    out = {"level_a": level_a, "level_b": level_b, "profile_corr": None, "causal_map_corr": None, "p_value": None,
           "cells_compared": 0, "min_level": min_level, "threshold": threshold, "alpha": alpha}
    if level_a < min_level and level_b < min_level:
        return {**out, "verdict": "undetermined", "why": "neither checkpoint has a bridge path"}
    if (level_a < min_level) != (level_b < min_level):
        return {**out, "verdict": "different path", "why": "only one checkpoint has a bridge path"}
    out["profile_corr"] = _corr(profile_a, profile_b)
    cells_a, cells_b = _unsaturated(map_a, map_b, saturated)
    if cells_a is not None:
        out["cells_compared"] = int(len(cells_a))
        out["causal_map_corr"] = _corr(cells_a, cells_b)
    rs = [r for r in (out["profile_corr"], out["causal_map_corr"]) if r is not None]
    if not rs:  # flat profiles and no usable map: nothing to correlate
        return {**out, "verdict": "undetermined", "why": "flat profiles and no usable causal map: no r to test"}
    observed = sum(rs) / len(rs)
    out["p_value"] = permutation_p(profile_a, profile_b, cells_a, cells_b, observed)
    if not all(r >= threshold for r in rs):
        return {**out, "verdict": "different path", "why": f"an r below {threshold}"}
    if out["p_value"] >= alpha:
        return {**out, "verdict": "different path",
                "why": f"every r >= {threshold} but no more similar than chance (permutation p "
                       f"{out['p_value']:.3f} >= {alpha})"}
    return {**out, "verdict": "same path", "why": f"every r >= {threshold}, permutation p {out['p_value']:.3f} < "
                                                  f"{alpha}"}


def moved(profile: list[float], causal_map) -> tuple[list[float], list | None]:
    """The same path one stage later and one position over: the profile rolled by one stage; the map rolled by one
    stage and one position."""
    rolled = [float(x) for x in np.roll(np.asarray(profile, float), 1)]
    if causal_map is None:
        return rolled, None
    return rolled, np.roll(np.roll(np.asarray(causal_map, float), 1, axis=0), 1, axis=1).tolist()


def moved_path_control(profile: list[float], causal_map) -> dict:
    """A checkpoint against its own path moved (``moved``): must come out "different path". Both sides have the same
    level, so this exercises the correlation and its permutation test, not the level gate."""
    profile_b, map_b = moved(profile, causal_map)
    return path_verdict(profile, profile_b, causal_map, map_b)

