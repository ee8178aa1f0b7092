"""A run checked and resolved before anything is written (``prepare`` returns a ``RunRequest``): its device and
precision, its model against the dataset and the device's memory, its budget, and its folder (new, or a resume with
the same settings). A ``training.stack.Stack`` is built from one or more requests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from grokscope import artifacts, runs, runtime
from grokscope.version import __version__
from grokscope.data.encoding import training_rows
from grokscope.data.store import Dataset
from grokscope.errors import GrokscopeError
from grokscope.models.registry import build_model, family_of
from grokscope.training.config import MAX_STEPS, TrainConfig
from grokscope.training.finetune import FineTuneBudget
from grokscope.training.schedule import checkpoint_steps


@dataclass
class FineTune:
    """What a fine-tune (or its from-scratch control) adds to a training run: data, which the loop reads."""

    init_weights: dict | None  # start from these weights; None = a fresh initialisation (the control)
    record: dict  # written to config.yaml under "transfer"
    probes: dict[str, np.ndarray]  # evaluation sets (rows), replacing the dataset's probe types
    budget: FineTuneBudget  # when it stops before max_steps: a function of the metrics rows (exact on resume)
    counts: dict[str, int] = field(default_factory=dict)  # category -> queries, for the transfer summary
    lens: dict[str, str] = field(default_factory=dict)  # metric suffix -> probe set for lens rates and bridge use
    mixed: dict[str, int] = field(default_factory=dict)  # probe name -> category code: also scored on old hops kept


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


def run_config(data_dir: Path, ds: Dataset, model_cfg, cfg: TrainConfig, out: Path, extra: dict) -> dict:
    """What config.yaml records. The dataset's path is also kept relative to the run folder, so a run moved or copied
    with its study reads its own dataset (``artifacts.read_config``)."""
    return {"grokscope_version": __version__, "git_commit": runs.git_commit(), "torch_version": str(torch.__version__),
            "data": {"path": str(Path(data_dir).resolve()), "relative": artifacts.relative_to_run(data_dir, out),
                     "fingerprint": ds.meta["fingerprint"], "name": ds.meta["name"], "kind": ds.meta["kind"]},
            "model": {"family": family_of(model_cfg).name, "config": asdict(model_cfg)},
            "train": asdict(cfg), **extra}


def check_fits_dataset(model_cfg, ds: Dataset) -> None:
    if model_cfg.d_vocab != ds.vocab.d_vocab:
        raise GrokscopeError(f"model d_vocab {model_cfg.d_vocab} does not match the dataset's {ds.vocab.d_vocab}; "
                             f"drop the d_vocab override (it is read from dataset.json)")
    if model_cfg.context_length < ds.vocab.seq_len:
        raise GrokscopeError(f"model sequence length {model_cfg.context_length} is shorter than the dataset's "
                             f"{ds.vocab.seq_len} tokens; drop the n_ctx/seq_len override")


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


def _recorded_precision(out: Path) -> str | None:
    """The precision a run folder's ``config.yaml`` records (None when there is none to read)."""
    try:
        return (artifacts.read_config(Path(out)).get("train") or {}).get("precision")
    except GrokscopeError:
        return None


def prepare(ds: Dataset, data_dir: Path, model_cfg, cfg: TrainConfig, out: Path, resume: bool = False,
            force_config: bool = False, device: str = "auto", quiet: bool = False,
            finetune: FineTune | None = None) -> RunRequest:
    """Resolve the device and precision, check the model against the dataset and the run folder (new, or a resume
    with the same settings); raise one line per problem before anything is written."""
    device = runtime.pick_device(device)
    precision, note = runtime.resolve_precision(cfg.precision, device)
    if note and resume and _recorded_precision(out) == cfg.precision:
        # a run started where its precision was available continues in it (slower here), not in another one
        note, precision = (f"note: {out} was started in {cfg.precision}; it continues in it, though this device "
                           f"would use {precision}"), cfg.precision
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
    config = run_config(data_dir, ds, model_cfg, cfg, out, {"transfer": finetune.record} if finetune else {})
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
