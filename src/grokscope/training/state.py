"""``TrainState``: everything a checkpoint holds, and how it saves and restores itself.

A checkpoint holds the weights evaluation uses (EMA weights when EMA is on), the raw weights, the optimiser states,
the Grokfast average, the GradScaler, the RNG states, the data position and every loop counter, so a resumed run
continues bit-identically on the CPU. Restored tensors are moved to the model's device.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from grokscope import runs
from grokscope.errors import GrokscopeError
from grokscope.training.batches import BatchOrder
from grokscope.training.optim import EMA, Grokfast, load_optimizer_tensors, make_optimizers, optimizer_tensors


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue bit-identically."""

    step: int = 0
    wall_seconds: float = 0.0  # training + evaluation time before this process started
    loss_sum: float = 0.0  # train loss accumulated since the last evaluation
    loss_count: int = 0
    loss_skipped: int = 0  # fp16 steps the GradScaler skipped since the last evaluation (left out of loss_count)
    rule_streak: int = 0  # consecutive evaluations meeting stop_when
    stop_at: int | None = None  # step at which the stop rule ends the run
    stop_reason: str = ""
    cut_short: bool = False  # stopped by the wall-clock safety net, not by its step budget
    data: dict = field(default_factory=dict)


class TrainState:
    def __init__(self, model, cfg, n_train: int, device: str):
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizers = make_optimizers(model, cfg, device)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.eval_model = copy.deepcopy(model) if self.ema is not None else model
        self.grokfast = Grokfast(cfg.grokfast_alpha, cfg.grokfast_lambda) if cfg.grokfast_lambda > 0 else None
        self.scaler = torch.amp.GradScaler("cuda") if (cfg.precision == "fp16" and device == "cuda") else None
        self.order = BatchOrder(n_train, cfg.batch_size, cfg.seed, cfg.drop_last, device=device)
        self.loop = LoopState()
        # The train loss accumulates on the device and is folded into ``loop`` only at evaluations and checkpoints
        # (no per-step sync); ``add_loss`` is the one place it is added, ``_fold_loss`` the one place it is merged.
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)  # fp16 steps the GradScaler skipped
        self.rng: tuple | None = None  # the RNG stream this run continues with (stacked runs each keep their own)

    # ------------------------------------------------------------------------------------------------ the RNG
    def capture_rng(self) -> tuple:
        """The process's RNG states now: CPU, and CUDA on a GPU run only (a CPU run never touches CUDA, which would
        create a CUDA context and take GPU memory on a GPU machine)."""
        return torch.get_rng_state(), (torch.cuda.get_rng_state() if self.device == "cuda" else None)

    def use_rng(self) -> None:
        """Make this run's stream the process's (before a step or a boundary of a stacked run)."""
        torch.set_rng_state(self.rng[0])
        if self.rng[1] is not None:
            torch.cuda.set_rng_state(self.rng[1])

    def keep_rng(self) -> None:
        """Remember where this run's stream stands (after a step or a boundary of a stacked run)."""
        self.rng = self.capture_rng()

    @contextlib.contextmanager
    def rng_scope(self, shared: bool = True):
        """Run with this run's own RNG stream (checkpoints save it; dropout draws from it), then keep where it
        stands: how runs that share a process each keep their own stream. A run alone in its process (``shared``
        False) owns the process's stream, and nothing is switched."""
        if not shared:
            yield
            return
        self.use_rng()
        try:
            yield
        finally:
            self.keep_rng()

    # ------------------------------------------------------------------------------------------------ the loss
    def add_loss(self, loss: torch.Tensor) -> None:
        """Count one optimiser step's loss (on the device: no sync). An fp16 overflow the GradScaler skipped is not a
        divergence: its loss stays out of the mean."""
        value = loss.detach().double()
        if self.scaler is not None:
            finite = torch.isfinite(value)
            self.skipped += (~finite).long()
            value = torch.where(finite, value, torch.zeros_like(value))
        self.loss_sum += value
        self.loop.loss_count += 1

    def _fold_loss(self) -> None:
        """Move the device's loss sum and skipped-step count into ``loop`` (one sync)."""
        skipped = int(self.skipped)
        if skipped:
            self.loop.loss_skipped += skipped
            self.loop.loss_count -= skipped
            self.skipped.zero_()
        self.loop.loss_sum += float(self.loss_sum)
        self.loss_sum.zero_()

    # ------------------------------------------------------------------------------------------------ reading
    def eval_weights(self) -> dict:
        return self.ema.state_dict_for(self.model) if self.ema is not None else self.model.state_dict()

    def evaluation_model(self):
        """The model evaluation runs: the EMA weights loaded into a copy when EMA is on."""
        if self.ema is not None:
            self.eval_model.load_state_dict(self.eval_weights())
        return self.eval_model

    def take_train_loss(self) -> float | None:
        """Mean train loss since the last call (None before any step); raises if it is not finite."""
        self._fold_loss()
        total, count = self.loop.loss_sum, self.loop.loss_count
        if (count and not math.isfinite(total)) or (not count and self.loop.loss_skipped):
            raise NonFiniteLoss(total if count else math.inf)  # every step since the last evaluation overflowed
        self.loop.loss_sum, self.loop.loss_count, self.loop.loss_skipped = 0.0, 0, 0
        return total / count if count else None

    def check_finite(self) -> None:
        """Refuse to checkpoint weights trained on a non-finite loss."""
        self._fold_loss()
        if not math.isfinite(self.loop.loss_sum):
            raise NonFiniteLoss(self.loop.loss_sum)

    # ------------------------------------------------------------------------------------------------ persistence
    def save(self, run: Path, step: int, max_steps: int) -> None:
        self.check_finite()
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        groups = {}
        for i, opt in enumerate(self.optimizers):
            t, groups[str(i)] = optimizer_tensors(opt, f"optim{i}")
            tensors.update(t)
        if self.grokfast is not None:
            tensors.update({f"grokfast.{k}": v for k, v in self.grokfast.ema.items()})
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        self.loop.data = self.order.state()
        meta = {"loop": asdict(self.loop), "param_groups": groups, "max_steps": max_steps,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        runs.save_checkpoint(run, step, self.eval_weights(), tensors, meta)

    def restore(self, run: Path, warn=print) -> int:
        """Load the last readable checkpoint of ``run`` (falling back past damaged ones); returns its step."""
        for step in reversed(runs.list_checkpoints(run)):
            try:
                weights, tensors, meta = runs.load_checkpoint(run, step)
                break
            except runs.CorruptCheckpoint as exc:
                warn(f"warning: {exc}; falling back to the previous checkpoint")
        else:
            raise GrokscopeError(f"{run}: has no readable checkpoint to resume from; start a new run")
        model_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(model_tensors, strict=True)
            for i, opt in enumerate(self.optimizers):
                load_optimizer_tensors(opt, f"optim{i}", tensors, meta["param_groups"][str(i)])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GrokscopeError(f"{runs.step_dir(run, step)}: cannot be loaded into this model ({first}); resume "
                                 f"with the run's original model settings") from None
        if self.ema is not None:
            self.ema.load(weights, self.device)
        if self.grokfast is not None:
            self.grokfast.load({k[9:]: v for k, v in tensors.items() if k.startswith("grokfast.")}, self.device)
        torch.set_rng_state(tensors["rng.cpu"])
        if self.device == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.loop = LoopState(**meta["loop"])
        self.order = BatchOrder(self.order.n, self.cfg.batch_size, self.cfg.seed, self.cfg.drop_last,
                                device=self.device, **self.loop.data)
        return step


class NonFiniteLoss(Exception):
    def __init__(self, value: float):
        super().__init__(f"training loss became {value}")
        self.value = value
