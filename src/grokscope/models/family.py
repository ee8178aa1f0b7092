"""The model-family interface: everything the trainer, evaluation and the analyses may ask of a model.

A family is a model class deriving from ``ModelFamily`` plus its config dataclass and named configs, registered in
``models/registry.py``. Generic code calls only the methods below and never asks which family it holds, so adding
a family means writing one module in ``models/`` and registering it (``tests/test_family_interface.py`` registers
a toy third family and runs training, evaluation, the lens, causal tracing and bridge use on it).

Shapes: B = batch, T = token positions a readout covers, S = readout stages, V = vocabulary.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from grokscope.metrics.milestones import GrokDefinition
from grokscope.models.hooks import HookedModule

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class LossSpec:
    """How a family's training loss is computed (the train config's loss settings; a family's own auxiliary loss,
    such as the trm's q-halt BCE, is weighted in its model config)."""

    kind: str = "ce"  # ce | stablemax
    positions: str = "default"  # default (the family's paper recipe) | answer (t only) | answer_end (t and </a>) | all


class ModelFamily(HookedModule):
    """Base class of every model family. Subclasses set ``family`` and implement the abstract methods."""

    family: ClassVar[str] = ""
    # The bridge measure the findings read for this family: "bridge_use" (the interchange intervention at r1) or
    # "bridge_found" (He et al.'s logit-lens rate). Both are always computed and reported.
    bridge_metric: ClassVar[str] = "bridge_use"
    # What "grokked" means for this family (docs/methods.md): the findings, the milestones, the 'grokked' checkpoint
    # and the regime labels read it (through the run's summary.json). The gpt: ID test >= 0.9 (Wang et al. §3).
    grokked: ClassVar[GrokDefinition] = GrokDefinition()
    loss_positions: ClassVar[tuple[str, ...]] = ("default", "answer", "answer_end")
    token_offset: int = 0  # index of token position 0 inside hook activations (a prefix shifts it)
    # True for a family that carries its states across updates and re-injects the clean input at each (the trm): a
    # bridge-use patch at one stage then also replaces the position's state at every later stage (models/readout.py).
    carried_patch: ClassVar[bool] = False

    # ------------------------------------------------------------------------------------------------ training
    def forward_batch(self, batch) -> Any:
        """The forward pass of a training/evaluation batch (an ``Encoded``); the output feeds loss and exact_match."""
        raise NotImplementedError

    def loss(self, batch, output, spec: LossSpec) -> torch.Tensor:
        """Scalar training loss of ``output`` = forward_batch(batch)."""
        raise NotImplementedError

    def exact_match(self, batch, output, end_id: int, positions: str = "default") -> torch.Tensor:
        """[B] bool: the answer exactly right, as the authors' evaluation scores it for ``default``. A run trained
        with other ``loss_positions`` is scored on the tokens it was trained to produce: ``answer`` t alone,
        ``answer_end`` t and ``</a>`` (a model never taught ``</a>`` would otherwise score 0 whatever it knows)."""
        raise NotImplementedError

    def param_groups(self, weight_decay: float, decay_all: bool) -> list[dict]:
        """Optimiser groups: weight decay on >= 2-D weights (all weights with ``decay_all``). A group may name
        ``"optimizer": "signsgd"`` to be trained by SignSGD instead of AdamW (with its own ``lr`` and
        ``weight_decay``)."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if decay_all or p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def flops_per_step(self, batch_size: int) -> float:
        """Matmul FLOPs of one optimiser step (forward + backward, the usual 3x-forward estimate)."""
        raise NotImplementedError

    def autocast(self, precision: str, device: str):
        """The autocast context of the forward pass for ``precision`` (fp32 | bf16 | fp16)."""
        if precision not in AUTOCAST_DTYPES:
            return nullcontext()
        return torch.autocast(device_type="cpu" if device == "mps" else device, dtype=AUTOCAST_DTYPES[precision])

    # ------------------------------------------------------------------------------------------------ analyses
    def prompt(self, batch) -> torch.Tensor:
        """[B, T] the tokens the analyses feed for compositions; token positions 0, 1, 2 are h, r1, r2."""
        raise NotImplementedError

    def readout_stages(self) -> list[tuple[str, str]]:
        """(label, hook name) of every residual state the logit lens reads, in depth order."""
        raise NotImplementedError

    def patch_stages(self) -> list[tuple[str, str]]:
        """The states worth patching (causal tracing, bridge use): by default every readout stage."""
        return self.readout_stages()

    def unembed(self, state: torch.Tensor) -> torch.Tensor:
        """A hooked state [B, P, D] -> logits [B, T, V] at the token positions."""
        raise NotImplementedError

    def answer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, V] logits of the answer t for composition prompts ``tokens`` (as ``prompt`` builds them)."""
        raise NotImplementedError

    def bridge_found_mask(self, n_stages: int, n_positions: int) -> torch.Tensor:
        """[S, T] the (stage, position) readouts at which decoding b counts as He et al.'s "bridge found"."""
        return torch.ones(n_stages, n_positions, dtype=torch.bool)

    def for_vmap(self) -> "ModelFamily":
        """Prepare the model to run under ``torch.func.vmap`` (stacked runs): swap kernels that have no batching rule
        for ones that do. Changes the model in place and returns it; callers pass a copy (the stacking code builds
        its functional model from one). The default changes nothing."""
        return self

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

