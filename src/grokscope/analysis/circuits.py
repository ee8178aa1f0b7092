"""Do two checkpoints (of one run, or of two runs on the same graph) use the same inference path?

He et al.'s Finding 1 says grokked and non-grokked models resolve the bridge along the same path. This module
measures what the comparison needs from two models (bridge profiles per stage, Wang et al.'s causal maps); the
statistic and its verdict, with a permutation null, live in ``metrics/paths.py`` so that the report can re-decide
them from the stored numbers (``docs/methods.md``, "Path comparison").
"""

from __future__ import annotations

import numpy as np

from grokscope.analysis.patching import causal_strength
from grokscope.analysis.queries import query_records
from grokscope.data.counterfactuals import counterfactual_tokens
from grokscope.data.encoding import encode
from grokscope.data.store import is_composition
from grokscope.errors import GrokscopeError
from grokscope.metrics.paths import path_verdict
from grokscope.metrics.records import aggregate


def bridge_profile(model, ds, rows, seed: int = 0) -> list[float]:
    """The family's bridge measure per stage on the compositions ``rows``."""
    frame, schema = query_records(model, ds, rows, seed=seed)
    agg = aggregate(frame, schema)
    stages = schema["patch_stages"] if model.bridge_metric == "bridge_use" else schema["stages"]
    return [float(np.nan_to_num(agg[f"{model.bridge_metric}@{s}"])) for s in stages]


def compare_paths(model_a, model_b, ds, rows: np.ndarray, seed: int = 0) -> dict:
    """Compare two checkpoints on the same compositions ``rows``: profiles, causal maps and the verdict."""
    if model_a.family != model_b.family or len(model_a.readout_stages()) != len(model_b.readout_stages()):
        raise GrokscopeError(f"path comparison needs two models of the same family and depth ({model_a.family} "
                             f"{len(model_a.readout_stages())} vs {model_b.family} {len(model_b.readout_stages())} "
                             f"stages)")
    rows = np.asarray(rows)
    rows = rows[is_composition(rows)]
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
