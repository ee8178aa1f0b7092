"""The one training step, for a stack of R >= 1 runs (a single run is a stack of one).

``train_step`` sets each run's learning rates, has the stack's pass compute every run's loss and gradients, then
takes every run's gradient filters, optimiser step and EMA, each as one implementation for all R runs. Two passes:

- ``LoopPass``: each run's forward and backward in turn, each with its own RNG stream: a run in a stack of R trains
  bit for bit as it would alone. The CPU default, since on a CPU one bigger matmul is no faster than several small
  ones.
- ``VmapPass``: one forward and backward for all runs over their weights stacked along a new leading dimension
  (``torch.func.functional_call`` under ``torch.func.vmap``): one kernel launch per operation for all runs instead
  of one per run, which is what a launch-bound small model needs on a GPU (the CUDA default). The result equals
  training alone up to floating-point reassociation (a batched matmul may sum in another order), not bitwise.

Either pass is compiled where ``compiles`` says (on CUDA by default; on a CPU for a long trm run).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import torch
from torch.func import functional_call, vmap

from grokscope import runtime
from grokscope.data.encoding import Encoded
from grokscope.models.registry import family_of
from grokscope.training.config import CPU_COMPILE_FROM_STEPS, TrainConfig
from grokscope.training.optim import EMA, Grokfast, clip_grad_norms
from grokscope.training.schedule import lr_at
from grokscope.training.state import TrainState


def train_step(states: list[TrainState], batches: list[Encoded], forward_backward) -> None:
    """One optimiser step for each run (``states[k]`` on ``batches[k]``): learning rates at the run's own step,
    forward, loss and backward (``forward_backward``: a ``LoopPass`` or ``VmapPass``, with a GradScaler's scale), then
    unscale, Grokfast, clipping, the optimisers, EMA and the loss accumulator."""
    for state in states:
        for opt, lrs in zip(state.optimizers, state.base_lrs):
            for group, base in zip(opt.param_groups, lrs):
                group["lr"] = lr_at(state.loop.step, state.cfg, base)
    losses = forward_backward(states, batches)
    for state in states:
        for opt in state.optimizers if state.scaler is not None else ():
            state.scaler.unscale_(opt)
    Grokfast.filter([(s.grokfast, s.model, s.scaler is not None) for s in states if s.grokfast is not None])
    clipped = [s for s in states if s.cfg.grad_clip > 0]
    clip_grad_norms([list(s.model.parameters()) for s in clipped], [s.cfg.grad_clip for s in clipped])
    for state in states:
        for opt in state.optimizers:
            state.scaler.step(opt) if state.scaler is not None else opt.step()
            opt.zero_grad(set_to_none=True)
        if state.scaler is not None:
            state.scaler.update()
    EMA.update_all([(s.ema, s.model) for s in states if s.ema is not None])
    for state, loss in zip(states, losses):
        state.add_loss(loss)


def compiles(cfg: TrainConfig, device: str, family: str, max_steps: int) -> bool:
    """Whether the forward + loss is compiled: as ``train.compile`` says; unset, on CUDA, and on a CPU for a family
    whose measured gain pays for its cold compile within the run's budget (``CPU_COMPILE_FROM_STEPS``) when a C++
    compiler is there for inductor."""
    if cfg.compile is not None:
        return cfg.compile
    if device == "cuda":
        return True
    return device == "cpu" and max_steps >= CPU_COMPILE_FROM_STEPS.get(family, math.inf) and \
        runtime.cpu_compiler_available()


class LoopPass:
    """Each run's forward, loss and backward in turn, with its own RNG stream; returns the losses."""

    def __init__(self, states: list[TrainState], max_steps: int):
        self.shared = len(states) > 1
        self.loss_of = {id(s): self._forward_loss(s, max_steps) for s in states}

    @staticmethod
    def _forward_loss(state: TrainState, max_steps: int):
        model, cfg, spec = state.model, state.cfg, state.cfg.loss_spec()

        def forward_loss(batch):
            with model.autocast(cfg.precision, state.device):
                return model.loss(batch, model.forward_batch(batch), spec)

        if compiles(cfg, state.device, family_of(model.cfg).name, max_steps):
            # Static shapes: the epoch's last, shorter batch gets its own graph instead of turning every later full
            # batch into a dynamic-shape graph.
            forward_loss = torch.compile(forward_loss, dynamic=False)
        return forward_loss

    def __call__(self, states: list[TrainState], batches: list[Encoded]) -> list[torch.Tensor]:
        losses = []
        for state, batch in zip(states, batches):
            with state.rng_scope(self.shared):
                loss = self.loss_of[id(state)](batch)
                (state.scaler.scale(loss) if state.scaler is not None else loss).backward()
            losses.append(loss)
        return losses


class _LossOf(torch.nn.Module):
    """A module whose forward is a family's training loss, so ``functional_call`` can swap in any run's weights."""

    def __init__(self, model, precision: str, device: str, spec):
        super().__init__()
        self.model, self.precision, self.device, self.spec = model, precision, device, spec

    def forward(self, *tensors):
        batch = Encoded(*tensors)
        with self.model.autocast(self.precision, self.device):
            return self.model.loss(batch, self.model.forward_batch(batch), self.spec)


class VmapPass:
    """One batched forward and backward over the runs' stacked weights; returns the losses.

    Each run's parameters are views into one stacked tensor per parameter name (``param.data = stacked[k]``), so the
    runs' own optimisers update the stack in place and evaluation, checkpoints and EMA see every run's weights as
    usual. A step at which the runs' batches differ in size (an epoch ends sooner for a smaller training set) is
    taken run by run (the ``LoopPass``), and so is the last run left.

    Compiled, a graph is specialised to the stack's size (vmap fixes it), so a run that stops keeps its slot,
    computed and left unused, until half the slots are idle: then the stack is rebuilt from the active runs. A stack
    of R runs compiles for at most log2(R) sizes (two graphs each with the epoch's last, shorter batch), plus the
    single-run graph of the last run left, and computes at most twice what its active runs need. Eager, the stack is
    rebuilt whenever a run stops."""

    def __init__(self, states: list[TrainState], max_steps: int):
        self.one_by_one = LoopPass(states, max_steps)
        first = states[0]
        self.loss_module = _LossOf(copy.deepcopy(first.model).for_vmap(), first.cfg.precision, first.device,
                                   first.cfg.loss_spec())
        self.names = [n for n, _ in first.model.named_parameters()]
        self.buffer_names = [n for n, _ in first.model.named_buffers()]
        self.slots: list[TrainState] = []  # the runs the stack holds, in order: active ones and idle ones
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        fields = len(dataclasses.fields(Encoded))
        self.batched = vmap(self._loss, in_dims=(0, 0, *([0] * fields)))
        self.compiled = compiles(first.cfg, first.device, family_of(first.model.cfg).name, max_steps)
        if self.compiled:
            # Static shapes, as for one run: the epoch's last, shorter batch gets a graph of its own.
            self.batched = torch.compile(self.batched, dynamic=False)
        # the graphs a stack may need (``_keeps_stack``), over dynamo's default limit of 8 per function for 16 runs
        # (``cache_size_limit``: the name every torch since 2.4 knows; 2.7 renamed it recompile_limit)
        self.graph_limit = max(8, 2 * (len(states).bit_length() + 1))
        self._picked: tuple[tuple, list[int], torch.Tensor | None] = ((), [], None)

    def _loss(self, params, buffers, *tensors):
        return functional_call(self.loss_module, ({f"model.{k}": v for k, v in params.items()},
                                                  {f"model.{k}": v for k, v in buffers.items()}), tensors)

    def _keeps_stack(self, active: list[TrainState]) -> bool:
        """Whether ``active`` can step in the current stack: all of them hold a slot and, compiled, at least half
        the slots are active (a new stack size is a new graph)."""
        held = {id(s) for s in self.slots}
        if not self.slots or any(id(s) not in held for s in active):
            return False
        if self.compiled:
            return 2 * len(active) > len(self.slots)
        return len(active) == len(self.slots)

    def _active_slots(self, active: list[TrainState]) -> tuple[list[int], torch.Tensor | None]:
        """The slots of ``active``, and an index tensor that picks their losses (None: every slot is active); kept
        while the active runs stay the same (no host-to-device copy per step)."""
        key = tuple(id(s) for s in active)
        if self._picked[0] != key:
            index = {id(s): k for k, s in enumerate(self.slots)}
            slots = [index[id(s)] for s in active]
            pick = None if len(slots) == len(self.slots) else torch.tensor(slots, device=active[0].device)
            self._picked = (key, slots, pick)
        return self._picked[1], self._picked[2]

    def _restack(self, active: list[TrainState]) -> None:
        self.slots = list(active)
        self._picked = ((), [], None)
        params = [dict(s.model.named_parameters()) for s in active]
        for name in self.names:
            stacked = torch.stack([p[name].detach() for p in params])
            for k, p in enumerate(params):
                p[name].data = stacked[k]  # the run's parameter now lives in the stack
            self.params[name] = stacked
        buffers = [dict(s.model.named_buffers()) for s in active]
        self.buffers = {name: torch.stack([b[name] for b in buffers]) for name in self.buffer_names}

    def __call__(self, states: list[TrainState], batches: list[Encoded]) -> list[torch.Tensor] | torch.Tensor:
        if len(states) == 1 or len({len(b) for b in batches}) > 1:
            return self.one_by_one(states, batches)
        if not self._keeps_stack(states):
            self._restack(states)
        own = {id(s): b for s, b in zip(states, batches)}
        # an idle slot computes on an active run's batch; its loss is left out, so its gradient is zero and unused
        slot_batches = [own.get(id(s), batches[0]) for s in self.slots]
        tensors = [torch.stack([getattr(b, f.name) for b in slot_batches]) for f in dataclasses.fields(Encoded)]
        leaves = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
        with torch._dynamo.config.patch(cache_size_limit=self.graph_limit) if self.compiled else \
                contextlib.nullcontext():
            slot_losses = self.batched(leaves, self.buffers, *tensors)
        slots, pick = self._active_slots(states)
        losses = slot_losses if pick is None else slot_losses[pick]
        if any(s.scaler is not None for s in states):
            sum(s.scaler.scale(losses[k]) for k, s in enumerate(states)).backward()
        else:
            losses.sum().backward()
        for k, state in zip(slots, states):
            own_params = dict(state.model.named_parameters())
            for name in self.names:
                grad = leaves[name].grad
                own_params[name].grad = None if grad is None else grad[k]
        return losses


PASSES = {"loop": LoopPass, "vmap": VmapPass}
