"""The run-directory contract between stages (STYLE_ANCHORS 8, DESIGN §2).

```
runs/<run>/config.yaml        resolved config: data (path, fingerprint), model (family, config), train
runs/<run>/metrics.jsonl      one JSON object per evaluation: the source of truth
runs/<run>/summary.json       milestones and final numbers
runs/<run>/checkpoints/step_<8 digits>/
    model.safetensors         the weights evaluation uses (EMA weights when EMA is on, §4.2)
    state.safetensors         raw weights, optimiser state, Grokfast filter, RNG state (for exact resume)
    meta.json                 step, loop state, data position, optimiser param groups, schema version
```
Checkpoints are written under a temporary name and renamed when complete; no pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from grokscope.errors import GrokscopeError

CKPT_SCHEMA = 1


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step_{step:08d}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_config(run: Path, config: dict) -> None:
    tmp = run / f".config.yaml.tmp-{os.getpid()}"
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, run / "config.yaml")


def read_config(run: Path) -> dict:
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise GrokscopeError(f"{run} is not a grokscope run (no config.yaml); train one with `grokscope train`")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GrokscopeError(f"{path} is not valid YAML ({exc}); restore it or start a new run") from None


def ensure_writable(run: Path) -> None:
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=run, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise GrokscopeError(f"cannot write to {run} ({exc.strerror}); choose a writable --out") from None


def _state_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(run: Path, step: int, model_weights: dict, state: dict, meta: dict) -> Path:
    final = step_dir(run, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        save_file(_state_tensors(model_weights), tmp / "model.safetensors")
        save_file(_state_tensors(state), tmp / "state.safetensors")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "schema": CKPT_SCHEMA}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_checkpoints(run: Path) -> list[int]:
    """Steps of complete checkpoints (those with meta.json), ascending."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in root.glob("step_*") if (p / "meta.json").is_file())


class CorruptCheckpoint(Exception):
    pass


def load_checkpoint(run: Path, step: int, with_state: bool = True) -> tuple[dict, dict, dict]:
    """(model weights, state tensors or {}, meta); CorruptCheckpoint when a file is missing or truncated."""
    path = step_dir(run, step)
    try:
        meta = json.loads((path / "meta.json").read_text())
        weights = load_file(path / "model.safetensors")
        state = load_file(path / "state.safetensors") if with_state else {}
    except (OSError, ValueError, SafetensorError) as exc:
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc})") from None
    if meta.get("schema") != CKPT_SCHEMA:
        raise CorruptCheckpoint(f"checkpoint {path} has schema {meta.get('schema')}, expected {CKPT_SCHEMA}")
    return weights, state, meta


def resolve_step(run: Path, step: str | int | None) -> int:
    """'last' / None -> the last complete checkpoint; an int -> that checkpoint (clear error if absent)."""
    steps = list_checkpoints(run)
    if not steps:
        raise GrokscopeError(f"{run} has no complete checkpoint; train it first")
    if step in (None, "last"):
        return steps[-1]
    try:
        step = int(step)
    except ValueError:
        raise GrokscopeError(f"step {step!r} is not a number or 'last'") from None
    if step not in steps:
        raise GrokscopeError(f"{run} has no checkpoint at step {step}; available: {', '.join(map(str, steps))}")
    return step


def load_model(run: Path, step: str | int | None = None):
    """The evaluation model of ``run`` at ``step`` (EMA weights where the run used EMA), in eval mode."""
    from grokscope.models.registry import build_model, config_from_dict

    cfg = read_config(run)
    step = resolve_step(run, step)
    try:
        weights, _, _ = load_checkpoint(run, step, with_state=False)
    except CorruptCheckpoint as exc:
        raise GrokscopeError(str(exc)) from None
    model = build_model(config_from_dict(cfg["model"]["family"], cfg["model"]["config"]))
    model.load_state_dict(weights, strict=True)
    return model.eval(), step


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a line cut by a crash: everything after it is untrusted
    return rows


def truncate_metrics(run: Path, last_step: int) -> None:
    """Keep metrics up to ``last_step`` (a resumed run re-creates the rest)."""
    rows = [r for r in read_metrics(run) if r["step"] <= last_step]
    path = Path(run) / "metrics.jsonl"
    tmp = path.with_name(f".metrics.jsonl.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
