"""Training FLOPs per step from a model config dict (analytic; no model is built): the one estimate the report and
the benchmarks share."""

from __future__ import annotations

from grokscope.models.trm import swiglu_width


def flops_per_step(family: str, model: dict, batch: int) -> float:
    """Matmul FLOPs of one optimiser step (forward + backward), the usual 3x-forward estimate."""
    if family == "gpt":
        T, d, L = model["n_ctx"], model["d_model"], model["n_layers"]
        mlp = model.get("d_mlp") or 4 * d
        per_token = 2 * L * (4 * d * d + 2 * d * mlp)
        attn = 2 * L * 2 * T * T * d
        head = 2 * 2 * d * model["d_vocab"]  # logits at the two supervised positions
        return 3 * batch * (T * per_token + attn + head)
    P, D = model["puzzle_emb_len"] + model["seq_len"], model["d_model"]
    per_block = 2 * (P * D * 3 * swiglu_width(D, model["expansion"]) + D * P * 3 * swiglu_width(P, model["expansion"]))
    per_level = model["n_layers"] * per_block
    levels, grad_levels = model["H_cycles"] * (model["L_cycles"] + 1), model["L_cycles"] + 1
    head = 2 * model["seq_len"] * D * model["d_vocab"]
    return batch * ((levels - grad_levels) * per_level + 3 * (grad_levels * per_level + head))
