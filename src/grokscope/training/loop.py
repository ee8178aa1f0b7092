"""The training loop, readable as a story: a ``Stack`` of R >= 1 runs (a single run is a stack of one), then
iterations in which every active run evaluates, checkpoints and stops when due, and the runs still active take one
``train_step`` together.

Budgets are steps (or epochs); ``max_minutes`` is only a safety net, and a run it stops is marked ``cut_short``.
Resume is exact on the CPU: ``TrainState`` restores weights, EMA, optimiser and Grokfast state, the RNG, the data
position and every loop counter.
"""

from __future__ import annotations

import json
import math
import time

import torch

from grokscope import artifacts
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import milestones, sustained_step
from grokscope.training.config import TrainConfig, recipe_deviations, rule_holds
from grokscope.training.evaluate import evaluate
from grokscope.training.finetune import transfer_summary
from grokscope.training.progress import Progress
from grokscope.training.request import Budget
from grokscope.training.schedule import lr_at
from grokscope.training.stack import Stack, StackRun, last_checkpoint
from grokscope.training.state import NonFiniteLoss
from grokscope.training.step import train_step


def train(stack: Stack) -> list[dict]:
    """Train the runs of ``stack`` to their budgets, holding their folders' locks; returns their summaries in order
    (each also written to its ``summary.json``).

    Every run passes ``max_steps + 1`` boundaries, so its last step always evaluates and saves. A run writes its
    summary when it stops, so a stacked run that finished is finished on disk even if the process is cut before the
    others end. A run whose loss becomes non-finite stops at its last good checkpoint; the others go on, and the
    failure is raised at the end."""
    failures, summaries = [], {}
    with stack.held():
        active = list(stack.runs)
        while active:
            still = []
            for run in active:
                state, step, plan = run.state, run.step, run.plan
                try:
                    with state.rng_scope(stack.shared):
                        stopping = _stop_check(state.loop, step, plan, run.cfg, time.perf_counter() - run.t_start)
                        fresh = step != run.resumed_at  # a resumed step was evaluated and saved before the cut
                        if fresh and (step % plan.eval_every == 0 or stopping):
                            _evaluate(run)
                            stopping = _apply_rule(run.rule, state.loop, run.rows, run.cfg, step, run.progress) \
                                or stopping
                        # A fine-tune's budget decides from the rows up to an evaluation at this step: a fresh one,
                        # or the one a resumed run stopped at (a run killed after its last checkpoint stops where it
                        # would have).
                        if not stopping and run.finetune is not None and run.rows and \
                                run.rows[-1]["step"] == step and (reason := run.finetune.budget.stop_reason(run.rows)):
                            state.loop.stop_reason, stopping = reason, True
                            run.progress.note(f"stopping at step {step}: {reason}")
                        if fresh and (step in plan.checkpoints or stopping):
                            state.loop.wall_seconds = time.perf_counter() - run.t_start
                            state.save(run.out, step, plan.max_steps)
                except NonFiniteLoss as exc:
                    run.close()
                    failures.append(f"{run.out}: training loss became {exc.value}; the last good checkpoint is step "
                                    f"{last_checkpoint(run)} (kept); lower lr or use precision=fp32")
                    continue
                if stopping:  # its summary now, not when the whole stack ends
                    run.close()
                    summaries[id(run)] = _summarise(run, run.last_row)
                else:
                    still.append(run)
            active = still
            if active:
                train_step([run.state for run in active], [run.next_batch() for run in active],
                           stack.forward_backward)
                for run in active:
                    run.state.loop.step += 1
                    run.progress.advance(run.step)
    if failures:
        raise GrokscopeError(failures)
    return [summaries[id(run)] for run in stack.runs]


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


def _evaluate(run: StackRun) -> dict:
    """Evaluate ``run`` at its step: one metrics row, appended to metrics.jsonl, TensorBoard and the progress line."""
    state, cfg, step = run.state, run.cfg, run.step
    metrics = evaluate(state.evaluation_model(), run.sets, cfg.loss_spec(), run.ds.vocab.end_id, cfg.eval_batch_size)
    row = {"step": step, "epoch": round(step * cfg.batch_size / len(run.train_set), 3),
           "train_loss": state.take_train_loss(), "lr": lr_at(step, cfg), "weight_norm": weight_norm(state.model),
           **metrics, "wall_seconds": round(time.perf_counter() - run.t_start, 2)}
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    run.progress.eval(step, row)
    run.scalars.write(row)
    run.rows.append(row)
    run.last_row = row
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


def _summarise(run: StackRun, last_row: dict) -> dict:
    out, state, cfg, model = run.out, run.state, run.cfg, run.model
    rows = artifacts.read_metrics(out)
    last_row = last_row or (rows[-1] if rows else {})  # resumed at the final step: nothing new was evaluated
    steps_done = state.loop.step - run.session_start[1]
    seconds = time.perf_counter() - run.session_start[0]
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
        "wall_seconds": round(time.perf_counter() - run.t_start, 2),
        "steps_per_second": round(steps_done / seconds, 3) if steps_done else None,
        "device": run.device,
        "threads": torch.get_num_threads(),
    }
    if run.finetune is not None:  # a fine-tune's transfer summary, in the same atomic write
        summary["transfer"] = transfer_summary(rows, run.finetune.counts)
    artifacts.write_json_atomic(out / "summary.json", summary)
    return summary
