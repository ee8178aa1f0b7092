"""Build ``report.html`` (self-contained, figures embedded) and ``report.md`` (+ PNG files) for a study folder.

Reads only files: ``study.json``, each run's ``config.yaml``, ``metrics.jsonl``, ``summary.json`` and
``analysis/`` tables. Every number in the report is read from those files; verdicts come from findings.py.
"""

from __future__ import annotations

import base64
import html
import json
import platform
from pathlib import Path

import pandas as pd
import yaml

from grokscope import __version__
from grokscope.report import plots
from grokscope.report.compute import flops_per_step
from grokscope.report.findings import CRITERIA, finding_1, finding_2, finding_3

MIX_COLUMNS = [("new_old", "new + old"), ("old_new", "old + new"), ("new_new", "new + new")]


def _read_run(path: Path) -> dict | None:
    if not (path / "summary.json").exists():
        return None
    info = {"path": path, "name": path.name, "config": yaml.safe_load((path / "config.yaml").read_text()),
            "summary": json.loads((path / "summary.json").read_text()),
            "metrics": pd.read_json(path / "metrics.jsonl", lines=True)}
    a = path / "analysis"
    for name in ("compare", "regime"):
        info[name] = json.loads((a / f"{name}.json").read_text()) if (a / f"{name}.json").exists() else None
    info["lens"] = pd.read_parquet(a / "lens.parquet") if (a / "lens.parquet").exists() else None
    info["trace"] = pd.read_parquet(a / "trace.parquet") if (a / "trace.parquet").exists() else None
    return info


def _minutes_at(run: dict, step) -> float | None:
    if step is None:
        return None
    m = run["metrics"]
    row = m[m.step == step]
    return None if row.empty else float(row.wall_seconds.iloc[0]) / 60


class Report:
    def __init__(self, root: Path):
        self.root = root
        self.figdir = root / "figures"
        self.figdir.mkdir(exist_ok=True)
        self.figures: list[tuple[str, str, str]] = []  # (file, title, caption)

    def add(self, fig, name: str, title: str, caption: str) -> None:
        path = self.figdir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plots.plt.close(fig)
        self.figures.append((path.name, title, caption))


def build_report(root: Path) -> Path:
    root = Path(root)
    state = json.loads((root / "study.json").read_text())
    spec = state["spec"]
    all_runs = {p.name: r for p in sorted((root / "runs").iterdir()) if p.is_dir() and (r := _read_run(p))}
    pre = {k: v for k, v in all_runs.items() if not k.startswith("ft_")}
    ft = {k: v for k, v in all_runs.items() if k.startswith("ft_")}
    rep = Report(root)

    # --- figures: He Fig. 2 analogue per model family, Wang's grokking curve
    for model in spec["models"]:
        curves = {r.split("_", 1)[1]: pre[r]["metrics"] for r in pre if r.startswith(model["name"] + "_")}
        if curves:
            rep.add(plots.regime_panels(curves, f"{model['name']}: training under each data regime"),
                    f"regimes_{model['name']}", f"Data regimes ({model['name']})",
                    "He et al. Fig. 2 analogue: bridge found and OOD accuracy (target found, as the paper plots, "
                    "and exact match) and training accuracy vs step.")
        nat = pre.get(f"{model['name']}_natural")
        if nat is not None:
            rep.add(plots.grokking_curve(nat["metrics"], f"{model['name']}, natural regime"),
                    f"grokking_{model['name']}", f"Grokking curve ({model['name']}, natural)",
                    "Wang et al. Fig. 1 analogue: training, ID test and OOD test exact match vs step.")
            _lens_and_trace_figures(rep, nat)
    if ft:
        grid = {k[3:]: v["metrics"] for k, v in ft.items()}
        rep.add(plots.transfer_grid(grid, MIX_COLUMNS, "fine-tuning on new facts"), "transfer",
                "Transfer to new facts",
                "He et al. Fig. 3/4 analogue: rows = starting checkpoints (regime, saturated or last checkpoint, "
                "or the from-scratch control), columns = composition categories (faithful filter).")

    # --- findings
    tmodel = (spec.get("transfer") or {}).get("model", spec["models"][0]["name"])
    nat = pre.get(f"{tmodel}_natural")
    regimes = {r.split("_", 1)[1]: {"regime": pre[r]["regime"]["ood"], "final": pre[r]["summary"]["final"]}
               for r in pre if r.startswith(tmodel + "_") and pre[r].get("regime")}
    grokked = {k[3:]: v["summary"]["transfer"] for k, v in ft.items()
               if k.endswith("_last") and ("natural" in k or "both_full" in k) and "transfer" in v["summary"]}
    findings = [finding_1(nat["compare"] if nat else None, nat["summary"]["milestones"] if nat else None),
                finding_2(regimes), finding_3(grokked)]

    # --- compute table and the "worth it" comparison
    compute_rows = []
    for name, r in pre.items():
        cfg = r["config"]
        fps = flops_per_step(cfg["model"]["family"], cfg["model"]["config"], cfg["train"]["batch_size"])
        ms = r["summary"]["milestones"]
        row = {"run": name, "steps": r["summary"]["final_step"], "minutes": r["summary"]["wall_seconds"] / 60,
               "GFLOP/step": fps / 1e9}
        for m in ("t_sat", "t_id90", "t_ood50", "t_bridge90"):
            step = ms.get(m)
            row[m] = "-" if step is None else f"{step} ({_minutes_at(r, step) or 0:.1f} min, {fps * step:.2g} FLOP)"
        compute_rows.append(row)
    worth = []
    for name, r in ft.items():
        if not name.endswith("_sat") or name.replace("_sat", "_last") not in ft:
            continue
        last = ft[name.replace("_sat", "_last")]
        base = name[3:-4]
        parent = pre.get(base)
        t_sat, t_last = (r["config"]["transfer"]["parent_step"], last["config"]["transfer"]["parent_step"])
        fps = flops_per_step(parent["config"]["model"]["family"], parent["config"]["model"]["config"],
                             parent["config"]["train"]["batch_size"]) if parent else 0
        fs, fl = r["summary"]["transfer"]["final"], last["summary"]["transfer"]["final"]
        cmp = (parent or {}).get("compare") or {}
        worth.append({"regime": base, "sat step": t_sat, "last step": t_last,
                      "extra FLOP": f"{fps * (t_last - t_sat):.2g}",
                      "new+old EM sat / last": f"{_num(fs['new_old_powered']['exact_match'])} / "
                                               f"{_num(fl['new_old_powered']['exact_match'])}",
                      "new+old bridge sat / last": f"{_num(fs['new_old_powered']['bridge_found'])} / "
                                                   f"{_num(fl['new_old_powered']['bridge_found'])}",
                      "circuit similarity (r)": _num(cmp.get("causal_map_corr"))})

    provenance = {"grokscope": __version__, "git commit": next((r["config"].get("git_commit") for r in
                                                                all_runs.values()), None),
                  "study preset": spec["name"], "tier": spec.get("tier"),
                  "machine": f"{platform.machine()} {platform.system()} {platform.release()}, "
                             f"{_cpu_count()} CPUs, python {platform.python_version()}",
                  "dataset fingerprints": {n: r["config"]["data"]["fingerprint"] for n, r in all_runs.items()},
                  "study spec": spec,
                  "run configs": {n: str(r["path"] / "config.yaml") for n, r in all_runs.items()},
                  "stage seconds": {k: round(v, 1) for k, v in state.get("stage_seconds", {}).items()}}
    tier_note = _tier_note(spec, pre, regimes)
    md = _markdown(spec, rep, findings, compute_rows, worth, provenance, tier_note, pre)
    (root / "report.md").write_text(md)
    (root / "report.html").write_text(_html(spec, rep, findings, compute_rows, worth, provenance, tier_note, pre))
    return root / "report.html"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _lens_and_trace_figures(rep: Report, run: dict) -> None:
    lens, trace, name = run["lens"], run["trace"], run["name"]
    if lens is not None and not lens.empty:
        family = run["config"]["model"]["family"]
        id_probe = "test_inferred_iid" if "test_inferred_iid" in set(lens.probe_type) else lens.probe_type.iloc[0]
        sub = lens[(lens.probe_type == id_probe)]
        if family == "gpt":  # b at the r1 position, per layer (Wang's S[l, r1])
            sub = sub[(sub.metric == "top1_bridge") & (sub.position == 1)]
        else:  # per stage, any position (He's bridge found resolved per stage)
            sub = sub[(sub.metric == "bridge_found") & (sub.position == -1)]
        profiles = {f"step {s}": g.set_index("stage")["value"] for s, g in sub.groupby("step")}
        if profiles:
            rep.add(plots.lens_profiles(profiles, f"{name}: bridge decodability on {id_probe}",
                                        "b top-1 share"), f"lens_{name}", f"Logit lens ({name})",
                    "Share of ID compositions whose bridge entity is the top-1 token per layer (gpt: at the r1 "
                    "position) or stage (trm: any position), for the checkpoint at training saturation and the "
                    "last one.")
    if trace is not None and not trace.empty:
        probe = "train_inferred" if "train_inferred" in set(trace.probe_type) else trace.probe_type.iloc[0]
        sub = trace[trace.probe_type == probe]
        maps = {f"step {s}": g.pivot_table(index="stage", columns="position", values="value", sort=False)[
            ["h", "r1", "r2"]] for s, g in sub.groupby("step")}
        if maps:
            rep.add(plots.causal_heatmaps(maps, f"{name}: causal strength on {probe}"), f"trace_{name}",
                    f"Causal tracing ({name})",
                    "Share of correct answers that flip when the state at (layer/stage, position) is replaced by "
                    "a counterfactual's; the last panel is the difference between the checkpoints.")


def _tier_note(spec, pre, regimes) -> str:
    parts = [f"Scale tier: **{spec.get('tier')}** (preset `{spec['name']}`)."]
    for name, r in pre.items():
        s = r["summary"]
        reached = ", ".join(f"{k}={v}" for k, v in s["milestones"].items() if v is not None) or "none reached"
        parts.append(f"`{name}`: {s['final_step']} steps ({s['stop_reason']}), milestones {reached}.")
    if not any(r["summary"]["milestones"].get("t_id90") for r in pre.values()):
        parts.append("No run reached ID test accuracy 0.9 at this tier: grokking did not complete within the "
                     "budget.")
    if not any((r["summary"]["final"].get("test_inferred_ood") or 0) >= 0.5 for r in pre.values()):
        parts.append("No run reached OOD accuracy 0.5 at this tier.")
    return " ".join(parts)


def _table_md(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    out = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    for r in rows:
        out += "| " + " | ".join(_cell(r[c]) for c in cols) + " |\n"
    return out


def _cell(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _markdown(spec, rep, findings, compute_rows, worth, provenance, tier_note, pre) -> str:
    md = [f"# grokscope study report: {spec['name']}\n", tier_note + "\n", "## Findings\n",
          _table_md([{"finding": f["finding"], "verdict": f["verdict"], "measured in this study": f["measured"],
                      "paper (PAPER_SPEC §8)": f["paper"], "decision rule": f.get("rule", "")} for f in findings]),
          f"\nCriteria (PAPER_SPEC §10.2): {json.dumps(CRITERIA)}\n", "\n## Figures\n"]
    for file, title, caption in rep.figures:
        md.append(f"### {title}\n\n![{title}](figures/{file})\n\n{caption}\n")
    md += ["\n## Compute\n", _table_md(compute_rows), "\n### Was waiting for grokking worth it?\n",
           _table_md(worth), "\n## Provenance\n", "```json\n" + json.dumps(provenance, indent=2) + "\n```\n"]
    return "\n".join(md)


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(spec, rep, findings, compute_rows, worth, provenance, tier_note, pre) -> str:
    figs = []
    for file, title, caption in rep.figures:
        data = base64.b64encode((rep.figdir / file).read_bytes()).decode()
        figs.append(f"<figure><h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
                    f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    f_rows = [{"finding": f["finding"], "verdict": f["verdict"], "measured in this study": f["measured"],
               "paper (PAPER_SPEC §8)": f["paper"], "decision rule": f.get("rule", "")} for f in findings]
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#f3f3f3}"
             "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}")
    tier = html.escape(tier_note).replace("**", "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>grokscope report: "
            f"{html.escape(spec['name'])}</title><style>{style}</style></head><body>"
            f"<h1>grokscope study report: {html.escape(spec['name'])}</h1><p>{tier}</p>"
            f"<h2>Findings</h2>{_html_table(f_rows)}<h2>Figures</h2>{''.join(figs)}"
            f"<h2>Compute</h2>{_html_table(compute_rows)}<h3>Was waiting for grokking worth it?</h3>"
            f"{_html_table(worth)}<h2>Provenance</h2><pre>{html.escape(json.dumps(provenance, indent=2))}</pre>"
            f"</body></html>")
