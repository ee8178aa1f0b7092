"""The study's processes: worker processes side by side stopped together by a SIGTERM, every job a Ray task, and
a study whose unfinished jobs changed. In a file of their own, so that the parallel suite spreads them over its
workers (each trains a study of its own)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import fake_transfer_job, small_study, wait_until


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (extra 'sweep'; CI installs it)")
def test_smoke_study_on_local_ray(tmp_path, cli):
    """Every job a Ray task, each running a worker process on its spec file; the training jobs carry resolved
    specs, and one such file re-runs its job by hand. The smoke study cut to one regime, no fine-tunes (CI time:
    every job is a worker process, and the worker runs every verb alike)."""
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(small_study(regimes=["natural"], transfer=[])))
    code, out, err = cli("study", "--preset", tmp_path / "ray.yaml", "--out", tmp_path / "ray", "--executor", "ray")
    assert code == 0, err
    assert (tmp_path / "ray" / "report.html").exists()
    specs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "ray" / "jobs").glob("*.json")}
    runs = [m for c in specs.values() if c["kind"] in ("train", "stack") for m in c.get("members", [c])]
    assert runs and all(isinstance(m["spec"], dict) for m in runs)  # each a resolved RunSpec
    kinds = {c["kind"] for c in specs.values()}
    assert {"data", "analyze"} <= kinds <= {"data", "train", "stack", "analyze"}
    analyze = next(p for p in (tmp_path / "ray" / "jobs").glob("analyze*.json"))
    rerun = subprocess.run([sys.executable, "-m", "grokscope.worker", str(analyze)], capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_changes_to_unfinished_jobs_continue_and_a_job_dead_before_its_first_checkpoint_restarts(cli, tmp_path):
    out = tmp_path / "s"
    small = ["--set", "train.max_steps=20", "--set", "transfer.max_steps=10"]
    assert cli("study", "--preset", "smoke", "--out", out, *small)[0] == 0
    manifest = json.loads((out / "study.json").read_text())
    # a training job killed before its first checkpoint: config and metrics exist, no checkpoint
    run = out / "runs" / "gpt_second_full"
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    manifest["jobs"]["train gpt_second_full"]["status"] = "running"
    # an unfinished fine-tune whose settings now change
    ft = out / "runs" / "ft_gpt_control"
    shutil.rmtree(ft)
    manifest["jobs"]["transfer ft_gpt_control"]["status"] = "pending"
    (out / "study.json").write_text(json.dumps(manifest))
    code, out_text, err = cli("study", "--preset", "smoke", "--out", out, "--set", "train.max_steps=20",
                              "--set", "transfer.max_steps=12")
    assert code == 2 and "finished jobs would change" in err  # the other fine-tunes finished with max_steps=10
    code, out_text, err = cli("study", "--preset", "smoke", "--out", out, *small)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["final_step"] == 20
    assert (ft / "summary.json").exists()
    # the study died before any fine-tune finished: changing the fine-tunes' settings continues, keeping the rest
    manifest = json.loads((out / "study.json").read_text())
    for name, entry in manifest["jobs"].items():
        if name.startswith("transfer ") and entry["status"] == "done":
            shutil.rmtree(out / "runs" / name.split()[1])
            entry["status"] = "pending"
    (out / "study.json").write_text(json.dumps(manifest))
    trained = {p: p.stat().st_mtime for p in (out / "runs").glob("gpt_*/summary.json")}
    code, _, err = cli("study", "--preset", "smoke", "--out", out, "--set", "train.max_steps=20",
                       "--set", "transfer.max_steps=12")
    assert code == 0, err
    assert json.loads((ft / "summary.json").read_text())["final_step"] == 12
    assert {p: p.stat().st_mtime for p in trained} == trained  # finished training was kept



def test_workers_side_by_side_stop_together_on_sigterm_and_the_study_resumes(tmp_path, cli):
    """``workers: 2`` on a CPU: the gpt's stack and the trm's train at once in two worker processes, one thread each
    (the cores shared out). A SIGTERM to the study stops both (an orphan would go on training and hold its runs'
    locks), and the next run of the study finishes every job. One study (one regime, no fine-tunes: what the checks
    need) serves the three checks (CI time)."""

    raw = small_study(regimes=["natural"], transfer=[])  # the gpt and the trm: one training job each
    raw["models"] = [{**m, "set": {**m.get("set", {}), "max_steps": 200}} for m in raw["models"]]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({**raw, "workers": 2}))
    out = tmp_path / "two"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "grokscope"), "study", "--preset",
                             str(tmp_path / "two.yaml"), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)

    def workers() -> list[str]:
        ps = subprocess.run(["pgrep", "-f", f"grokscope.worker {out}"], capture_output=True, text=True)
        return ps.stdout.split()

    wait_until(lambda: len(workers()) == 2 and any(out.glob("runs/*/checkpoints/*")), 120, "two training workers",
               poll=0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert not workers()  # stopped and waited for before the study exited

    code, log, err = cli("study", "--preset", tmp_path / "two.yaml", "--out", out)
    assert code == 0, err
    assert "worker 1, 1 thread(s)" in log  # this machine has 2 cores; the log names each job's slot
    manifest = json.loads((out / "study.json").read_text())
    assert all(e["status"] in ("done", "skipped") for e in manifest["jobs"].values())
    for run in (out / "runs").iterdir():
        if not run.name.startswith("ft_"):
            assert json.loads((run / "summary.json").read_text())["threads"] == 1

    # An analysis killed mid-way ("running"), then the user's own narrower `analyze`: its summary is not the job's.
    name = next(n for n in manifest["jobs"] if n.startswith("analyze "))
    run = Path(manifest["jobs"][name]["out"])
    manifest["jobs"][name]["status"] = "running"
    (out / "study.json").write_text(json.dumps(manifest))
    (run / "analysis" / "lens.parquet").unlink()
    assert cli("analyze", run, "--analyses", "regime")[0] == 0
    code, _, err = cli("study", "--preset", tmp_path / "two.yaml", "--out", out)
    assert code == 0, err
    assert (run / "analysis" / "lens.parquet").exists()  # the study ran it again
    assert json.loads((run / "analysis" / "summary.json").read_text())["analyses"] == \
        ["lens", "trace", "queries", "compare", "regime", "probe"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**raw, "workers": 0}))
    code, _, err = cli("study", "--preset", bad, "--plan")
    assert code == 2 and "study.workers" in err




@pytest.mark.parametrize("code, others", [(2, "failed"), (130, "interrupted")])
def test_a_stack_that_stops_short_keeps_its_finished_members_done(tmp_path, code, others):
    """One member of a stacked job fails (or the user stops it) after another finished: the finished one is done
    (it is skipped next time), the others are failed or interrupted."""
    from grokscope.errors import GrokscopeError
    from grokscope.studies.manifest import Manifest
    from grokscope.studies.run import StudyInterrupted, _run_stage

    jobs = [fake_transfer_job(tmp_path / f"ft{i}") for i in range(3)]

    class OneAtATime:
        def one_at_a_time(self, n_jobs):
            return True

        def run(self, grouped, on_done):
            assert len(grouped) == 1 and grouped[0].call["verb"] == "stack"  # the three as one stacked call
            jobs[1].done.parent.mkdir()
            jobs[1].done.write_text("{}")  # ft1 finished; then its siblings stopped short
            on_done(grouped[0], code, 3.0)

    manifest = Manifest(tmp_path, {"jobs": {}, "stage_seconds": {}})
    with pytest.raises(StudyInterrupted if code == 130 else GrokscopeError):
        _run_stage("transfer", jobs, manifest, OneAtATime(), log=lambda _msg: None)
    assert [manifest.status(j) for j in jobs] == [others, "done", others]
