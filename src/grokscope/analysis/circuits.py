"""Do two checkpoints (of one run, or of two runs on the same graph) use the same inference path?

He et al.'s Finding 1 says grokked and non-grokked models resolve the bridge along the same path. This module
measures what the comparison needs from two models (bridge profiles per stage, Wang et al.'s causal maps); the
statistic and its verdict, with a permutation null, live in ``metrics/paths.py`` so that the report can re-decide
them from the stored numbers (``docs/methods.md``, "Path comparison").
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.analysis.patching import causal_flips
from grokscope.analysis.queries import query_records
from grokscope.data.counterfactuals import counterfactual_tokens
from grokscope.data.encoding import encode
from grokscope.data.store import is_composition
from grokscope.errors import GrokscopeError
from grokscope.metrics.paths import stored_verdict
from grokscope.metrics.records import aggregate, stage_hits


def bridge_profile(model, ds, rows, seed: int = 0) -> tuple[list[float], np.ndarray]:
    """The family's bridge measure per stage on the compositions ``rows``, and the per-query 0/1 records behind it
    ([queries that count, stages]: the path test resamples them)."""
    frame, schema = query_records(model, ds, rows, seed=seed)
    agg = aggregate(frame, schema)
    stages = schema["patch_stages"] if model.bridge_metric == "bridge_use" else schema["stages"]
    return ([float(np.nan_to_num(agg[f"{model.bridge_metric}@{s}"])) for s in stages],
            stage_hits(frame, schema, model.bridge_metric))


def compare_paths(model_a, model_b, ds, rows: np.ndarray, seed: int = 0) -> dict:
    """Compare two checkpoints on the same compositions ``rows``: profiles, causal maps and the verdict."""
    if model_a.family != model_b.family or len(model_a.readout_stages()) != len(model_b.readout_stages()):
        raise GrokscopeError(f"path comparison needs two models of the same family and depth ({model_a.family} "
                             f"{len(model_a.readout_stages())} vs {model_b.family} {len(model_b.readout_stages())} "
                             f"stages)")
    rows = np.asarray(rows)
    rows = rows[is_composition(rows)]
    enc, cf = encode(ds, rows), counterfactual_tokens(ds, rows, seed=seed)
    out = {"bridge_metric": model_a.bridge_metric, "n_queries": len(rows)}  # the compositions compared
    for side, model in (("a", model_a), ("b", model_b)):
        flips, _ = causal_flips(model, enc, cf)
        counts = [len(f) for f in flips]
        full = min(counts) > 0  # a map needs correct answers with a counterfactual at every position
        out[f"causal_map_{side}"] = torch.stack([f.float().mean(0) for f in flips], 1).tolist() if full else None
        out[f"causal_n_{side}"] = counts
        out[f"flips_{side}"] = [f.to(torch.int8).tolist() for f in flips] if full else None
        out[f"profile_{side}"], hits = bridge_profile(model, ds, rows, seed)
        out[f"hits_{side}"] = hits.tolist()
    # The profiles' n: the queries behind them (for bridge use only those with a patch).
    out["n_queries_a"], out["n_queries_b"] = len(out["hits_a"]), len(out["hits_b"])
    return {**stored_verdict(out), **out}
