"""Batched readout kernels shared by in-training evaluation and the offline analyses: the logit lens over every
readout stage and the interchange intervention that measures bridge use. They work for any ``ModelFamily``.

- Logit lens (Wang et al.; He et al. §3): decode every stage's state at every token position through the
  model's own unembedding. He et al.'s "bridge found" / "target found": b / t is the argmax at any stage and any
  position that the family's ``bridge_found_mask`` counts.
- Bridge use (interchange intervention, ``docs/methods.md``): move the state at the r1 position at one stage from a
  source prompt into a target prompt and read the target's answer. Forward (ID queries): the source is a donor
  (h', r1', r2) whose bridge b' gives t' != t, the target the query; reverse (OOD or new hops): the source is the
  query, the target a recipient (h*, r1*, r2*) for which (b, r2*) -> t*. Bridge use at that stage = the share of
  patched runs that answer t' (t*). A model that resolves b at r1 and reads the second hop from that state scores
  near 1; one that never routes the answer through the r1 state, or whose r1 state carries only the identity of
  (h, r1), scores near 0.
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


def replace_at(pos: int | list[int], states: dict[str, torch.Tensor]):
    """A hook that replaces the state at token position ``pos`` (or positions) with the one ``states`` (another run's
    cache, keyed by hook name) holds there: the one patching step of bridge use and causal tracing."""
    def patch(act, hook):
        act = act.clone()
        act[:, pos] = states[hook.name][:, pos].to(act.dtype)
        return act

    return patch


def patched_stages(model, stages: list[str], s: int) -> list[str]:
    """The hook names a patch "at stage s" replaces: that stage alone, or, for a family whose state is carried and
    re-injected (``model.carried_patch``, the trm), that stage and every later one (a single patch would be
    overwritten by the next update, which recomputes the position from the clean input)."""
    return stages[s:] if getattr(model, "carried_patch", False) else stages[s:s + 1]


@torch.no_grad()
def interchange(model, source: torch.Tensor, target: torch.Tensor, position: int = R1, chunk: int = 1024
                ) -> torch.Tensor:
    """[S, B] answers of the ``target`` prompts after the state at ``position`` at each patch stage is replaced by
    the ``source`` prompt's state there (both in the model's prompt layout).

    A family whose state is carried and re-injected (``model.carried_patch``, the trm) has the position's state
    replaced at that stage *and every later one*: a single patch would be overwritten by the next update, which
    recomputes the position from the clean input."""
    stages = [hook for _, hook in model.patch_stages()]
    pos = model.token_offset + position
    out = torch.empty(len(stages), len(target), dtype=torch.long, device=target.device)
    for i in range(0, len(target), chunk):
        tokens = target[i:i + chunk]
        _, cache = model.run_with_cache(source[i:i + chunk], names_filter=stages)
        patch = replace_at(pos, cache)
        for s in range(len(stages)):
            with model.hooks([(name, patch) for name in patched_stages(model, stages, s)]):
                out[s, i:i + chunk] = model.answer_logits(tokens).argmax(-1)
    return out


def bridge_use_rates(model, patched: torch.Tensor, expect: torch.Tensor) -> dict[str, float]:
    """Per-stage share of patched runs whose answer is the expected one (t' forward, t* reverse), and the maximum
    over stages."""
    per_stage = (patched == expect.view(1, -1)).float().mean(1)
    out = {"bridge_use": float(per_stage.max()) if len(per_stage) else 0.0}
    for (label, _), rate in zip(model.patch_stages(), per_stage.tolist()):
        out[f"bridge_use@{label}"] = rate
    return out
