"""Do two checkpoints (of one run, or of two runs on the same graph) use the same inference path?

He et al.'s Finding 1 says grokked and non-grokked models resolve the bridge along the same path. A path here is
where the family's bridge measure lives across stages (bridge use at r1 for the gpt, He et al.'s bridge found for
the trm), plus Wang et al.'s causal-strength map. The statistic can tell paths apart (``docs/methods.md``):

- a checkpoint "has a bridge path" when its bridge profile peaks at ``PATH_MIN_LEVEL`` or higher; one with a path
  and one without are different (this is what makes step 0 vs a grokked checkpoint come out "different");
- two checkpoints with a path are the same when the Pearson r of their bridge profiles, and of their causal maps
  over the cells that are not saturated (>= ``SATURATED_CELL``) in both, is at least ``SAME_PATH_R``; cells that are
  near 1 by construction (patching the embedding of a token replaces the query) would otherwise make any two maps
  correlate;
- neither has a path: undetermined.
"""

from __future__ import annotations

import numpy as np

from grokscope.analysis.patching import causal_strength
from grokscope.analysis.queries import query_records
from grokscope.data.counterfactuals import counterfactual_tokens
from grokscope.data.encoding import encode
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.metrics.records import aggregate


def _corr(a, b) -> float | None:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def bridge_profile(model, ds, rows, seed: int = 0) -> list[float]:
    """The family's bridge measure per stage on the compositions ``rows``."""
    frame, schema = query_records(model, ds, rows, seed=seed)
    agg = aggregate(frame, schema)
    stages = schema["patch_stages"] if model.bridge_metric == "bridge_use" else schema["stages"]
    return [float(np.nan_to_num(agg[f"{model.bridge_metric}@{s}"])) for s in stages]


def path_verdict(profile_a: list[float], profile_b: list[float], map_a, map_b,
                 min_level: float = th.PATH_MIN_LEVEL, threshold: float = th.SAME_PATH_R,
                 saturated: float = th.SATURATED_CELL) -> dict:
    """The comparison statistic and verdict from two bridge profiles and two causal maps ([stages, 3] or None)."""
    level_a, level_b = max(profile_a, default=0.0), max(profile_b, default=0.0)
    out = {"level_a": level_a, "level_b": level_b, "profile_corr": None, "causal_map_corr": None,
           "cells_compared": 0, "min_level": min_level, "threshold": threshold}
    if level_a < min_level and level_b < min_level:
        return {**out, "verdict": "undetermined", "why": "neither checkpoint has a bridge path"}
    if (level_a < min_level) != (level_b < min_level):
        return {**out, "verdict": "different path", "why": "only one checkpoint has a bridge path"}
    out["profile_corr"] = _corr(profile_a, profile_b)
    if map_a is not None and map_b is not None:
        a, b = np.asarray(map_a, float), np.asarray(map_b, float)
        keep = ~((a >= saturated) & (b >= saturated)) & np.isfinite(a) & np.isfinite(b)
        out["cells_compared"] = int(keep.sum())
        out["causal_map_corr"] = _corr(a[keep], b[keep])
    rs = [r for r in (out["profile_corr"], out["causal_map_corr"]) if r is not None]
    if rs:
        same = all(r >= threshold for r in rs)
        why = f"every computable r >= {threshold}" if same else f"an r below {threshold}"
    else:  # flat profiles: fall back to where the path peaks
        same = int(np.argmax(profile_a)) == int(np.argmax(profile_b))
        why = "the bridge profiles peak at the same stage" if same else "the bridge profiles peak at different stages"
    return {**out, "verdict": "same path" if same else "different path", "why": why}


def compare_paths(model_a, model_b, ds, rows: np.ndarray, seed: int = 0) -> dict:
    """Compare two checkpoints on the same compositions ``rows``: profiles, causal maps and the verdict."""
    if model_a.family != model_b.family or len(model_a.readout_stages()) != len(model_b.readout_stages()):
        raise GrokscopeError(f"path comparison needs two models of the same family and depth ({model_a.family} "
                             f"{len(model_a.readout_stages())} vs {model_b.family} {len(model_b.readout_stages())} "
                             f"stages)")
    rows = np.asarray(rows)
    rows = rows[rows[:, 2] >= 0]
    enc, cf = encode(ds, rows), counterfactual_tokens(ds, rows, seed=seed)
    maps, counts = [], []
    for model in (model_a, model_b):
        strength, n, _ = causal_strength(model, enc, cf)
        maps.append(strength.numpy() if int(n.min()) > 0 else None)
        counts.append(n.tolist())
    profile_a, profile_b = bridge_profile(model_a, ds, rows, seed), bridge_profile(model_b, ds, rows, seed)
    verdict = path_verdict(profile_a, profile_b, maps[0], maps[1])
    return {**verdict, "bridge_metric": model_a.bridge_metric, "profile_a": profile_a, "profile_b": profile_b,
            "causal_map_a": None if maps[0] is None else maps[0].tolist(),
            "causal_map_b": None if maps[1] is None else maps[1].tolist(), "causal_n_a": counts[0],
            "causal_n_b": counts[1], "n_queries": len(rows)}
