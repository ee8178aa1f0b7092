"""A ``Stack``: R >= 1 runs of one architecture trained in lockstep in one process (a single run is a stack of one;
seeds, regimes or grid points are stacks of several).

Each run keeps its own data order, optimiser state, RNG stream, checkpoints and run folder (``StackRun``), so a
stacked run can be resumed (or continued) alone, and a run that stops is finished on disk while the others go on.
The stack's pass computes every run's loss and gradients: ``loop`` (each run in turn, bit-identical to training it
alone; the CPU default) or ``vmap`` (one batched forward and backward; the CUDA default), ``training/step.py``.

Runs stack when they agree on everything the batched step computes: family, model config, precision, loss, batch
size and device (and, for ``vmap``, no dropout). ``stacks`` groups requests that do not into stacks of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import torch

from grokscope import artifacts, runs, runtime
from grokscope.data.encoding import training_set
from grokscope.errors import GrokscopeError
from grokscope.models.registry import build_model
from grokscope.training.config import parse_rule
from grokscope.training.evaluate import LENS_SETS, eval_sets
from grokscope.training.progress import Progress
from grokscope.training.request import RunRequest, budget
from grokscope.training.scalars import ScalarLog
from grokscope.training.state import TrainState
from grokscope.training.step import PASSES

BACKENDS = ("auto", "loop", "vmap")


class StackRun:
    """One run of a stack: its request, state, evaluation sets, schedule, metrics rows, progress line and files."""

    def __init__(self, request: RunRequest):
        """The run in memory: threads, seed, model, optimiser state and evaluation sets. No file is read or written
        (``start`` does that)."""
        ds, cfg, device, finetune = request.ds, request.cfg, request.device, request.finetune
        self.request, self.ds, self.cfg, self.out, self.device = request, ds, cfg, request.out, device
        runtime.configure(device, cfg.threads)
        self.train_set = training_set(ds).to(device)
        self.plan = budget(cfg, len(self.train_set))
        torch.manual_seed(cfg.seed)
        model = build_model(request.model_cfg).to(device)
        if finetune is not None and finetune.init_weights is not None:
            model.load_state_dict(finetune.init_weights, strict=True)
        self.model = model.train()
        self.state = TrainState(model, cfg, len(self.train_set), device)
        probes = finetune.probes if finetune else {t: ds.probe(t) for t in ds.probe_types}
        lens = finetune.lens if finetune else LENS_SETS
        self.sets = eval_sets(ds, model, probes, lens, cfg.eval_bridge_use, finetune.mixed if finetune else None
                              ).to(device)
        self.rule = parse_rule(cfg.stop_when) if cfg.stop_when else None
        self.finetune = finetune
        self.resumed_at, self.rows, self.last_row = None, [], {}

    def start(self) -> "StackRun":
        """Restore the last checkpoint when resuming (else start the files afresh), write config.yaml, and open the
        metrics, TensorBoard and progress outputs."""
        request, out, state = self.request, self.out, self.state
        self.resumed_at = state.restore(out) if request.resume else None
        if self.resumed_at is not None:
            old = artifacts.read_config(out)["train"]
            _reopen(state.loop, stop_rule_changed=(old.get("stop_when", ""), old.get("sat_multiple", 0.0)) != (
                self.cfg.stop_when, self.cfg.sat_multiple))
            rows = artifacts.read_metrics(out, warn=lambda msg: print(f"warning: {msg}"))
            self.rows = [r for r in rows if r["step"] <= self.resumed_at]
            artifacts.write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))
            print(f"resumed {out} at step {self.resumed_at}")
        else:
            (out / "metrics.jsonl").write_text("")
        artifacts.write_yaml_atomic(out / "config.yaml", request.config)
        self.scalars = ScalarLog(out / "tensorboard", self.resumed_at)
        self.progress = Progress(self.plan.max_steps, start=state.loop.step, quiet=request.quiet,
                                 label=out.name, bridge_key=f"{self.model.bridge_metric}_ood")
        self.t_start = time.perf_counter() - state.loop.wall_seconds
        self.session_start = (time.perf_counter(), state.loop.step)
        state.keep_rng()  # the stream this run continues with (a stacked run switches to it before each step)
        return self

    @property
    def step(self) -> int:
        """The run's step: ``TrainState.loop.step`` is its one owner (checkpoints save it)."""
        return self.state.loop.step

    def next_batch(self):
        return self.train_set.take(self.state.order.next())

    def close(self) -> None:
        self.progress.close()
        self.scalars.close()


def _reopen(loop, stop_rule_changed: bool) -> None:
    """A resumed run decides anew why it stops (a larger budget or time cap may let it go on); a stop the rule
    already scheduled stands unless the rule changed."""
    loop.stop_reason, loop.cut_short = "", False
    if stop_rule_changed:
        loop.stop_at, loop.rule_streak = None, 0


class Stack:
    """R >= 1 prepared runs (``request.prepare``) trained together by ``loop.train``. ``held()`` takes every run's
    folder lock, then builds and starts the runs and the pass that steps them."""

    def __init__(self, requests: list[RunRequest], backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(backend)
        if len({stack_key(r) for r in requests}) > 1:
            raise ValueError("runs of a stack must agree on architecture, precision, loss, batch size and device")
        self.requests = list(requests)
        self.backend = choose_backend(self.requests, backend)
        if self.backend == "vmap" and any(r.model_cfg.draws_random() for r in self.requests):
            raise GrokscopeError("the vmap backend cannot reproduce dropout's random draws; use --backend loop")
        self.runs: list[StackRun] = []
        self.forward_backward = None

    @property
    def shared(self) -> bool:
        """Whether several runs share the process (then each steps and evaluates with its own RNG stream)."""
        return len(self.requests) > 1

    @contextlib.contextmanager
    def held(self):
        """Every run's lock is held before any folder is touched; then the runs are built, restored and started."""
        with contextlib.ExitStack() as locks:
            for request in self.requests:
                locks.enter_context(artifacts.FolderLock(request.out, "run"))
            locks.enter_context(runtime.training_matmuls(self.requests[0].device))
            for request in self.requests:
                request.claim()
            self.runs = [StackRun(request).start() for request in self.requests]
            states = [run.state for run in self.runs]
            self.forward_backward = PASSES[self.backend](states, max(run.plan.max_steps for run in self.runs))
            yield self


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


def stacks(requests: list[RunRequest], backend: str = "auto", log=print) -> list[Stack]:
    """``requests`` as one stack when they can step together, else as stacks of one, trained one after another."""
    if len(requests) > 1 and len({stack_key(r) for r in requests}) > 1:
        log("note: these runs differ in architecture, precision, loss or batch size; training them one after another")
        return [Stack([r], backend) for r in requests]
    stack = Stack(requests, backend)
    if len(requests) > 1:
        log(f"training {len(requests)} runs stacked ({stack.backend}): {', '.join(r.out.name for r in requests)}")
    return [stack]


def last_checkpoint(run: StackRun) -> str:
    found = runs.list_checkpoints(run.out)
    return str(found[-1]) if found else "none"
