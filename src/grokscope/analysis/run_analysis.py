"""``grokscope analyze``: run the analyses over a run's checkpoints and write tidy tables to RUN/analysis/.

Tables (Parquet; columns run, step, probe_type, stage, stage_index, position, metric, value, n):
``lens.parquet`` (logit lens, §6.1/6.3) and ``trace.parquet`` (causal tracing); JSON: ``compare.json`` (the
checkpoint at training saturation vs the last one, on ID compositions, Finding 1) and ``regime.json``.
Re-running replaces the rows of the (step, probe type) pairs it recomputes and keeps the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope import runs
from grokscope.analysis.circuits import classify_regime, compare_paths
from grokscope.analysis.logit_lens import lens_table
from grokscope.analysis.patching import trace_table
from grokscope.data.store import load
from grokscope.errors import GrokscopeError
from grokscope.train.batches import encode

PROBE_ALIASES = {"ood": "test_inferred_ood", "iid": "test_inferred_iid", "train": "train_inferred",
                 "new": "test_inferred_new", "mix": "test_inferred_new_mix",
                 "mix_powered": "test_inferred_new_mix_powered"}
ANALYSES = ("lens", "trace", "compare", "regime")
TRACE_EXAMPLES = 300  # Wang samples 300 compositions (§6.3)


def run_dataset(run: Path, data: Path | None = None):
    cfg = runs.read_config(run)
    path = Path(data or cfg["data"]["path"])
    ds = load(path)
    if ds.meta["fingerprint"] != cfg["data"]["fingerprint"]:
        raise GrokscopeError(f"dataset {path} (fingerprint {ds.meta['fingerprint']}) is not the one {run} was "
                             f"trained on ({cfg['data']['fingerprint']}); pass the right one with --data")
    return ds


def sat_step(run: Path, steps: list[int]) -> int:
    """The first checkpoint at or after training saturation (t_sat in summary.json, else metrics)."""
    from grokscope.train.milestones import first_step

    cfg = runs.read_config(run)
    t_sat = first_step(runs.read_metrics(run), "train_acc", cfg["train"]["sat_threshold"])
    if t_sat is None:
        raise GrokscopeError(f"{run} never reached training saturation (train_acc >= "
                             f"{cfg['train']['sat_threshold']}); choose explicit --steps")
    return next((s for s in steps if s >= t_sat), steps[-1])


def resolve_steps(run: Path, spec: str) -> list[int]:
    steps = runs.list_checkpoints(run)
    if not steps:
        raise GrokscopeError(f"{run} has no checkpoints; train it first")
    out = set()
    for item in spec.split(","):
        item = item.strip()
        if item == "all":
            out.update(steps)
        elif item == "last":
            out.add(steps[-1])
        elif item == "sat":
            try:
                out.add(sat_step(run, steps))
            except GrokscopeError as exc:  # keep going with the middle checkpoint, and say so
                print(f"note: {exc}; using the middle checkpoint {steps[len(steps) // 2]} instead of 'sat'")
                out.add(steps[len(steps) // 2])
        else:
            out.add(runs.resolve_step(run, item))
    return sorted(out)


def resolve_probes(ds, spec: str) -> list[str]:
    out, problems = [], []
    for item in spec.split(","):
        name = PROBE_ALIASES.get(item.strip(), item.strip())
        if name not in ds.probe_types:
            problems.append(f"probe type {item!r} is not in this dataset; available: "
                            f"{', '.join(sorted(PROBE_ALIASES))} or {', '.join(ds.probe_types)}")
        else:
            out.append(name)
    if problems:
        raise GrokscopeError(problems)
    return out


def _sample_rows(rows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(rows) <= n:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))]


def _merge_table(path: Path, new: pd.DataFrame) -> None:
    if path.exists():
        old = pd.read_parquet(path)
        keys = set(zip(new["step"], new["probe_type"]))
        old = old[[k not in keys for k in zip(old["step"], old["probe_type"])]]
        new = pd.concat([old, new], ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    new.sort_values(["step", "probe_type", "stage_index"]).to_parquet(tmp, index=False)
    os.replace(tmp, path)


def analyze(run: Path, steps: str = "sat,last", probes: str = "ood,iid,train",
            analyses: str = "lens,trace,compare,regime", data: Path | None = None, log=print) -> dict:
    run = Path(run)
    wanted = [a.strip() for a in analyses.split(",") if a.strip()]
    bad = [a for a in wanted if a not in ANALYSES]
    if bad:
        raise GrokscopeError(f"unknown analyses {', '.join(bad)}; choose from {', '.join(ANALYSES)}")
    ds = run_dataset(run, data)
    probe_types = resolve_probes(ds, probes)
    step_list = resolve_steps(run, steps) if {"lens", "trace"} & set(wanted) else []
    out_dir = run / "analysis"
    out_dir.mkdir(exist_ok=True)
    name = run.name
    result: dict = {"run": str(run), "steps": step_list, "probe_types": probe_types}

    lens_parts, trace_parts = [], []
    for step in step_list:
        model, _ = runs.load_model(run, step)
        for pt in probe_types:
            rows = ds.probe(pt)
            if len(rows) == 0:
                continue
            if "lens" in wanted:
                lens_parts.append(lens_table(model, encode(ds, rows), pt, name, step))
            if "trace" in wanted:
                sample = _sample_rows(rows, TRACE_EXAMPLES)
                trace_parts.append(trace_table(model, encode(ds, sample), ds, sample, pt, name, step))
        log(f"analysed step {step}")
    if lens_parts:
        lens = pd.concat(lens_parts, ignore_index=True)
        _merge_table(out_dir / "lens.parquet", lens)
        found = lens[(lens.stage == "any")].pivot_table(index=["step", "probe_type"], columns="metric",
                                                         values="value")
        result["lens"] = {f"{s}/{p}": row.to_dict() for (s, p), row in found.iterrows()}
    if trace_parts:
        _merge_table(out_dir / "trace.parquet", pd.concat(trace_parts, ignore_index=True))

    if "compare" in wanted:
        # The first and last analysed checkpoints (default: training saturation vs the last one).
        try:
            a, b = (step_list[0], step_list[-1]) if len(step_list) >= 2 else (
                sat_step(run, runs.list_checkpoints(run)), runs.list_checkpoints(run)[-1])
        except GrokscopeError as exc:
            a = b = None
            result["compare"] = {"skipped": str(exc)}
            log(f"compare skipped: {exc}")
    if "compare" in wanted and a is not None:
        rows = _sample_rows(np.concatenate([ds.probe(t) for t in ("test_inferred_iid", "train_inferred")
                                            if t in ds.probe_types]), TRACE_EXAMPLES)
        cmp = compare_paths(runs.load_model(run, a)[0], runs.load_model(run, b)[0], encode(ds, rows), ds, rows)
        result["compare"] = {"step_a": a, "step_b": b, **cmp.to_dict()}
        runs.write_json_atomic(out_dir / "compare.json", result["compare"])
    if "regime" in wanted:
        metric_rows = runs.read_metrics(run)
        result["regime"] = {"ood": classify_regime(metric_rows),
                            "iid": classify_regime(metric_rows, "test_inferred_iid", "bridge_found_iid")}
        runs.write_json_atomic(out_dir / "regime.json", result["regime"])
    (out_dir / "summary.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result
