"""The whole study on the smoke preset: every output file, the manifest's roles, no positive verdict where nothing
generalises, resume by skipping, a kill at every stage, the report in headless Chromium, and the sweep (the study's
worker processes, Ray and changed unfinished jobs: ``test_study_workers.py``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
import json
import re
import shutil
import subprocess
import sys

import pytest

from grokscope.reporting.findings import outcome
from grokscope.studies.plan import STAGES, plan
from grokscope.studies.spec import load_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("study") / "smoke"
    assert run_cli("study", "--preset", "smoke", "--out", out) == 0
    return out


def test_plan_covers_every_stage_with_roles(tmp_path):
    jobs = plan(load_spec("smoke"), tmp_path)
    stages = [j.stage for j in jobs]
    assert stages.count("data") == 3 and stages.count("train") == 4 and stages.count("analyze") == 4
    assert stages.count("transfer") == 3 * 2 + 1 and stages.count("compare") == 1
    assert {j.stage for j in jobs} == set(STAGES)
    roles = {j.name: dict(j.record) for j in jobs}
    groups = {name: r.pop("stack_group", None) for name, r in roles.items() if name.startswith("train ")}
    assert roles["train gpt_natural"] == {"role": "pretrain", "model": "gpt", "family": "gpt", "regime": "natural",
                                          "seed": 0, "path": str(tmp_path / "runs" / "gpt_natural")}
    # runs of one architecture share a stack group; the trm never stacks with the gpt
    assert groups["train gpt_natural"] == groups["train gpt_second_full"] != groups["train trm_natural"]
    ft = roles["transfer ft_gpt_second_full_sat"]
    assert ft["role"] == "finetune" and ft["checkpoint"] == "sat" and ft["parent"].endswith("gpt_second_full")
    assert roles["transfer ft_gpt_control"]["role"] == "control"


def _spec_with(tmp_path, **changes):
    import yaml

    from grokscope.studies.spec import read_preset

    raw = {**read_preset("smoke"), **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(str(path))


def test_the_study_seed_is_the_run_seed(tmp_path):
    """``seeds: [1]`` trains seed 1 and the manifest says so; the default seed keeps the job's identity; a model
    entry may not set its own train.seed (the manifest would record the wrong one)."""
    one = {j.name: j for j in plan(_spec_with(tmp_path, seeds=[1]), tmp_path)}
    job = one["train gpt_natural"]
    assert job.record["seed"] == 1 and "train.seed=1" in " ".join(map(str, job.argv))
    assert job.call["kwargs"]["spec"]["train"]["seed"] == 1  # what runs is the resolved spec, not the command line
    zero = {j.name: j for j in plan(load_spec("smoke"), tmp_path)}
    assert "train.seed" not in " ".join(map(str, zero["train gpt_natural"].argv))
    from grokscope.errors import GrokscopeError
    with pytest.raises(GrokscopeError, match="seeds"):
        load_spec("smoke", ["train.seed=1"])


def test_study_outputs(study):
    assert (study / "report.html").stat().st_size > 10_000 and (study / "report.md").exists()
    figures = {p.name for p in (study / "figures").iterdir()}
    assert {"regimes_gpt.png", "grokking_gpt.png", "bridge_use_gpt_natural.png", "b_decodable_at_r1_gpt_natural.png",
            "trace_gpt_natural.png", "transfer_gpt.png", "bridge_use_trm_natural.png"} <= figures
    for run in ("gpt_natural", "gpt_both_full", "gpt_second_full", "trm_natural"):
        for f in ("config.yaml", "metrics.jsonl", "summary.json", "analysis/lens.parquet", "analysis/trace.parquet",
                  "analysis/bridge_use.parquet", "analysis/compare.json", "analysis/regime.json",
                  "analysis/queries/schema.json"):
            assert (study / "runs" / run / f).exists(), (run, f)
    manifest = json.loads((study / "study.json").read_text())
    status = {name: e["status"] for name, e in manifest["jobs"].items()}
    assert status["transfer ft_gpt_natural_sat"] == "skipped"  # the smoke gpt never saturates: no 'sat' fine-tune
    assert "never reached" in manifest["jobs"]["transfer ft_gpt_natural_sat"]["note"]
    assert all(s == "done" for n, s in status.items() if not n.endswith("_sat"))
    # One job at a time (workers: 1): the gpt's fine-tunes trained stacked, in one process, as one job.
    stacked_ft = [json.loads(p.read_text()) for p in (study / "jobs").glob("stack_ft_*.json")]
    assert len(stacked_ft) == 1 and stacked_ft[0]["kind"] == "stack"
    assert sorted(Path(m["out"]).name for m in stacked_ft[0]["members"]) == sorted(
        n.split()[1] for n, s in status.items() if n.startswith("transfer ") and s == "done")
    assert set(manifest["stage_seconds"]) >= {"data", "train", "analyze", "transfer", "compare", "report"}
    md = (study / "report.md").read_text()
    assert "## Findings" in md and "Scale tier smoke (preset smoke)" in md and "## Provenance" in md
    assert "Jobs not run" in md and "## Runs" in md and "## Fine-tunes (He et al.'s categories)" in md
    # recipe settings as written, not rounded to two decimals (Wang et al.'s lr 1e-4 once showed as 0.00)
    assert re.search(r"^\| gpt_natural \| train\.lr \| 0\.0001 \| ", md, re.M)
    assert "Why: the papers train for" in md and "docs/calibration.md" in md  # the deviations say why


def test_nothing_generalises_at_smoke_scale_so_no_finding_is_positive(study):
    from grokscope.reporting.build import study_findings

    findings = study_findings(study)
    # He et al.'s model first; Finding 3 only for a model with fine-tunes (the smoke study fine-tunes the gpt)
    assert [(f["model"], f["finding"]) for f in findings] == [("trm", 1), ("trm", 2), ("gpt", 1), ("gpt", 2),
                                                               ("gpt", 3)]
    assert findings[0]["scope"] == "He et al.'s model" and findings[2]["scope"].startswith("extension")
    assert all(outcome(f["verdict"]) == "not testable" for f in findings), [f["verdict"] for f in findings]
    md = (study / "report.md").read_text()
    for model, n in (("trm", 1), ("trm", 2), ("gpt", 1), ("gpt", 2), ("gpt", 3)):
        assert re.search(rf"^\| \*\*not testable\*\* \| Finding {n} · {model} \|", md, re.M), (model, n)


def test_a_changed_preset_value_is_named_and_the_same_value_written_otherwise_is_no_change(study, cli,
                                                                                          monkeypatch, tmp_path):
    """Finished jobs are compared by the settings they resolve to, not by their command lines."""
    from grokscope.training import config as train_config

    manifest = json.loads((study / "study.json").read_text())
    entry = manifest["jobs"]["train gpt_natural"]
    assert entry["resolved"]["train"]["lr"] == 0.001 and len(entry["settings_hash"]) == 16
    assert entry["resolved"]["train"]["seed"] == 0
    assert entry["ran_with"]["seed"] == 0 and entry["ran_with"]["device"] == "cpu" and entry["ran_with"]["torch"]
    # The same value written another way is no change: nothing re-runs, nothing is refused.
    summaries = {p: p.stat().st_mtime for p in (study / "runs").glob("*/summary.json")}
    code, out, err = cli("study", "--preset", "smoke", "--out", study, "--set", "train.lr=1e-3")
    assert code == 0, err
    assert {p: p.stat().st_mtime for p in summaries} == summaries
    # An edited training preset (as an upgrade would bring) is a change, named without --fresh.
    edited = dict(train_config.TRAIN_PRESETS[("gpt", "smoke")], lr=0.002)
    monkeypatch.setitem(train_config.TRAIN_PRESETS, ("gpt", "smoke"), edited)
    code, _, err = cli("study", "--preset", "smoke", "--out", study)
    assert code == 2 and "train gpt_natural (train.lr: 0.001 -> 0.002)" in err and "--fresh" in err
    # An edited study preset (a copy of smoke with another value) is named the same way.
    monkeypatch.undo()
    text = (resources.files("grokscope") / "presets" / "smoke.yaml").read_text()
    assert "max_steps: 60" in text
    (tmp_path / "smoke.yaml").write_text(text.replace("max_steps: 60", "max_steps: 61", 1))
    code, _, err = cli("study", "--preset", tmp_path / "smoke.yaml", "--out", study)
    assert code == 2 and "train.max_steps: 60 -> 61" in err, err


def test_study_resumes_by_skipping_and_continues_after_unfinished_changes(study, cli):
    summaries = sorted((study / "runs").glob("*/summary.json"))
    before = {p: p.stat().st_mtime for p in summaries}
    code, out, err = cli("study", "--preset", "smoke", "--out", study)
    assert code == 0, err
    assert "already complete or skipped" in out
    assert {p: p.stat().st_mtime for p in summaries} == before
    code, _, err = cli("study", "--preset", "smoke", "--out", study, "--set", "train.lr=0.5")
    assert code == 2 and "finished jobs would change" in err and "--fresh" in err
    assert {p: p.stat().st_mtime for p in summaries} == before


def test_a_typo_is_refused_before_any_job(cli, tmp_path):
    for args, needle in ((["--set", "transfer.nonexistent=1"], "nonexistent"),
                         (["--set", "lr=1"], "lr"), (["--preset", "galactic"], "unknown study preset")):
        code, _, err = cli("study", "--preset", "smoke", "--out", tmp_path / "s", *args)
        assert code == 2 and needle in err, err
        assert not (tmp_path / "s" / "runs").exists()
    spec = tmp_path / "typo.yaml"
    smoke = resources.files("grokscope").joinpath("presets", "smoke.yaml").read_text()
    spec.write_text(smoke.replace("checkpoints: [sat, last]", "checkpoints: [sat, lats]"))
    code, _, err = cli("study", "--preset", spec, "--out", tmp_path / "s")
    assert code == 2 and "lats" in err and not (tmp_path / "s" / "runs").exists()
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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium)")
def test_report_first_screen_holds_every_verdict(study, tmp_path):
    """At 1280 x 900 every verdict badge is on the first screen, nothing scrolls sideways, every image has alt text
    and every <details> opens; report.md has no table cell over 40 words."""
    from layout_probe import check_layout, long_cells, probe_layout

    check_layout(probe_layout(study / "report.html", tmp_path), findings=5)
    assert long_cells((study / "report.md").read_text()) == []


def test_report_writes_the_measured_section_of_a_readme(study, cli, tmp_path):
    """`grokscope report STUDY --readme FILE` replaces what lies between the markers with the generated tables, and
    refuses (exit 2, one line, the file untouched) a README without them."""
    from grokscope.reporting.readme import BEGIN, END

    readme = tmp_path / "README.md"
    readme.write_text(f"# Mine\n\n## Measured\n{BEGIN}\ntyped by hand\n{END}\n\n## After\nkept\n")
    code, out, err = cli("report", str(study), "--readme", str(readme))
    assert code == 0 and "measured section" in out, err
    text = readme.read_text()
    assert "typed by hand" not in text and text.startswith("# Mine") and text.endswith("## After\nkept\n")
    section = text.split(BEGIN)[1].split(END)[0]
    assert "| **not testable** | Finding 1 · trm |" in section and "| gpt_natural |" in section
    assert "| ft_gpt_natural_last |" in section
    code, _, _ = cli("report", str(study), "--readme", str(readme))  # again: the same text, markers kept
    assert code == 0 and readme.read_text() == text
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers here\n")
    code, out, err = cli("report", str(study), "--readme", str(bare))
    assert code == 2 and "needs one" in err and len(err.strip().splitlines()) == 1
    assert bare.read_text() == "no markers here\n"


def test_the_worker_refuses_a_bad_spec_file_in_one_line(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps({"verb": "rm", "kwargs": {}}))
    for args, says in (([str(bad)], "not a job spec"), ([str(tmp_path / "none.json")], "none.json"), ([], "usage")):
        proc = subprocess.run([sys.executable, "-m", "grokscope.worker", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    train = {"verb": "train", "kwargs": {"spec": {"data": "d", "out": "o", "family": "rnn", "train": {}, "model": {}}}}
    bad.write_text(json.dumps(train))
    proc = subprocess.run([sys.executable, "-m", "grokscope.worker", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown family 'rnn'" in proc.stderr, proc.stderr


def test_sweep_writes_milestone_table(cli, tmp_path):
    import pandas as pd

    code, out, err = cli("sweep", "--preset", "smoke", "--grid", "train.weight_decay=0.1,0.3",
                         "--grid", "data.phi=2,3", "--out", tmp_path / "sw")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert len(table) == 4 and {"train.weight_decay", "data.phi", "t_sat", "final_iid", "steps"} <= set(table.columns)
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 5_000
    assert (tmp_path / "sw" / "sweep_curves.png").stat().st_size > 5_000
    assert len(list((tmp_path / "sw" / "datasets").iterdir())) == 2  # one dataset per distinct data point
    # An edited training preset would reuse finished points under values they were not trained with: named, refused.
    from grokscope.training import config as train_config

    original = train_config.TRAIN_PRESETS[("gpt", "smoke")]
    train_config.TRAIN_PRESETS[("gpt", "smoke")] = {**original, "warmup_steps": 11}
    try:
        code, _, err = cli("sweep", "--preset", "smoke", "--grid", "train.weight_decay=0.1,0.3",
                           "--grid", "data.phi=2,3", "--out", tmp_path / "sw")
    finally:
        train_config.TRAIN_PRESETS[("gpt", "smoke")] = original
    assert code == 2 and "finished points would change" in err and "train.warmup_steps: 10 -> 11" in err, err
    code, printed, err = cli("sweep", "--preset", "smoke", "--grid", "train.weight_decay=0.1,0.3", "--plan",
                             "--out", tmp_path / "planned")
    assert code == 0 and "train train.weight_decay=0.3" in printed and not (tmp_path / "planned").exists(), err
    code, _, err = cli("sweep", "--preset", "smoke", "--grid", "lr=1,2", "--out", tmp_path / "bad")
    assert code == 2 and "data.KEY" in err
    code, _, err = cli("sweep", "--preset", "smoke", "--grid", "train.lr=1,nan", "--out", tmp_path / "bad")
    assert code == 2 and "nan" in err and not (tmp_path / "bad").exists()


def test_plan_prints_every_job_with_its_cost_and_writes_nothing(cli, tmp_path):
    """`study --plan`: steps, parameters, FLOPs and a probe-timed estimate for every training and fine-tuning job."""
    from grokscope import api

    out = tmp_path / "planned"
    rows = api.plan_study("smoke", out, device="cpu")
    assert not out.exists()
    by_job = {r["job"]: r for r in rows}
    gpt = by_job["train gpt_natural"]
    assert gpt["steps (at most)"] == "60" and int(gpt["parameters"].replace(",", "")) > 1000
    assert float(gpt["GFLOP/step"]) > 0 and "timed eager steps at batch 64 on cpu" in gpt["how"]
    ft = by_job["transfer ft_gpt_natural_last"]
    assert ft["steps (at most)"] == "20" and ft["est. time"] != "-"
    assert by_job["analyze gpt_natural"]["how"].startswith("not estimated")
    total = rows[-1]
    assert total["job"] == "total" and "not included" in total["how"]
    # The total is the sum of the rows' training FLOPs.
    flops = [float(r["training FLOP"]) for r in rows[:-1] if r["training FLOP"] != "-"]
    assert float(total["training FLOP"]) == pytest.approx(sum(flops), rel=0.01)
    code, printed, err = cli("study", "--preset", "smoke", "--out", out, "--plan")
    assert code == 0, err
    assert "train gpt_natural" in printed and "nothing was run or written" in printed and not out.exists()


@pytest.mark.slow
def test_plan_of_the_paper_preset(cli, tmp_path):
    """The paper preset's cost before launching it (its time is measured in the README, not asserted here)."""
    code, printed, err = cli("study", "--preset", "paper", "--out", tmp_path / "p", "--plan")
    assert code == 0, err
    assert "train trm_natural" in printed and "days" in printed and not (tmp_path / "p").exists()


def test_transfer_entries_are_a_list_and_a_single_mapping_still_reads():
    micro = load_spec("micro")
    assert [t.model for t in micro.transfer] == ["trm", "gpt"]
    assert micro.transfer[0].checkpoints == ["last"] and micro.transfer[0].new_fact_multiple == 5.0
    smoke = load_spec("smoke")  # written as one mapping
    assert len(smoke.transfer) == 1 and smoke.transfer[0].model == "gpt"
    jobs = {j.name: j for j in plan(micro, "/tmp/x")}
    assert "transfer ft_trm_control" in jobs and "transfer ft_gpt_natural_sat" in jobs
    assert "--new-fact-multiple" not in jobs["transfer ft_trm_natural_last"].argv  # the defaults stay implicit


def test_a_changed_unfinished_job_goes_stale_and_starts_over_and_older_manifests_still_read(tmp_path):
    from grokscope.studies.manifest import Manifest
    from grokscope.studies.plan import resumed

    spec = load_spec("smoke")
    jobs = {j.name: j for j in plan(spec, tmp_path)}
    manifest = Manifest.open(tmp_path)
    manifest.update(spec, list(jobs.values()))
    run = jobs["train gpt_natural"]
    manifest.mark(run, "running")
    budget = load_spec("smoke", ["train.max_steps=90", "train.sat_multiple=3"])  # what a resume may change
    manifest.update(budget, plan(budget, tmp_path))
    assert manifest.status(run) == "running" and manifest.changes(run)  # changed, and continues on the new budget
    changed = load_spec("smoke", ["train.lr=0.002", "train.max_steps=90"])
    manifest.update(changed, plan(changed, tmp_path))
    assert manifest.status(run) == "stale"
    run.out.mkdir(parents=True)
    (run.out / "config.yaml").write_text("x: 1\n")
    (run.out / "notes.txt").write_text("mine")
    (run.out / "config.yaml").write_text("x: 1\n")
    assert resumed(run).call["kwargs"]["spec"]["resume"] is True  # an interrupted run continues
    call = resumed(run, stale=True).call  # cleared and started over, not resumed on the new settings
    assert call["kwargs"]["spec"]["resume"] is False and not (run.out / "config.yaml").exists()
    assert (run.out / "notes.txt").exists()
    # A manifest written before resolved settings were recorded is compared by command line; the fine-tuning
    # budget flags its command lines once carried at their defaults are no change.
    data = json.loads((tmp_path / "study.json").read_text())
    ft = jobs["transfer ft_gpt_control"]
    entry = {k: v for k, v in data["jobs"][ft.name].items() if k not in ("resolved", "settings_hash")}
    entry["argv"] = [*ft.argv, "--new-fact-multiple", "5", "--flat-evals", "4", "--flat-tolerance", "0.02"]
    older = Manifest(tmp_path, {**data, "jobs": {ft.name: entry}})
    assert older.changes(ft) == []
    entry["argv"] = [*ft.argv, "--flat-evals", "9"]
    assert older.changes(ft) == ["command line"]
    # A setting added later, at its default, is no change of a job recorded before it existed.
    recorded = {**data["jobs"][run.name], "resolved": {**jobs[run.name].resolved}}
    recorded["resolved"]["train"] = {k: v for k, v in recorded["resolved"]["train"].items() if k != "grad_clip"}
    assert Manifest(tmp_path, {**data, "jobs": {run.name: recorded}}).changes(run) == []
    # Settings an upgrade moved between sections (0.1.0 kept the trm's q-halt weight and puzzle lr/decay under
    # train; the gpt's were inert) are no change; a changed value among them still is, under its new name.
    for name in ("train gpt_natural", "train trm_natural"):
        job = jobs[name]
        old = {"train": {**job.resolved["train"], "q_halt_weight": 0.0, "puzzle_lr": 1e-4, "puzzle_weight_decay": 1.0},
               "model": {k: v for k, v in job.resolved["model"].items()
                         if k not in ("q_halt_weight", "puzzle_lr", "puzzle_weight_decay")}}
        if name.endswith("trm_natural"):
            old["train"]["q_halt_weight"] = job.resolved["model"]["q_halt_weight"]
        entry = {**data["jobs"][name], "resolved": {**job.resolved, **old}}
        assert Manifest(tmp_path, {**data, "jobs": {name: entry}}).changes(job) == []
    entry["resolved"]["train"]["puzzle_lr"] = 5e-4
    assert Manifest(tmp_path, {**data, "jobs": {name: entry}}).changes(job) == ["model.puzzle_lr: 0.0005 -> 0.0001"]
    # the same for a sweep's recorded points: a sweep recorded by 0.1.0 continues without --fresh
    from grokscope.sweeps import _changed_points, sweep_jobs

    _, _, points = sweep_jobs("phase", ["data.phi=7.2"], tmp_path / "sw", "trm")
    point = points[0][1]
    point.done.parent.mkdir(parents=True, exist_ok=True)
    point.done.write_text("{}")
    legacy = {"train": {**point.resolved["train"], "puzzle_lr": 1e-4, "puzzle_weight_decay": 1.0,
                        "q_halt_weight": 0.0},
              "model": {k: v for k, v in point.resolved["model"].items()
                        if k not in ("q_halt_weight", "puzzle_lr", "puzzle_weight_decay")}}
    assert _changed_points({point.name: {**point.resolved, **legacy}}, [point]) == []
    legacy["train"]["puzzle_lr"] = 5e-4
    assert "model.puzzle_lr" in _changed_points({point.name: {**point.resolved, **legacy}}, [point])[0]


def test_critical_range_comes_out_each_way():
    import pandas as pd

    from grokscope.reporting.plots import critical_range

    def table(hits):
        return pd.DataFrame({"data.phi": [3.6, 7.2, 12.0], "t_id90": hits, "steps": [20000, 20000, 20000]})

    assert critical_range(table([None, 9000, 5000]), "data.phi") == \
        "critical value between 3.6 (missed) and 7.2 (reached)"
    assert critical_range(table([12000, 9000, 5000]), "data.phi") == \
        "every value reached t_id90: critical value below 3.6"
    assert critical_range(table([None, None, None]), "data.phi") == "no value reached t_id90 within its step cap"
    assert "no single threshold" in critical_range(table([5000, None, 4000]), "data.phi")


def test_a_numeric_sweep_draws_the_phase_diagram(cli, tmp_path):
    code, _, err = cli("sweep", "--preset", "smoke", "--grid", "data.phi=2,3", "--out", tmp_path / "ph")
    assert code == 0, err
    import pandas as pd

    table = pd.read_csv(tmp_path / "ph" / "sweep.csv")
    assert {"t_id90_epochs", "id_delayed"} <= set(table.columns)
    assert (tmp_path / "ph" / "phase.png").stat().st_size > 5_000


def test_a_moved_or_copied_study_reads_its_own_runs_and_missing_runs_leave_the_report_alone(study, cli, tmp_path):
    """Paths are recorded where the study was written; a study moved with ``mv`` (the original gone) or copied (the
    original changed after the copy) reads its own folders: the report is the same, `grokscope study` finds every
    job done and nothing changed. A study whose finished runs are missing refuses to rewrite its report."""
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    moved = tmp_path / "moved" / "study"
    shutil.copytree(study, tmp_path / "original")
    (tmp_path / "moved").mkdir()
    (tmp_path / "original").rename(moved)  # its manifest names the folder it was written in: now gone
    def text(where):  # the report, less the time the report stage itself took (recorded after it was written)
        return re.sub(r'\n *"report": [0-9.]+,', "", (where / "report.md").read_text().replace(str(where), "STUDY"))
    expected = text(study)
    for where in (copy, moved):
        code, out, err = cli("report", where)
        assert code == 0, err
        assert text(where) == expected
        code, out, err = cli("study", "--preset", "smoke", "--out", where)
        assert code == 0 and "would change" not in err, err
        assert "training" not in out and "step " not in out  # every job was done: nothing ran again
    cfg = json.loads((copy / "study.json").read_text())
    assert cfg["root"] == str(copy.resolve())
    from grokscope import artifacts

    run_cfg = artifacts.read_config(copy / "runs" / "gpt_natural")
    assert run_cfg["data"]["path"] == str((copy / "datasets" / "natural").resolve())
    ft_cfg = artifacts.read_config(copy / "runs" / "ft_gpt_natural_last")
    assert ft_cfg["transfer"]["parent_run"] == str((copy / "runs" / "gpt_natural").resolve())
    shutil.rmtree(copy / "runs" / "gpt_natural")
    before = (copy / "report.md").read_text()
    code, _, err = cli("report", copy)
    assert code == 2 and "missing" in err and "gpt_natural" in err and "Traceback" not in err
    assert (copy / "report.md").read_text() == before


def test_the_plan_schedules_each_stage_on_its_workers():
    """With workers side by side, a stage takes its longest worker: a stack group is one unit (its runs step in one
    process), the units go longest first onto the least loaded worker, and the stages follow one another."""
    from grokscope.studies.estimate import side_by_side
    from conftest import fake_train_job, fake_transfer_job

    jobs = [fake_train_job(Path("g1"), "gpt"), fake_train_job(Path("g2"), "gpt"), fake_train_job(Path("t1"), "trm"),
            fake_transfer_job(Path("f1")), fake_transfer_job(Path("f2")), fake_transfer_job(Path("f3"))]
    seconds = {"train g1": 30, "train g2": 30, "train t1": 50, "transfer f1": 10, "transfer f2": 8, "transfer f3": 5}
    assert side_by_side(jobs, seconds, 1) == 30 + 30 + 50 + 10 + 8 + 5
    assert side_by_side(jobs, seconds, 2) == 60 + 13  # gpt stack | trm; then f1 | f2 + f3
    assert side_by_side(jobs, seconds, 4) == 60 + 10


KILL_POINTS = [  # (what, where the study pauses for the kill: tests/helpers/paused_study.py)
    ("data building", "data"),
    ("training before its first checkpoint", "train_before_checkpoint"),
    ("training after its first checkpoint", "train_after_checkpoint"),
    ("analyze", "analyze"),
    ("transfer", "transfer"),
    ("report", "report"),
]


def _final_metrics(root):
    volatile = {"wall_seconds", "steps_per_second", "threads"}
    out = {}
    for summary in sorted((root / "runs").glob("*/summary.json")):
        s = json.loads(summary.read_text())
        out[summary.parent.name] = {k: v for k, v in s["final"].items() if k not in volatile}
    return out


@pytest.mark.ci
def test_study_killed_at_every_stage_finishes_with_the_same_metrics(study, tmp_path):
    """SIGKILL the smoke study at each stage in turn, re-run it without --fresh each time: it must finish, with the
    final metrics of every run equal to those of the uninterrupted study. Every kill lands at its stage."""
    import signal

    from conftest import wait_until

    out = tmp_path / "killed"
    study_args = ["study", "--preset", "smoke", "--out", str(out)]
    helper = Path(__file__).parent / "helpers" / "paused_study.py"
    for what, point in KILL_POINTS:
        # The study pauses at the point (a wrapped function writes the marker and sleeps), so every kill lands there.
        marker = tmp_path / f"paused_{point}"
        err = tmp_path / f"stderr_{point}.txt"
        with err.open("w") as err_file:
            proc = subprocess.Popen([sys.executable, str(helper), point, str(marker), *study_args],
                                    stdout=subprocess.DEVNULL, stderr=err_file)
            try:
                wait_until(lambda p=proc, m=marker: p.poll() is not None or m.exists(), 300,
                           f"the study to reach {what}")
                assert marker.exists(), f"the study ended (exit {proc.returncode}) before {what}: " \
                                        f"{err.read_text()[-1500:]}"
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
    cmd = [sys.executable, "-m", "grokscope.cli", *study_args]
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _final_metrics(out) == _final_metrics(study)
    assert (out / "report.html").exists()


def test_a_timed_probe_step_counts_the_cpu_time_its_threads_ran_not_the_time_other_processes_took():
    from grokscope.studies.estimate import step_seconds

    # idle: OpenMP's threads spin, so CPU time over threads is the wall time
    assert step_seconds(0.10, 0.20, 2, "cpu") == pytest.approx(0.10)
    # busy: the step waited for the cores half of its wall time; the estimate is the time it ran
    assert step_seconds(0.30, 0.10, 1, "cpu") == pytest.approx(0.10)
    # never above the wall time, and on an accelerator the wall time (the host's CPU time is not the device's)
    assert step_seconds(0.10, 0.50, 2, "cpu") == pytest.approx(0.10)
    assert step_seconds(0.30, 0.01, 1, "cuda") == pytest.approx(0.30)
    assert step_seconds(0.30, 0.0, 1, "cpu") == pytest.approx(0.30)  # no CPU time measured: the wall time
