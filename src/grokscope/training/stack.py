"""Several runs of one architecture trained in lockstep in one process: seeds, regimes or grid points.

Each run keeps its own data order, optimiser state, RNG state, checkpoints and run folder, so a stacked run can be
resumed (or continued) alone. Two backends:

- ``loop``: each run's forward and backward in turn, each with its own RNG state: bit-identical to training the run
  alone. The CPU default, since on a CPU one bigger matmul is no faster than several small ones.
- ``vmap``: one forward and backward for all runs over their weights stacked along a new leading dimension
  (``torch.func.functional_call`` under ``torch.func.vmap``): one kernel launch per operation for all runs instead
  of one per run, which is what a launch-bound small model needs on a GPU (the CUDA default). Compiled where a
  single run would be (``loop.compiles``: on CUDA by default), one graph for the whole stack; the runs' gradient
  filters, optimiser and EMA steps are a few multi-tensor calls for all of them. The result equals training alone
  up to floating-point reassociation (a batched matmul may sum in another order), not bitwise.

Runs stack when they agree on everything the batched step computes: family, model config, precision, loss, batch
size and device (and, for ``vmap``, no dropout). Otherwise, or when resumed runs stand at different steps, they are
trained one after another.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json

import torch
from torch.func import functional_call, vmap

from grokscope import artifacts, runtime
from grokscope.data.encoding import Encoded
from grokscope.errors import GrokscopeError
from grokscope.models.registry import family_of
from grokscope.training.loop import (RunRequest, Session, apply_gradients_together, compiles, drive, drive_alone,
                                     make_train_step, set_learning_rates, train_request)

BACKENDS = ("auto", "loop", "vmap")


def stack_key(request: RunRequest) -> str:
    """What runs must share to be stepped together."""
    cfg = request.cfg
    return json.dumps({"model": dataclasses.asdict(request.model_cfg), "family": request.config["model"]["family"],
                       "precision": cfg.precision, "loss": dataclasses.asdict(cfg.loss_spec()),
                       "batch_size": cfg.batch_size, "device": request.device}, sort_keys=True)


def choose_backend(requests: list[RunRequest], backend: str) -> str:
    if backend != "auto":
        return backend
    dropout = any(r.model_cfg.draws_random() for r in requests)
    return "vmap" if requests[0].device == "cuda" and not dropout else "loop"


def train_group(requests: list[RunRequest], backend: str = "auto", log=print) -> list[dict]:
    """Train the runs of ``requests`` (each checked by ``loop.prepare``) stacked when they can be, else one after
    another; returns their summaries in order."""
    if backend not in BACKENDS:
        raise ValueError(backend)
    if len({stack_key(r) for r in requests}) > 1 or len(requests) < 2:
        if len(requests) > 1:
            log("note: these runs differ in architecture, precision, loss or batch size; training them one after "
                "another")
        return [train_request(r) for r in requests]
    backend = choose_backend(requests, backend)
    if backend == "vmap" and any(r.model_cfg.draws_random() for r in requests):
        raise GrokscopeError("the vmap backend cannot reproduce dropout's random draws; use --backend loop")
    with contextlib.ExitStack() as locks:
        for request in requests:
            locks.enter_context(artifacts.FolderLock(request.out, "run"))
        locks.enter_context(runtime.training_matmuls(requests[0].device))
        for request in requests:  # every lock is held before any folder is touched
            request.claim()
        sessions = []
        for request in requests:
            sessions.append(Session(request).start())  # each keeps the RNG stream it continues with
        if len({s.step for s in sessions}) > 1:
            log("note: the resumed runs stand at different steps; training them one after another")
            return [drive_alone(s) for s in sessions]
        log(f"training {len(sessions)} runs stacked ({backend}): {', '.join(s.out.name for s in sessions)}")
        steps = VmapSteps(sessions) if backend == "vmap" else LoopSteps(sessions)
        return drive(sessions, steps, scope=_session_rng)


# ------------------------------------------------------------------------------------------------ RNG per run
@contextlib.contextmanager
def _session_rng(session: Session):
    """Run with ``session``'s own RNG stream (checkpoints save it; dropout draws from it); ``TrainState`` holds it."""
    session.state.use_rng()
    try:
        yield
    finally:
        session.state.keep_rng()


# ------------------------------------------------------------------------------------------------ backends
class LoopSteps:
    """Each active run's optimiser step in turn, with its own RNG stream."""

    def __init__(self, sessions: list[Session]):
        self.steps = {id(s): make_train_step(s.state, s.cfg, s.device, s.plan.max_steps) for s in sessions}

    def __call__(self, active: list[Session]) -> None:
        for session in active:
            with _session_rng(session):
                self.steps[id(session)](session.next_batch(), session.step)


class _LossOf(torch.nn.Module):
    """A module whose forward is a family's training loss, so ``functional_call`` can swap in any run's weights."""

    def __init__(self, model, precision: str, device: str, spec):
        super().__init__()
        self.model, self.precision, self.device, self.spec = model, precision, device, spec

    def forward(self, *tensors):
        batch = Encoded(*tensors)
        with self.model.autocast(self.precision, self.device):
            return self.model.loss(batch, self.model.forward_batch(batch), self.spec)


class VmapSteps:
    """One batched forward and backward over the runs' stacked weights.

    Each run's parameters are views into one stacked tensor per parameter name (``param.data = stacked[k]``), so the
    runs' own optimisers update the stack in place and evaluation, checkpoints and EMA see every run's weights as
    usual. The runs' Grokfast, clipping, optimiser and EMA steps are taken together (``loop.apply_gradients_together``:
    a few multi-tensor calls for the whole stack, each run's state its own). A step at which the runs' batches
    differ in size (an epoch ends sooner for a smaller training set) is taken run by run, and so is the last run
    left.

    Where the step is compiled (``loop.compiles``: on CUDA by default), a graph is specialised to the stack's size
    (vmap fixes it), so a run that stops keeps its slot, computed and left unused, until half the slots are idle:
    then the stack is rebuilt from the active runs. A stack of R runs compiles for at most log2(R) sizes (two graphs
    each with the epoch's last, shorter batch), plus the single-run graph of the last run left, and computes at
    most twice what its active runs need. Eager, the stack is rebuilt whenever a run stops."""

    def __init__(self, sessions: list[Session]):
        self.one_by_one = LoopSteps(sessions)
        first = sessions[0]
        self.loss_module = _LossOf(copy.deepcopy(first.model).for_vmap(), first.cfg.precision, first.device,
                                   first.cfg.loss_spec())
        self.names = [n for n, _ in first.model.named_parameters()]
        self.buffer_names = [n for n, _ in first.model.named_buffers()]
        self.slots: list[Session] = []  # the runs the stack holds, in order: active ones and idle ones
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        fields = len(dataclasses.fields(Encoded))
        self.batched = vmap(self._loss, in_dims=(0, 0, *([0] * fields)))
        self.compiled = compiles(first.cfg, first.device, family_of(first.model.cfg).name, first.plan.max_steps)
        if self.compiled:
            # Static shapes, as for one run: the epoch's last, shorter batch gets a graph of its own instead of
            # turning every later full batch into a dynamic-shape graph.
            self.batched = torch.compile(self.batched, dynamic=False)
        # the graphs a stack may need (``_keeps_stack``), over dynamo's default limit of 8 per function for 16 runs
        # (``cache_size_limit``: the name every torch since 2.4 knows; 2.7 renamed it recompile_limit)
        self.graph_limit = max(8, 2 * (len(sessions).bit_length() + 1))
        self._picked: tuple[tuple, list[int], torch.Tensor | None] = ((), [], None)

    def _loss(self, params, buffers, *tensors):
        return functional_call(self.loss_module, ({f"model.{k}": v for k, v in params.items()},
                                                  {f"model.{k}": v for k, v in buffers.items()}), tensors)

    def _keeps_stack(self, active: list[Session]) -> bool:
        """Whether ``active`` can step in the current stack: all of them hold a slot and, compiled, at least half
        the slots are active (a new stack size is a new graph)."""
        held = {id(s) for s in self.slots}
        if not self.slots or any(id(s) not in held for s in active):
            return False
        if self.compiled:
            return 2 * len(active) > len(self.slots)
        return len(active) == len(self.slots)

    def _active_slots(self, active: list[Session]) -> tuple[list[int], torch.Tensor | None]:
        """The slots of ``active``, and an index tensor that picks their losses (None: every slot is active); kept
        while the active runs stay the same (no host-to-device copy per step)."""
        key = tuple(id(s) for s in active)
        if self._picked[0] != key:
            index = {id(s): k for k, s in enumerate(self.slots)}
            slots = [index[id(s)] for s in active]
            pick = None if len(slots) == len(self.slots) else torch.tensor(slots, device=active[0].device)
            self._picked = (key, slots, pick)
        return self._picked[1], self._picked[2]

    def _restack(self, active: list[Session]) -> None:
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

    def __call__(self, active: list[Session]) -> None:
        batches = [session.next_batch() for session in active]
        if len(active) == 1 or len({len(b) for b in batches}) > 1:
            for session, batch in zip(active, batches):
                with _session_rng(session):
                    self.one_by_one.steps[id(session)](batch, session.step)
            return
        if not self._keeps_stack(active):
            self._restack(active)
        for session in active:
            set_learning_rates(session.state, session.cfg, session.step)
        own = {id(s): b for s, b in zip(active, batches)}
        # an idle slot computes on an active run's batch; its loss is left out, so its gradient is zero and unused
        slot_batches = [own.get(id(s), batches[0]) for s in self.slots]
        tensors = [torch.stack([getattr(b, f.name) for b in slot_batches]) for f in dataclasses.fields(Encoded)]
        leaves = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
        with torch._dynamo.config.patch(cache_size_limit=self.graph_limit) if self.compiled else \
                contextlib.nullcontext():
            slot_losses = self.batched(leaves, self.buffers, *tensors)
        slots, pick = self._active_slots(active)
        losses = slot_losses if pick is None else slot_losses[pick]
        if any(s.state.scaler is not None for s in active):
            sum(s.state.scaler.scale(losses[k]) for k, s in enumerate(active)).backward()
        else:
            losses.sum().backward()
        for k, session in zip(slots, active):
            own_params = dict(session.model.named_parameters())
            for name in self.names:
                grad = leaves[name].grad
                own_params[name].grad = None if grad is None else grad[k]
        apply_gradients_together([s.state for s in active], [s.cfg for s in active], losses)
