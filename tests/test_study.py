"""The whole study on the smoke preset: every output file, resume by skipping, the report in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess

import pytest

from grokscope.study import STAGES, load_preset, plan

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from grokscope.cli import main

    out = tmp_path_factory.mktemp("study") / "smoke"
    try:
        main(["study", "--preset", "smoke", "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_plan_covers_every_stage():
    jobs = plan(load_preset("smoke"), __import__("pathlib").Path("/x"))
    stages = [j.stage for j in jobs]
    assert stages.count("data") == 3 and stages.count("train") == 4 and stages.count("analyze") == 4
    assert stages.count("transfer") == 3 * 2 + 1  # three regimes x (sat, last) + the control
    assert set(stages) == set(STAGES) and STAGES == ("data", "train", "analyze", "transfer")  # execution order


def test_study_outputs(study):
    assert (study / "report.html").stat().st_size > 10_000 and (study / "report.md").exists()
    figures = {p.name for p in (study / "figures").iterdir()}
    assert {"regimes_gpt.png", "grokking_gpt.png", "lens_gpt_natural.png", "trace_gpt_natural.png",
            "transfer.png", "lens_trm_natural.png"} <= figures
    for run in ("gpt_natural", "gpt_both_full", "gpt_second_full", "trm_natural"):
        for f in ("config.yaml", "metrics.jsonl", "summary.json", "analysis/lens.parquet",
                  "analysis/trace.parquet", "analysis/compare.json", "analysis/regime.json"):
            assert (study / "runs" / run / f).exists(), (run, f)
    for ft in ("ft_gpt_natural_sat", "ft_gpt_natural_last", "ft_gpt_second_full_last", "ft_gpt_control"):
        summary = json.loads((study / "runs" / ft / "summary.json").read_text())
        assert "transfer" in summary
    md = (study / "report.md").read_text()
    assert "## Findings" in md and "Scale tier: **smoke**" in md and "## Provenance" in md
    for n in (1, 2, 3):
        assert re.search(rf"^\| {n} \| ", md, re.M), n
    state = json.loads((study / "study.json").read_text())
    assert set(state["stage_seconds"]) >= {"data", "train", "analyze", "transfer", "report"}


def test_study_resumes_by_skipping(study, cli):
    before = {p: p.stat().st_mtime for p in (study / "runs").glob("*/summary.json")}
    code, out, err = cli("study", "--preset", "smoke", "--out", study)
    assert code == 0, err
    assert "already complete, skipped" in out
    assert {p: p.stat().st_mtime for p in (study / "runs").glob("*/summary.json")} == before
    code, _, err = cli("study", "--preset", "smoke", "--out", study, "--set", "train.lr=0.5")
    assert code == 2 and "different preset" in err


def test_bad_study_input(cli, tmp_path):
    code, _, err = cli("study", "--preset", "galactic", "--out", tmp_path / "s")
    assert code == 2 and "unknown study preset" in err
    code, _, err = cli("study", "--preset", "smoke", "--out", tmp_path / "s", "--set", "lr=1")
    assert code == 2 and "data.KEY" in err
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "not a study folder" in err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium)")
def test_report_renders_in_headless_chromium(study, tmp_path):
    html = (study / "report.html").read_text()
    probe = html.replace("</body>", "<script>window.addEventListener('load', () => {const imgs = [...document.images];"
                         "document.body.setAttribute('data-images', imgs.filter(i => i.complete && "
                         "i.naturalWidth > 0).length + '/' + imgs.length);});</script></body>")
    page = tmp_path / "probe.html"
    page.write_text(probe)
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, "--virtual-time-budget=5000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert match, dom[:500]
    rendered, total = map(int, match.groups())
    assert total >= 6 and rendered == total
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, f"--screenshot={shot}", "--window-size=1280,2000",
                    (study / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (extra 'sweep')")
def test_smoke_study_on_local_ray(tmp_path, cli):
    code, out, err = cli("study", "--preset", "smoke", "--out", tmp_path / "ray", "--executor", "ray")
    assert code == 0, err
    assert (tmp_path / "ray" / "report.html").exists()


def test_sweep_writes_milestone_table(cli, tmp_path):
    import pandas as pd

    code, out, err = cli("sweep", "--preset", "smoke", "--grid", "train.weight_decay=0.1,0.3",
                         "--grid", "data.phi=2,3", "--out", tmp_path / "sw")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert len(table) == 4 and {"train.weight_decay", "data.phi", "t_sat", "final_iid", "steps"} <= set(table.columns)
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 5_000
    assert len(list((tmp_path / "sw" / "datasets").iterdir())) == 2  # one dataset per distinct data point
    code, _, err = cli("sweep", "--preset", "smoke", "--grid", "lr=1,2", "--out", tmp_path / "bad")
    assert code == 2 and "data.KEY" in err
