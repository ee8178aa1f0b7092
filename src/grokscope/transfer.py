"""``grokscope transfer``: fine-tune a pre-trained checkpoint on new facts, or train the same architecture from
scratch on the same data (the control group), and measure how the circuit carries over (PAPER_SPEC §2.4, §4.3,
§4.4, §7; He et al. Fig. 3/4).

The transfer dataset's probes are split into the paper's categories (§7): new facts (``atomic_new``), new+old (new
first hop, old second hop), old+new, new+new, each with exact match and bridge-found rate; mixed categories both
with the faithful filter (old hop a kept atomic fact that is also an ``id_atomic`` probe, Appendix A.6) and the
powered variant over all pre-training ID atomic facts (§10.2). Old probe types measure retention.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from grokscope import runs
from grokscope.config import from_dict
from grokscope.data.config import DataConfig
from grokscope.data.store import Dataset, load, save
from grokscope.data.transfer import build_transfer
from grokscope.errors import GrokscopeError
from grokscope.models.registry import config_from_dict
from grokscope.train.batches import encode
from grokscope.train.config import TrainConfig
from grokscope.train.loop import train
from grokscope.train.milestones import first_step

# Fine-tuning recipes, applied on top of the parent's training config.
TRANSFER_PRESETS = {
    # §4.3: lr 2e-5, evaluation every 50 epochs (976 steps at 10,000 items), the first 40 evaluations plotted.
    "paper": dict(lr=2e-5, eval_every_epochs=50, max_epochs=2000, warmup_steps=2000),
    # Scaled (§10.2): evaluation every 250 steps; lr half the parent's, as the paper halves 4e-5 to 2e-5.
    "scaled": dict(eval_every=250, eval_every_epochs=0, max_epochs=0, max_steps=5000),
}

CATEGORIES = {  # metric suffix -> (probe type, category code or None, faithful filter)
    "new_old": ("test_inferred_new_mix", 1, True),
    "old_new": ("test_inferred_new_mix", 2, True),
    "new_old_powered": ("test_inferred_new_mix_powered", 1, False),
    "old_new_powered": ("test_inferred_new_mix_powered", 2, False),
    "new_new": ("test_inferred_new", None, False),
}


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


def transfer_summary(rows: list[dict], counts: dict[str, int]) -> dict:
    """Steps to New Fact accuracy >= 0.99 and to new+old >= 0.9; final value of every category metric."""
    last = rows[-1] if rows else {}
    final = {}
    for name in ["atomic_new", *CATEGORIES]:
        final[name] = {"exact_match": last.get(name), "bridge_found": last.get(f"bridge_found_{name}"),
                       "n": counts.get(name)}
    retention = {t: last.get(t) for t in ("id_atomic", "ood_atomic", "train_inferred", "test_inferred_iid",
                                          "test_inferred_ood")}
    return {"steps_to_new_fact_099": first_step(rows, "atomic_new", 0.99),
            "steps_to_new_old_090": first_step(rows, "new_old", 0.9),
            "steps_to_new_old_powered_090": first_step(rows, "new_old_powered", 0.9),
            "final": final, "retention": retention}


def run_transfer(parent_ref: tuple[Path, str | None], out: Path, data: Path | None = None, preset: str = "scaled",
                 overrides: dict | None = None, control: bool = False, device: str = "auto", quiet: bool = False,
                 resume: bool = False) -> dict:
    from grokscope.config import apply_overrides

    parent_run, step_spec = parent_ref
    parent_cfg = runs.read_config(parent_run)
    step = runs.resolve_step(parent_run, step_spec)
    parent_ds = load(parent_cfg["data"]["path"])
    if preset not in TRANSFER_PRESETS:
        raise GrokscopeError(f"unknown transfer preset {preset!r}; choose one of {', '.join(TRANSFER_PRESETS)}")
    out = Path(out)

    # --- the transfer dataset: given, or derived from the parent's own dataset (same fingerprint)
    if data is not None:
        ds = load(data)
        if ds.meta.get("kind") != "transfer":
            raise GrokscopeError(f"{data} is not a transfer dataset; build one with `grokscope data transfer`")
        if ds.meta.get("parent_fingerprint") != parent_cfg["data"]["fingerprint"]:
            raise GrokscopeError(f"{data} was derived from dataset {ds.meta.get('parent_fingerprint')} but "
                                 f"{parent_run} was trained on {parent_cfg['data']['fingerprint']}; use the "
                                 f"transfer set of the parent's own dataset (or omit --data to build it)")
        data_dir = Path(data)
    else:
        data_dir = out / "data"
        if (data_dir / "dataset.json").exists():
            ds = load(data_dir)
        else:
            if parent_ds.meta["fingerprint"] != parent_cfg["data"]["fingerprint"]:
                raise GrokscopeError(f"the parent's dataset at {parent_cfg['data']['path']} changed since training;"
                                     f" pass the transfer set with --data")
            dcfg = from_dict(DataConfig, parent_ds.meta["config"], what="dataset config")
            ds = build_transfer(parent_ds, dcfg)
            out.mkdir(parents=True, exist_ok=True)
            save(ds, data_dir)

    # --- recipe: the parent's, with the fine-tuning preset and user overrides on top
    family = parent_cfg["model"]["family"]
    train_cfg = from_dict(TrainConfig, parent_cfg["train"], what="train config")
    recipe = dict(TRANSFER_PRESETS[preset])
    if preset == "scaled":
        recipe["lr"] = train_cfg.lr / 2
    if control:  # §4.4: the control group trains from scratch with the pre-training recipe
        recipe.pop("lr", None)
    train_cfg = dataclasses.replace(train_cfg, **recipe, stop_when="")
    if overrides:
        train_cfg = apply_overrides(train_cfg, overrides, what="train")
    problems = train_cfg.problems()
    if problems:
        raise GrokscopeError(problems)
    model_cfg = config_from_dict(family, parent_cfg["model"]["config"])
    init = None
    if not control:
        weights, _, _ = runs.load_checkpoint(parent_run, step, with_state=False)
        init = weights  # EMA weights for the trm (what its checkpoints hold, §4.3)
    extra = {"transfer": {"parent_run": str(Path(parent_run).resolve()), "parent_step": step,
                          "parent_data_fingerprint": parent_cfg["data"]["fingerprint"], "control": control,
                          "preset": preset}}

    # --- probe sets: every probe type plus the categories
    cats = category_rows(ds)
    probe_sets = {t: encode(ds, ds.probe(t)) for t in ds.probe_types}
    probe_sets.update({name: encode(ds, rows) for name, rows in cats.items()})
    lens = {"ood": "test_inferred_ood", **{name: name for name in cats}}
    summary = train(ds, data_dir, family, model_cfg, train_cfg, out, resume=resume, device=device, quiet=quiet,
                    init_weights=init, extra_config=extra, lens_types=lens, probe_sets=probe_sets)
    counts = {name: len(rows) for name, rows in cats.items()}
    counts["atomic_new"] = len(ds.probe("atomic_new"))
    summary["transfer"] = transfer_summary(runs.read_metrics(out), counts)
    runs.write_json_atomic(out / "summary.json", summary)
    return summary


def print_transfer_summary(summary: dict) -> None:
    t = summary["transfer"]
    print(f"steps to New Fact acc >= 0.99: {t['steps_to_new_fact_099']}; to new+old >= 0.9: "
          f"{t['steps_to_new_old_090']} (powered: {t['steps_to_new_old_powered_090']})")
    for name, v in t["final"].items():
        em = "n/a" if v["exact_match"] is None else f"{v['exact_match']:.3f}"
        br = "n/a" if v["bridge_found"] is None else f"{v['bridge_found']:.3f}"
        print(f"  {name:<18} exact match {em}  bridge found {br}  (n={v['n']})")
    print("  retention: " + json.dumps({k: (round(v, 3) if v is not None else None)
                                         for k, v in t["retention"].items()}))
