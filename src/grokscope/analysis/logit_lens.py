"""The logit lens as tidy tables (Wang et al.; He et al. §3), for any model family.

A stage is one readout point (``ModelFamily.readout_stages``): for the gpt the embeddings and every block output,
read through ln_final and the tied unembedding; for the trm every recursion stage on the stream the paper reads (15 in
the paper's configuration).
Per stage and position: the rank (over the full vocabulary, as Wang et al. rank) of the bridge b, the answer t and r2,
as MRR and top-1 share. ``b_decodable_at_r1`` is Wang et al.'s per-layer decodability of b at the r1 position: a
descriptive measure (for a decoder the r1 position answers the atomic query (h, r1), whose answer is b), not a
test of composition; bridge use (``models/readout.py``, recorded per query by ``queries.py``) is the causal measure.
"""

from __future__ import annotations

import pandas as pd
import torch

from grokscope.metrics.records import TIDY_COLUMNS
from grokscope.models.readout import R1, stage_logits

ROLES = ("bridge", "target", "r2")


@torch.no_grad()
def rank_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top-1) of token ``ids`` [B] in ``logits`` [..., B, T, V]: the number of strictly larger logits."""
    idx = ids.clamp(min=0).view(*([1] * (logits.dim() - 3)), -1, 1, 1).expand(*logits.shape[:-1], 1)
    chosen = torch.gather(logits, -1, idx)
    return (logits > chosen).sum(-1)


@torch.no_grad()
def lens_ranks(model, enc, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Ranks [S, B, T] of the bridge, the answer and r2 at every stage and position, batched."""
    tokens = model.prompt(enc)
    ids = {"bridge": enc.bridge, "target": enc.answer, "r2": enc.seq[:, 2]}
    out: dict[str, list] = {role: [] for role in ROLES}
    for i in range(0, len(tokens), chunk):
        logits = stage_logits(model, tokens[i:i + chunk])
        for role in ROLES:
            out[role].append(rank_of(logits, ids[role][i:i + chunk].to(logits.device)))
    return {role: torch.cat(parts, dim=1).cpu() for role, parts in out.items()}


def lens_table(model, enc, probe_type: str, run: str = "", step: int = 0) -> pd.DataFrame:
    """One row per (stage, position, metric), averaged over the queries.

    Per role (b, t, r2): ``mrr_<role>`` = mean 1/(rank+1) and ``top1_<role>`` = share of queries where the role's
    token is the argmax. Per stage (position -1): ``bridge_found`` / ``target_found`` (He et al., over the positions
    the family counts) and ``b_decodable_at_r1`` (top-1 share of b at r1); stage "any": the any-stage rates."""
    ranks = lens_ranks(model, enc)
    names = [label for label, _ in model.readout_stages()]
    S, B, T = ranks["bridge"].shape
    records = []
    for role in ROLES:
        r = ranks[role].float()
        mrr, top1 = (1 / (r + 1)).mean(1), (r == 0).float().mean(1)  # [S, T]
        for s in range(S):
            for p in range(T):
                records.append((names[s], s, p, f"mrr_{role}", float(mrr[s, p])))
                records.append((names[s], s, p, f"top1_{role}", float(top1[s, p])))
    hit_b = (ranks["bridge"] == 0) & model.bridge_found_mask(S, T).unsqueeze(1)
    hit_t = ranks["target"] == 0
    for s in range(S):
        records.append((names[s], s, -1, "bridge_found", float(hit_b[s].any(-1).float().mean())))
        records.append((names[s], s, -1, "target_found", float(hit_t[s].any(-1).float().mean())))
        records.append((names[s], s, -1, "b_decodable_at_r1", float((ranks["bridge"][s, :, R1] == 0).float().mean())))
    records.append(("any", -1, -1, "bridge_found", float(hit_b.any(0).any(-1).float().mean())))
    records.append(("any", -1, -1, "target_found", float(hit_t.any(0).any(-1).float().mean())))
    df = pd.DataFrame.from_records(records, columns=["stage", "stage_index", "position", "metric", "value"])
    df.insert(0, "probe_type", probe_type)
    df.insert(0, "step", step)
    df.insert(0, "run", run)
    df["n"] = B
    return df[TIDY_COLUMNS]
