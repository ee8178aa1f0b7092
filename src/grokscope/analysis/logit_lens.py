"""Batched logit lens for both model families (PAPER_SPEC §6.1-6.3).

A "stage" is one readout point of the residual stream:
- gpt: layer 0 = embeddings (``blocks.0.hook_resid_pre``), layer l = output of block l (``blocks.{l-1}.hook_resid_
  post``); every stage is read through ln_final and the tied unembedding (Wang §6.3; unlike He's GPT-2 lens,
  Appendix A.8, which skipped ln_final);
- trm: the 15 recursion stages with the stream the paper reads (z_H for init/commit, z_L for thinking), through the
  model's own lm_head over the 5 token positions (§6.1).

"Bridge found" / "target found" (He §6.1): the bridge b / the answer t is the argmax token at any stage and any
position. For the gpt the final layer at the r1 position is excluded from "bridge found": there the model answers
the atomic query (h, r1), whose trained target *is* b, so it is found trivially (CPU_CALIBRATION §4).
"""

from __future__ import annotations

import torch


def stage_names(model) -> list[str]:
    if model.family == "gpt":
        return [f"L{l}" for l in range(model.cfg.n_layers + 1)]
    return list(model.cfg.stage_names())


def _hook_names(model) -> list[str]:
    if model.family == "gpt":
        return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    return [f"stage.{s}" for s in model.cfg.stage_names()]


@torch.no_grad()
def stage_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """[S, B, T, V] logits of every stage at every token position (one batch; chunk large sets)."""
    names = _hook_names(model)
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([model.unembed(cache[n]).float() for n in names])


@torch.no_grad()
def stage_argmax(model, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[S, B, T] argmax token id of every stage and position."""
    parts = [stage_logits(model, tokens[i:i + chunk]).argmax(-1) for i in range(0, len(tokens), chunk)]
    return torch.cat(parts, dim=1)


def lens_inputs(model, enc) -> torch.Tensor:
    """What the model reads for a lens pass: the prompt for trm (answer slots = pad), the prompt for gpt."""
    return enc.inputs if model.family == "trm" else enc.seq[:, :3]


def bridge_mask(model, n_stages: int, n_pos: int) -> torch.Tensor:
    """[S, T] stages x positions that count for "bridge found" (all but the gpt's trivial final r1 readout)."""
    mask = torch.ones(n_stages, n_pos, dtype=torch.bool)
    if model.family == "gpt":
        mask[-1, 1] = False
    return mask


def found_rates(model, argmax: torch.Tensor, bridge: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """He's any-stage / any-position rates plus the per-stage bridge rate, from [S, B, T] argmax tokens."""
    S, B, T = argmax.shape
    hit_b = argmax == bridge.view(1, B, 1)
    hit_t = argmax == target.view(1, B, 1)
    mask = bridge_mask(model, S, T).unsqueeze(1)
    out = {"bridge_found": (hit_b & mask).any(0).any(-1).float().mean().item(),
           "target_found": hit_t.any(0).any(-1).float().mean().item()}
    per_stage = (hit_b & mask).any(-1).float().mean(1)
    for name, rate in zip(stage_names(model), per_stage.tolist()):
        out[f"bridge@{name}"] = rate
    return out


# ---------------------------------------------------------------------------------------------- tidy tables
ROLES = ("bridge", "target", "r2")


@torch.no_grad()
def rank_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top-1) of token ``ids`` [B] in ``logits`` [..., B, T, V] over the full vocabulary (Wang §6.3)."""
    idx = ids.clamp(min=0).view(*([1] * (logits.dim() - 3)), -1, 1, 1).expand(*logits.shape[:-1], 1)
    chosen = torch.gather(logits, -1, idx)
    return (logits > chosen).sum(-1)


@torch.no_grad()
def lens_ranks(model, enc, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Ranks [S, B, T] of the bridge, the target and r2 at every stage and position (batched)."""
    tokens = lens_inputs(model, enc)
    ids = {"bridge": enc.bridge, "target": enc.targets[:, 0], "r2": enc.seq[:, 2]}
    out: dict[str, list] = {role: [] for role in ROLES}
    for i in range(0, len(tokens), chunk):
        logits = stage_logits(model, tokens[i:i + chunk])
        for role in ROLES:
            out[role].append(rank_of(logits, ids[role][i:i + chunk]))
    return {role: torch.cat(parts, dim=1) for role, parts in out.items()}


def lens_table(model, enc, probe_type: str, run: str = "", step: int = 0):
    """Tidy logit-lens table: one row per (stage, position, metric) with the mean over queries.

    Metrics per role (bridge b, target t, relation r2): ``mrr_<role>`` = mean 1/(rank+1), ``top1_<role>`` = share
    of queries where the role's token is the argmax. Plus per stage (position "any"): He's ``bridge_found`` /
    ``target_found`` resolved per stage, and overall rows (stage "any")."""
    import pandas as pd

    ranks = lens_ranks(model, enc)
    names = stage_names(model)
    S, B, T = ranks["bridge"].shape
    records = []
    for role in ROLES:
        r = ranks[role].float()
        mrr, top1 = (1 / (r + 1)).mean(1), (r == 0).float().mean(1)  # [S, T]
        for s in range(S):
            for p in range(T):
                records.append((names[s], s, p, f"mrr_{role}", float(mrr[s, p])))
                records.append((names[s], s, p, f"top1_{role}", float(top1[s, p])))
    mask = bridge_mask(model, S, T).unsqueeze(1)
    hit_b = (ranks["bridge"] == 0) & mask
    hit_t = ranks["target"] == 0
    for s in range(S):
        records.append((names[s], s, -1, "bridge_found", float(hit_b[s].any(-1).float().mean())))
        records.append((names[s], s, -1, "target_found", float(hit_t[s].any(-1).float().mean())))
    records.append(("any", -1, -1, "bridge_found", float(hit_b.any(0).any(-1).float().mean())))
    records.append(("any", -1, -1, "target_found", float(hit_t.any(0).any(-1).float().mean())))
    df = pd.DataFrame.from_records(records, columns=["stage", "stage_index", "position", "metric", "value"])
    df.insert(0, "probe_type", probe_type)
    df.insert(0, "step", step)
    df.insert(0, "run", run)
    df["n"] = B
    return df


def first_bridge_stage(model, enc) -> torch.Tensor:
    """[B] index of the first stage at which b is top-1 at any counted position (-1 if never)."""
    ranks = lens_ranks(model, enc)["bridge"]
    S, B, T = ranks.shape
    hit = ((ranks == 0) & bridge_mask(model, S, T).unsqueeze(1)).any(-1)  # [S, B]
    first = hit.float().argmax(0)
    return torch.where(hit.any(0), first, torch.full_like(first, -1))
