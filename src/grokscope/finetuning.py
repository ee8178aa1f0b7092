"""``grokscope transfer``: fine-tune a pre-trained checkpoint on new facts, or train the same architecture from
scratch on the same data (the control group), and measure how the circuit carries over (He et al. §5, Fig. 3/4).

The transfer dataset's probes are split into He et al.'s categories: new facts (``atomic_new``), new+old (new
first hop, old second hop), old+new and new+new, each with exact match, He et al.'s bridge found and bridge use.
The mixed categories come both with the faithful filter (the old hop is a kept atomic fact that is also an
``id_atomic`` probe, as the authors' plotting code filters) and in the powered variant over all pre-training ID
atomic facts (hundreds of queries at small N). Old probe types measure retention (so a fine-tune's ``train_acc``,
the mean over the old training probe types, is retention too), and each mixed category is also scored on the
queries whose old hop the fine-tuned model still answers (``<category>_retained``, with ``retention_<category>``).

Budget (``FineTuneBudget``): a fine-tune runs until its New Fact accuracy has reached 0.99 and it has run
``new_fact_multiple`` times that many steps, and new+old has not moved for ``flat_evals`` evaluations; ``max_steps``
caps it. He et al.'s fine-tunes learn the new facts by about 2.9k steps and compose new+old from about 5.9k (§5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from grokscope import artifacts, runs
from grokscope.config import apply_overrides, check, from_dict
from grokscope.data.config import TRANSFER_DRAWS, DataConfig
from grokscope.data.store import Dataset, load, save
from grokscope.data.transfer import build_transfer, check_transfer_parent
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.models.registry import config_from_dict
from grokscope.training.config import TrainConfig
from grokscope.training.finetune import CATEGORIES, FineTuneBudget, transfer_summary  # noqa: F401 (re-exported)
from grokscope.training.request import FineTune, RunRequest, prepare
from grokscope.training.runspec import RunSpec, plain

# Fine-tuning recipes, applied on top of the parent's training config.
PAPER_FT_LR = 2e-5  # He et al. §5.1: the fine-tuning learning rate (after 4e-5 in pre-training)
PAPER_INIT_SCALE = 1 / math.sqrt(1536)  # the scale of He et al.'s trm weights at init (width 1536)
PAPER_FT_EMA = 0.999  # He et al.'s EMA, kept through fine-tuning
WARMUP_SHARE = 0.05  # the paper's 2,000 warm-up steps of its ~40,000 plotted fine-tuning steps

TRANSFER_PRESETS = {
    # He et al.: lr 2e-5, evaluation every 50 epochs (976 steps at 10,000 items), the first 40 evaluations plotted.
    "paper": dict(lr=2e-5, eval_every_epochs=50, max_epochs=2000, warmup_steps=2000),
    # Scaled: the paper's regime at this width (docs/calibration.md, "Fine-tuning in the paper's regime"): Adam moves
    # each weight by about lr per step, so the lr keeps the paper's step relative to the weights' scale
    # (``paper_step_lr``); an EMA of 0.999 where the parent has one, a warm-up of 5% of max_steps; evaluation every
    # 250 steps.
    "scaled": dict(eval_every=250, eval_every_epochs=0, max_epochs=0, max_steps=5000),
}


def init_scale(family: str, model_cfg: dict) -> float:
    """The scale of a model's weights at init: the trm draws them with std 1/sqrt(width); the gpt with init_std."""
    if family == "trm":
        return 1 / math.sqrt(float(model_cfg.get("d_model", 1536)))
    return float(model_cfg.get("init_std", 0.02))


def paper_step_lr(family: str, model_cfg: dict) -> float:
    """He et al.'s fine-tuning step relative to the weights' scale, at this model's scale."""
    return PAPER_FT_LR * init_scale(family, model_cfg) / PAPER_INIT_SCALE


def category_rows(ds: Dataset) -> dict[str, np.ndarray]:
    """Probe rows per category (see CATEGORIES); the faithful sets keep only old hops that are id_atomic probes."""
    out = {}
    for name, (probe_type, code, faithful) in CATEGORIES.items():
        rows = ds.probe(probe_type)
        keep = np.ones(len(rows), dtype=bool)
        if code is not None:
            keep &= ds.arrays[f"probe.{probe_type}.category"] == code
        if faithful:
            keep &= ds.arrays[f"probe.{probe_type}.old_in_id_probe"].astype(bool)
        out[name] = rows[keep]
    return out


def given_transfer_set(parent_run: Path, parent_cfg: dict, data: Path) -> tuple[Dataset, Path]:
    """A transfer set passed with --data, checked against the parent's dataset."""
    ds = load(data)
    if ds.meta.get("kind") != "transfer":
        raise GrokscopeError(f"{data}: not a transfer dataset; build one with `grokscope data transfer`")
    if ds.meta.get("parent_fingerprint") != parent_cfg["data"]["fingerprint"]:
        raise GrokscopeError(f"{data}: was derived from dataset {ds.meta.get('parent_fingerprint')} but "
                             f"{parent_run} was trained on {parent_cfg['data']['fingerprint']}; use the "
                             f"transfer set of the parent's own dataset (or omit --data to build it)")
    return ds, Path(data)


def derived_transfer_set(parent_run: Path, parent_cfg: dict, out: Path, draw: str = "uniform") -> tuple[Dataset, Path]:
    """The transfer set of the parent's own dataset, its new facts drawn as ``draw`` says (``DataConfig.
    transfer_draw``), built into ``out/data`` (or read from there)."""
    data_dir = out / "data"
    if (data_dir / "dataset.json").exists():
        return load(data_dir), data_dir
    parent_ds = load(parent_cfg["data"]["path"])
    if parent_ds.meta["fingerprint"] != parent_cfg["data"]["fingerprint"]:
        raise GrokscopeError(f"{parent_cfg['data']['path']}: changed since {parent_run} was trained; pass the "
                             f"transfer set with --data")
    check_transfer_parent(parent_ds)  # a comparison run has no two-hop facts to add
    dcfg = dataclasses.replace(from_dict(DataConfig, parent_ds.meta["config"], "dataset config"), transfer_draw=draw)
    ds = build_transfer(parent_ds, dcfg)
    save(ds, data_dir)
    return ds, data_dir


def transfer_config(parent_cfg: dict, preset: str, overrides: dict | None, control: bool) -> TrainConfig:
    """The parent's recipe with the fine-tuning preset and the user's overrides on top (the control keeps the
    pre-training learning rate, as He et al.'s control group does)."""
    if preset not in TRANSFER_PRESETS:
        raise GrokscopeError(f"unknown transfer preset {preset!r}; choose one of {', '.join(TRANSFER_PRESETS)}")
    cfg = from_dict(TrainConfig, parent_cfg["train"], "the parent's config.yaml: train")
    recipe = dict(TRANSFER_PRESETS[preset])
    if preset == "scaled":
        model = parent_cfg.get("model") or {}
        recipe["lr"] = paper_step_lr(model.get("family", ""), model.get("config") or {})
        if cfg.ema_decay > 0:
            recipe["ema_decay"] = PAPER_FT_EMA
    if control:  # the from-scratch control keeps the pre-training recipe, as He et al.'s control group does
        recipe = {k: v for k, v in recipe.items() if k not in ("lr", "ema_decay")}
    # A fine-tune runs to its own budget (FineTuneBudget), not to its parent's stop rule or saturation multiple.
    cfg = dataclasses.replace(cfg, **recipe, stop_when="", sat_multiple=0.0)
    if overrides:
        cfg = apply_overrides(cfg, overrides, what="train")
    if preset == "scaled" and not control and "warmup_steps" not in (overrides or {}):
        cfg = dataclasses.replace(cfg, warmup_steps=round(WARMUP_SHARE * cfg.max_steps))
    return check(cfg)


def finetune_spec(parent_ref: tuple[Path, str | None], out: Path, data: Path | None = None, preset: str = "scaled",
                  overrides: dict | None = None, control: bool = False, device: str = "auto", quiet: bool = False,
                  resume: bool = False, budget: FineTuneBudget = FineTuneBudget(), draw: str = "uniform") -> RunSpec:
    """A fine-tune (or its control) as a ``RunSpec``: the parent's model and recipe with the fine-tuning preset, and
    the fine-tune's source as data (``RunSpec.finetune``: parent run and step, control, preset, budget, draw). It
    trains like any run (``api.train``), alone or stacked with others of its architecture. ``data`` empty: the
    transfer set is derived from the parent's own dataset into ``OUT/data`` when the run is prepared."""
    if budget.problems():
        raise GrokscopeError(budget.problems())
    if draw not in TRANSFER_DRAWS:
        raise GrokscopeError(f"--draw {draw!r}: choose one of {', '.join(TRANSFER_DRAWS)}")
    parent_run, step_spec = Path(parent_ref[0]), parent_ref[1]
    parent_cfg = artifacts.read_config(parent_run)
    step = runs.resolve_step(parent_run, step_spec)
    train_cfg = transfer_config(parent_cfg, preset, overrides, control)
    family = parent_cfg["model"]["family"]
    model_cfg = config_from_dict(family, parent_cfg["model"]["config"], f"{parent_run}/config.yaml: model.config")
    if data is not None:  # a given transfer set must be the parent's, refused before any folder is made
        given_transfer_set(parent_run, parent_cfg, Path(data))
    source = {"parent": str(parent_run.resolve()), "step": step, "control": control, "preset": preset,
              "budget": asdict(budget), "draw": draw}
    return RunSpec(data="" if data is None else str(data), out=str(out), family=family, train=plain(asdict(train_cfg)),
                   model=plain(asdict(model_cfg)), resume=resume, device=device, quiet=quiet, finetune=plain(source))


@contextlib.contextmanager
def target_held(spec: RunSpec):
    """A fine-tune's folder checked, then locked from the derivation of its transfer set (``OUT/data``) to the end
    of its training (the trainer takes the same, re-entrant, lock)."""
    runs.check_run_target(Path(spec.out), spec.resume, keep=("data",))  # before the lock creates the folder
    with artifacts.FolderLock(Path(spec.out), "run"):
        yield


def finetune_request(spec: RunSpec) -> RunRequest:
    """The ``RunRequest`` of a fine-tune spec (``finetune_spec``), prepared while its folder is held
    (``target_held``): its transfer set (given, or derived into ``OUT/data``), the parent's weights (the weights the
    checkpoint evaluates with: the trm's EMA weights, where a new EMA starts), and its categories of queries."""
    source, out = spec.finetune, Path(spec.out)
    parent_run, step, control = Path(source["parent"]), source["step"], source["control"]
    parent_cfg = artifacts.read_config(parent_run)
    given = given_transfer_set(parent_run, parent_cfg, Path(spec.data)) if spec.data else None
    runs.check_run_target(out, spec.resume, keep=("data",))  # again under the lock: another process may have finished
    budget = FineTuneBudget(**source["budget"])
    if spec.resume:
        _check_same_parent(out, parent_run, step, control)
        budget = _recorded_budget(out, budget, spec.quiet)
    init = None
    if not control:
        try:
            init, _, _ = runs.load_checkpoint(parent_run, step, with_state=False)
        except runs.CorruptCheckpoint as exc:
            raise GrokscopeError(f"{exc}; pick another parent step") from None
    ds, data_dir = given or derived_transfer_set(parent_run, parent_cfg, out, source["draw"])
    cats = category_rows(ds)
    counts = {name: len(rows) for name, rows in cats.items()}
    counts["atomic_new"] = len(ds.probe("atomic_new"))
    record = {"parent_run": str(parent_run), "parent_relative": artifacts.relative_to_run(parent_run, out),
              "parent_step": step, "parent_data_fingerprint": parent_cfg["data"]["fingerprint"], "control": control,
              "preset": source["preset"], "budget": asdict(budget)}
    finetune = FineTune(init_weights=init, record=record,
                        probes={**{t: ds.probe(t) for t in ds.probe_types}, **cats},
                        lens={"ood": "test_inferred_ood", **{name: name for name in cats}},
                        counts=counts, mixed={name: code for name, (_, code, _) in CATEGORIES.items() if code},
                        budget=budget)
    train_cfg, model_cfg = spec.configs(ds.vocab.d_vocab, ds.vocab.seq_len)
    return prepare(ds, data_dir, model_cfg, train_cfg, out, resume=spec.resume, device=spec.device, quiet=spec.quiet,
                   finetune=finetune)


def _recorded_budget(out: Path, given: FineTuneBudget, quiet: bool) -> FineTuneBudget:
    """A resumed fine-tune keeps the budget it started with, so it stops where it would have (one that started before
    budgets were recorded ran to max_steps)."""
    old = (artifacts.read_config(out).get("transfer") or {}).get("budget")
    try:
        recorded = FineTuneBudget(**old) if isinstance(old, dict) else FineTuneBudget(new_fact_multiple=0)
    except TypeError:
        raise GrokscopeError(f"{out}/config.yaml: its transfer.budget is not one this grokscope reads; start the "
                             f"fine-tune over in another --out") from None
    if asdict(recorded) == asdict(given):
        return given
    if not quiet:
        print(f"note: {out} resumes with the budget it started with ({asdict(recorded)}), not {asdict(given)}")
    return recorded


def _check_same_parent(out: Path, parent_run: Path, step: int, control: bool) -> None:
    """A resumed fine-tune must continue from the parent it started from (its config.yaml records it)."""
    old = artifacts.read_config(out).get("transfer") or {}
    was = (old.get("parent_run"), old.get("parent_step"), bool(old.get("control")))
    now = (str(parent_run.resolve()), step, control)
    if was != now:
        def name(ref):
            return f"{ref[0]}@{ref[1]}" + (" --control" if ref[2] else "")
        raise GrokscopeError(f"{out}: was fine-tuned from {name(was)}, not {name(now)}; resume it with --from "
                             f"{was[0]}@{was[1]}{' --control' if was[2] else ''}, or choose another --out")


def print_transfer_summary(summary: dict) -> None:
    t = summary["transfer"]
    print(f"steps to New Fact acc >= {th.NEW_FACT_MILESTONE}: {t['steps_to_new_fact']}; to new+old >= "
          f"{th.NEW_OLD_COMPOSES}: {t['steps_to_new_old']} (powered: {t['steps_to_new_old_powered']})")

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    for name, v in t["final"].items():
        kept = "" if v.get("retention") is None else \
            f"  on old hops kept {fmt(v.get('retained'))} (n={v.get('n_retained')}, retention {fmt(v['retention'])})"
        print(f"  {name:<18} exact match {fmt(v['exact_match'])}  bridge found {fmt(v['bridge_found'])}  bridge use "
              f"{fmt(v['bridge_use'])}  (n={v['n']}){kept}")
    print("  retention: " + json.dumps({k: (round(v, 3) if v is not None else None)
                                         for k, v in t["retention"].items()}))
