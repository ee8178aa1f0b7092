"""Comparing inference paths across checkpoints and runs, and classifying a run's regime (PAPER_SPEC §5, DESIGN
§1 Finding 1-2). Thresholds are arguments with stated defaults; every verdict reports the numbers behind it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from grokscope.analysis.logit_lens import bridge_mask, lens_ranks, stage_names
from grokscope.analysis.patching import causal_strength, counterfactual_tokens
from grokscope.errors import GrokscopeError


def _corr(a, b) -> float | None:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class PathComparison:
    causal_map_corr: float | None  # Pearson r of the (stage x position) causal-strength maps
    bridge_profile_corr: float | None  # Pearson r of per-stage bridge decodability (top-1 share)
    same_first_stage: float  # share of queries whose bridge first becomes top-1 at the same stage
    bridge_profile_a: list[float]
    bridge_profile_b: list[float]
    causal_map_a: list[list[float]]
    causal_map_b: list[list[float]]
    n_queries: int
    threshold: float
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def bridge_profile(model, enc) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-stage share of queries with b top-1 at a counted position [S], first such stage per query [B])."""
    ranks = lens_ranks(model, enc)["bridge"]
    S, B, T = ranks.shape
    hit = ((ranks == 0) & bridge_mask(model, S, T).unsqueeze(1)).any(-1)  # [S, B]
    first = torch.where(hit.any(0), hit.float().argmax(0), torch.full((B,), -1))
    return hit.float().mean(1), first


@torch.no_grad()
def compare_paths(model_a, model_b, enc, ds, rows, threshold: float = 0.8, seed: int = 0) -> PathComparison:
    """Finding 1: do two checkpoints (e.g. at training saturation vs grokked, or two regimes) use the same path on
    the same compositions? "same path" iff both correlations that can be computed are >= ``threshold``."""
    if stage_names(model_a) != stage_names(model_b):
        raise GrokscopeError("path comparison needs two models of the same family and depth "
                             f"({model_a.family} {len(stage_names(model_a))} vs {model_b.family} "
                             f"{len(stage_names(model_b))} stages)")
    cf = counterfactual_tokens(ds, rows, seed=seed)
    map_a, _, _ = causal_strength(model_a, enc, cf)
    map_b, _, _ = causal_strength(model_b, enc, cf)
    prof_a, first_a = bridge_profile(model_a, enc)
    prof_b, first_b = bridge_profile(model_b, enc)
    map_r, prof_r = _corr(map_a, map_b), _corr(prof_a, prof_b)
    available = [r for r in (map_r, prof_r) if r is not None]
    verdict = "undetermined" if not available else (
        "same path" if all(r >= threshold for r in available) else "different path")
    return PathComparison(map_r, prof_r, float((first_a == first_b).float().mean()), prof_a.tolist(),
                          prof_b.tolist(), map_a.tolist(), map_b.tolist(), len(rows), threshold, verdict)


# ------------------------------------------------------------------------------------- regime classification
@dataclass
class RegimeThresholds:
    """PAPER_SPEC §5's suggested operationalisation (ours, not the paper's); saturation defaults to 0.97
    (CPU_CALIBRATION: 0.99 is fragile under a constant learning rate)."""

    sat: float = 0.97  # training accuracy for t_sat
    generalised: float = 0.5  # test accuracy for t_gen
    high: float = 0.9  # "high" test accuracy (fake grokking / circuit checks)
    bridge_circuit: float = 0.9  # bridge found when test accuracy is high -> circuit
    bridge_fake: float = 0.5  # bridge below this while test accuracy is high -> fake grokking
    delay_factor: float = 2.0  # natural grokking iff t_gen - t_sat >= delay_factor * t_sat


def classify_regime(rows: list[dict], test_metric: str = "test_inferred_ood", bridge_metric: str = "bridge_found_ood",
                    th: RegimeThresholds | None = None) -> dict:
    """natural grokking / no delay / fake grokking / no generalisation, with the milestones that decided it."""
    th = th or RegimeThresholds()

    def first(metric, value):
        return next((r["step"] for r in rows if (r.get(metric) or 0) >= value), None)

    t_sat, t_gen = first("train_acc", th.sat), first(test_metric, th.generalised)
    high = [r for r in rows if (r.get(test_metric) or 0) >= th.high]
    bridge_at_high = float(np.mean([r.get(bridge_metric) or 0 for r in high])) if high else None
    if t_gen is None:
        label = "no generalisation"
    elif high and bridge_at_high is not None and bridge_at_high < th.bridge_fake:
        label = "fake grokking"
    elif t_sat is not None and t_gen - t_sat >= th.delay_factor * max(t_sat, 1):
        label = "natural grokking"
    else:
        label = "no delay"
    return {"regime": label, "test_metric": test_metric, "t_sat": t_sat, "t_gen": t_gen,
            "bridge_when_high": bridge_at_high, "circuit": bool(bridge_at_high is not None and
                                                                 bridge_at_high >= th.bridge_circuit),
            "final_test": rows[-1].get(test_metric) if rows else None, "thresholds": asdict(th)}
