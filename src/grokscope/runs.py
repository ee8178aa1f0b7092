"""The run-folder contract between stages, and the resume policy.

```
runs/<run>/config.yaml        resolved config: data (path, fingerprint), model (family, config), train
runs/<run>/metrics.jsonl      one JSON object per evaluation: the source of truth
runs/<run>/summary.json       milestones and final numbers
runs/<run>/checkpoints/step_<8 digits>/
    model.safetensors         the weights evaluation uses (EMA weights when EMA is on)
    state.safetensors         raw weights, optimiser state, Grokfast filter, RNG state (for exact resume)
    meta.json                 step, loop state, data position, optimiser param groups, schema version
runs/<run>/.lock              held while a process trains in the folder
```
Checkpoints are written under a temporary name and renamed when complete; no pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from grokscope import artifacts
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import GrokDefinition, first_step
from grokscope.models.registry import family

CKPT_SCHEMA = 1
# Changing these on --resume is allowed: they extend or shorten a run without changing what it computes.
RESUMABLE_KEYS = {"max_steps", "max_epochs", "max_minutes", "stop_when", "stop_patience", "stop_margin_steps",
                  "sat_multiple", "threads", "eval_batch_size", "compile"}


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step_{step:08d}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------------------------------------ checkpoints
def _host_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``save_file`` with a full disk (or a file-size limit) as one line: safetensors reports it as its own error."""
    try:
        save_file(_host_tensors(tensors), path)
    except (SafetensorError, OSError) as exc:
        Path(path).unlink(missing_ok=True)
        raise GrokscopeError(f"{path}: cannot write the weights ({str(exc).split(': ', 1)[-1]}); free the space or "
                             f"choose another location (what was saved before is kept)") from None


def save_checkpoint(run: Path, step: int, model_weights: dict, state: dict, meta: dict) -> Path:
    final = step_dir(run, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = artifacts.make_temp_dir(final.parent, f".tmp-{final.name}-")
    try:
        save_tensors(model_weights, tmp / "model.safetensors")
        save_tensors(state, tmp / "state.safetensors")
        try:
            (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "schema": CKPT_SCHEMA}, indent=1))
        except OSError as exc:
            raise GrokscopeError(f"{tmp / 'meta.json'}: cannot write ({exc.strerror}); free the space or choose "
                                 f"another location (what was saved before is kept)") from None
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def clean_run_leftovers(run: Path) -> None:
    """Remove what killed writes left in a run folder: temporary checkpoint folders and half-written files. Only
    called by the process that holds the run's lock."""
    root = Path(run)
    for leftover in (root / "checkpoints").glob(".tmp-*") if (root / "checkpoints").is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(".*.tmp-*"):
        leftover.unlink(missing_ok=True)


def list_checkpoints(run: Path) -> list[int]:
    """Steps of complete checkpoints (those with meta.json), ascending."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    steps = []
    for p in root.glob("step_*"):
        if (p / "meta.json").is_file() and p.name[5:].isdigit():
            steps.append(int(p.name[5:]))
    return sorted(steps)


class CorruptCheckpoint(Exception):
    pass


def load_checkpoint(run: Path, step: int, with_state: bool = True) -> tuple[dict, dict, dict]:
    """(model weights, state tensors or {}, meta); CorruptCheckpoint when a file is missing or damaged."""
    path = step_dir(run, step)
    try:
        meta = json.loads((path / "meta.json").read_text())
        weights = load_file(path / "model.safetensors")
        state = load_file(path / "state.safetensors") if with_state else {}
    except (OSError, ValueError, SafetensorError) as exc:
        raise CorruptCheckpoint(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("schema") != CKPT_SCHEMA:
        raise CorruptCheckpoint(f"{path}: schema {meta.get('schema') if isinstance(meta, dict) else '?'}, "
                                f"expected {CKPT_SCHEMA}")
    return weights, state, meta


def _first_checkpoint_from(steps: list[int], step: int | None) -> int | None:
    return None if step is None else next((s for s in steps if s >= step), None)


def named_step(run: Path, name: str, steps: list[int]) -> int | None:
    """``sat``: the first checkpoint at or after training saturation; ``grokked``: the first at or after the run's
    family called it grokked (``grokked_definition``); None when the run never got there."""
    rows = artifacts.read_metrics(run)
    cfg = artifacts.read_config(run)
    if name == "sat":
        return _first_checkpoint_from(steps, first_step(rows, "train_acc", cfg["train"].get("sat_threshold",
                                                                                              th.SAT_CHECKPOINT)))
    if name == "grokked":
        grokked = grokked_definition(cfg)
        return _first_checkpoint_from(steps, first_step(rows, grokked.metric, grokked.threshold))
    raise ValueError(name)


def grokked_definition(cfg: dict) -> GrokDefinition:
    """What "grokked" means for the family a run's config names (the gpt: ID >= 0.9; the trm: OOD >= 0.5)."""
    try:
        return family((cfg.get("model") or {}).get("family", "gpt")).model_cls.grokked
    except GrokscopeError:
        return GrokDefinition()


def resolve_step(run: Path, step: str | int | None) -> int:
    """'last' / None -> the last complete checkpoint; 'sat' / 'grokked' -> see ``named_step``; an int -> that
    checkpoint. Every failure is one line naming the fix."""
    steps = list_checkpoints(run)
    if not steps:
        raise GrokscopeError(f"{run}: has no complete checkpoint; train it first")
    if isinstance(step, bool):
        raise GrokscopeError(f"step {step!r} is not a number, 'last', 'sat' or 'grokked'")
    if step in (None, "last"):
        return steps[-1]
    if step in ("sat", "grokked"):
        found = named_step(run, step, steps)
        if found is None:
            what = "training saturation" if step == "sat" else grokked_definition(artifacts.read_config(run)).text()
            raise GrokscopeError(f"{run}: never reached {what}, so it has no '{step}' checkpoint; name a step")
        return found
    try:
        value = int(step)
    except (TypeError, ValueError):
        raise GrokscopeError(f"step {step!r} is not a number, 'last', 'sat' or 'grokked'") from None
    if value not in steps:
        shown = ", ".join(map(str, steps[:12])) + (" ..." if len(steps) > 12 else "")
        raise GrokscopeError(f"{run}: has no checkpoint at step {value}; available: {shown}")
    return value


def load_model(run: Path, step: str | int | None = None, device: str | torch.device = "cpu"):
    """The evaluation model of ``run`` at ``step`` (EMA weights where the run used EMA), in eval mode."""
    from grokscope.models.registry import build_model, config_from_dict

    cfg = artifacts.read_config(run)
    step = resolve_step(run, step)
    try:
        weights, _, _ = load_checkpoint(run, step, with_state=False)
    except CorruptCheckpoint as exc:
        raise GrokscopeError(f"{exc}; pick another step or re-train") from None
    model = build_model(config_from_dict(cfg["model"]["family"], cfg["model"]["config"],
                                         f"{run}/config.yaml: model.config"))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise GrokscopeError(f"{step_dir(run, step)}: does not fit the model in config.yaml ({first}); restore "
                             f"the run's config.yaml") from None
    return model.to(device).eval(), step


# ------------------------------------------------------------------------------------------------ resume policy
def config_differences(old: dict, new: dict) -> list[str]:
    """What changed between two run configs, ignoring budget keys that may change on --resume."""
    diffs = []
    if old.get("model", {}).get("family") != new.get("model", {}).get("family"):
        diffs.append(f"model.family: {old.get('model', {}).get('family')!r} -> {new['model']['family']!r}")
    for section in ("model", "train"):
        a, b = old.get(section, {}), new.get(section, {})
        if section == "model":
            a, b = a.get("config", {}), b.get("config", {})
        for key in sorted(set(a) | set(b)):
            if section == "train" and key in RESUMABLE_KEYS:
                continue
            if a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def has_readable_checkpoint(run: Path) -> bool:
    for step in reversed(list_checkpoints(run)):
        try:
            load_checkpoint(run, step, with_state=False)
            return True
        except CorruptCheckpoint:
            continue
    return False


def check_run_target(out: Path, resume: bool, keep: tuple[str, ...] = ()) -> None:
    """``out`` may receive a run: a new run needs a new or empty folder (``keep`` names entries a caller put there,
    e.g. a fine-tune's data/); a resume needs a run there. One line per problem, before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GrokscopeError(f"{out}: exists and is a file, not a folder; choose another --out")
    if (out / "config.yaml").exists():
        if not resume:
            raise GrokscopeError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
        return
    if resume:
        raise GrokscopeError(f"{out}: nothing to resume (no config.yaml); drop --resume to start a new run")
    if out.is_dir() and any(p.name not in keep and p.name != ".lock" for p in out.iterdir()):
        raise GrokscopeError(f"{out}: exists and is not a run; choose an empty or new --out")
    artifacts.ensure_writable_dir(out)


def prepare_run_dir(out: Path, config: dict, resume: bool, force_config: bool, keep: tuple[str, ...] = ()) -> None:
    """``check_run_target``, and a resume must be of the same dataset, with the same model and training settings
    unless ``force_config`` (budget keys may always change)."""
    out = Path(out)
    check_run_target(out, resume, keep)
    if not resume:
        return
    old = artifacts.read_config(out)
    if old["data"]["fingerprint"] != config["data"]["fingerprint"]:
        raise GrokscopeError(f"{out}: was trained on dataset {old['data']['fingerprint']} but --data is "
                             f"{config['data']['fingerprint']}; resume with the run's own dataset")
    diffs = config_differences(old, config)
    if diffs and not force_config:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise GrokscopeError(f"{out}: config changed since the run started ({shown}); resume with the original "
                             f"settings, or pass --force-config to accept the changes")


# What a run writes in its folder (artifacts.RUN_ENTRIES without the lock and a fine-tune's data/, which stay).
RUN_FILES = tuple(name for name in artifacts.RUN_ENTRIES if name not in (".lock", "data"))


def clear_run(out: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove what a run wrote in ``out`` (never anything else), keeping the entries named in ``keep``."""
    for name in RUN_FILES:
        target = Path(out) / name
        if name in keep or not (target.exists() or target.is_symlink()):
            continue
        artifacts.remove_own_tree(target)  # in subfolders, only the files the tool wrote: a user's stay
