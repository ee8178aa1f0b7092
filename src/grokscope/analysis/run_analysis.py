"""``grokscope analyze``: run the analyses over a run's checkpoints and write tables to ``RUN/analysis/``.

- ``lens.parquet``: the logit lens (MRR and top-1 of b, t, r2 per stage and position; bridge/target found);
- ``trace.parquet``: causal tracing (Wang et al.);
- ``queries/``: per-query records (answer, lens argmax per stage x position, bridge use per stage), and
  ``bridge_use.parquet``, the bridge use per stage aggregated from them;
- ``compare.json``: path comparisons: the checkpoint at training saturation vs the grokked one (He et al.'s
  Finding 1), and the negative control step 0 vs the last checkpoint, which must come out "different";
- ``regime.json``: the regime label on OOD and ID compositions;
- ``probe.json``: bridge decodable, a linear probe for b on every stage x
  slot with its three controls (``analysis/probe.py``), per analysed step;
- ``comparison_lens.parquet``, ``comparison_trace.parquet``: for a run on the comparison task, its lens and causal
  tracing instead (``analysis/comparison.py``; the analyses ``lens`` and ``trace``, the others being the composition
  task's).
Tables have columns run, step, probe_type, stage, stage_index, position, metric, value, n; re-running replaces
the rows of the (step, probe type) pairs it recomputes and keeps the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grokscope import artifacts, runs
from grokscope.analysis.circuits import compare_paths
from grokscope.analysis.comparison import comparison_table, summarise
from grokscope.analysis.logit_lens import lens_table
from grokscope.analysis.patching import trace_table
from grokscope.analysis.probe import bridge_decodable
from grokscope.analysis.queries import bridge_use_table, query_records, write_parquet_atomic, write_records
from grokscope.data.encoding import encode
from grokscope.data.store import Dataset, is_composition, load
from grokscope.errors import GrokscopeError
from grokscope.metrics.milestones import classify_regime
from grokscope.models.registry import family
from grokscope.analysis import defaults

PROBE_ALIASES = {"ood": "test_inferred_ood", "iid": "test_inferred_iid", "train": "train_inferred",
                 "new": "test_inferred_new", "mix": "test_inferred_new_mix",
                 "mix_powered": "test_inferred_new_mix_powered"}
ANALYSES = ("lens", "trace", "queries", "compare", "regime", "probe")
COMPARISON_ANALYSES = ("lens", "trace")  # what the comparison task has (analysis/comparison.py)
TRACE_EXAMPLES = 300  # Wang et al. sample 300 compositions for causal tracing
NAMED_STEPS = ("last", "sat", "grokked")


def run_dataset(run: Path, data: Path | None = None) -> Dataset:
    cfg = artifacts.read_config(run)
    path = Path(data or cfg["data"]["path"])
    if data is None and not path.is_dir():
        raise GrokscopeError(f"{run}: its dataset {path} is gone (moved or deleted); pass where it is now with "
                             f"--data")
    ds = load(path)
    if ds.meta["fingerprint"] != cfg["data"]["fingerprint"]:
        raise GrokscopeError(f"dataset {path} (fingerprint {ds.meta['fingerprint']}) is not the one {run} was "
                             f"trained on ({cfg['data']['fingerprint']}); pass the right one with --data")
    return ds


def resolve_steps(run: Path, spec: str, log=print) -> list[int]:
    """``all``, ``last``, ``sat``, ``grokked`` or step numbers, comma-separated; a named step the run never reached
    is skipped with a note (it is never replaced by another checkpoint)."""
    steps = runs.list_checkpoints(run)
    if not steps:
        raise GrokscopeError(f"{run}: has no checkpoints; train it first")
    out = set()
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        if item == "all":
            out.update(steps)
        elif item in ("sat", "grokked"):
            found = runs.named_step(run, item, steps)
            if found is None:
                what = "saturation" if item == "sat" else runs.grokked_definition(artifacts.read_config(run)).text()
                log(f"note: {run.name} never reached {what}; "
                    f"no '{item}' checkpoint to analyse")
            else:
                out.add(found)
        else:
            out.add(runs.resolve_step(run, item))
    if not out:
        raise GrokscopeError(f"--steps {spec!r} selects no checkpoint of {run}; use all, last, sat, grokked or "
                             f"step numbers")
    return sorted(out)


def resolve_probes(ds: Dataset, spec: str) -> list[str]:
    out, problems = [], []
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        name = PROBE_ALIASES.get(item, item)
        if name in out:  # `iid,iid` (or an alias and its name): measured once, not written twice
            continue
        if name not in ds.probe_types:
            problems.append(f"probe type {item!r} is not in this dataset; available: "
                            f"{', '.join(sorted(PROBE_ALIASES))} or {', '.join(ds.probe_types)}")
        else:
            out.append(name)
    if problems:
        raise GrokscopeError(problems)
    if not out:
        raise GrokscopeError(f"--probes {spec!r} selects no probe type; available: {', '.join(ds.probe_types)}")
    return out


def resolve_analyses(spec: str) -> list[str]:
    wanted = [a.strip() for a in spec.split(",") if a.strip()]
    bad = [a for a in wanted if a not in ANALYSES]
    if bad or not wanted:
        raise GrokscopeError(f"--analyses {spec!r}: choose one or more of {', '.join(ANALYSES)}")
    return wanted


def sample_rows(rows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(rows) <= n:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))]


def id_compositions(ds: Dataset, n: int = TRACE_EXAMPLES) -> np.ndarray:
    """A fixed sample of ID compositions (ID test and training), the same for every checkpoint of a graph."""
    parts = [ds.probe(t) for t in ("test_inferred_iid", "train_inferred") if t in ds.probe_types]
    return sample_rows(np.concatenate(parts), n)


def merge_table(path: Path, new: pd.DataFrame) -> None:
    if path.exists():
        try:
            old = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise GrokscopeError(f"{path}: unreadable ({type(exc).__name__}); move it aside and re-run `grokscope "
                                 f"analyze` (it is rebuilt for the steps you analyse)") from None
        keys = set(zip(new["step"], new["probe_type"]))
        old = old[[k not in keys for k in zip(old["step"], old["probe_type"])]]
        new = pd.concat([old, new], ignore_index=True)
    write_parquet_atomic(new.sort_values(["step", "probe_type", "stage_index"], kind="stable"), path)


def analyze(run: Path, steps: str = defaults.STEPS, probes: str = defaults.PROBES,
            analyses: str = defaults.ANALYSES, data: Path | None = None, device: str = "cpu",
            log=print) -> dict:
    run = Path(run)
    wanted = resolve_analyses(analyses)
    ds = run_dataset(run, data)
    work = _analyze
    if ds.task == "comparison":
        wanted, work = comparison_analyses(wanted, analyses), _analyze_comparison
    with artifacts.FolderLock(run, "run"):  # not while the run trains, nor beside another analysis of it
        return work(run, wanted, ds, steps, probes, device, log)


def comparison_analyses(wanted: list[str], spec: str) -> list[str]:
    """The analyses a comparison run gets: lens and trace (of the default list, those two; named ones must be)."""
    if spec == defaults.ANALYSES:
        return list(COMPARISON_ANALYSES)
    other = [a for a in wanted if a not in COMPARISON_ANALYSES]
    if other:
        raise GrokscopeError(f"--analyses {', '.join(other)}: composition-task analyses; a comparison run has "
                             f"{' and '.join(COMPARISON_ANALYSES)}")
    return wanted


def _analyze_comparison(run: Path, wanted: list[str], ds: Dataset, steps: str, probes: str, device: str,
                        log) -> dict:
    """The comparison task's lens and causal tracing (``analysis/comparison.py``) at each step and probe set, on
    a fixed sample of each set's comparisons, into ``comparison_lens.parquet`` and ``comparison_trace.parquet`` (one
    file each, so re-running one analysis keeps the other's rows)."""
    probe_types = resolve_probes(ds, probes)
    step_list = resolve_steps(run, steps, log)
    out_dir = run / "analysis"
    artifacts.ensure_writable_dir(out_dir)
    _check_targets(out_dir)
    parts: dict[str, list] = {name: [] for name in wanted}
    for step in step_list:
        model, _ = runs.load_model(run, step, device)
        for pt in probe_types:
            rows = sample_rows(ds.probe(pt)[is_composition(ds.probe(pt))], TRACE_EXAMPLES)
            for name in wanted if len(rows) else ():
                parts[name].append(comparison_table(model, ds, rows, pt, run.name, step, lens=name == "lens",
                                                    trace=name == "trace"))
        log(f"analysed step {step}")
    result: dict = {"run": str(run), "steps": step_list, "probe_types": probe_types, "device": device,
                    "analyses": list(wanted), "task": ds.task}
    tables = {name: pd.concat(found, ignore_index=True) for name, found in parts.items() if found}
    for name, table in tables.items():
        merge_table(out_dir / f"comparison_{name}.parquet", table)
    if tables:
        result["comparison"] = summarise(pd.concat(tables.values(), ignore_index=True))
    artifacts.write_json_atomic(out_dir / "summary.json", result)
    return result


OUTPUT_FILES = ("lens.parquet", "trace.parquet", "bridge_use.parquet", "compare.json", "regime.json", "probe.json",
                "summary.json", "comparison_lens.parquet", "comparison_trace.parquet")


def _check_targets(out_dir: Path) -> None:
    """Before any work: every file the analysis writes can be written (nothing blocks it halfway, after earlier
    files were already replaced)."""
    blocked = [out_dir / n for n in OUTPUT_FILES if (out_dir / n).is_dir()]
    queries = out_dir / "queries"
    if queries.exists() and not queries.is_dir():
        blocked.append(queries)
    if blocked:
        raise GrokscopeError(f"{blocked[0]}: is in the way of the analysis' output (a "
                             f"{'folder' if blocked[0].is_dir() else 'file'}); move it and re-run")


def _analyze(run: Path, wanted: list[str], ds: Dataset, steps: str, probes: str, device: str, log) -> dict:
    probe_types = resolve_probes(ds, probes)
    step_list = resolve_steps(run, steps, log) if {"lens", "trace", "queries", "probe"} & set(wanted) else []
    out_dir = run / "analysis"
    artifacts.ensure_writable_dir(out_dir)
    _check_targets(out_dir)
    # the device the models ran on (a study's manifest reads it: did a GPU study's analyses run on the GPU?)
    result: dict = {"run": str(run), "steps": step_list, "probe_types": probe_types, "device": device,
                    "analyses": list(wanted)}  # what this summary covers (a study checks its job asked for no more)
    lens_parts, trace_parts, use_parts, decodable = [], [], [], {}
    for step in step_list:
        model, _ = runs.load_model(run, step, device)
        if "probe" in wanted:
            decodable[str(step)] = probe_step(run, ds, model, probe_types, device)
        for pt in probe_types:
            rows = ds.probe(pt)
            if len(rows) == 0:
                continue
            if "lens" in wanted:
                lens_parts.append(lens_table(model, encode(ds, rows).to(model.device), pt, run.name, step))
            if "trace" in wanted and is_composition(rows).any():
                sample = sample_rows(rows[is_composition(rows)], TRACE_EXAMPLES)
                trace_parts.append(trace_table(model, encode(ds, sample), ds, sample, pt, run.name, step))
            if "queries" in wanted and is_composition(rows).any():
                frame, schema = query_records(model, ds, rows)
                write_records(run, step, pt, frame, schema)
                use_parts.append(bridge_use_table(frame, schema, pt, run.name, step))
        log(f"analysed step {step}")
    if lens_parts:
        lens = pd.concat(lens_parts, ignore_index=True)
        merge_table(out_dir / "lens.parquet", lens)
        found = lens[lens.stage == "any"].pivot_table(index=["step", "probe_type"], columns="metric", values="value")
        result["lens"] = {f"{s}/{p}": row.to_dict() for (s, p), row in found.iterrows()}
    if trace_parts:
        merge_table(out_dir / "trace.parquet", pd.concat(trace_parts, ignore_index=True))
    if use_parts:
        use = pd.concat(use_parts, ignore_index=True)
        merge_table(out_dir / "bridge_use.parquet", use)
        result["bridge_use"] = {f"{s}/{p}": float(v) for s, p, v in
                                use[use.stage == "max"][["step", "probe_type", "value"]].itertuples(index=False)}
    if decodable:
        path = out_dir / "probe.json"
        earlier = artifacts.read_json(path, "re-run `grokscope analyze --analyses probe`") if path.exists() else {}
        artifacts.write_json_atomic(path, {**earlier, **decodable})
        result["probe"] = {s: {n: e["probe"]["value"] for n, e in r["sets"].items()} for s, r in decodable.items()}
    if "compare" in wanted:
        result["compare"] = compare_checkpoints(run, ds, device, log)
        artifacts.write_json_atomic(out_dir / "compare.json", result["compare"])
    if "regime" in wanted:
        rows = artifacts.read_metrics(run)
        bridge = family(artifacts.read_config(run)["model"]["family"]).model_cls.bridge_metric
        result["regime"] = {"ood": classify_regime(rows, "test_inferred_ood", f"{bridge}_ood"),
                            "iid": classify_regime(rows, "test_inferred_iid", f"{bridge}_iid")}
        artifacts.write_json_atomic(out_dir / "regime.json", result["regime"])
    artifacts.write_json_atomic(out_dir / "summary.json", result)
    return result


def probe_step(run: Path, ds: Dataset, model, probe_types: list[str], device: str) -> dict:
    """Bridge decodable at one checkpoint, on the composition probe sets asked for (the fit set's own probe,
    ``train_inferred``, is left out) plus held-out ID compositions, which choose the slot; the step-0 control when
    the run kept its step-0 checkpoint."""
    names = [pt for pt in probe_types if pt != "train_inferred"]
    if "test_inferred_iid" in ds.probe_types and "test_inferred_iid" not in names:
        names.append("test_inferred_iid")
    sets = {pt: ds.probe(pt)[is_composition(ds.probe(pt))] for pt in names}
    checkpoints = runs.list_checkpoints(run)
    step0 = runs.load_model(run, 0, device)[0] if checkpoints and checkpoints[0] == 0 else None
    return bridge_decodable(model, ds, {k: v for k, v in sets.items() if len(v)}, step0_model=step0)


def compare_checkpoints(run: Path, ds: Dataset, device: str = "cpu", log=print) -> dict:
    """Saturated vs grokked (Finding 1 within one run) and the negative control step 0 vs last."""
    steps = runs.list_checkpoints(run)
    if not steps:
        raise GrokscopeError(f"{run}: has no checkpoints; train it first")
    rows = id_compositions(ds)
    pairs = {"step0_vs_last": (steps[0], steps[-1])}
    sat, grokked = runs.named_step(run, "sat", steps), runs.named_step(run, "grokked", steps)
    if sat is not None and grokked is not None and grokked > sat:
        pairs["sat_vs_grokked"] = (sat, grokked)
    else:
        log(f"note: {run.name} has no saturated-then-grokked pair of checkpoints (sat {sat}, grokked {grokked})")
    out = {}
    for name, (a, b) in pairs.items():
        out[name] = {"step_a": a, "step_b": b, **compare_paths(runs.load_model(run, a, device)[0],
                                                                runs.load_model(run, b, device)[0], ds, rows)}
    return out
