"""The two tables a reader checks a study against: what each run did (where and why it stopped, its milestones, its
final numbers with their intervals) and what each fine-tune did. Generated from the run folders; the report shows
them and ``grokscope report --readme`` writes them into a README's "Measured" section.
"""

from __future__ import annotations

from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import Rate
from grokscope.reporting.findings import RETENTION_KINDS, parent_kind


def _rate(rate: Rate | None) -> str:
    return "-" if rate is None else rate.text(compact=True)


def _step(step) -> str:
    return "-" if step is None else f"{step:,}"


def _decodable(d) -> str:
    """The probe at the last analysed step, beside the highest of its three controls."""
    if d is None:
        return "-"
    name, best = max(d.controls.items(), key=lambda kv: kv[1].value, default=("none", None))
    return f"{_rate(d.probe)} at {d.step:,} ({name} {best.value:.2f})" if best else f"{_rate(d.probe)} at {d.step:,}"


def run_rows(runs: list[tuple[dict, object]]) -> list[dict]:
    """One row per pre-training run: ``runs`` holds (the run as ``build.read_run`` gives it, its ``RunFacts``)."""
    rows = []
    for run, facts in runs:
        s = run["summary"]
        grokked = facts.grokked
        key = facts.bridge_key
        rows.append({
            "run": run["name"],
            "stopped": f"{s.get('stop_reason', '?')} at {_step(s.get('final_step'))}",
            f"t_sat (train >= {th.SATURATION}, kept)": _step(facts.t_sat),
            "trained (x t_sat)": "-" if facts.age is None else f"{facts.age:.1f}",
            f"OOD >= {th.GENERALISED} (kept)": _step(facts.reached("test_inferred_ood", th.GENERALISED)),
            "grokked (kept)": f"{_step(facts.reached(grokked.metric, grokked.threshold))} ({grokked.text()})",
            "final train": _rate(facts.final("train_acc")),
            "final ID": _rate(facts.final("test_inferred_iid")),
            "final OOD": _rate(facts.final("test_inferred_ood")),
            "final bridge on OOD": f"{facts.bridge_metric.replace('_', ' ')} {_rate(facts.final(key))}",
            "bridge decodable on OOD (best control)": _decodable(facts.decodable),
        })
    return rows


def finetune_rows(finetunes: list) -> list[dict]:
    """One row per fine-tune (``FineTuneFacts``), on He et al.'s categories: its parent's circuit as measured, the
    steps to New Fact and to new+old, and each category's final exact match and bridge."""
    rows = []
    for f in finetunes:
        kind, _ = parent_kind(f)
        p = f.parent
        parent = "from scratch" if p is None and f.regime == "control" else (
            f"{f.regime} @ {f.checkpoint}: {kind}" + ("" if p is None or p.age is None else f", {p.age:.1f} x t_sat"))
        rows.append({
            "fine-tune": f.name, "parent": parent,
            "New Fact >= 0.99 at": _step(f.steps.get("new_fact")), "new+old >= 0.9 at": _step(f.steps.get("new_old")),
            "New Fact": _rate(f.rates.get("atomic_new")),
            "new+old EM / bridge": f"{_rate(f.rates.get('new_old'))} / {_rate(f.rates.get('bridge_new_old'))}",
            "old+new EM / bridge": f"{_rate(f.rates.get('old_new'))} / {_rate(f.rates.get('bridge_old_new'))}",
            "new+new EM / bridge": f"{_rate(f.rates.get('new_new'))} / {_rate(f.rates.get('bridge_new_new'))}",
            "old facts recalled: kept / replayed as a hop / not replayed": " / ".join(
                _rate(f.rates.get(kind)) for kind in RETENTION_KINDS),
        })
    return rows
