"""Trainer: exact resume (straight vs split, and after SIGKILL), checkpoints, stop rules, the run lock, the time cap
as a safety net only, and every bad-input path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from grokscope import artifacts, runs
from grokscope.errors import GrokscopeError
from grokscope.training.config import TrainConfig
from grokscope.training.schedule import checkpoint_steps
from conftest import wait_until

VOLATILE = {"wall_seconds"}


def rows(run):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in artifacts.read_metrics(run)]


def final_state(run):
    step = runs.list_checkpoints(run)[-1]
    path = runs.step_dir(run, step)
    return step, load_file(path / "model.safetensors"), load_file(path / "state.safetensors")


def assert_same_run(a, b):
    assert rows(a) == rows(b)
    sa, wa, ta = final_state(a)
    sb, wb, tb = final_state(b)
    assert sa == sb and wa.keys() == wb.keys() and ta.keys() == tb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.mark.parametrize("family, extra", [
    ("gpt", ["--set", "grokfast_alpha=0.98,grokfast_lambda=2"]),
    ("gpt", ["--set", "model.dropout=0.1"]),  # dropout consumes the RNG: its state must be restored
    ("trm", []),  # EMA, SignSGD puzzle vector, stablemax + q-halt loss
])
def test_resume_is_bit_identical(cli, tmp_path, smoke_data, family, extra):
    common = ["train", "--data", smoke_data, "--model", family, "--preset", "smoke", "--quiet", *extra]
    n = 40
    assert cli(*common, "--set", f"max_steps={n}", "--out", tmp_path / "straight")[0] == 0
    assert cli(*common, "--set", f"max_steps={n // 2}", "--out", tmp_path / "split")[0] == 0
    code, out, err = cli(*common, "--set", f"max_steps={n}", "--out", tmp_path / "split", "--resume")
    assert code == 0, err
    assert "resumed" in out
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def _train_proc(smoke_data, out, steps):
    return [sys.executable, "-m", "grokscope.cli", "train", "--data", str(smoke_data), "--model", "gpt",
            "--preset", "smoke", "--quiet", "--out", str(out), "--set",
            f"max_steps={steps},eval_every=50,ckpt_dense_every=25,ckpt_dense_until={steps},threads=1"]


def test_sigkill_then_resume_matches_straight_run(tmp_path, smoke_data):
    steps = 600
    straight = subprocess.run(_train_proc(smoke_data, tmp_path / "straight", steps), capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen(_train_proc(smoke_data, tmp_path / "killed", steps), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: len(runs.list_checkpoints(tmp_path / "killed")) >= 4 or proc.poll() is not None, 120,
               "the run's fourth checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.list_checkpoints(tmp_path / "killed")[-1] < steps, "the run finished before it was killed"
    resumed = subprocess.run(_train_proc(smoke_data, tmp_path / "killed", steps) + ["--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "straight", tmp_path / "killed")
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["final_step"] == steps


def test_corrupt_checkpoint_falls_back(cli, tmp_path, smoke_data):
    common = ["train", "--data", smoke_data, "--model", "gpt", "--preset", "smoke", "--quiet"]
    assert cli(*common, "--set", "max_steps=40", "--out", tmp_path / "straight")[0] == 0
    assert cli(*common, "--set", "max_steps=20", "--out", tmp_path / "run")[0] == 0
    last = runs.step_dir(tmp_path / "run", 20) / "state.safetensors"
    last.write_bytes(last.read_bytes()[:100])  # truncated by a crash
    code, out, _ = cli(*common, "--set", "max_steps=40", "--out", tmp_path / "run", "--resume")
    assert code == 0 and "falling back" in out and "resumed" in out
    assert_same_run(tmp_path / "straight", tmp_path / "run")


def test_changed_config_refused_unless_forced(cli, tmp_path, smoke_data):
    common = ["train", "--data", smoke_data, "--model", "gpt", "--preset", "smoke", "--quiet", "--out", tmp_path / "r"]
    assert cli(*common, "--set", "max_steps=20")[0] == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    code, _, err = cli(*common, "--set", "max_steps=30,lr=0.5", "--resume")
    assert code == 2 and "train.lr" in err and "--force-config" in err
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    code, _, err = cli(*common, "--set", "max_steps=30")
    assert code == 2 and "--resume" in err
    assert cli(*common, "--set", "max_steps=30,lr=0.5", "--resume", "--force-config")[0] == 0
    assert runs.list_checkpoints(tmp_path / "r")[-1] == 30


def test_a_run_recorded_with_the_trm_settings_under_train_resumes_and_equals_one_run(cli, tmp_path, smoke_data):
    """Up to 0.1.0 a run's config.yaml kept the trm's q-halt weight and puzzle lr/decay under ``train``; they now
    live in the trm's model config. A run recorded the old way reads (the keys moved, the gpt's dropped) and resumes
    with no 'config changed', to the same weights as an uninterrupted run."""
    import yaml

    common = ["train", "--data", smoke_data, "--model", "trm", "--preset", "smoke", "--quiet",
              "--set", "q_halt_weight=0.25,max_steps=40"]
    assert cli(*common, "--out", tmp_path / "straight")[0] == 0
    assert cli(*common[:-2], "--set", "q_halt_weight=0.25,max_steps=20", "--out", tmp_path / "run")[0] == 0
    path = tmp_path / "run" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["model"]["config"]["q_halt_weight"] == 0.25 and "q_halt_weight" not in cfg["train"]
    for key in artifacts.LEGACY_TRAIN_KEYS:  # rewrite it as 0.1.0 did
        cfg["train"][key] = cfg["model"]["config"].pop(key)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    read = artifacts.read_config(tmp_path / "run")
    assert read["model"]["config"]["q_halt_weight"] == 0.25 and "puzzle_lr" not in read["train"]
    code, out, err = cli(*common, "--resume", "--out", tmp_path / "run")
    assert code == 0, err
    assert_same_run(tmp_path / "straight", tmp_path / "run")
    # a gpt never used them: they are dropped, not moved
    gpt = {"train": {"lr": 1e-3, "q_halt_weight": 0.0, "puzzle_lr": 1e-4}, "model": {"d_model": 8}}
    assert artifacts.upgrade_settings("gpt", gpt["train"], gpt["model"]) == ({"lr": 1e-3}, {"d_model": 8})
    # the same value in both places is read once; two values is a hand-edited record: one line naming both
    assert artifacts.upgrade_settings("trm", {"puzzle_lr": 2.0}, {"puzzle_lr": 2.0}) == ({}, {"puzzle_lr": 2.0})
    with pytest.raises(GrokscopeError, match=r"train.puzzle_lr=1.0 vs model.puzzle_lr=2.0"):
        artifacts.upgrade_settings("trm", {"puzzle_lr": 1.0}, {"puzzle_lr": 2.0})
    # --set under its old section says where it lives now
    code, _, err = cli(*common[:-2], "--set", "train.q_halt_weight=0.5", "--out", tmp_path / "moved")
    assert code == 2 and "not a train setting but a model one: --set model.q_halt_weight=0.5" in err
    # the gpt has no such setting: one line, naming it
    code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", "q_halt_weight=0.5",
                       "--out", tmp_path / "gpt")
    assert code == 2 and "q_halt_weight" in err and len(err.strip().splitlines()) == 1


def test_bad_inputs(cli, tmp_path, smoke_data):
    base = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet"]
    code, _, err = cli(*base, "--set", "model.d_vocab=10", "--out", tmp_path / "a")
    assert code == 2 and "d_vocab" in err
    code, _, err = cli(*base, "--set", "colour=red", "--out", tmp_path / "a")
    assert code == 2 and "colour" in err
    code, _, err = cli(*base, "--set", "lr=-1,precision=fp8", "--out", tmp_path / "a")
    assert code == 2 and len(err.strip().splitlines()) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli(*base, "--out", blocker / "run")
    assert code == 2 and "is a file" in err and "Traceback" not in err
    code, _, err = cli(*base, "--resume", "--out", tmp_path / "nothing")
    assert code == 2 and "nothing to resume" in err
    other = tmp_path / "other"
    assert cli("data", "build", "--preset", "smoke", "--seed", "9", "--out", other)[0] == 0
    assert cli(*base, "--set", "max_steps=10", "--out", tmp_path / "r")[0] == 0
    code, _, err = cli("train", "--data", other, "--preset", "smoke", "--resume", "--out", tmp_path / "r")
    assert code == 2 and "trained on dataset" in err


def test_nan_loss_stops_cleanly(cli, tmp_path, smoke_data, monkeypatch):
    from grokscope.models.gpt import GPT

    real = GPT.loss
    calls = {"n": 0}

    def poisoned(self, batch, output, spec):
        loss = real(self, batch, output, spec)
        if self.training:
            calls["n"] += 1
        return loss * float("nan") if calls["n"] > 25 else loss

    monkeypatch.setattr(GPT, "loss", poisoned)
    code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out", tmp_path / "r")
    assert code == 2 and "nan" in err and "Traceback" not in err
    assert runs.list_checkpoints(tmp_path / "r")[-1] == 20  # the last good checkpoint is kept
    runs.load_checkpoint(tmp_path / "r", 20)


def test_stop_rule_with_margin(cli, tmp_path, smoke_data):
    code, out, _ = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out", tmp_path / "r",
                       "--set", "max_steps=200,eval_every=10,stop_when=step>=20,stop_patience=2,stop_margin_steps=15")
    assert code == 0, out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_step"] == 45 and summary["stop_reason"].startswith("stop rule")


def test_checkpoint_schedule():
    cfg = TrainConfig(ckpt_dense_every=100, ckpt_dense_until=1000, ckpt_log_per_decade=10, ckpt_linear_from=10_000,
                      ckpt_every=10_000)
    steps = sorted(checkpoint_steps(50_000, cfg))
    assert steps[:3] == [0, 100, 200] and 1000 in steps and 50_000 in steps
    log_part = [s for s in steps if 1000 < s < 10_000]
    assert len(log_part) == 9 and all(b / a > 1.2 for a, b in zip(log_part, log_part[1:]))
    assert [s for s in steps if s >= 10_000] == [10_000, 20_000, 30_000, 40_000, 50_000]
    assert max(checkpoint_steps(123, cfg)) == 123


def test_resume_of_finished_run_keeps_summary(cli, tmp_path, smoke_data):
    common = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", "max_steps=20",
              "--set", "threads=1", "--out", tmp_path / "r"]
    assert cli(*common)[0] == 0
    before = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert cli(*common, "--resume")[0] == 0
    after = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert after["final"] == before["final"] and after["milestones"] == before["milestones"]
    assert rows(tmp_path / "r") and len(artifacts.read_metrics(tmp_path / "r")) == 2


def test_time_cap_is_a_safety_net_marked_cut_short(cli, tmp_path, smoke_data):
    base = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out"]
    assert cli(*base, tmp_path / "capped", "--set", "max_steps=100000,max_minutes=0.0001")[0] == 0
    summary = json.loads((tmp_path / "capped" / "summary.json").read_text())
    assert summary["cut_short"] and "cut short" in summary["stop_reason"] and summary["final_step"] < 100000
    assert cli(*base, tmp_path / "full", "--set", "max_steps=20")[0] == 0
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert not summary["cut_short"] and summary["stop_reason"] == "max_steps"


def test_second_process_is_refused_and_a_stale_lock_taken_over(tmp_path, smoke_data, cli):
    proc = subprocess.Popen(_train_proc(smoke_data, tmp_path / "r", 100_000), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: bool(runs.list_checkpoints(tmp_path / "r")), 120, "the first checkpoint")
        before = (tmp_path / "r" / "metrics.jsonl").read_text()
        code, _, err = cli(*_train_proc(smoke_data, tmp_path / "r", 100_000)[3:], "--resume")
        assert code == 2 and f"pid {proc.pid}" in err and "in use" in err
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "r" / "metrics.jsonl").read_text().startswith(before[:50])
    last = runs.list_checkpoints(tmp_path / "r")[-1]
    code, out, err = cli(*_train_proc(smoke_data, tmp_path / "r", 100_000)[3:], "--set", f"max_steps={last + 25}",
                         "--resume")
    assert code == 0, err  # the killed process's lock is released by the kernel: taken over


def test_resume_reports_unreadable_metrics_rows(cli, tmp_path, smoke_data):
    common = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out", tmp_path / "r"]
    assert cli(*common, "--set", "max_steps=40,eval_every=10")[0] == 0
    path = tmp_path / "r" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]  # a damaged middle line
    path.write_text("\n".join(lines) + "\n")
    code, out, err = cli(*common, "--set", "max_steps=50,eval_every=10", "--resume")
    assert code == 0 and "1 damaged row(s) skipped (line 2)" in out
    assert [r["step"] for r in artifacts.read_metrics(tmp_path / "r")] == [0, 20, 30, 40, 50]


def test_resume_with_another_family_or_shape_is_refused(cli, tmp_path, smoke_data):
    common = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out", tmp_path / "r"]
    assert cli(*common, "--set", "max_steps=20")[0] == 0
    code, _, err = cli(*common, "--model", "trm", "--resume")
    assert code == 2 and "model.family" in err and "Traceback" not in err
    code, _, err = cli(*common, "--set", "max_steps=30,model.d_model=64", "--resume")
    assert code == 2 and "model.d_model" in err
    code, _, err = cli(*common, "--set", "max_steps=30,model.d_model=64", "--resume", "--force-config")
    assert code == 2 and "cannot be loaded into this model" in err and len(err.strip().splitlines()) == 1


def test_every_evaluation_is_written_as_tensorboard_scalars(cli, tmp_path, smoke_data):
    """With tensorboard installed (the `track` extra), each evaluation's numbers are scalars in RUN/tensorboard/; a
    resumed run drops what was logged after its checkpoint, as metrics.jsonl does."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = ["train", "--data", smoke_data, "--model", "gpt", "--preset", "smoke", "--quiet", "--out", tmp_path / "r"]
    assert cli(*base, "--set", "max_steps=20,eval_every=10")[0] == 0
    assert cli(*base, "--set", "max_steps=40,eval_every=10", "--resume")[0] == 0
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("test_inferred_iid")}
    expected = {r["step"]: r["test_inferred_iid"] for r in artifacts.read_metrics(tmp_path / "r")}
    assert sorted(logged) == sorted(expected) == [0, 10, 20, 30, 40]
    assert all(abs(logged[s] - expected[s]) < 1e-6 for s in expected)
    assert {"train_loss", "lr", "weight_norm", "n/test_inferred_iid"} <= set(events.Tags()["scalars"])
