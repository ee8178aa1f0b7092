"""The training loop, readable as a story: set up, then ``max_steps + 1`` iterations that evaluate and checkpoint
when due, stop when a stop condition holds, and otherwise take one ``train_step``.

Budgets are steps (or epochs); ``max_minutes`` is only a safety net, and a run it stops is marked ``cut_short``.
Resume is exact on the CPU: ``TrainState`` restores weights, EMA, optimiser and Grokfast state, the RNG, the data
position and every loop counter.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from grokscope import artifacts, runs, runtime
from grokscope.version import __version__
from grokscope.data.encoding import SEQ_LEN, training_rows, training_set
from grokscope.data.store import Dataset
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import milestones, sustained_step
from grokscope.models.registry import build_model, family_of
from grokscope.training.config import (CPU_COMPILE_FROM_STEPS, MAX_STEPS, TrainConfig, parse_rule, recipe_deviations,
                                       rule_holds)
from grokscope.training.evaluate import LENS_SETS, EvalSets, eval_sets, evaluate
from grokscope.training.optim import EMA, Grokfast, clip_together, step_together
from grokscope.training.progress import Progress
from grokscope.training.scalars import ScalarLog
from grokscope.training.schedule import checkpoint_steps, lr_at
from grokscope.training.state import NonFiniteLoss, TrainState


@dataclass
class FineTune:
    """What a fine-tune (or its from-scratch control) adds to a training run."""

    init_weights: dict | None  # start from these weights; None = a fresh initialisation (the control)
    record: dict  # written to config.yaml under "transfer"
    probes: dict[str, np.ndarray]  # evaluation sets (rows), replacing the dataset's probe types
    lens: dict[str, str] = field(default_factory=dict)  # metric suffix -> probe set for lens rates and bridge use
    summarise: Callable[[list[dict]], dict] | None = None  # metrics rows -> summary["transfer"], written with it
    mixed: dict[str, int] = field(default_factory=dict)  # probe name -> category code: also scored on old hops kept
    # metrics rows so far -> why the fine-tune stops at this evaluation ("" = go on). A function of the rows alone,
    # so a resumed fine-tune decides exactly as an uninterrupted one.
    stop: Callable[[list[dict]], str] | None = None


@dataclass
class Budget:
    max_steps: int
    eval_every: int
    checkpoints: set[int]


def budget(cfg: TrainConfig, n_train: int) -> Budget:
    max_steps = int(cfg.max_epochs * n_train / cfg.batch_size) if cfg.max_epochs > 0 else cfg.max_steps
    if max_steps > MAX_STEPS:  # before the checkpoint schedule is built: it would not fit in memory
        raise GrokscopeError(f"train.max_epochs {cfg.max_epochs:g} is {max_steps:.3g} steps at {n_train} items and "
                             f"batch {cfg.batch_size}, over the limit of {MAX_STEPS:.0e}; give a smaller budget")
    eval_every = max(1, int(cfg.eval_every_epochs * n_train / cfg.batch_size)) if cfg.eval_every_epochs > 0 \
        else cfg.eval_every
    return Budget(max_steps, eval_every, checkpoint_steps(max_steps, cfg))


def run_config(data_dir: Path, ds: Dataset, model_cfg, cfg: TrainConfig, extra: dict) -> dict:
    return {"grokscope_version": __version__, "git_commit": runs.git_commit(), "torch_version": str(torch.__version__),
            "data": {"path": str(Path(data_dir).resolve()), "fingerprint": ds.meta["fingerprint"],
                     "name": ds.meta["name"], "kind": ds.meta["kind"]},
            "model": {"family": family_of(model_cfg).name, "config": asdict(model_cfg)},
            "train": asdict(cfg), **extra}


def check_fits_dataset(model_cfg, ds: Dataset) -> None:
    if model_cfg.d_vocab != ds.vocab.d_vocab:
        raise GrokscopeError(f"model d_vocab {model_cfg.d_vocab} does not match the dataset's {ds.vocab.d_vocab}; "
                             f"drop the d_vocab override (it is read from dataset.json)")
    if model_cfg.context_length < SEQ_LEN:
        raise GrokscopeError(f"model sequence length {model_cfg.context_length} is shorter than the dataset's "
                             f"{SEQ_LEN} tokens; drop the n_ctx/seq_len override")


TRAIN_BYTES_PER_PARAM = 16  # fp32 weights, gradients and AdamW's two moments


def check_fits_memory(model_cfg, device: str) -> None:
    """A model whose training state cannot fit this device is refused before anything is built (counted on the
    meta device: no memory is allocated)."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(model_cfg).parameters())
    need, have = n_params * TRAIN_BYTES_PER_PARAM, runtime.memory_bytes(device)
    if need > have:
        raise GrokscopeError(f"the model has {n_params:.3g} parameters: training needs about {need / 2 ** 30:.1f} "
                             f"GiB, over the {have / 2 ** 30:.1f} GiB of this {device}; lower d_model or n_layers")


def kept_entries(finetune: FineTune | None) -> tuple[str, ...]:
    """What a restart or a new run leaves in its folder: a fine-tune's derived transfer set (``data/``)."""
    return ("data",) if finetune else ()


@dataclass
class RunRequest:
    """One run to train, checked and resolved before anything is written: what ``prepare`` returns."""

    ds: Dataset
    model_cfg: object
    cfg: TrainConfig
    out: Path
    config: dict  # what config.yaml records
    resume: bool
    device: str
    quiet: bool
    finetune: FineTune | None
    restart: bool = False  # a --resume of a run that died before its first checkpoint: cleared under the lock

    @property
    def keep(self) -> tuple[str, ...]:
        return kept_entries(self.finetune)

    def claim(self) -> None:
        """Called while holding the run's lock: only now may a run that must start over be cleared (a second
        process that fails to take the lock must never delete a live run's files)."""
        runs.clean_run_leftovers(self.out)
        if self.restart:
            print(f"note: {self.out} has no readable checkpoint (its process died before the first one); starting "
                  f"over")
            runs.clear_run(self.out, self.keep)


def prepare(ds: Dataset, data_dir: Path, model_cfg, cfg: TrainConfig, out: Path, resume: bool = False,
            force_config: bool = False, device: str = "auto", quiet: bool = False,
            finetune: FineTune | None = None) -> RunRequest:
    """Resolve the device and precision, check the model against the dataset and the run folder (new, or a resume
    with the same settings); raise one line per problem before anything is written."""
    device = runtime.pick_device(device)
    precision, note = runtime.resolve_precision(cfg.precision, device)
    if note:
        print(note)
        cfg = replace(cfg, precision=precision)
    model_cfg = model_cfg.for_precision(cfg.precision)
    check_fits_dataset(model_cfg, ds)
    check_fits_memory(model_cfg, device)
    model_cls = family_of(model_cfg).model_cls
    if cfg.loss_positions not in model_cls.loss_positions:
        raise GrokscopeError(f"train.loss_positions={cfg.loss_positions} is not available for the {model_cls.family}; "
                             f"choose one of {', '.join(model_cls.loss_positions)}")
    out = Path(out)
    budget(cfg, len(training_rows(ds)))  # a budget the run cannot meet is refused before anything is written
    config = run_config(data_dir, ds, model_cfg, cfg, {"transfer": finetune.record} if finetune else {})
    keep = kept_entries(finetune)
    if resume and (out / "config.yaml").exists() and not runs.has_readable_checkpoint(out):
        if (out / "summary.json").exists():  # a finished result is never replaced
            raise GrokscopeError(f"{out}: holds a finished run (summary.json) with no readable checkpoint; there is "
                                 f"nothing to resume; choose another --out")
        runs.prepare_run_dir(out, config, True, force_config, keep)  # the same dataset and settings as any resume
        # It starts over: the folder is cleared once its lock is held (RunRequest.claim).
        return RunRequest(ds, model_cfg, cfg, out, config, False, device, quiet, finetune, restart=True)
    runs.prepare_run_dir(out, config, resume, force_config, keep)
    return RunRequest(ds, model_cfg, cfg, out, config, resume, device, quiet, finetune)


def train(ds: Dataset, data_dir: Path, model_cfg, cfg: TrainConfig, out: Path, resume: bool = False,
          force_config: bool = False, device: str = "auto", quiet: bool = False,
          finetune: FineTune | None = None) -> dict:
    """Train (or resume) a run in ``out``; returns the summary also written to ``summary.json``."""
    return train_request(prepare(ds, data_dir, model_cfg, cfg, out, resume, force_config, device, quiet, finetune))


def train_request(request: RunRequest) -> dict:
    """Train one prepared run alone, holding its folder's lock."""
    with artifacts.FolderLock(request.out, "run"), runtime.training_matmuls(request.device):
        request.claim()
        return drive_alone(Session(request).start())


def drive_alone(session: "Session") -> dict:
    step_fn = make_train_step(session.state, session.cfg, session.device, session.plan.max_steps)
    return drive([session], lambda active: step_fn(active[0].next_batch(), active[0].step))[0]


class Session:
    """One run being trained: its state, evaluation sets, schedule, progress line and files.

    ``boundary()`` does what is due at the current step (evaluate, checkpoint, stop); the optimiser step itself is
    taken by the caller (``make_train_step`` for one run, ``training/stack.py`` for several in lockstep)."""

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
        self.summarise = finetune.summarise if finetune else None
        self.finetune_stop = finetune.stop if finetune else None
        self.resumed_at, self.rows, self.last_row = None, [], {}

    def start(self) -> "Session":
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

    def boundary(self) -> bool:
        """Evaluate, checkpoint and check the stop conditions at the current step; True when the run stops here."""
        state, step, plan = self.state, self.step, self.plan
        stopping = _stop_check(state.loop, step, plan, self.cfg, time.perf_counter() - self.t_start)
        fresh = step != self.resumed_at  # a resumed step was evaluated and saved before the interruption
        if fresh and (step % plan.eval_every == 0 or stopping):
            self.last_row = _evaluate(state, self.sets, self.ds, self.cfg, self.out, step, len(self.train_set),
                                      self.t_start)
            self.progress.eval(step, self.last_row)
            self.scalars.write(self.last_row)
            self.rows.append(self.last_row)
            stopping = _apply_rule(self.rule, state.loop, self.rows, self.cfg, step, self.progress) or stopping
        # A fine-tune's budget decides from the rows up to an evaluation at this step: a fresh one, or the one a
        # resumed run stopped at (so a run killed after its last checkpoint stops where it would have).
        if not stopping and self.finetune_stop is not None and self.rows and self.rows[-1]["step"] == step and \
                (reason := self.finetune_stop(self.rows)):
            state.loop.stop_reason, stopping = reason, True
            self.progress.note(f"stopping at step {step}: {reason}")
        if fresh and (step in plan.checkpoints or stopping):
            state.loop.wall_seconds = time.perf_counter() - self.t_start
            state.save(self.out, step, plan.max_steps)
        return stopping

    def next_batch(self):
        return self.train_set.take(self.state.order.next())

    def advance(self) -> None:
        self.state.loop.step += 1
        self.progress.advance(self.step)

    def finish(self) -> dict:
        self.progress.close()
        self.scalars.close()
        return _summarise(self, self.last_row)


def _reopen(loop, stop_rule_changed: bool) -> None:
    """A resumed run decides anew why it stops (a larger budget or time cap may let it go on); a stop the rule
    already scheduled stands unless the rule changed."""
    loop.stop_reason, loop.cut_short = "", False
    if stop_rule_changed:
        loop.stop_at, loop.rule_streak = None, 0


def drive(sessions: list[Session], step_all, scope=None) -> list[dict]:
    """The loop. Every active run does what is due at its step, then ``step_all(active)`` takes one optimiser step
    for each run still active: ``max_steps + 1`` boundaries per run, so the last step always evaluates and saves.
    ``scope(session)`` is a context each run's boundary runs in (the stacked runs' own RNG streams). A run whose loss
    becomes non-finite stops at its last good checkpoint; the others go on, and the failure is raised at the end. A
    run writes its summary when it stops, so a stacked run that finished is finished on disk even if the stack's
    process is cut before the others end."""
    scope = scope or (lambda session: contextlib.nullcontext())
    active, failures, summaries = list(sessions), [], {}
    while active:
        still = []
        for session in active:
            try:
                with scope(session):
                    stopped = session.boundary()
            except NonFiniteLoss as exc:
                session.progress.close()
                session.scalars.close()
                last = runs.list_checkpoints(session.out)
                failures.append(f"{session.out}: training loss became {exc.value}; the last good checkpoint is step "
                                f"{last[-1] if last else 'none'} (kept); lower lr or use precision=fp32")
                continue
            if stopped:  # its summary now, not when the whole stack ends: a stack cut later leaves it finished
                summaries[id(session)] = session.finish()
            else:
                still.append(session)
        active = still
        if active:
            step_all(active)
            for session in active:
                session.advance()
    if failures:
        raise GrokscopeError(failures)
    return [summaries[id(session)] for session in sessions]


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


def make_train_step(state: TrainState, cfg: TrainConfig, device: str, max_steps: int = 0):
    """One optimiser step on a batch; the forward + loss compiled where ``compiles`` says."""
    model, spec = state.model, cfg.loss_spec()

    def forward_loss(batch):
        with model.autocast(cfg.precision, device):
            return model.loss(batch, model.forward_batch(batch), spec)

    if compiles(cfg, device, family_of(model.cfg).name, max_steps):
        # Static shapes: the epoch's last, shorter batch gets its own graph instead of turning every later full
        # batch into a dynamic-shape graph.
        forward_loss = torch.compile(forward_loss, dynamic=False)

    def train_step(batch, step: int) -> None:
        set_learning_rates(state, cfg, step)
        loss = forward_loss(batch)
        (state.scaler.scale(loss) if state.scaler is not None else loss).backward()
        apply_gradients(state, cfg, loss)

    return train_step


def set_learning_rates(state: TrainState, cfg: TrainConfig, step: int) -> None:
    for opt, lrs in zip(state.optimizers, state.base_lrs):
        for group, base in zip(opt.param_groups, lrs):
            group["lr"] = lr_at(step, cfg, base)


def filter_gradients(states: list[TrainState], cfgs: list[TrainConfig]) -> None:
    """Between backward (unscaled) and the optimiser step, for one run or several stepped together: the Grokfast
    filter, then global-norm clipping, each as a few multi-tensor calls for all the runs."""
    plain = []
    for state in states:
        if state.grokfast is None:
            continue
        if state.scaler is not None:  # guarded: it skips itself on an overflow step (the scaler skips that step too)
            state.grokfast.apply(state.model, guard=True)
        else:
            plain.append((state.grokfast, state.model))
    Grokfast.apply_together(plain)
    clipped = [(state, cfg) for state, cfg in zip(states, cfgs) if cfg.grad_clip > 0]
    if clipped:
        clip_together([list(state.model.parameters()) for state, _ in clipped], [cfg.grad_clip for _, cfg in clipped])


def apply_gradients(state: TrainState, cfg: TrainConfig, loss: torch.Tensor) -> None:
    """Everything after backward: unscale, Grokfast, clipping, the optimiser steps, EMA, the loss accumulator."""
    if state.scaler is not None:
        for opt in state.optimizers:
            state.scaler.unscale_(opt)
    filter_gradients([state], [cfg])
    for opt in state.optimizers:
        state.scaler.step(opt) if state.scaler is not None else opt.step()
        opt.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.update()
    if state.ema is not None:
        state.ema.update(state.model)
    state.add_loss(loss)


def apply_gradients_together(states: list[TrainState], cfgs: list[TrainConfig], losses: torch.Tensor) -> None:
    """``apply_gradients`` for runs stepped together (the vmap backend): every run's Grokfast filter and clipping
    (``filter_gradients``), optimiser steps (``optim.step_together``) and EMA as a few multi-tensor calls for the
    whole stack instead of a few per run. Equal to stepping the runs one by one, bit for bit on the CPU. Runs with a
    GradScaler (fp16) take the per-run path: each scaler decides its own step."""
    if any(state.scaler is not None for state in states):
        for k, (state, cfg) in enumerate(zip(states, cfgs)):
            apply_gradients(state, cfg, losses[k])
        return
    filter_gradients(states, cfgs)
    step_together([opt for state in states for opt in state.optimizers])
    for state in states:
        for opt in state.optimizers:
            opt.zero_grad(set_to_none=True)
    EMA.update_together([(state.ema, state.model) for state in states if state.ema is not None])
    for k, state in enumerate(states):
        state.add_loss(losses[k])


def _stop_check(loop, step: int, plan: Budget, cfg: TrainConfig, elapsed: float) -> bool:
    out_of_time = cfg.max_minutes > 0 and elapsed >= 60 * cfg.max_minutes and step < plan.max_steps
    by_rule = loop.stop_at is not None and step >= loop.stop_at
    if not (step >= plan.max_steps or out_of_time or by_rule):
        return False
    if not loop.stop_reason:
        loop.stop_reason = ("max_steps" if step >= plan.max_steps else stop_text(cfg) if by_rule
                            else f"max_minutes {cfg.max_minutes} (cut short)")
        loop.cut_short = out_of_time and not by_rule
    return True


def _evaluate(state: TrainState, sets: EvalSets, ds, cfg, out: Path, step: int, n_train: int, t_start) -> dict:
    metrics = evaluate(state.evaluation_model(), sets, cfg.loss_spec(), ds.vocab.end_id, cfg.eval_batch_size)
    row = {"step": step, "epoch": round(step * cfg.batch_size / n_train, 3), "train_loss": state.take_train_loss(),
           "lr": lr_at(step, cfg), "weight_norm": weight_norm(state.model), **metrics,
           "wall_seconds": round(time.perf_counter() - t_start, 2)}
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def _apply_rule(rule, loop, rows: list[dict], cfg: TrainConfig, step: int, progress: Progress) -> bool:
    """Track the stop conditions after an evaluation (``rows[-1]``); True when they end the run at this very step
    (no margin). With ``sat_multiple`` the run goes on to that multiple of its saturation step before ``stop_when``
    (or, without a rule, that point alone) can end it."""
    if loop.stop_at is not None or (rule is None and not cfg.sat_multiple):
        return False
    if rule is not None:
        loop.rule_streak = loop.rule_streak + 1 if rule_holds(rule, rows[-1]) else 0
        if loop.rule_streak < cfg.stop_patience:
            return False
    if cfg.sat_multiple:
        due = sat_multiple_due(rows, cfg.sat_multiple)
        if due is None or step < due:
            return False
    loop.stop_at = step + cfg.stop_margin_steps
    progress.note(f"{stop_text(cfg)} met at step {step}; stopping at step {loop.stop_at}")
    if loop.stop_at <= step:
        loop.stop_reason = stop_text(cfg)
        return True
    return False


def sat_multiple_due(rows: list[dict], multiple: float) -> int | None:
    """The first step at which a run has trained ``multiple`` x its saturation step: t_sat as the findings read it
    (training accuracy >= SATURATION, kept), so a run the trainer stops here is one the findings can judge. None while
    the run has not saturated."""
    t_sat = sustained_step(rows, "train_acc", th.SATURATION)
    return None if t_sat is None else math.ceil(multiple * max(t_sat, 1))


def stop_text(cfg: TrainConfig) -> str:
    """Why a run stopped by its own conditions, as ``summary.json`` records it."""
    parts = [f"stop rule {cfg.stop_when}"] if cfg.stop_when else []
    if cfg.sat_multiple:
        parts.append(f"{cfg.sat_multiple:g} x t_sat")
    return " and ".join(parts)


def weight_norm(model) -> float:
    return math.sqrt(sum(float(p.detach().float().square().sum()) for p in model.parameters()))


def _summarise(session: Session, last_row: dict) -> dict:
    out, state, cfg, model = session.out, session.state, session.cfg, session.model
    rows = artifacts.read_metrics(out)
    last_row = last_row or (rows[-1] if rows else {})  # resumed at the final step: nothing new was evaluated
    steps_done = state.loop.step - session.session_start[1]
    seconds = time.perf_counter() - session.session_start[0]
    summary = {
        "final_step": state.loop.step,
        "stop_reason": state.loop.stop_reason,
        "cut_short": state.loop.cut_short,
        "bridge_metric": model.bridge_metric,
        "bridge_use_version": th.BRIDGE_USE_VERSION,
        "grokked": {"metric": model.grokked.metric, "threshold": model.grokked.threshold},
        "milestones": milestones(rows, cfg.sat_threshold, cfg.thresholds(), model.bridge_metric, model.grokked),
        "thresholds": {"sat": cfg.sat_threshold, "milestones": cfg.thresholds()},
        "final": {k: v for k, v in last_row.items() if k != "step"},
        "flops_per_step": model.flops_per_step(cfg.batch_size),
        "deviations_from_paper": recipe_deviations(model.family, model.cfg, cfg),
        "wall_seconds": round(time.perf_counter() - session.t_start, 2),
        "steps_per_second": round(steps_done / seconds, 3) if steps_done else None,
        "device": session.device,
        "threads": torch.get_num_threads(),
    }
    if session.summarise is not None:  # a fine-tune's transfer summary, in the same atomic write
        summary["transfer"] = session.summarise(rows)
    artifacts.write_json_atomic(out / "summary.json", summary)
    return summary
