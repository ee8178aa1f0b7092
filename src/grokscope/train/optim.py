"""Optimisers and gradient/weight filters: AdamW with explicit decay groups, SignSGD for the TRM puzzle vector,
an EMA of the weights, and the Grokfast-EMA gradient filter. Every stateful piece exposes ``state_tensors()`` /
``load_state_tensors()`` so checkpoints hold plain tensors (safetensors), never pickles."""

from __future__ import annotations

import torch
from torch import nn

from grokscope.train.config import TrainConfig


def decay_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """GPT (§4.1): decay >= 2-D weights (embeddings included), not biases / LayerNorm. TRM (§4.2): decay all.
    The TRM puzzle vector is excluded here; SignSGD trains it."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name == "puzzle_emb":
            continue
        (decay if cfg.decay_all or p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class SignSGD(torch.optim.Optimizer):
    """w <- w·(1 - lr·wd) - lr·sign(g): the original's sparse puzzle-embedding optimiser (§4.2)."""

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(torch.sign(p.grad), alpha=-group["lr"])


def make_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(
        decay_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)]
    if getattr(model, "puzzle_emb", None) is not None:
        opts.append(SignSGD([model.puzzle_emb], lr=cfg.puzzle_lr, weight_decay=cfg.puzzle_weight_decay))
    return opts


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, list]:
    """Optimizer state -> (flat tensors, JSON param groups)."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{idx}.{key}"] = t
    return tensors, sd["param_groups"]


def load_optimizer_tensors(opt: torch.optim.Optimizer, prefix: str, tensors: dict, groups: list) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


class EMA:
    """Exponential moving average of the weights, updated after every optimiser step (§4.2)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.float(), 1 - self.decay)

    def state_dict_for(self, model: nn.Module) -> dict:
        """A state dict of ``model`` with the EMA values in place of the floating-point tensors."""
        return {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v) for k, v in model.state_dict().items()}


class Grokfast:
    """Grokfast-EMA (Lee et al. 2024): between backward and step, ema = a·ema + (1-a)·g; g += lambda·ema."""

    def __init__(self, alpha: float, lamb: float):
        self.alpha, self.lamb = alpha, lamb
        self.ema: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            if name not in self.ema:
                self.ema[name] = p.grad.detach().clone()
            else:
                self.ema[name].mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
            p.grad.add_(self.ema[name], alpha=self.lamb)
