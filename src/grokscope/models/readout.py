"""Batched readout kernels shared by in-training evaluation and the offline analyses: the logit lens over every
readout stage and the interchange intervention that measures bridge use. They work for any ``ModelFamily``.

- Logit lens (Wang et al.; He et al. §3): decode every stage's state at every token position through the
  model's own unembedding. He et al.'s "bridge found" / "target found": b / t is the argmax at any stage and any
  position that the family's ``bridge_found_mask`` counts.
- Bridge use (interchange intervention, ``docs/methods.md``): for a query (h, r1, r2) with bridge b and answer t,
  and a donor (h', r1', r2) whose bridge b' gives the answer t' != t, replace the state at the r1 position at one
  stage with the donor's and read the answer. Bridge use at that stage = the share of queries whose answer becomes
  t'. A model that resolves b at r1 and reads the second hop from that state scores near 1; one that never routes
  the answer through the r1 state scores near 0.
"""

from __future__ import annotations

import torch

R1 = 1  # token position of r1 in a composition prompt (h, r1, r2)


@torch.no_grad()
def stage_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """[S, B, T, V] logits of every readout stage at every token position (one batch; chunk large sets)."""
    names = [hook for _, hook in model.readout_stages()]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([model.unembed(cache[n]).float() for n in names])


@torch.no_grad()
def stage_argmax(model, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[S, B, T] argmax token id of every stage and position."""
    parts = [stage_logits(model, tokens[i:i + chunk]).argmax(-1) for i in range(0, len(tokens), chunk)]
    return torch.cat(parts, dim=1)


def found_rates(model, argmax: torch.Tensor, bridge: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """He et al.'s any-stage / any-position rates plus the per-stage bridge rate, from [S, B, T] argmax tokens."""
    S, B, T = argmax.shape
    hit_b = (argmax == bridge.view(1, B, 1)) & model.bridge_found_mask(S, T).to(argmax.device).unsqueeze(1)
    hit_t = argmax == target.view(1, B, 1)
    out = {"bridge_found": hit_b.any(0).any(-1).float().mean().item(),
           "target_found": hit_t.any(0).any(-1).float().mean().item()}
    per_stage = hit_b.any(-1).float().mean(1)
    for (label, _), rate in zip(model.readout_stages(), per_stage.tolist()):
        out[f"bridge@{label}"] = rate
    return out


@torch.no_grad()
def answers(model, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[B] the answer token each composition prompt gets (argmax of ``answer_logits``)."""
    return torch.cat([model.answer_logits(tokens[i:i + chunk]).argmax(-1) for i in range(0, len(tokens), chunk)])


def donor_prompts(clean: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
    """The donor query (h', r1', r2) in the clean prompt's layout; ``donor`` [B, 3] holds (h', r1', t') ids."""
    out = clean.clone()
    out[:, 0], out[:, R1] = donor[:, 0], donor[:, 1]
    return out


@torch.no_grad()
def interchange(model, clean: torch.Tensor, donor: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[S, B] answers after replacing the r1 state at each patch stage with the donor query's (``donor_prompts``)."""
    stages = [hook for _, hook in model.patch_stages()]
    pos = model.token_offset + R1
    out = torch.empty(len(stages), len(clean), dtype=torch.long, device=clean.device)
    for i in range(0, len(clean), chunk):
        tokens = clean[i:i + chunk]
        _, cache = model.run_with_cache(donor_prompts(tokens, donor[i:i + chunk]), names_filter=stages)
        for s, name in enumerate(stages):
            state = cache[name][:, pos]

            def patch(act, hook, state=state):
                act = act.clone()
                act[:, pos] = state.to(act.dtype)
                return act

            with model.hooks([(name, patch)]):
                out[s, i:i + chunk] = model.answer_logits(tokens).argmax(-1)
    return out


def bridge_use_rates(model, patched: torch.Tensor, donor_answer: torch.Tensor) -> dict[str, float]:
    """Per-stage share of queries whose patched answer is the donor's t', and the maximum over stages."""
    per_stage = (patched == donor_answer.view(1, -1)).float().mean(1)
    out = {"bridge_use": float(per_stage.max()) if len(per_stage) else 0.0}
    for (label, _), rate in zip(model.patch_stages(), per_stage.tolist()):
        out[f"bridge_use@{label}"] = rate
    return out
