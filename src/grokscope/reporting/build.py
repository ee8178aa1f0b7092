"""Build ``report.html`` (self-contained, figures embedded) and ``report.md`` (+ PNG files) for a study folder.

Reads files only, never torch: ``study.json`` (the manifest: every job's role, model, regime, checkpoint and
parent), each run's ``config.yaml``, ``metrics.jsonl``, ``summary.json`` and ``analysis/`` (per-query records,
causal tracing, path comparisons). Aggregates are recomputed from the per-query records; verdicts come from
``findings.py``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import pandas as pd

from grokscope import artifacts
from grokscope.version import __version__
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import Rate, final_rate
from grokscope.metrics.milestones import GrokDefinition, milestone_key
from grokscope.metrics.records import read_schema, run_aggregates, stage_profile
from grokscope.reporting import plots, reference, render
from grokscope.reporting.findings import (CATEGORIES, RETENTION_KINDS, Decodable, FineTuneFacts, RunFacts,
                                       across_seeds, finding_1, finding_2, finding_3, pick_category,
                                       transfer_agreement)
from grokscope.reporting.contrast import finding_w, label_chance, step0
from grokscope.reporting.readme import write_measured
from grokscope.reporting.tables import finetune_rows, run_rows

MIX_COLUMNS = [("new_old", "new + old"), ("old_new", "old + new"), ("new_new", "new + new")]


# ------------------------------------------------------------------------------------------------ reading
def read_run(path: Path) -> dict | None:
    """A finished run's files (None while it has no summary)."""
    path = Path(path)
    if not (path / "summary.json").exists():
        return None
    rows, summary = artifacts.read_metrics(path), artifacts.read_summary(path)
    if summary.get("bridge_use_version", 1) < th.BRIDGE_USE_VERSION:
        # Bridge use measured by an older version (a memoriser could pass it): shown as not measured.
        rows = [{k: v for k, v in r.items() if not k.startswith(("bridge_use", "n/bridge_use"))} for r in rows]
    info = {"path": path, "name": path.name, "config": artifacts.read_config(path),
            "summary": summary, "rows": rows, "metrics": pd.DataFrame(rows)}
    analysis = path / "analysis"
    info["compare"] = artifacts.read_json(analysis / "compare.json", "re-run `grokscope analyze`") \
        if (analysis / "compare.json").exists() else {}
    info["trace"] = pd.read_parquet(analysis / "trace.parquet") if (analysis / "trace.parquet").exists() else None
    info["probe"] = artifacts.read_json(analysis / "probe.json", "re-run `grokscope analyze --analyses probe`") \
        if (analysis / "probe.json").exists() else {}
    info["aggregates"] = run_aggregates(path)
    info["schema"] = read_schema(analysis / "queries") if not info["aggregates"].empty else None
    return info


def facts(run: dict, until: int | None = None) -> RunFacts:
    """A run's facts for the findings (its rows up to step ``until`` when given: a fine-tune's starting checkpoint).
    Saturation is the findings' own (``th.SATURATION``, He et al.'s), not the trainer's milestone setting."""
    s = run["summary"]
    family = (run["config"].get("model") or {}).get("family")
    rows = run["rows"] if until is None else [r for r in run["rows"] if r["step"] <= until]
    return RunFacts(run["name"], s.get("bridge_metric", "bridge_use"), rows, GrokDefinition.of(s, family),
                    bool(s.get("cut_short")), th.SATURATION, _probe_counts(run["config"]),
                    _correct_with_bridge(run, until), decodable(run.get("probe") or {}, until))


def decodable(probe: dict, until: int | None = None, probe_type: str = "test_inferred_ood") -> Decodable | None:
    """Bridge decodable on ``probe_type`` at the last analysed step (up to ``until``) of a run's ``probe.json``."""
    steps = sorted(int(k) for k, v in probe.items() if str(k).isdigit() and probe_type in (v.get("sets") or {})
                   and (until is None or int(k) <= until))
    if not steps:
        return None
    entry = probe[str(steps[-1])]
    rates = {name: Rate(float(v["value"]), int(v["n"]) if v.get("n") else None)
             for name, v in entry["sets"][probe_type].items()}
    chosen = entry.get("chosen") or {}
    use = (entry.get("bridge_use_at_slot") or {}).get(probe_type)
    where = f"{chosen.get('stage', '?')}, slot {chosen.get('slot', '?')}"
    return Decodable(steps[-1], rates.pop("probe"), rates, where,
                     Rate(float(use["value"]), int(use["n"])) if use else None)


def _probe_counts(config: dict) -> dict:
    """metric -> n from the run's dataset (probe sizes), for metrics rows written before they carried n/<metric>."""
    path = Path((config.get("data") or {}).get("path", "")) / "dataset.json"
    try:
        counts = json.loads(path.read_text()).get("counts", {})
    except (OSError, ValueError):
        return {}
    out = {k[len("probe/"):]: v for k, v in counts.items() if k.startswith("probe/")}
    for suffix, probe in (("ood", "test_inferred_ood"), ("iid", "test_inferred_iid")):
        if probe in out:
            out[f"bridge_found_{suffix}"] = out[probe]
    return out


def job_records(manifest: dict, role: str) -> list[dict]:
    return [{**e.get("record", {}), "job": name, "status": e.get("status")}
            for name, e in manifest.get("jobs", {}).items() if e.get("record", {}).get("role") == role]


class Figures:
    def __init__(self, folder: Path):
        self.dir = folder
        self.dir.mkdir(exist_ok=True)
        self.items: list[tuple[str, str, str]] = []  # (file, title, caption)

    def add(self, fig, name: str, title: str, caption: str) -> None:
        fig.savefig(self.dir / f"{name}.png", dpi=110)
        plots.plt.close(fig)
        self.items.append((f"{name}.png", title, caption))


# ------------------------------------------------------------------------------------------------ the report
def load_study(root: Path) -> tuple[dict, dict, dict, dict]:
    """(manifest, spec, pre-training runs, fine-tunes) of a study folder, each run as ``read_run`` gives it."""
    root = Path(root)
    manifest = artifacts.relocated(artifacts.read_json(root / "study.json", "re-run `grokscope study`"), root)
    spec = manifest.get("spec") or {}
    if not spec:
        raise GrokscopeError(f"{root / 'study.json'}: holds no study spec; re-run `grokscope study`")
    check_manifest(manifest, root / "study.json")
    missing = [r["path"] for role in ("pretrain", "finetune", "control", "comparison")
               for r in job_records(manifest, role) if r["status"] == "done" and not Path(r["path"]).is_dir()]
    if missing:
        raise GrokscopeError(f"{root}: {len(missing)} finished run folder(s) are missing ({', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''}); the report is left as it was; restore them, or "
                             f"run `grokscope study` again to retrain them")
    pre = {r["job"]: (r, run) for r in job_records(manifest, "pretrain") if (run := read_run(Path(r["path"])))}
    ft = {r["job"]: (r, run) for r in job_records(manifest, "finetune") + job_records(manifest, "control")
          if (run := read_run(Path(r["path"])))}
    return manifest, spec, pre, ft


# The record keys the report reads, per role (a manifest written by an older grokscope, or edited by hand, may miss
# some: that is one line naming the job, never a KeyError).
RECORD_KEYS = {"pretrain": ("path", "model", "regime"), "finetune": ("path", "regime", "checkpoint", "parent"),
               "comparison": ("path", "model"),
               "control": ("path",), "compare": ("path", "regime_b"), "analysis": ("path",)}


def check_manifest(manifest: dict, where: Path) -> None:
    fix = "re-run `grokscope study` with the same preset to rewrite it"
    jobs, spec = manifest.get("jobs"), manifest.get("spec")
    if not isinstance(jobs, dict) or not all(isinstance(e, dict) and isinstance(e.get("record", {}), dict)
                                             for e in jobs.values()):
        raise GrokscopeError(f"{where}: its jobs are not a table of job records; {fix}")
    models = spec.get("models") if isinstance(spec, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                               for m in models):
        raise GrokscopeError(f"{where}: its spec has no list of named models; {fix}")
    for name, entry in jobs.items():
        record = entry.get("record", {})
        missing = [k for k in RECORD_KEYS.get(record.get("role"), ()) if not isinstance(record.get(k), str)]
        if missing:
            raise GrokscopeError(f"{where}: job {name!r} has no {', '.join(missing)} in its record; {fix}")


def comparison_runs(manifest: dict) -> dict[str, tuple[dict, dict]]:
    """The study's finished runs on the comparison task (job -> (record, run)), each with its lens and causal-tracing
    tables (``comparison_lens`` / ``comparison_trace``; None before its analysis)."""
    out = {}
    for record in job_records(manifest, "comparison"):
        run = read_run(Path(record["path"]))
        if run is None:
            continue
        for name in ("lens", "trace"):
            path = Path(record["path"]) / "analysis" / f"comparison_{name}.parquet"
            run[f"comparison_{name}"] = pd.read_parquet(path) if path.exists() else None
        out[record["job"]] = (record, run)
    return out


def study_findings(root: Path) -> list[dict]:
    manifest, spec, pre, ft = load_study(root)
    return _findings(spec, manifest, pre, ft)


REPORT_FILES = ("figures", "report.md", "report.html")


def build_report(root: Path, readme: Path | None = None) -> Path:
    """Under the study's lock, write figures/, report.md and report.html into a temporary folder, then move each into
    place: a failure halfway leaves the earlier report as it was. ``readme``: also write the measured tables into
    that README's marked section (``reporting/readme.py``)."""
    root = Path(root)
    manifest, spec, pre, ft = load_study(root)
    blocked = [root / n for n in REPORT_FILES if (root / n).exists() and (root / n).is_dir() != (n == "figures")]
    if blocked:
        kind = "folder" if blocked[0].is_dir() else "file"
        raise GrokscopeError(f"{blocked[0]}: is in the way of the report (a {kind}); move it and re-run")
    with artifacts.FolderLock(root, "study"):
        tmp = artifacts.new_tmp_dir(root / "report")
        try:
            report = _write_report(tmp, manifest, spec, pre, ft)
            artifacts.clean_leftovers(root, "figures")
            artifacts.replace_dir(tmp / "figures", root / "figures")
            for name in ("report.md", "report.html"):
                os.replace(tmp / name, root / name)
        except OSError as exc:
            raise GrokscopeError(f"{root}: cannot write the report ({exc.strerror}); choose a writable study "
                                 f"folder") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if readme is not None:
        write_measured(readme, report, root)
    return root / "report.html"


def _write_report(root: Path, manifest: dict, spec: dict, pre: dict, ft: dict) -> render.Report:
    figs = Figures(root / "figures")
    cmp = comparison_runs(manifest)
    _figures(figs, spec, pre, ft)
    _contrast_figures(figs, spec, pre, cmp)
    # What the tool wrote in figures/, so that --fresh removes exactly these and keeps a user's own plots there.
    artifacts.write_json_atomic(figs.dir / artifacts.FIGURES_INDEX, sorted(f for f, _, _ in figs.items))
    report = assemble(spec, manifest, pre, ft, figs.items, cmp)
    (root / "report.md").write_text(render.markdown(report))
    (root / "report.html").write_text(render.page(report, figs.dir))
    return report


def assemble(spec: dict, manifest: dict, pre: dict, ft: dict, figures: list, cmp: dict | None = None
             ) -> render.Report:
    """Everything the report shows, computed from the study's files (``cmp``: its comparison runs, read once)."""
    cmp = comparison_runs(manifest) if cmp is None else cmp
    findings = _findings(spec, manifest, pre, ft, cmp)
    tables = {"compute": _compute_rows(pre), "transfer": _transfer_rows(spec, pre, ft), "worth": _worth_rows(pre, ft),
              "bridge": _bridge_rows(pre), "deviations": _deviation_rows(pre, ft), "skipped": _skipped_rows(manifest),
              "contrast": _contrast_rows(pre, cmp)}
    provenance = {"grokscope": __version__,
                  "git commit": next((r["config"].get("git_commit") for _, r in pre.values()), None),
                  "study preset": spec.get("name"), "tier": spec.get("tier"),
                  "machine": f"{platform.machine()} {platform.system()} {platform.release()}, "
                             f"{os.cpu_count()} CPUs, python {platform.python_version()}",
                  "dataset fingerprints": {r["name"]: r["config"]["data"]["fingerprint"] for _, r in pre.values()},
                  "study spec": spec, "stage seconds": {k: round(v, 1) for k, v in
                                                        manifest.get("stage_seconds", {}).items()}}
    order = {m.get("name"): i for i, m in enumerate(models_in_order(spec))}
    runs = sorted(pre.values(), key=lambda pair: (order.get(pair[0].get("model"), len(order)), pair[1]["name"]))
    return render.Report(
        name=str(spec.get("name")), meta=_meta(spec, pre, manifest), findings=findings,
        runs=run_rows([(run, facts(run)) for _, run in runs]),
        finetunes=finetune_rows(sorted(_finetune_facts(pre, ft), key=lambda f: f.name)) if ft else [],
        figures=list(figures), sections=[(title, tables[key], SECTION_NOTES.get(key, "")) for key, title in SECTIONS
                                         if tables[key] or key not in OPTIONAL_SECTIONS],
        provenance=provenance, notes=_run_notes(pre))


def _by(pre: dict, model: str, regime: str, seed: int | None = None):
    for record, run in pre.values():
        if record.get("model") == model and record.get("regime") == regime and \
                (seed is None or record.get("seed") == seed):
            return record, run
    return None, None


def _figures(figs: Figures, spec: dict, pre: dict, ft: dict) -> None:
    seed = (spec.get("seeds") or [0])[0]
    for model in spec.get("models", []):
        name = model["name"]
        runs_of = {r["regime"]: run for r, run in pre.values() if r.get("model") == name and r.get("seed") == seed}
        if not runs_of:
            continue
        metric = next(iter(runs_of.values()))["summary"].get("bridge_metric", "bridge_use")
        t_sats = {k: facts(v).t_sat for k, v in runs_of.items()}
        paper = {k: (reference.fig2_rows(k), reference.fig2_t_sat(k)) for k in runs_of if k in reference.FIG2}
        scaled = all(t_sats.values())
        figs.add(plots.regime_panels({k: v["metrics"] for k, v in runs_of.items()}, f"{name}: training under each "
                                     f"data regime", metric, t_sats, paper), f"regimes_{name}",
                 f"Data regimes ({name})",
                 f"He et al. Fig. 2 analogue: the bridge measure ({metric.replace('_', ' ')}) and OOD accuracy (target "
                 f"found, as the paper plots, and exact match) and training accuracy vs "
                 + ("step / t_sat on a log axis: each run's step divided by its own saturation step (training "
                    f">= {th.SATURATION}, kept), so runs of any scale compare. Hollow markers: He et al.'s TRM "
                    "(Fig. 2, their step divided by their saturation step)." if scaled else
                    "step (some run never saturated, so the axis is not scaled and He et al.'s points are not "
                    "drawn)."))
        nat = runs_of.get("natural")
        if nat is not None:
            figs.add(plots.grokking_curve(nat["metrics"], f"{name}, natural regime"), f"grokking_{name}",
                     f"Grokking curve ({name}, natural)",
                     "Wang et al. Fig. 1 analogue: training, ID test and OOD test exact match vs step.")
            _circuit_figures(figs, nat)
    for model in models_in_order(spec):
        mine = [(r, run) for r, run in ft.values() if r.get("model", model["name"]) == model["name"]]
        if not mine:
            continue
        name = model["name"]
        grid = {f"{r['regime']} ({r['checkpoint']})" if r["role"] == "finetune" else "control": run["metrics"]
                for r, run in mine}
        metric = mine[0][1]["summary"].get("bridge_metric", "bridge_use")
        final = (mine[0][1]["summary"].get("transfer") or {}).get("final", {})
        columns = []
        for cat, label in MIX_COLUMNS:  # the powered set where the faithful one is too small, as the findings do
            kind = pick_category(final, cat)[1]
            columns.append((cat, label) if kind == "faithful" else (f"{cat}_powered", f"{label} (powered)"))
        extension = model.get("family") != "trm"
        title = f"{name}: fine-tuning on new facts" + (" (extension: He et al. fine-tune the trm)" if extension else "")
        scales, paper = {}, {}
        for r, run in mine:
            row = f"{r['regime']} ({r['checkpoint']})" if r["role"] == "finetune" else "control"
            regime = r["regime"] if r["role"] == "finetune" else "control"
            scales[row] = (run["summary"].get("transfer") or {}).get("steps_to_new_fact")
            if regime in reference.FIG4 and r.get("checkpoint", "last") in ("last", None):
                paper[row] = (reference.fig4_points(regime), reference.fig4_new_fact_step(regime))
        figs.add(plots.transfer_grid(grid, columns, title, metric, scales, paper), f"transfer_{name}",
                 f"Transfer to new facts ({name}{', extension' if extension else ''})",
                 f"He et al. Fig. 3/4 {'extended to the ' + name if extension else 'analogue'}: rows = the last "
                 f"checkpoint of each regime, and the from-scratch control; columns = composition categories (the "
                 f"faithful set, or the powered one where the faithful set is too small); New Fact accuracy, exact "
                 f"match and the bridge measure ({metric.replace('_', ' ')}) vs fine-tuning step"
                 + (", divided by each fine-tune's steps to New Fact 0.99. Hollow markers: He et al. Fig. 4 (their "
                    "step divided by their New Fact step; the steady values at their 40th evaluation)."
                    if all(scales.values()) else " (some fine-tune never reached New Fact 0.99: not scaled)."))


def _circuit_figures(figs: Figures, run: dict) -> None:
    agg, schema, name = run["aggregates"], run["schema"], run["name"]
    if schema is not None and not agg.empty:
        probe = "test_inferred_iid" if "test_inferred_iid" in set(agg.probe_type) else agg.probe_type.iloc[0]
        steps = sorted(set(agg[agg.probe_type == probe].step))
        for measure, stages, ylabel, caption in (
                ("bridge_use", schema["patch_stages"], "bridge use",
                 "Bridge use per stage (the interchange intervention at r1): the share of ID compositions whose "
                 "answer follows the donor's bridge when the r1 state is replaced; causal."),
                ("b_decodable_at_r1", schema["stages"], "b top-1 at r1",
                 "Logit lens: share of ID compositions whose bridge is the top-1 token at the r1 position per "
                 "stage (descriptive; for a decoder this is also recall of the first hop).")):
            profiles = {f"step {s}": pd.Series(stage_profile(agg, schema, s, probe, measure), index=stages)
                        for s in steps}
            figs.add(plots.lens_profiles(profiles, f"{name}: {ylabel} on {probe}", ylabel), f"{measure}_{name}",
                     f"{ylabel.capitalize()} ({name})", caption)
    trace = run["trace"]
    if trace is not None and not trace.empty:
        probe = "train_inferred" if "train_inferred" in set(trace.probe_type) else trace.probe_type.iloc[0]
        sub = trace[trace.probe_type == probe]
        maps = {f"step {s}": g.pivot_table(index="stage", columns="position", values="value", sort=False)[
            ["h", "r1", "r2"]] for s, g in sub.groupby("step")}
        figs.add(plots.causal_heatmaps(maps, f"{name}: causal strength on {probe}"), f"trace_{name}",
                 f"Causal tracing ({name})", "Share of correct answers that flip when the state at (stage, position) "
                 "is replaced by a counterfactual's (Wang et al.); the last panel is the difference between the "
                 "first and the last analysed checkpoint.")


def _contrast_pairs(pre: dict, cmp: dict) -> list[tuple[str, int, dict, dict | None]]:
    """(model, seed, comparison run, natural composition run or None) of every comparison run."""
    return [(r.get("model"), r.get("seed"), run, _by(pre, r.get("model"), "natural", r.get("seed"))[1])
            for r, run in sorted(cmp.values(), key=lambda pair: pair[1]["name"])]


def _contrast_figures(figs: Figures, spec: dict, pre: dict, cmp: dict) -> None:
    """Per model with comparison runs: both tasks' curves side by side (Wang et al. Fig. 1), and the comparison's
    causal tracing and label lens (the first seed)."""
    pairs = _contrast_pairs(pre, cmp)
    for model in dict.fromkeys(m for m, _, _, _ in pairs):
        mine = [(seed, c, n) for m, seed, c, n in pairs if m == model]
        panels = {"composition (natural)": {f"seed {seed}": n["metrics"] for seed, _, n in mine if n is not None},
                  "comparison": {f"seed {seed}": c["metrics"] for seed, c, _ in mine}}
        panels = {k: v for k, v in panels.items() if v}
        chance = {"comparison": label_chance(mine[0][1])}
        figs.add(plots.contrast_panels(panels, chance, f"{model}: composition against comparison"),
                 f"contrast_{model}", f"Composition against comparison ({model})",
                 "Wang et al. Fig. 1 analogue: training, ID test and OOD test exact match vs step on each task, one "
                 "line per seed; the dotted line is the OOD comparisons' chance level (the most frequent label). "
                 "Wang et al.: OOD stays about 0 on composition and rises on comparison.")
        run = mine[0][1]
        trace, lens = run.get("comparison_trace"), run.get("comparison_lens")
        if trace is not None and not trace.empty:
            probe = "test_inferred_iid" if "test_inferred_iid" in set(trace.probe_type) else trace.probe_type.iloc[0]
            sub = trace[(trace.probe_type == probe) & (trace.metric == "patch_flip")]
            maps = {f"step {s}": g.pivot_table(index="stage", columns="position", values="value", sort=False)
                    .rename(columns={2: "e1", 4: "e2"}) for s, g in sub.groupby("step")}
            if maps:
                figs.add(plots.causal_heatmaps(maps, f"{run['name']}: causal tracing on {probe}"),
                         f"comparison_trace_{model}", f"Causal tracing on comparison ({run['name']})",
                         "Share of comparisons (answered right unpatched and as the counterfactual) whose label "
                         "flips to the counterfactual's when the state of e1 (with the mask after it) or e2 is "
                         "replaced at a stage by a counterfactual's whose value changes the label (Wang et al.'s "
                         "causal tracing for comparison). High where the state still carries the value; e2 is the "
                         "decoder's last prompt position, where the label is read, so it stays 1 there by "
                         "construction (docs/comparison.md).")
        if lens is not None and not lens.empty:
            probe = "test_inferred_ood" if "test_inferred_ood" in set(lens.probe_type) else lens.probe_type.iloc[0]
            sub = lens[(lens.probe_type == probe) & (lens.metric == "label_top1")].sort_values("stage_index")
            profiles = {f"step {s}": pd.Series(g["value"].values, index=g["stage"].values)
                        for s, g in sub.groupby("step")}
            if profiles:
                figs.add(plots.lens_profiles(profiles, f"{run['name']}: label read per stage on {probe}",
                                             "label top-1"), f"comparison_label_{model}",
                         f"Label lens on comparison ({run['name']})",
                         "Logit lens at the answer position: the share of comparisons whose label is the top token "
                         "at each stage (where the comparison is read; an atomic-only model stays near 0).")


def _contrast_rows(pre: dict, cmp: dict) -> list[dict]:
    rows = []
    for model, seed, comparison, natural in _contrast_pairs(pre, cmp):
        for task, run in (("composition (natural)", natural), ("comparison", comparison)):
            if run is None:
                continue
            s = run["summary"]
            chance = label_chance(run) if task == "comparison" else step0(run, "test_inferred_ood")

            def cell(metric, run=run):
                rate = final_rate(run["rows"], metric)
                return "-" if rate is None else rate.text(compact=True)

            rows.append({"model": model, "seed": seed, "task": task, "run": run["name"], "steps": s["final_step"],
                         "t_sat": s["milestones"].get("t_sat") or "-", "final train": cell("train_acc"),
                         "final ID": cell("test_inferred_iid"), "final OOD": cell("test_inferred_ood"),
                         "OOD chance": "-" if chance is None else f"{chance:.3f}"})
    return rows


def models_in_order(spec: dict) -> list[dict]:
    """The study's models, He et al.'s (the trm) first: the findings are theirs; other families are extensions."""
    models = [m for m in spec.get("models", []) if isinstance(m, dict)]
    return sorted(models, key=lambda m: m.get("family") != "trm")


def scope_of(model: dict) -> str:
    """How the report labels a model's findings and figures."""
    return "He et al.'s model" if model.get("family") == "trm" else "extension"


def _findings(spec: dict, manifest: dict, pre: dict, ft: dict, cmp: dict | None = None) -> list[dict]:
    """Per model (the trm first): Findings 1 and 2 per seed (then across seeds), and Finding 3 on that model's
    fine-tunes (the first seed's). Each finding records its model and scope."""
    out = []
    for model in models_in_order(spec):
        name = model["name"]
        if not any(r.get("model") == name for r, _ in pre.values()):
            continue
        mine = {job: pair for job, pair in ft.items() if pair[0].get("model", name) == name}
        found = _model_findings(spec, manifest, pre, mine, name)
        out += [{**f, "model": name, "scope": scope_of(model)} for f in found]
    pairs = _contrast_pairs(pre, comparison_runs(manifest) if cmp is None else cmp)
    for model in models_in_order(spec):
        per_seed = dict(sorted((seed, (c, n)) for m, seed, c, n in pairs if m == model["name"]))
        if per_seed:
            out.append({**finding_w(per_seed), "model": model["name"], "scope": "Wang et al.'s contrast"})
    return out


def _model_findings(spec: dict, manifest: dict, pre: dict, ft: dict, tmodel: str) -> list[dict]:
    # The fine-tunes do not depend on the seed loop below: their transfer agreement is computed once.
    ft_last = {r["regime"]: run for r, run in ft.values() if r["role"] == "finetune" and r["checkpoint"] == "last"}
    transfer = None
    if "natural" in ft_last and "both_full" in ft_last:
        transfer = transfer_agreement(*(ft_last[k]["rows"] for k in ("natural", "both_full")),
                                      *(_final_n(ft_last[k], "new_old") for k in ("natural", "both_full")))
    per_seed: dict[int, list[dict]] = {}
    for seed in spec.get("seeds") or [0]:
        runs_of = {regime: run for regime in ("natural", "both_full", "first_full", "second_full")
                   if (run := _by(pre, tmodel, regime, seed)[1]) is not None}
        comparisons = {r.get("regime_b"): artifacts.read_json(Path(r["path"]), "re-run the study")
                       for r in job_records(manifest, "compare")
                       if r.get("model") == tmodel and r.get("seed") == seed and Path(r["path"]).exists()}
        nat = runs_of.get("natural")
        f = {k: facts(v) for k, v in runs_of.items()}
        compare = (nat or {}).get("compare", {})
        per_seed[seed] = [
            finding_1(f.get("natural"), f.get("both_full"), comparisons, compare.get("step0_vs_last"),
                      compare.get("sat_vs_grokked"), transfer, f.get("first_full")),
            finding_2(f.get("second_full"), f.get("both_full"))]
    overall = [across_seeds({s: results[i] for s, results in per_seed.items()}) for i in range(2)]
    return overall + ([finding_3(_finetune_facts(pre, ft))] if ft else [])


def _final_n(run: dict, category: str) -> int | None:
    return ((run["summary"].get("transfer") or {}).get("final", {}).get(category) or {}).get("n")


def _correct_with_bridge(run: dict, until: int | None = None) -> dict[int, Rate]:
    """Analysed step -> the share of its correct OOD answers whose query had the bridge (the family's measure), from
    the per-query records (He et al. §3: 'every correct prediction ... through successful recovery of the bridge')."""
    agg = run["aggregates"]
    if agg.empty or "bridge_given_correct" not in agg:
        return {}
    ood = agg[(agg.probe_type == "test_inferred_ood") & (agg.step <= (until if until is not None else agg.step.max()))]
    return {int(a.step): Rate(float(a.bridge_given_correct), int(a.n_correct)) for _, a in ood.iterrows()
            if (a.get("n_correct") or 0) > 0 and a.bridge_given_correct == a.bridge_given_correct}


def _finetune_facts(pre: dict, ft: dict) -> list[FineTuneFacts]:
    """Final rates (mean of the last evaluations, with n) of every fine-tune on He et al.'s categories, exact match
    and bridge on the same queries; its parent's run up to the starting checkpoint; the control's step 0 as the
    chance floor of every category measure. The powered categories and the old-hop retention are described beside
    (an extension)."""
    out, floors = [], {}
    control = next((run for r, run in ft.values() if r["role"] == "control"), None)
    by_path = {str(Path(r["path"])): run for r, run in pre.values()}
    for record, run in ft.values():
        s = run["summary"]
        t = s.get("transfer") or {}
        final = t.get("final", {})
        bridge = s.get("bridge_metric", "bridge_use")
        rates = {"atomic_new": final_rate(run["rows"], "atomic_new", n=(final.get("atomic_new") or {}).get("n")),
                 **{kind: final_rate(run["rows"], kind) for kind in RETENTION_KINDS}}
        extension = []
        for cat in CATEGORIES:
            n = (final.get(cat) or {}).get("n")
            rates[cat] = final_rate(run["rows"], cat, n=n)
            rates[f"bridge_{cat}"] = final_rate(run["rows"], f"{bridge}_{cat}", n=n)
            powered = final_rate(run["rows"], f"{cat}_powered", n=(final.get(f"{cat}_powered") or {}).get("n"))
            if powered is not None:
                extension.append(f"{cat} powered EM {powered.text()}")
            kept = final_rate(run["rows"], f"retention_{cat}")
            if kept is not None:
                extension.append(f"{cat} old hop kept {kept.text()}")
        if control is not None and control["rows"] and control["rows"][0].get("step") == 0:
            first = control["rows"][0]
            floors = {m: first.get(k) for m, k in [*((c, c) for c in CATEGORIES),
                                                    *((f"bridge_{c}", f"{bridge}_{c}") for c in CATEGORIES)]}
        role = record["role"]
        parent = None
        if role != "control":
            transfer = run["config"].get("transfer") or {}
            parent_run = by_path.get(str(Path(record.get("parent") or transfer.get("parent_run") or "")))
            if parent_run is not None:
                parent = facts(parent_run, until=transfer.get("parent_step"))
        out.append(FineTuneFacts(run["name"], "control" if role == "control" else record["regime"], rates,
                                 None if role == "control" else record.get("checkpoint"), parent,
                                 bool(s.get("cut_short")), floors,
                                 {"new_fact": t.get("steps_to_new_fact"), "new_old": t.get("steps_to_new_old")},
                                 "; ".join(extension)))
    return out


# ------------------------------------------------------------------------------------------------ tables
def _minutes_at(run: dict, step) -> float | None:
    row = next((r for r in run["rows"] if r["step"] == step), None)
    return None if row is None else row["wall_seconds"] / 60


def _compute_rows(pre: dict) -> list[dict]:
    rows = []
    for _, r in pre.values():
        s = r["summary"]
        fps = s.get("flops_per_step") or 0.0
        row = {"run": r["name"], "steps": s["final_step"], "stop": s["stop_reason"], "minutes": s["wall_seconds"] / 60,
               "GFLOP/step": fps / 1e9}
        for m in ("t_sat", milestone_key("t_id", th.GROKKED), milestone_key("t_ood", th.GENERALISED),
                  milestone_key("t_bridge", th.HIGH)):
            step = s["milestones"].get(m)
            # the trainer's milestones: first crossings, t_sat at the run's own train.sat_threshold (the findings'
            # saturation, 0.99 kept, is in the Runs table)
            label = f"t_sat (train >= {(s.get('thresholds') or {}).get('sat', th.SAT_CHECKPOINT)})" if m == "t_sat" \
                else m
            row[label] = "-" if step is None else f"{step} ({_minutes_at(r, step) or 0:.1f} min, {fps * step:.2g} FLOP)"
        rows.append(row)
    return rows


def _bridge_rows(pre: dict) -> list[dict]:
    """Bridge use per run, checkpoint and probe set, from the per-query records."""
    rows = []
    for _, r in pre.values():
        agg, schema = r["aggregates"], r["schema"]
        if schema is None or agg.empty:
            continue
        for _, a in agg.iterrows():
            profile = ", ".join(f"{s} {a[f'bridge_use@{s}']:.2f}" for s in schema["patch_stages"])
            rows.append({"run": r["name"], "step": int(a.step), "probe": a.probe_type, "n": int(a.n),
                         "answer acc": a.answer_acc, "bridge use (max)": a.bridge_use, "bridge use per stage": profile,
                         "bridge found": a.bridge_found})
    return rows


def _worth_rows(pre: dict, ft: dict) -> list[dict]:
    by_key = {(r.get("parent"), r["checkpoint"]): (r, run) for r, run in ft.values() if r["role"] == "finetune"}
    rows = []
    for (parent_job, ckpt), (sat_record, sat) in by_key.items():
        last = by_key.get((parent_job, "last"), (None, None))[1]
        if ckpt != "sat" or last is None:
            continue
        regime = sat_record["regime"]
        parent = next((run for r, run in pre.values() if r.get("path") == sat_record.get("parent")), None)
        t_sat, t_last = sat["config"]["transfer"]["parent_step"], last["config"]["transfer"]["parent_step"]
        fps = (parent or {}).get("summary", {}).get("flops_per_step") or 0.0
        ts, tl = sat["summary"]["transfer"], last["summary"]["transfer"]
        no_s, no_l = pick_category(ts["final"], "new_old")[0], pick_category(tl["final"], "new_old")[0]
        keep_s, keep_l = ts["retention"].get("test_inferred_iid"), tl["retention"].get("test_inferred_iid")
        rows.append({"regime": regime, "sat step": t_sat, "last step": t_last,
                     "extra FLOP": f"{fps * (t_last - t_sat):.2g}",
                     "new+old EM sat / last": f"{_num(no_s.get('exact_match'))} / {_num(no_l.get('exact_match'))}",
                     "retention ID sat / last": f"{_num(keep_s)} / {_num(keep_l)}"})
    return rows


def _transfer_rows(spec: dict, pre: dict, ft: dict) -> list[dict]:
    """Every fine-tune: where it stopped and why, its learning rate against its parent's, and each category's final
    rate (mean of the last 3 evaluations, 95% interval, n): exact match on all queries and on those whose old hop the
    model still answers, with that retention, and bridge use (v2) and bridge found; plus old-fact retention."""
    scope = {m.get("name"): scope_of(m) for m in models_in_order(spec)}
    rows = []
    order = [m.get("name") for m in models_in_order(spec)]
    rank = {name: i for i, name in enumerate(order)}
    for record, run in sorted(ft.values(), key=lambda pair: (rank.get(pair[0].get("model"), len(order)),
                                                             pair[1]["name"])):
        s, cfg, data = run["summary"], run["config"], run["rows"]
        t = s.get("transfer") or {}
        parent = next((p for r, p in pre.values() if r.get("path") == record.get("parent")), None)
        lr, parent_lr = cfg["train"].get("lr"), (parent or {}).get("config", {}).get("train", {}).get("lr")
        ratio = f" = {lr / parent_lr:.2g}x the parent's {parent_lr:g}" if lr and parent_lr else ""

        def cell(metric, n=None, rows=data):
            rate = final_rate(rows, metric, n=n)
            return "-" if rate is None else rate.text(compact=True)

        row = {"run": run["name"], "model": f"{record.get('model')}, {scope.get(record.get('model'), '')}",
               "steps": s["final_step"], "stopped": s["stop_reason"],
               "New Fact >= 0.99 at": t.get("steps_to_new_fact") if t.get("steps_to_new_fact") is not None else "-",
               "lr": f"{lr:g}{ratio}" if lr else "-", "New Fact": cell("atomic_new")}
        final = t.get("final", {})
        for cat, label in MIX_COLUMNS:
            key = cat if pick_category(final, cat)[1] == "faithful" else f"{cat}_powered"
            parts = [f"EM {cell(key)}"]
            if any(f"retention_{key}" in r for r in data):
                parts.append(f"old hop kept {cell(f'retention_{key}')}, EM there {cell(f'{key}_retained')}")
            parts.append(f"bridge use {cell(f'bridge_use_{key}')}, found {cell(f'bridge_found_{key}')}")
            row[label + ("" if key == cat else " (powered)")] = "; ".join(parts)
        row["retained old facts / compositions"] = f"{cell('id_atomic')} / {cell('train_inferred')}"
        rows.append(row)
    return rows


def _deviation_rows(pre: dict, ft: dict) -> list[dict]:
    rows = []
    for _, r in list(pre.values()) + list(ft.values()):
        for key, (paper, used) in (r["summary"].get("deviations_from_paper") or {}).items():
            # settings are shown as written (lr 1e-4, beta2 0.999), not rounded to two decimals like the rates
            rows.append({"run": r["name"], "setting": key, "paper": _setting(paper), "used": _setting(used)})
    return rows


def _setting(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


NOT_DONE = {  # a job's status -> why the report lists it under "Jobs not run"
    "pending": "not run yet: re-run the study to run it",
    "running": "interrupted while running: re-run the study to continue it",
    "interrupted": "interrupted: re-run the study to continue it",
    "stale": "its settings changed before it finished: re-run the study",
    "failed": "failed: fix the cause and re-run the study",
}


def _skipped_rows(manifest: dict) -> list[dict]:
    """Every job that did not finish, and why: skipped by the study (with its note) or not done yet. A report of an
    interrupted study says which jobs its findings are missing."""
    rows = []
    for name, e in manifest.get("jobs", {}).items():
        status = e.get("status", "pending")
        if status == "skipped":
            rows.append({"job": name, "why": e.get("note", "")})
        elif status != "done":
            rows.append({"job": name, "why": NOT_DONE.get(status, status)})
    return rows


def _meta(spec: dict, pre: dict, manifest: dict) -> list[str]:
    """The first screen's context, one sentence each: the tier, the seeds, the scope, what did not run."""
    models = ", ".join(f"{m['name']} ({scope_of(m)})" for m in models_in_order(spec))
    seeds = ", ".join(map(str, spec.get("seeds") or [0]))
    out = [f"Scale tier {spec.get('tier')} (preset {spec.get('name')}); seeds {seeds}.", f"Models: {models}."]
    if not any((r["summary"]["final"].get("test_inferred_ood") or 0) >= th.GENERALISED for _, r in pre.values()):
        out.append(f"No run reached OOD accuracy {th.GENERALISED} at this tier.")
    skipped = _skipped_rows(manifest)
    unfinished = [r for r in skipped if manifest["jobs"][r["job"]].get("status", "pending") != "skipped"]
    if unfinished:
        out.append(f"This study has not finished: {len(unfinished)} job(s) not run or interrupted (listed under "
                   f"'Jobs not run'); the findings read only what ran.")
    elif skipped:
        out.append(f"{len(skipped)} job(s) not run (listed under 'Jobs not run').")
    return out


def _run_notes(pre: dict) -> list[str]:
    """Every run's recorded milestones (the trainer's, at its own saturation setting), one line each."""
    out = []
    for _, r in pre.values():
        s = r["summary"]
        reached = ", ".join(f"{k}={v}" for k, v in s["milestones"].items() if v is not None) or "none reached"
        out.append(f"{r['name']}: {s['final_step']} steps ({s['stop_reason']}), milestones {reached}.")
    return out


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# Why the recipes deviate: said once under the deviations table, in both renderings.
SECTION_NOTES = {
    "contrast": "Each model trained on composition (natural regime) and on Wang et al.'s comparison task. Final: the "
                "mean of the last 3 evaluations, 95% Wilson interval. OOD chance: for comparison the most frequent "
                "label's share of the OOD comparisons (a model that never compares does no better); for composition "
                "the step-0 value. Finding W reads these rows.",
    "transfer": "He et al. §5 fine-tune the trm; fine-tunes of other models are an extension. A fine-tune stops at "
                "its step cap, or once it has run the stated multiple of the steps its New Fact accuracy needed to "
                "reach 0.99 and new+old has not moved for the stated number of evaluations. The scaled recipe "
                "keeps He et al.'s step relative to the weights' scale (2e-5 at width 1536), an EMA of 0.999 and a "
                "5% warm-up (the lr column says what each used); the control trains from scratch at the "
                "pre-training recipe. Old facts recalled: kept in the data, replayed only as a hop, not replayed. "
                "'old hop kept': the share of a category's queries whose old hop the model still answers, and the "
                "exact match on those (an extension: Finding 3 reads He et al.'s categories). Bridge use: the reverse "
                "patch (docs/methods.md, 'Bridge use').",
    "deviations": "Why: the papers train for about 10^6 steps on GPUs (He et al.'s TRM: 1,100 epochs, about 1.47M "
                  "steps; Wang et al.'s gpt: up to 2M); the CPU and GPU tiers train 10^3-10^4 steps and smaller "
                  "models, so the lr, warm-up and EMA are scaled to the budget. The trm's micro recipe (lr 6e-3, "
                  "weight decay 0.1, CE, no q-halt loss, EMA 0.99, prefix 1) was chosen by a calibration sweep, with "
                  "every configuration tried and why each paper setting failed at this budget, in the repository's "
                  "docs/calibration.md (§1: at weight decay 1.0 the OOD atomic facts stay at 0.33 after 12,000 "
                  "steps; an EMA of 0.999 averages over a twelfth of the run).",
}
OPTIONAL_SECTIONS = ("contrast",)  # shown only in a study that has them (a comparison section)
SECTIONS = (("contrast", "Composition against comparison (Wang et al. Fig. 1)"), ("compute", "Compute"),
            ("transfer", "Fine-tunes in detail: where each stopped and why, every category's final rates"),
            ("worth", "Was waiting for grokking worth it?"),
            ("bridge", "Bridge use per checkpoint (per-query records)"),
            ("deviations", "Recipes: deviations from the papers"), ("skipped", "Jobs not run"))


