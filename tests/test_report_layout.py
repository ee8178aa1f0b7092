"""The report's first screen and figures, on a stored micro-shaped report: He et al.'s own numbers for the trm (Fig. 2
and Fig. 4, as the golden test feeds them) and alternative worlds for the gpt, rendered as ``grokscope report``
renders a study. The smoke study's report is checked the same way in ``tests/test_study.py``."""

from __future__ import annotations

import pandas as pd
import pytest

import test_findings_paper as paper
from grokscope.reporting import plots, reference, render
from grokscope.reporting.findings import finding_2, finding_3
from grokscope.reporting.tables import finetune_rows, run_rows
from layout_probe import CHROMIUM, check_layout, long_cells, probe_layout


def micro_shaped(tmp_path) -> tuple[render.Report, object]:
    """Six findings (trm: the paper's world; gpt: other worlds), the run and fine-tune tables, two figures."""
    trm = [paper.f1(), finding_2(paper.paper_run("second_full"), paper.paper_run("both_full")),
           finding_3(paper.paper_finetunes())]
    gpt = [paper.f1(natural=paper.paper_run("natural", ood=[0.01] * 10)),
           finding_2(paper.paper_run("second_full", ood=[0.05] * 10), paper.paper_run("both_full")),
           finding_3(paper.paper_finetunes(natural={"old_new": paper.Rate(1.0, 18)}))]
    findings = [{**f, "model": "trm", "scope": "He et al.'s model"} for f in trm] + \
               [{**f, "model": "gpt", "scope": "extension"} for f in gpt]
    regimes = ("natural", "both_full", "second_full")
    runs = [({"name": f"trm_{r}", "summary": {"stop_reason": "max_steps", "final_step": paper.paper_run(r).last_step}},
             paper.paper_run(r)) for r in regimes]
    figdir = tmp_path / "figures"
    figdir.mkdir()
    curves = {r: pd.DataFrame(reference.fig2_rows(r)) for r in regimes}
    fig = plots.regime_panels(curves, "trm: training under each data regime", "bridge_found",
                              {r: reference.fig2_t_sat(r) for r in regimes},
                              {r: (reference.fig2_rows(r), reference.fig2_t_sat(r)) for r in regimes})
    fig.savefig(figdir / "regimes_trm.png", dpi=60)
    report = render.Report(
        name="micro", meta=["Scale tier cpu (preset micro); seeds 0.", "Models: trm (He et al.'s model), gpt "
                                                                          "(extension)."],
        findings=findings, runs=run_rows(runs), finetunes=finetune_rows(paper.paper_finetunes()),
        figures=[("regimes_trm.png", "Data regimes (trm)", "He et al. Fig. 2 analogue, with their points.")],
        sections=[("Jobs not run", [], "")], provenance={"grokscope": "test"})
    return report, figdir


def test_micro_shaped_markdown_has_no_wall_of_text(tmp_path):
    report, _ = micro_shaped(tmp_path)
    md = render.markdown(report)
    assert long_cells(md) == []
    first = md.split("## Findings")[0]
    for badge in ("**supported**", "**not testable**", "**partly supported**", "**contradicted**"):
        assert badge in first
    assert md.count("Decision rule:") == 3  # once per finding, not once per model
    assert "| trm_natural | max_steps at 1,343,300 | 106,050 | 12.7 | 500,000 | 500,000 (OOD test >= 0.5) |" in md


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium)")
def test_micro_shaped_first_screen_holds_every_verdict(tmp_path):
    report, figdir = micro_shaped(tmp_path)
    page = tmp_path / "report.html"
    page.write_text(render.page(report, figdir))
    check_layout(probe_layout(page, tmp_path), findings=6)


def test_fig2_analogue_carries_the_papers_points_on_a_saturation_axis():
    regimes = ("natural", "second_full")
    ours = {r: pd.DataFrame([{"step": s, "train_acc": 0.99, "bridge_found_ood": 0.1, "test_inferred_ood": 0.2}
                             for s in (0, 100, 200, 400)]) for r in regimes}
    fig = plots.regime_panels(ours, "t", "bridge_found", {"natural": 100, "second_full": 200},
                              {r: (reference.fig2_rows(r), reference.fig2_t_sat(r)) for r in regimes})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"He et al. bridge found", "He et al. OOD (target found)", "He et al. training"} <= set(lines)
    x, y = lines["He et al. bridge found"].get_data()
    assert list(x)[-1] == pytest.approx(1_343_300 / 106_050) and list(y)[-1] == 0.998  # natural's end, in t_sat units
    assert list(lines["bridge found (OOD)"].get_data()[0]) == [1.0, 2.0, 4.0]  # ours: step / 100, step 0 dropped
    assert ax.get_xscale() == "log" and "t_sat" in ax.get_xlabel()
    # a run that never saturated: no scaled axis, so no paper points
    flat = plots.regime_panels(ours, "t", "bridge_found", {"natural": None, "second_full": 200},
                               {r: (reference.fig2_rows(r), reference.fig2_t_sat(r)) for r in regimes})
    assert not any(line.get_label().startswith("He et al.") for a in flat.axes for line in a.get_lines())


def test_fig4_analogue_carries_the_papers_points():
    df = pd.DataFrame([{"step": s, "atomic_new": 1.0, "new_old": 0.5, "bridge_found_new_old": 0.5} for s in (0, 50)])
    fig = plots.transfer_grid({"natural (last)": df}, [("new_old", "new + old")], "t", "bridge_found",
                              {"natural (last)": 25}, {"natural (last)": (reference.fig4_points("natural"), 2928)})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    x, y = lines["He et al. exact match"].get_data()
    assert list(y)[:3] == [0.0, 0.125, 0.625] and list(x)[2] == pytest.approx(1.0)  # 2,928 / 2,928
    assert "He et al. bridge found" in lines and "He et al. New Fact" in lines
    assert list(lines["composition exact match"].get_data()[0]) == [0.0, 2.0]
