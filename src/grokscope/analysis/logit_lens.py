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
