"""Optimisers and weight/gradient filters: AdamW over the family's parameter groups, SignSGD for groups that ask
for it (the TRM's puzzle vector), an EMA of the weights, and the Grokfast-EMA gradient filter.

Every stateful piece exposes its state as plain tensors so checkpoints hold safetensors, never pickles, and
``to(device)`` so resumed state lands where the model is.
"""

from __future__ import annotations

import torch
from torch import nn


class SignSGD(torch.optim.Optimizer):
    """w <- w * (1 - lr * wd) - lr * sign(g): the original TRM code's optimiser for its sparse puzzle embedding.

    Under fp16 the GradScaler hands it ``found_inf`` as a device tensor (``_step_supports_amp_scaling``) instead of
    reading it with ``.item()``, a host synchronisation every step; an overflow step leaves the weights as they
    were. The gradient's positive scale does not change its sign, so the scale itself is not needed."""

    _step_supports_amp_scaling = True

    def __init__(self, params, lr: float = 1e-4, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        found_inf = getattr(self, "found_inf", None)  # set by GradScaler.step for the duration of this call
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if found_inf is None:
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(torch.sign(p.grad), alpha=-group["lr"])
                else:
                    new = p.mul(1 - group["lr"] * group["weight_decay"]).add_(torch.sign(p.grad), alpha=-group["lr"])
                    p.copy_(torch.where(found_inf > 0, p, new))


def make_optimizers(model, cfg, device: str = "cpu") -> list[torch.optim.Optimizer]:
    """AdamW over the family's decay groups, plus SignSGD for groups that name it (at the lr and decay the family
    gives them). On CUDA AdamW is fused (one kernel for every parameter); on the CPU the default implementation
    keeps resume bit-identical."""
    groups = model.param_groups(cfg.weight_decay, cfg.decay_all)
    adam = [g for g in groups if g.get("optimizer", "adamw") == "adamw"]
    sign = [g for g in groups if g.get("optimizer") == "signsgd"]
    for g in adam + sign:
        g.pop("optimizer", None)
    for g in sign:
        if "lr" not in g or "weight_decay" not in g:
            raise ValueError("a signsgd parameter group must carry its own lr and weight_decay (ModelFamily."
                             "param_groups)")
    fused = {"fused": True} if device == "cuda" else {}
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(adam, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                                           eps=cfg.eps, **fused)]
    if sign:
        opts.append(SignSGD(sign))
    return opts


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, list]:
    """Optimiser state -> (flat tensors, JSON param groups)."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{prefix}.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, sd["param_groups"]


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_tensors(opt: torch.optim.Optimizer, prefix: str, tensors: dict, groups: list) -> None:
    """The inverse of ``optimizer_tensors``; torch moves the state to each parameter's device. The saved groups' hyper-
    parameters are restored, but not how the step is implemented: a run checkpointed on the CPU (unfused) and resumed
    on CUDA keeps the fused kernel this device chose (``load_state_dict`` would otherwise put ``fused=False`` back,
    and with fp16 the GradScaler then fails on the unfused path)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    impl = {k: opt.defaults[k] for k in IMPLEMENTATION_FLAGS if k in opt.defaults}
    opt.load_state_dict({"state": state, "param_groups": [{**g, **impl} for g in groups]})


@torch.no_grad()
def clip_grad_norms(params: list[list[torch.Tensor]], max_norms: list[float]) -> None:
    """``torch.nn.utils.clip_grad_norm_(run's parameters, max_norm)`` for R >= 1 runs: one multi-tensor norm for
    every gradient of every run and one scale per run, instead of a few calls per run; no host synchronisation. Runs
    whose gradients are all of one device and dtype and equal in number (a stack, or one run) take the batched norm,
    with torch's own arithmetic, so the gradients equal torch clipping the runs one by one (bit for bit on the CPU; a
    GPU's reduction over a row of the runs' norms may sum in another order than over one run's); others (mixed
    dtypes) are clipped by torch run by run."""
    if not params:
        return
    grads = [[p.grad for p in run if p.grad is not None] for run in params]
    flat = [g for run in grads for g in run]
    counts = {len(run) for run in grads}
    if not flat or len(counts) > 1 or len({(g.device, g.dtype) for g in flat}) > 1:
        for run, max_norm in zip(params, max_norms):
            torch.nn.utils.clip_grad_norm_(run, max_norm)
        return
    norms = torch.stack(torch._foreach_norm(flat, 2.0)).view(len(grads), counts.pop())
    totals = torch.linalg.vector_norm(norms, 2.0, dim=1)  # each run's global norm, as clip_grad_norm_ takes it
    # max_norm / (total + 1e-6), written as torch evaluates a number over a tensor (reciprocal, then the product);
    # the limits stay Python numbers (a tensor of them would be a host-to-device copy, a synchronisation, per step)
    inverse = (totals + 1e-6).reciprocal()
    if len(set(max_norms)) == 1:
        coefs = torch.clamp(inverse * max_norms[0], max=1.0)
    else:
        coefs = torch.stack([torch.clamp(inverse[k] * max_norm, max=1.0) for k, max_norm in enumerate(max_norms)])
    for k, run in enumerate(grads):
        torch._foreach_mul_(run, coefs[k])


class EMA:
    """Exponential moving average of the weights, updated after every optimiser step (He et al.'s TRM recipe)."""

    @staticmethod
    @torch.no_grad()
    def update_all(pairs: list[tuple["EMA", nn.Module]]) -> None:
        """``ema.update(model)`` for R >= 1 runs: one multi-tensor lerp per decay value for all of them."""
        by_decay: dict[float, tuple[list, list]] = {}
        for ema, model in pairs:
            weights = model.state_dict()
            shadows, values = by_decay.setdefault(ema.decay, ([], []))
            shadows.extend(ema.shadow.values())
            values.extend(weights[k].float() for k in ema.shadow)
        for decay, (shadows, values) in by_decay.items():
            torch._foreach_lerp_(shadows, values, 1 - decay)

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    def update(self, model: nn.Module) -> None:
        """One multi-tensor kernel for every weight (a launch-bound small model paid one per tensor)."""
        EMA.update_all([(self, model)])

    def load(self, weights: dict, device) -> None:
        self.shadow = {k: weights[k].float().to(device).clone() for k in self.shadow}

    def state_dict_for(self, model: nn.Module) -> dict:
        """A state dict of ``model`` with the EMA values in place of the floating-point tensors."""
        return {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v) for k, v in model.state_dict().items()}


class Grokfast:
    """Grokfast-EMA (Lee et al. 2024): between backward and step, ema = a * ema + (1 - a) * g; g += lambda * ema.

    A guarded run (one with a GradScaler) whose gradients are not all finite (an fp16 overflow the scaler will skip)
    leaves its average untouched, so one overflow cannot write inf into it for good."""

    def __init__(self, alpha: float, lamb: float):
        self.alpha, self.lamb = alpha, lamb
        self.ema: dict[str, torch.Tensor] = {}

    def apply(self, model: nn.Module, guard: bool = True) -> torch.Tensor:
        """Filter one model's gradients in place (``Grokfast.filter`` for one run); returns whether they were
        finite (a 0-d bool tensor, on the device)."""
        finite = Grokfast.filter([(self, model, guard)])[0]
        return finite if finite is not None else torch.ones((), dtype=torch.bool)

    @staticmethod
    def _gradients(model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    @staticmethod
    @torch.no_grad()
    def filter(entries: list[tuple["Grokfast", nn.Module, bool]]) -> list[torch.Tensor | None]:
        """Filter the gradients of R >= 1 runs in place, ``(filter, model, guarded)`` each: three multi-tensor calls
        per (alpha, lambda) for all of them; a run's first step starts its average at its gradients.

        A guarded run (one with a GradScaler) gets its 0-d finite flag back, on the device (no host
        synchronisation); when it is False the run's average and gradients were left as they were (the scaler skips
        that step). An unguarded run gets None: its non-finite loss stops the run anyway."""
        calls: dict[tuple[float, float], list] = {}
        flags: list[torch.Tensor | None] = []
        for filt, model, guarded in entries:
            grads = Grokfast._gradients(model)
            finite = None
            if guarded:
                finite = torch.stack([torch.isfinite(g).all() for g in grads.values()]).all() if grads else \
                    torch.ones((), dtype=torch.bool)
            flags.append(finite)
            if grads:
                calls.setdefault((filt.alpha, filt.lamb), []).append((filt, grads, finite))
        for (alpha, lamb), members in calls.items():
            old = [filt.ema.get(n) for filt, grads, _ in members for n in grads]
            values = [g for _, grads, _ in members for g in grads.values()]
            started = [k for k, o in enumerate(old) if o is not None]
            new = [o if o is not None else g.detach().clone() for o, g in zip(old, values)]  # a first step
            if started:
                averaged = torch._foreach_mul([old[k] for k in started], alpha)
                torch._foreach_add_(averaged, [values[k] for k in started], alpha=1 - alpha)
                for k, a in zip(started, averaged):
                    new[k] = a
            added, k = [], 0
            for filt, grads, finite in members:
                for name in grads:
                    if finite is not None:  # guarded: an overflow step keeps the old average and adds nothing
                        new[k] = torch.where(finite, new[k], old[k] if old[k] is not None else torch.zeros_like(new[k]))
                        added.append(torch.where(finite, new[k], torch.zeros_like(new[k])))
                    else:
                        added.append(new[k])
                    filt.ema[name] = new[k]
                    k += 1
            torch._foreach_add_(values, added, alpha=lamb)
        return flags

    def load(self, tensors: dict, device) -> None:
        self.ema = {k: v.to(device) for k, v in tensors.items()}
