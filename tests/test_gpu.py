"""CUDA checks (marked ``gpu``; skipped without a CUDA device; benchmarks/gpu_check.sh runs them): training of both
families (fp16 + GradScaler + Grokfast for the gpt, bf16 for the trm), a killed run resumed on the GPU, the
analyses, a fine-tune, the smoke study, stacked runs, and compiled against eager losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from grokscope import api, artifacts, runs
from grokscope.training.runspec import RunSpec
from conftest import wait_until

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    api.build_data(root / "d", preset="smoke")
    return root / "d"


@pytest.mark.parametrize("family, sets", [
    ("gpt", ["train.precision=fp16", "train.grokfast_alpha=0.98", "train.grokfast_lambda=2"]),
    ("trm", []),
])
def test_train_analyze_transfer_on_cuda(data, tmp_path, family, sets):
    run = tmp_path / family
    summary = api.train(data, run, family, "smoke", [*sets, "train.max_steps=60"], device="cuda", quiet=True)
    assert summary["device"] == "cuda" and summary["final_step"] == 60
    assert all(v is None or v == v for v in summary["final"].values() if isinstance(v, float))  # finite metrics
    result = api.analyze(run, steps="0,last", device="cuda")
    assert result["steps"] == [0, 60] and "step0_vs_last" in result["compare"]
    ft = api.transfer(str(run), tmp_path / f"ft_{family}", sets=["max_steps=20", "eval_every=10"], device="cuda",
                      quiet=True)
    assert ft["transfer"]["final"]["atomic_new"]["n"] == 50


def test_killed_run_resumes_on_cuda(data, tmp_path):
    cmd = [sys.executable, "-m", "grokscope.cli", "train", "--data", str(data), "--preset", "smoke", "--quiet",
           "--device", "cuda", "--out", str(tmp_path / "r"), "--set",
           "max_steps=400,eval_every=50,ckpt_dense_every=25,ckpt_dense_until=400,precision=fp16,grokfast_lambda=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(runs.list_checkpoints(tmp_path / "r")) >= 4 or proc.poll() is not None, 300,
               "the run's fourth checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_step"] == 400 and summary["device"] == "cuda"
    steps = [r["step"] for r in artifacts.read_metrics(tmp_path / "r")]
    assert steps == sorted(set(steps))  # no row twice after the resume


def test_smoke_study_on_cuda(tmp_path):
    report = api.study("smoke", out=tmp_path / "s")
    assert report.exists()
    assert all(json.loads(p.read_text())["device"] == "cuda" for p in (tmp_path / "s" / "runs").glob("*/summary.json"))


def test_stacked_vmap_runs_on_cuda(data, tmp_path):
    members = [{"data": data, "out": tmp_path / f"k{i}", "model": "gpt", "preset": "smoke", "device": "cuda",
                "quiet": True, "sets": ["train.max_steps=40", f"train.seed={i}"]} for i in range(4)]
    summaries = api.train(spec=[RunSpec.build(**m) for m in members], backend="vmap")
    assert [s["final_step"] for s in summaries] == [40] * 4


def test_compiled_and_eager_losses_agree_on_cuda(data, tmp_path):
    losses = {}
    for compiled in (False, True):
        out = tmp_path / f"c{compiled}"
        api.train(data, out, "gpt", "smoke", ["train.max_steps=40", "train.eval_every=20", "train.precision=fp32",
                                              f"train.compile={str(compiled).lower()}"], device="cuda", quiet=True)
        losses[compiled] = [r["train_loss"] for r in artifacts.read_metrics(out) if r["train_loss"] is not None]
    for a, b in zip(losses[False], losses[True]):
        assert abs(a - b) < 1e-3 * max(1.0, abs(a))
