"""The training loop: one plain function you can read as a story (STYLE_ANCHORS 7).

``train()`` sets up (dataset, model, optimisers, run directory, or a resume from the last complete checkpoint),
then runs ``max_steps + 1`` iterations: at each it evaluates / checkpoints when due, stops when a stop condition
holds, and otherwise takes one optimiser step. Resume is exact on CPU: the checkpoint holds weights, EMA,
optimiser and Grokfast state, the torch RNG, the data position and every loop accumulator.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from grokscope import __version__, runs
from grokscope.data.store import Dataset
from grokscope.errors import GrokscopeError
from grokscope.models.registry import build_model
from grokscope.runtime import set_threads, tune_allocator
from grokscope.train.batches import BatchOrder, encode, training_set
from grokscope.train.config import TrainConfig, parse_rule, rule_holds
from grokscope.train.evaluate import evaluate, exact_match, forward_loss
from grokscope.train.milestones import milestones
from grokscope.train.optim import EMA, Grokfast, load_optimizer_tensors, make_optimizers, optimizer_tensors
from grokscope.train.progress import Progress
from grokscope.train.schedule import checkpoint_steps, lr_at

LENS_TYPES = {"ood": "test_inferred_ood", "iid": "test_inferred_iid"}


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue bit-identically."""

    step: int = 0
    wall_seconds: float = 0.0  # training + evaluation time before this process started
    loss_sum: float = 0.0  # train loss accumulated since the last evaluation
    loss_count: int = 0
    rule_streak: int = 0  # consecutive evaluations meeting stop_when
    stop_at: int | None = None  # step at which the stop rule ends the run
    stop_reason: str = ""
    data: dict = field(default_factory=dict)


def pick_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GrokscopeError("--device cuda requested but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda", "mps"):
        raise GrokscopeError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    return device


def autocast_context(family: str, precision: str, device: str):
    """gpt: torch autocast (bf16, or fp16 on CUDA); trm casts weights itself (forward_dtype, §3.3)."""
    if family != "gpt" or precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device if device != "mps" else "cpu", dtype=dtype)


def weight_norm(model) -> float:
    return math.sqrt(sum(float(p.detach().float().square().sum()) for p in model.parameters()))


def _rng_state_tensors(device: str) -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if device == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def run_config(data_dir: Path, ds: Dataset, model_cfg, train_cfg: TrainConfig, family: str, extra: dict) -> dict:
    return {
        "grokscope_version": __version__,
        "git_commit": runs.git_commit(),
        "data": {"path": str(Path(data_dir).resolve()), "fingerprint": ds.meta["fingerprint"],
                 "name": ds.meta["name"], "kind": ds.meta["kind"]},
        "model": {"family": family, "config": asdict(model_cfg)},
        "train": asdict(train_cfg),
        **extra,
    }


# Changing these on --resume is allowed: they extend or shorten a run without changing what it computes.
RESUMABLE_KEYS = {"max_steps", "max_epochs", "max_minutes", "stop_when", "stop_patience", "stop_margin_steps",
                  "threads", "eval_batch_size"}


def config_differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for section in ("model", "train"):
        a, b = old.get(section, {}), new.get(section, {})
        a, b = (a.get("config", a) if section == "model" else a), (b.get("config", b) if section == "model" else b)
        for key in sorted(set(a) | set(b)):
            if section == "train" and key in RESUMABLE_KEYS:
                continue
            if a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def train(ds: Dataset, data_dir: Path, family: str, model_cfg, cfg: TrainConfig, out: Path, resume: bool = False,
          force_config: bool = False, device: str = "auto", quiet: bool = False, init_weights: dict | None = None,
          extra_config: dict | None = None, lens_types: dict | None = None,
          probe_sets: dict | None = None) -> dict:
    """Train (or resume) a run in ``out``; returns the summary dict also written to ``summary.json``.

    ``init_weights`` starts from given weights (fine-tuning); ``extra_config`` is recorded in config.yaml (e.g. the
    parent run of a fine-tune); ``probe_sets`` replaces the evaluation sets (default: every probe type) and
    ``lens_types`` maps metric suffixes to the sets the lens rates are computed on."""
    # --- set-up: device, threads, run directory, configs
    device = pick_device(device)
    if device == "cpu":
        set_threads(cfg.threads or None)
        tune_allocator()
    if cfg.precision == "fp16" and device != "cuda":
        print("note: fp16 needs CUDA; using bf16 autocast instead")
        cfg = TrainConfig(**{**asdict(cfg), "precision": "bf16"})
    train_set = training_set(ds)
    max_steps = cfg.max_steps
    if cfg.max_epochs > 0:
        max_steps = int(cfg.max_epochs * len(train_set) / cfg.batch_size)
    eval_every = cfg.eval_every
    if cfg.eval_every_epochs > 0:
        eval_every = max(1, int(cfg.eval_every_epochs * len(train_set) / cfg.batch_size))
    if model_cfg.d_vocab != ds.vocab.d_vocab:
        raise GrokscopeError(f"model d_vocab {model_cfg.d_vocab} does not match the dataset's {ds.vocab.d_vocab}; "
                             f"drop the d_vocab override (it is read from dataset.json)")
    seq_len = getattr(model_cfg, "n_ctx", None) or model_cfg.seq_len
    if seq_len < 5:
        raise GrokscopeError(f"model sequence length {seq_len} is shorter than the dataset's 5 tokens; "
                             f"drop the n_ctx/seq_len override")
    config = run_config(data_dir, ds, model_cfg, cfg, family, extra_config or {})
    out = Path(out)
    if (out / "config.yaml").exists():
        if not resume:
            raise GrokscopeError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        old = runs.read_config(out)
        if old["data"]["fingerprint"] != ds.meta["fingerprint"]:
            raise GrokscopeError(f"{out} was trained on dataset {old['data']['fingerprint']} but --data is "
                                 f"{ds.meta['fingerprint']}; resume with the run's own dataset")
        diffs = config_differences(old, config)
        if diffs and not force_config:
            raise GrokscopeError([f"config changed since the run started: {d}" for d in diffs]
                                 + ["resume with the original settings, or pass --force-config to accept changes"])
    elif resume:
        raise GrokscopeError(f"nothing to resume in {out} (no config.yaml); drop --resume to start a new run")
    elif out.exists() and any(p.name != "data" for p in out.iterdir()):  # a fine-tune keeps its dataset in data/
        raise GrokscopeError(f"{out} exists and is not a run; choose an empty or new --out")
    runs.ensure_writable(out)

    # --- model, optimisers, filters
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    if init_weights is not None:
        model.load_state_dict(init_weights, strict=True)
    model.train()
    optimizers = make_optimizers(model, cfg)
    base_lrs = [[g["lr"] for g in opt.param_groups] for opt in optimizers]
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    eval_model = copy.deepcopy(model) if ema is not None else model
    grokfast = Grokfast(cfg.grokfast_alpha, cfg.grokfast_lambda) if cfg.grokfast_lambda > 0 else None
    scaler = torch.amp.GradScaler("cuda") if (cfg.precision == "fp16" and device == "cuda") else None
    order = BatchOrder(len(train_set), cfg.batch_size, cfg.seed, cfg.drop_last)
    probes = probe_sets if probe_sets is not None else {t: encode(ds, ds.probe(t)) for t in ds.probe_types}
    lens_types = LENS_TYPES if lens_types is None else lens_types
    rule = parse_rule(cfg.stop_when) if cfg.stop_when else None
    ckpt_steps = checkpoint_steps(max_steps, cfg)
    state = LoopState()

    def eval_weights() -> dict:
        return ema.state_dict_for(model) if ema is not None else model.state_dict()

    def save(step: int) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        groups = {}
        for i, opt in enumerate(optimizers):
            t, groups[str(i)] = optimizer_tensors(opt, f"optim{i}")
            tensors.update(t)
        if grokfast is not None:
            tensors.update({f"grokfast.{k}": v for k, v in grokfast.ema.items()})
        tensors.update(_rng_state_tensors(device))
        state.data = order.state()
        meta = {"loop": asdict(state), "param_groups": groups, "max_steps": max_steps,
                "scaler": scaler.state_dict() if scaler is not None else None}
        runs.save_checkpoint(out, step, eval_weights(), tensors, meta)

    # --- resume from the last complete checkpoint (falling back past corrupt ones)
    resumed_at = None
    if resume:
        for step in reversed(runs.list_checkpoints(out)):
            try:
                weights, tensors, meta = runs.load_checkpoint(out, step)
                break
            except runs.CorruptCheckpoint as exc:
                print(f"warning: {exc}; falling back to the previous checkpoint")
        else:
            raise GrokscopeError(f"{out} has no readable checkpoint to resume from; start a new run")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        for i, opt in enumerate(optimizers):
            load_optimizer_tensors(opt, f"optim{i}", tensors, meta["param_groups"][str(i)])
        if ema is not None:
            ema.shadow = {k: weights[k].float().clone() for k in ema.shadow}
        if grokfast is not None:
            grokfast.ema = {k[9:]: v for k, v in tensors.items() if k.startswith("grokfast.")}
        torch.set_rng_state(tensors["rng.cpu"])
        if device == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        state = LoopState(**meta["loop"])
        order = BatchOrder(len(train_set), cfg.batch_size, cfg.seed, cfg.drop_last, **state.data)
        resumed_at = state.step
        runs.truncate_metrics(out, resumed_at)
        runs.write_config(out, config)
        print(f"resumed {out} at step {resumed_at}")
    else:
        runs.write_config(out, config)
        (out / "metrics.jsonl").write_text("")

    writer = _tensorboard(out)
    progress = Progress(max_steps, start=state.step, quiet=quiet, label=out.name)
    t_start = time.perf_counter() - state.wall_seconds
    session_start, session_first_step = time.perf_counter(), state.step
    last_metrics: dict = {}
    train_set = train_set.to(device)

    # --- the loop: max_steps + 1 iterations so the last step always evaluates and saves
    step = state.step
    while True:
        state.step = step
        elapsed = time.perf_counter() - t_start
        out_of_time = cfg.max_minutes > 0 and elapsed >= 60 * cfg.max_minutes
        stopping = step >= max_steps or out_of_time or (state.stop_at is not None and step >= state.stop_at)
        if stopping and not state.stop_reason:
            state.stop_reason = ("max_steps" if step >= max_steps else "max_minutes" if out_of_time
                                 else f"stop rule {cfg.stop_when}")
        fresh = step != resumed_at  # a resumed step was evaluated and saved before the interruption

        if fresh and (step % eval_every == 0 or stopping):
            if ema is not None:
                eval_model.load_state_dict(eval_weights())
            metrics = evaluate(eval_model, probes, cfg.loss, ds.vocab.end_id, cfg.eval_batch_size,
                               lens_types=lens_types, device=device)
            row = {"step": step, "epoch": round(step * cfg.batch_size / len(train_set), 3),
                   "train_loss": state.loss_sum / state.loss_count if state.loss_count else None,
                   "lr": lr_at(step, cfg), "weight_norm": weight_norm(model), **metrics,
                   "wall_seconds": round(time.perf_counter() - t_start, 2)}
            state.loss_sum, state.loss_count = 0.0, 0
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "step":
                        writer.add_scalar(k, v, step)
            last_metrics = row
            progress.eval(step, row)
            if rule is not None and state.stop_at is None:
                state.rule_streak = state.rule_streak + 1 if rule_holds(rule, row) else 0
                if state.rule_streak >= cfg.stop_patience:
                    state.stop_at = step + cfg.stop_margin_steps
                    progress.note(f"{cfg.stop_when} held for {cfg.stop_patience} evaluations at step {step}; "
                                  f"stopping at step {state.stop_at}")
                    if state.stop_at <= step:
                        stopping, state.stop_reason = True, f"stop rule {cfg.stop_when}"
        if fresh and (step in ckpt_steps or stopping):
            state.wall_seconds = time.perf_counter() - t_start
            save(step)
        if stopping:
            break

        # --- one optimisation step
        index = order.next()
        batch = train_set.take(index.to(device))
        for opt, lrs in zip(optimizers, base_lrs):
            for group, base in zip(opt.param_groups, lrs):
                group["lr"] = lr_at(step, cfg, base)
        with autocast_context(family, cfg.precision, device):
            loss, logits, q = forward_loss(model, batch, cfg.loss)
        if q is not None and cfg.q_halt_weight > 0:  # 0.5 · BCE(q_halt, whole sequence correct) (§4.2)
            with torch.no_grad():
                seq_correct = exact_match(model, batch, logits, ds.vocab.end_id).float()
            loss = loss + cfg.q_halt_weight * torch.nn.functional.binary_cross_entropy_with_logits(q, seq_correct)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            last = runs.list_checkpoints(out)
            raise GrokscopeError(f"training loss became {loss_value} at step {step}; the last good checkpoint is "
                                 f"step {last[-1] if last else 'none'} (kept); lower lr or use precision=fp32")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            for opt in optimizers:
                scaler.unscale_(opt)
        if grokfast is not None:
            grokfast.apply(model)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in optimizers:
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()
        if ema is not None:
            ema.update(model)
        state.loss_sum += loss_value
        state.loss_count += 1
        step += 1
        progress.advance(step, loss_value)

    progress.close()
    if writer is not None:
        writer.close()
    rows = runs.read_metrics(out)
    if not last_metrics and rows:  # resumed at the final step: nothing new was evaluated
        last_metrics = rows[-1]
    wall = time.perf_counter() - t_start
    session_steps, session_seconds = step - session_first_step, time.perf_counter() - session_start
    summary = {
        "final_step": step,
        "stop_reason": state.stop_reason,
        "milestones": milestones(rows, cfg.sat_threshold, cfg.thresholds()),
        "thresholds": {"sat": cfg.sat_threshold, "milestones": cfg.thresholds()},
        "final": {k: v for k, v in last_metrics.items() if k not in ("step",)},
        "wall_seconds": round(wall, 2),
        "steps_per_second": round(session_steps / session_seconds, 3) if session_steps else None,
        "device": device,
        "threads": torch.get_num_threads(),
    }
    runs.write_json_atomic(out / "summary.json", summary)
    return summary


def _tensorboard(out: Path):
    """A TensorBoard writer when the ``track`` extra is installed, else None (metrics.jsonl is always written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
