"""Learning-rate schedule and the checkpoint schedule (dense early, log-spaced, then linear)."""

from __future__ import annotations

import math

from grokscope.training.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, base_lr: float | None = None) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (Wang et al.'s constant schedule with warm-up; the TRM
    code's cosine schedule with a minimum ratio of 1.0 is the same thing)."""
    lr = cfg.lr if base_lr is None else base_lr
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    return lr


def checkpoint_steps(max_steps: int, cfg: TrainConfig) -> set[int]:
    """Step 0; every ckpt_dense_every until ckpt_dense_until; ckpt_log_per_decade log-spaced steps until
    ckpt_linear_from; then every ckpt_every; plus the final step."""
    steps = {0, max_steps}
    steps.update(range(0, min(cfg.ckpt_dense_until, max_steps) + 1, cfg.ckpt_dense_every))
    if cfg.ckpt_log_per_decade > 0 and cfg.ckpt_dense_until < cfg.ckpt_linear_from:
        lo, hi = math.log10(max(cfg.ckpt_dense_until, 1)), math.log10(cfg.ckpt_linear_from)
        n = max(1, round((hi - lo) * cfg.ckpt_log_per_decade))
        steps.update(round(10 ** (lo + (hi - lo) * i / n)) for i in range(n + 1))
    steps.update(range(cfg.ckpt_linear_from, max_steps + 1, cfg.ckpt_every))
    return {s for s in steps if 0 <= s <= max_steps}
