"""Nothing lost, second pass: one test per defect a hostile user found on 0f5cb66 (a live run, a user's files and a
finished result are never destroyed). Each failed before its fix."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope import artifacts
from grokscope.errors import GrokscopeError
from conftest import fake_train_job
from grokscope.studies.jobs import AnalyzeJob, Job
from grokscope.studies.manifest import Manifest

TINY = "max_steps=20,eval_every=10,eval_bridge_use=16"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, smoke_data):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("lost") / "run"
    assert run_cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", TINY, "--out", out) == 0
    return out


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path):
    """Another process holding ``folder``'s lock (as a live run does) while the block runs."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.kill()
        proc.wait()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def test_1_resume_of_a_live_run_without_checkpoint_deletes_nothing(cli, tiny_run, smoke_data, tmp_path):
    """A second `train --resume` while the first still holds the lock (no checkpoint yet) must fail on the lock
    before it clears anything."""
    run = _copy(tiny_run, tmp_path / "live")
    shutil.rmtree(run / "checkpoints")  # the live run has not written its first checkpoint yet (nor a summary)
    (run / "summary.json").unlink()
    before = {p.name for p in run.iterdir()}
    with lock_held_elsewhere(run):  # the first process
        code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", TINY, "--out", run,
                           "--resume")
    assert code == 2 and "in use" in err
    assert {p.name for p in run.iterdir()} >= before and (run / "config.yaml").exists()
    assert (run / "metrics.jsonl").stat().st_size > 0


def test_1b_resume_without_checkpoint_starts_over_once_it_holds_the_lock(cli, tiny_run, smoke_data, tmp_path):
    run = _copy(tiny_run, tmp_path / "dead")
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    (run / "notes.md").write_text("mine")
    code, out, _ = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", TINY, "--out", run,
                       "--resume")
    assert code == 0 and "starting over" in out and (run / "summary.json").exists()


@pytest.mark.parametrize("victim", ["config.yaml", "results.json"])
def test_2_compare_out_never_overwrites_another_file(cli, tiny_run, tmp_path, victim):
    run = _copy(tiny_run, tmp_path / "run")
    target = run / victim if victim == "config.yaml" else tmp_path / victim
    if not target.exists():
        target.write_text('{"mine": 1}')
    before = target.read_bytes()
    code, _, err = cli("compare", f"{run}@0", f"{run}@last", "--out", target)
    assert code == 2 and "not a comparison" in err and target.read_bytes() == before
    ok = tmp_path / "cmp.json"
    assert cli("compare", f"{run}@0", f"{run}@last", "--out", ok)[0] == 0
    assert json.loads(ok.read_text())["kind"] == "grokscope compare"
    assert cli("compare", f"{run}@0", f"{run}@last", "--out", ok)[0] == 0  # its own earlier output: replaced


def test_2b_compare_refuses_runs_of_different_graphs(cli, tiny_run, tmp_path):
    from conftest import run_cli

    other = tmp_path / "other_ds"
    assert run_cli("data", "build", "--preset", "smoke", "--set", "seed=7", "--out", other) == 0
    run_b = tmp_path / "b"
    assert run_cli("train", "--data", other, "--preset", "smoke", "--quiet", "--set", TINY, "--out", run_b) == 0
    code, _, err = cli("compare", f"{tiny_run}@last", f"{run_b}@last")
    assert code == 2 and "different graphs" in err


@pytest.mark.parametrize("verb", [["data", "build", "--preset", "smoke"],
                                  ["data", "family", "--preset", "smoke"],
                                  ["data", "export", "DATASET"]])
def test_3_force_keeps_a_users_files_in_the_tools_folders(cli, smoke_data, tmp_path, verb):
    out = tmp_path / "out"
    args = [str(smoke_data) if a == "DATASET" else a for a in verb]
    assert cli(*args, "--out", out)[0] == 0
    (out / "notes.txt").write_text("a user's notes")
    (out / "nb").mkdir()
    (out / "nb" / "analysis.ipynb").write_text("{}")
    assert cli(*args, "--out", out, "--force")[0] == 0
    assert (out / "notes.txt").read_text() == "a user's notes" and (out / "nb" / "analysis.ipynb").exists()


def test_3b_export_tl_force_keeps_a_users_files(cli, tiny_run, tmp_path):
    pytest.importorskip("transformer_lens")
    out = tmp_path / "tl"
    assert cli("export", "tl", f"{tiny_run}@last", "--out", out, "--no-check")[0] == 0
    (out / "notes.txt").write_text("mine")
    assert cli("export", "tl", f"{tiny_run}@last", "--out", out, "--force", "--no-check")[0] == 0
    assert (out / "notes.txt").read_text() == "mine"


def _fake_job(root: Path, name: str) -> Job:
    return fake_train_job(root / "runs" / name)


def test_4_study_fresh_removes_only_the_studys_outputs(tmp_path):
    from grokscope.studies.run import clear_study

    root = tmp_path / "study"
    job = _fake_job(root, "gpt_natural")
    job.out.mkdir(parents=True)
    (job.out / "config.yaml").write_text("x")
    manifest = Manifest.open(root)
    manifest.data["jobs"][job.name] = {"out": str(job.out), "record": job.record}
    manifest.save()
    (root / "report.md").write_text("r")
    (root / "analysis.ipynb").write_text("a user's notebook")
    (root / "runs" / "notes.txt").write_text("a user's notes")
    clear_study(root, [job])
    assert not job.out.exists() and not (root / "study.json").exists() and not (root / "report.md").exists()
    assert (root / "analysis.ipynb").exists() and (root / "runs" / "notes.txt").exists()


def test_4b_sweep_fresh_keeps_a_users_files(cli, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"outputs": [str(out / "runs" / "old_point")]}))
    (out / "runs" / "old_point").mkdir(parents=True)
    (out / "notebook.ipynb").write_text("{}")
    (out / "runs" / "notes.txt").write_text("mine")
    from grokscope import artifacts as a

    a.remove_own(out, ["sweep.json", out / "runs" / "old_point", tmp_path / "outside"])
    assert not (out / "runs" / "old_point").exists() and not (out / "sweep.json").exists()
    assert (out / "notebook.ipynb").exists() and (out / "runs" / "notes.txt").exists()


def test_4c_remove_own_never_leaves_its_folder(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "precious"
    root.mkdir()
    outside.mkdir()
    (outside / "f").write_text("x")
    (root / "link").symlink_to(outside)
    artifacts.remove_own(root, [outside, root / "link" / "f", "../precious"])
    assert (outside / "f").exists()


def test_5_sweep_points_of_different_keys_get_different_folders(cli, tmp_path):
    from grokscope.sweeps import parse_grid, point_name

    assert point_name({"train.seed": "1"}) != point_name({"data.seed": "1"})
    assert point_name({"train.seed": "1", "data.phi": "9"}) == "train.seed=1_data.phi=9"
    code, _, err = cli("sweep", "--preset", "smoke", "--grid", "train.lr=a/b", "--out", tmp_path / "s")
    assert code == 2 and "cannot name a folder" in err
    with pytest.raises(Exception, match="cannot name a folder"):
        parse_grid(["train.lr=.."], "gpt")


def test_6_transfer_resume_refuses_another_parent(cli, trained, tmp_path):
    root, _ = trained
    out = tmp_path / "ft"
    sets = ["--set", "max_steps=4,eval_every=2,eval_bridge_use=8", "--quiet"]
    assert cli("transfer", "--from", f"{root / 'gpt'}@100", "--out", out, *sets)[0] == 0
    before = (out / "config.yaml").read_bytes()
    code, _, err = cli("transfer", "--from", f"{root / 'gpt'}@200", "--out", out, "--resume", *sets)
    assert code == 2 and "was fine-tuned from" in err and (out / "config.yaml").read_bytes() == before


@pytest.mark.parametrize("setting, message", [("max_epochs=1e30", "over the limit"),
                                              ("max_steps=2000000000", "over the limit"),
                                              ("seed=9223372036854775808", "2^63-1")])
def test_7_budgets_and_seeds_beyond_their_limits_are_refused_up_front(cli, smoke_data, tmp_path, setting, message):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--set", setting, "--out", out)
    assert code == 2 and message in err and not out.exists()


def test_7b_negative_init_scale_is_refused(cli, smoke_data, tmp_path):
    code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--set", "model.init_std=-1", "--out",
                       tmp_path / "r")
    assert code == 2 and "init_std" in err


def test_8_a_users_analysis_file_does_not_mark_the_studys_job_done(tmp_path):
    from grokscope.studies.run import _run_stage

    root = tmp_path / "study"
    job = AnalyzeJob(run=root / "r", probes="ood", steps="last")
    job.done.parent.mkdir(parents=True)
    job.done.write_text("{}")  # a user's own `analyze --analyses regime`
    manifest = Manifest.open(root)
    ran = []

    class Ex:
        def run(self, jobs, on_done):
            for j in jobs:
                ran.append(j.name)
                on_done(j, 0, 0.1)
    _run_stage("analyze", [job], manifest, Ex(), log=lambda *_: None)
    assert ran == ["analyze r"] and manifest.status(job) == "done"
    _run_stage("analyze", [job], manifest, Ex(), log=lambda *_: None)
    assert ran == ["analyze r"]  # now the study's own record says done


def test_9_ctrl_c_in_a_study_job_is_an_interruption_not_a_failure(tmp_path, capsys):
    from grokscope.cli import main
    from grokscope.studies.run import StudyInterrupted, _run_stage

    root = tmp_path / "study"
    root.mkdir()
    job = fake_train_job(root / "r")
    manifest = Manifest.open(root)

    class Ex:
        def run(self, jobs, on_done):
            on_done(jobs[0], 130, 1.0)
    with pytest.raises(StudyInterrupted):
        _run_stage("train", [job], manifest, Ex(), log=lambda *_: None)
    assert manifest.status(job) == "interrupted"
    import grokscope.cli as cli_module

    def interrupted(*_, **__):
        raise StudyInterrupted("interrupted; re-run the same command to continue")
    original = cli_module.api.study
    cli_module.api.study = interrupted
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["study", "--preset", "smoke", "--out", str(tmp_path / "s")])
    finally:
        cli_module.api.study = original
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 130 and err == ["interrupted; re-run the same command to continue"]


# ------------------------------------------------------------------------------------------------ a review's finds
def test_a_lock_that_is_a_link_or_a_users_file_is_never_written(cli, tmp_path):
    precious = tmp_path / "thesis.txt"
    precious.write_text("my thesis")
    linked = tmp_path / "ds_linked"
    linked.mkdir()
    (linked / ".lock").symlink_to(precious)
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", linked)
    assert code == 2 and "not a lock file" in err and precious.read_text() == "my thesis"
    own = tmp_path / "ds_own_lock"
    own.mkdir()
    (own / ".lock").write_text("a user's own lock file")
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", own)
    assert code == 2 and (own / ".lock").read_text() == "a user's own lock file"


def test_force_into_a_linked_folder_replaces_the_folder_it_points_to(cli, tmp_path):
    target = tmp_path / "elsewhere" / "ds"
    assert cli("data", "build", "--preset", "smoke", "--out", target)[0] == 0
    (target / "notes.txt").write_text("mine")
    link = tmp_path / "dslink"
    link.symlink_to(target)
    assert cli("data", "build", "--preset", "smoke", "--seed", "3", "--out", link, "--force")[0] == 0
    assert link.is_symlink() and (target / "notes.txt").read_text() == "mine"
    assert json.loads((target / "dataset.json").read_text())["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dslink", "elsewhere"]  # no debris


def test_resume_never_replaces_a_finished_run_nor_restarts_on_another_dataset(cli, tiny_run, smoke_data, tmp_path):
    from conftest import run_cli

    finished = _copy(tiny_run, tmp_path / "finished")
    shutil.rmtree(finished / "checkpoints")  # checkpoints pruned to save space; the result stays
    before = (finished / "summary.json").read_bytes()
    code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", TINY, "--out",
                       finished, "--resume")
    assert code == 2 and "finished run" in err and (finished / "summary.json").read_bytes() == before
    dead = _copy(tiny_run, tmp_path / "dead")
    shutil.rmtree(dead / "checkpoints")
    (dead / "summary.json").unlink()
    other = tmp_path / "other"
    assert run_cli("data", "build", "--preset", "smoke", "--seed", "9", "--out", other) == 0
    code, _, err = cli("train", "--data", other, "--preset", "smoke", "--quiet", "--set", TINY, "--out", dead,
                       "--resume")
    assert code == 2 and "dataset" in err and (dead / "metrics.jsonl").exists()


def test_fresh_ignores_recorded_outputs_that_are_not_the_tools(tmp_path):
    root = tmp_path / "sweep"
    (root / "mydata").mkdir(parents=True)
    (root / "mydata" / "f").write_text("x")
    (root / "analysis.ipynb").write_text("{}")
    run = root / "runs" / "p"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("x")
    (run / "metrics.jsonl").write_text("")
    (run / "notes.md").write_text("a user's notes in a run folder")
    with pytest.raises(GrokscopeError, match="notes.md"):  # it would block the re-run: refused, nothing removed
        artifacts.remove_own(root, [root / "mydata", root / "analysis.ipynb", run])  # a hand-edited sweep.json
    assert (run / "config.yaml").exists()
    (run / "notes.md").unlink()
    artifacts.remove_own(root, [root / "mydata", root / "analysis.ipynb", run])
    assert (root / "mydata" / "f").exists() and (root / "analysis.ipynb").exists() and not run.exists()


def test_a_kill_in_the_middle_of_force_never_loses_a_users_file(cli, tmp_path, monkeypatch):
    """Killed after the old folder was moved aside (and before the user's files were moved into the new one): the
    next write puts them back, whatever the next write is."""
    import os as _os

    out = tmp_path / "ds"
    assert cli("data", "build", "--preset", "smoke", "--out", out)[0] == 0
    (out / "NOTES.txt").write_text("mine")
    real = _os.replace
    calls = []

    def killed_after_the_swap(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 2:  # old -> trash, new -> out: the kill comes now
            raise KeyboardInterrupt
    monkeypatch.setattr(artifacts.os, "replace", killed_after_the_swap)
    assert cli("data", "build", "--preset", "smoke", "--seed", "1", "--out", out, "--force")[0] == 130
    monkeypatch.undo()
    assert not (out / "NOTES.txt").exists()  # for now it sits in the old folder, aside
    assert cli("data", "build", "--preset", "smoke", "--seed", "2", "--out", out, "--force")[0] == 0
    assert (out / "NOTES.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_leftovers_of_one_name_are_never_anothers(tmp_path):
    (tmp_path / ".grokscope-tmp-ds-v2-abcdefgh").mkdir()  # another output's write in progress
    (tmp_path / ".grokscope-tmp-ds-abcdefgh").mkdir()
    artifacts.clean_leftovers(tmp_path, "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".grokscope-tmp-ds-v2-abcdefgh"]


def test_fresh_keeps_a_users_plot_in_figures(tmp_path):
    figures = tmp_path / "study" / "figures"
    figures.mkdir(parents=True)
    (figures / "regimes_gpt.png").write_bytes(b"png")
    (figures / "my_plot.png").write_bytes(b"mine")
    (figures / artifacts.FIGURES_INDEX).write_text('["regimes_gpt.png"]')
    artifacts.remove_own(tmp_path / "study", ["figures"])
    assert sorted(p.name for p in figures.iterdir()) == ["my_plot.png"]
