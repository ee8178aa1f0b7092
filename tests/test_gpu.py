"""Device checks (marked ``gpu``; benchmarks/gpu_check.sh runs them) on the device ``--device`` names:

    pytest -m gpu tests/test_gpu.py                       # on CUDA; skipped without a CUDA device
    pytest -m gpu tests/test_gpu.py --device cpu --quick  # a dry run on the CPU: every code path, fewer steps

What they check: training of both families (fp16 + GradScaler + Grokfast for the gpt, the trm's recipe), the
analyses and a fine-tune; a killed run resumed equals an uninterrupted one; the smoke study, its analyses on the
device; stacked runs, vmap against loop, eager and compiled; compiled against eager (gpt fp32, trm bf16); training
steps from one checkpoint on the CPU, on the device eagerly and compiled, and the analysis tables on the CPU and on
the device; no host synchronisation inside a training step or in drawing batches (CUDA's sync-debug mode); no
recompile after the first epoch.

On the CPU the dry run checks that the code runs, not the numbers of a GPU: there the "device" side is the CPU
itself, so the comparisons hold trivially except compiled against eager; fp16 becomes bf16 (it needs CUDA's
GradScaler), as the trainer does; the sync-debug guard exists only on CUDA, so the same steps run unguarded. The
compiled checks need a C++ compiler on the CPU (inductor) and are skipped with a reason without one.

Tolerances are relative on losses and weight norms (``LOSS_RTOL``) and absolute on shares of queries (accuracies,
analysis tables); each says why where it is defined.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch._dynamo
import yaml

from grokscope import api, artifacts, runs, runtime
from grokscope.data.encoding import Encoded, training_set
from grokscope.data.store import load
from grokscope.models.registry import build_model
from grokscope.training.step import LoopPass, train_step
from grokscope.training.runspec import RunSpec
from grokscope.training.state import TrainState
from conftest import one_of_each_job, wait_until

pytestmark = pytest.mark.gpu

# Relative tolerance on losses and weight norms, by what differs between the two sides compared.
LOSS_RTOL = {
    # The same code on the CPU twice: deterministic, so equal to float64 rounding of the loss sum.
    "same": 1e-9,
    # fp32, compiled against eager: inductor fuses and reorders reductions (measured on the CPU: 1e-7 over 40 steps;
    # CUDA reductions split over thread blocks and TF32 matmuls differ more).
    "compiled_fp32": {"cpu": 1e-4, "cuda": 1e-3},
    # fp32, CPU against CUDA: CUDA trains fp32 matmuls in TF32 (runtime.training_matmuls; a 10-bit mantissa, ~1e-3
    # relative per matmul); a few steps from one checkpoint stay well inside 5e-3.
    "devices_fp32": 5e-3,
    # bf16 (an 8-bit mantissa, 4e-3 per rounding): compiled kernels round at other points than eager ones, and the
    # difference grows over the steps of a run (measured on the CPU, trm: 3.7e-3 over 40 steps).
    "bf16": 2e-2,
    # vmap against loop, fp32: a batched matmul sums in another order (measured on the CPU: 3e-7 over 60 steps, both
    # families); on CUDA also other TF32 kernels (bmm against mm).
    "vmap": {"cpu": 1e-4, "cuda": 5e-3},
    # A killed and resumed run against an uninterrupted one: bit-identical on the CPU (TrainState restores every
    # piece of state); CUDA kernels are not bitwise deterministic run to run (atomics in backward), and fp16 over
    # hundreds of steps lets such differences grow: 2% on the losses.
    "resume": {"cpu": 0.0, "cuda": 2e-2},
}
# A share of queries (an accuracy, a bridge rate, a cell of an analysis table) moves between two sides whose losses
# agree only where a query's top-1 flips on a near-tie. Allowed: FLIPS such queries per share. Analysis tables of
# one checkpoint on two devices (fp32, TF32 off; logits differ by ~1e-6): n may differ by FLIPS and a value by
# 2 * FLIPS / n (a flip can move both the count and the share).
FLIPS = 2
# Absolute tolerance on the shares logged at evaluations, where the losses agree within the tolerances above: 0.05,
# or FLIPS queries' worth where a share is over fewer than 40 queries (the smoke ID and OOD test sets hold 2, where
# one flip is 0.5). 0 where the run is bit-identical.
SHARE_ATOL = {"exact": 0.0, "near": 0.05}

CHECKPOINT_SETS = ["train.precision=fp32", "train.max_steps=150", "train.eval_every=50"]
# 150 steps: the smoke gpt answers 20% of its training compositions by then (40 of 200; at step 60 none), so causal
# tracing on the training probes has n > 0 queries per position.


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def device(request) -> str:
    chosen = request.config.getoption("--device")
    if chosen == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (a dry run on the CPU: --device cpu --quick)")
    return chosen


@pytest.fixture(scope="module")
def quick(request) -> bool:
    return bool(request.config.getoption("--quick"))


@pytest.fixture(autouse=True)
def fresh_compile_state(device):
    """Every test here runs on the chosen device (so all skip without it) and compiles from scratch: dynamo shares
    one cache entry between models of one architecture, so a graph another test compiled would hide this test's
    compile (and its recompiles) from the counters."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield


@pytest.fixture
def compiler(device):
    if device == "cpu" and not runtime.cpu_compiler_available():
        pytest.skip("torch.compile on the CPU needs a C++ compiler for inductor ($CXX, c++ or g++)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    api.build_data(root / "d", preset="smoke")
    return root / "d"


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory) -> Path:
    """A smoke gpt (fp32) trained on the CPU: the checkpoint the device comparisons start from."""
    run = tmp_path_factory.mktemp("ckpt") / "gpt"
    api.train(data, run, "gpt", "smoke", CHECKPOINT_SETS, device="cpu", quiet=True)
    return run


# ------------------------------------------------------------------------------------------------ helpers


def compiled_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def rel_close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(1.0, abs(a))


def queries_behind(key: str, row: dict) -> int | None:
    """How many queries a logged share is over, where the row says (``n/<key>``, or the lens / bridge-use set of
    its probe: ``bridge@L0_ood`` is over ``n/bridge_found_ood``)."""
    if f"n/{key}" in row:
        return row[f"n/{key}"]
    measure, _, probe = key.rpartition("_")
    return row.get(f"n/{'bridge_use' if measure.startswith('bridge_use') else 'bridge_found'}_{probe}")


def assert_rows_close(rows_a: list[dict], rows_b: list[dict], rtol: float, share_atol: float) -> None:
    """Two runs' metrics rows: the same steps and counts, losses and weight norms within ``rtol`` (relative), the
    shares of queries within ``share_atol`` (absolute; FLIPS queries' worth on a small set). Timings are not
    compared."""
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        for key, x in a.items():
            y = b.get(key)
            if key in ("wall_seconds", "epoch") or not isinstance(x, (int, float)) or x is None:
                continue
            where = f"step {a['step']}, {key}: {x} vs {y}"
            if key.startswith("n/") or key in ("step", "lr"):
                assert x == y, where
            elif key in ("train_loss", "weight_norm") or key.startswith("loss/"):
                assert y is not None and rel_close(x, y, rtol), where
            else:
                n = queries_behind(key, a)
                atol = max(share_atol, FLIPS / n) if share_atol and n else share_atol
                assert y is not None and abs(x - y) <= atol, where


def losses(run: Path) -> list[float]:
    return [r["train_loss"] for r in artifacts.read_metrics(run) if r["train_loss"] is not None]


@contextlib.contextmanager
def no_sync_allowed(device: str):
    """CUDA's sync-debug mode at "error": any host-device synchronisation inside raises. There is no such guard on
    the CPU (nothing to synchronise with), so the steps run unguarded there."""
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@dataclass
class Stepper:
    """The trainer's own step (``step.train_step``) on a model and state built as the trainer builds them, driven one
    step at a time, so a test can guard, count or read around single steps."""

    state: TrainState
    forward_backward: LoopPass
    train_set: Encoded

    def batch(self) -> Encoded:
        return self.train_set.take(self.state.order.next())

    def step(self, batch: Encoded | None = None) -> None:
        with runtime.training_matmuls(self.state.device):  # the matmul precision training uses (TF32 on CUDA)
            train_step([self.state], [self.batch() if batch is None else batch], self.forward_backward)
        self.state.loop.step += 1


def stepper(data: Path, family: str, device: str, sets: list[str], compile_: bool | None = None,
            restore: Path | None = None) -> Stepper:
    """A smoke run of ``family`` as the trainer sets it up (precision resolved for the device, threads, seed), from
    scratch or restored from the last checkpoint of ``restore``. ``compile_`` None: the device's default (compiled
    on CUDA, eager on the CPU at this budget)."""
    ds = load(data)
    cfg, model_cfg = RunSpec.build(data, "-", family, "smoke", sets).configs(ds.vocab.d_vocab)
    precision, _ = runtime.resolve_precision(cfg.precision, device)  # fp16 needs CUDA: bf16 on the CPU
    cfg = replace(cfg, precision=precision, compile=compile_)
    runtime.configure(device, cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg.for_precision(precision)).to(device).train()
    train_set = training_set(ds).to(device)
    state = TrainState(model, cfg, len(train_set), device)
    if restore is not None:
        state.restore(restore)
        state.take_train_loss()  # the checkpoint's step was evaluated: nothing is pending, but start from zero
    return Stepper(state, LoopPass([state], max_steps=0), train_set)


def losses_from(data: Path, checkpoint: Path, device: str, compile_: bool, n: int) -> list[float]:
    """The training loss of each of ``n`` steps taken from the checkpoint's last step (the same batches on every
    device: the batch order is drawn on the CPU)."""
    s = stepper(data, "gpt", device, CHECKPOINT_SETS, compile_, restore=checkpoint)
    out = []
    for _ in range(n):
        s.step()
        out.append(s.state.take_train_loss())
    return out


def analysis_tables(run: Path, device: str) -> dict[str, pd.DataFrame]:
    """The logit lens, causal tracing and bridge use of the run's last checkpoint on its training compositions (the
    probes a model at this stage answers right, which causal tracing needs)."""
    model = runs.load_model(run, "last", device)[0]
    probes = api.open_run(run).dataset.probes["train_inferred"]
    return {"lens": api.lens(model, probes), "trace": api.trace(model, probes),
            "bridge_use": api.bridge_use(model, probes)}


def assert_tables_close(name: str, a: pd.DataFrame, b: pd.DataFrame) -> None:
    keys = ["stage", "stage_index", "position", "metric"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    assert len(both) == len(a) == len(b), f"{name}: the two tables have different rows"
    for row in both.itertuples(index=False):
        where = f"{name} {row.stage}/{row.position}/{row.metric}: {row.value_a} (n {row.n_a}) vs {row.value_b} " \
                f"(n {row.n_b})"
        assert abs(row.n_a - row.n_b) <= FLIPS, where
        if pd.isna(row.value_a) or pd.isna(row.value_b):
            assert pd.isna(row.value_a) and pd.isna(row.value_b), where
        else:
            assert abs(row.value_a - row.value_b) <= 2 * FLIPS / max(row.n_a, 1) + 1e-9, where


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("family, sets", [
    ("gpt", ["train.precision=fp16", "train.grokfast_alpha=0.98", "train.grokfast_lambda=2"]),
    ("trm", []),
])
def test_train_analyze_transfer(data, tmp_path, device, quick, family, sets):
    run, steps = tmp_path / family, 20 if quick else 60
    summary = api.train(data, run, family, "smoke", [*sets, f"train.max_steps={steps}"], device=device, quiet=True)
    assert summary["device"] == device and summary["final_step"] == steps
    assert all(v == v for v in summary["final"].values() if isinstance(v, float))  # finite metrics
    result = api.analyze(run, steps="0,last", device=device)
    assert result["steps"] == [0, steps] and "step0_vs_last" in result["compare"]
    ft = api.transfer(str(run), tmp_path / f"ft_{family}", sets=[f"max_steps={steps // 3}", f"eval_every={steps // 6}"],
                      device=device, quiet=True)
    assert ft["device"] == device and ft["transfer"]["final"]["atomic_new"]["n"] == 50


def cli_train(data: Path, out: Path, device: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "grokscope.cli", "train", "--data", str(data), "--preset", "smoke", "--quiet",
            "--device", device, "--out", str(out), "--set",
            f"max_steps={steps},eval_every=50,ckpt_dense_every=25,ckpt_dense_until={steps},precision=fp16,"
            f"grokfast_lambda=2"]


def test_killed_run_resumes_like_an_uninterrupted_one(data, tmp_path, device, quick):
    steps = 200 if quick else 400
    cmd = cli_train(data, tmp_path / "r", device, steps)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(runs.list_checkpoints(tmp_path / "r")) >= 4 or proc.poll() is not None, 300,
               "the run's fourth checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "r" / "summary.json").exists(), \
        "the run finished before it was killed: nothing was resumed"
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = subprocess.run(cli_train(data, tmp_path / "whole", device, steps), capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_step"] == steps and summary["device"] == device
    rows = artifacts.read_metrics(tmp_path / "r")
    steps_logged = [r["step"] for r in rows]
    assert steps_logged == sorted(set(steps_logged))  # no row twice after the resume
    exact = device == "cpu"
    assert_rows_close(rows, artifacts.read_metrics(tmp_path / "whole"), LOSS_RTOL["resume"][device],
                      SHARE_ATOL["exact" if exact else "near"])


def test_smoke_study_runs_its_analyses_on_the_device(tmp_path, device, quick, monkeypatch):
    """The study has no device option: its jobs take ``auto``. Here ``auto`` means the chosen device (so a CPU dry
    run stays on the CPU on a CUDA machine too). The manifest records where each training, fine-tuning, analysis and
    comparison job ran, and every model the analyses load is on that device. The dry run (``--quick``) runs one job
    of each kind."""
    pick = runtime.pick_device
    monkeypatch.setattr(runtime, "pick_device", lambda d: pick(device if d == "auto" else d))
    loaded, load_model = [], runs.load_model

    def recording_load_model(*args, **kwargs):
        model, step = load_model(*args, **kwargs)
        loaded.append(next(model.parameters()).device.type)
        return model, step
    monkeypatch.setattr(runs, "load_model", recording_load_model)
    preset = "smoke"
    if quick:
        preset = tmp_path / "one_of_each.yaml"
        preset.write_text(yaml.safe_dump(one_of_each_job()))
    report = api.study(str(preset), out=tmp_path / "s", log=lambda _msg: None)
    assert report.exists()
    jobs = json.loads((tmp_path / "s" / "study.json").read_text())["jobs"]
    stages = ("train", "transfer", "analyze", "compare")
    by_stage = {stage: [e for e in jobs.values() if e["stage"] == stage] for stage in stages}
    assert by_stage["analyze"] and all(e["status"] == "done" for e in by_stage["analyze"])
    for e in by_stage["train"] + by_stage["transfer"] + by_stage["analyze"] + by_stage["compare"]:
        assert e["status"] == "skipped" or e["ran_with"]["device"] == device, e
    assert loaded and set(loaded) == {device}


@pytest.mark.parametrize("family", ["gpt", "trm"])
def test_stacked_vmap_and_loop_agree(data, tmp_path, device, quick, family, capsys):
    """Three runs stacked by each backend, eager both (compiled stacks are the next check): the same losses and
    accuracies per run."""
    steps = (10 if family == "trm" else 20) if quick else 60
    rows = {}
    for backend in ("loop", "vmap"):
        specs = [RunSpec.build(data, tmp_path / f"{backend}{i}", family, "smoke",
                               ["train.precision=fp32", "train.compile=false", f"train.max_steps={steps}",
                                f"train.eval_every={steps // 2}", f"train.seed={i}"], device=device, quiet=True)
                 for i in range(3)]
        summaries = api.train(spec=specs, backend=backend)
        assert [s["final_step"] for s in summaries] == [steps] * 3
        assert f"training 3 runs stacked ({backend})" in capsys.readouterr().out  # stacked, not one after another
        rows[backend] = [artifacts.read_metrics(s.out) for s in specs]
    for loop_rows, vmap_rows in zip(rows["loop"], rows["vmap"]):
        assert_rows_close(loop_rows, vmap_rows, LOSS_RTOL["vmap"][device], SHARE_ATOL["near"])


def test_compiled_vmap_stack_agrees_with_the_compiled_loop(data, tmp_path, device, compiler, capsys):
    """Three gpt runs (fp32) that stop at different steps, compiled by each backend: the vmap stack compiles one
    graph for all the runs (keeping a stopped run's slot, training/stack.py) and gives each run the losses and
    accuracies the loop backend gives it."""
    steps = [12, 15, 18]  # inside the smoke gpt's first epoch (19 batches of 64): one graph per backend, whose
    # cold compile is the cost of this check; the stack keeps three slots until one run is left, which steps alone
    rows = {}
    for backend in ("loop", "vmap"):
        specs = [RunSpec.build(data, tmp_path / f"{backend}{i}", "gpt", "smoke",
                               ["train.precision=fp32", "train.compile=true", f"train.max_steps={n}",
                                "train.eval_every=6", f"train.seed={i}"], device=device, quiet=True)
                 for i, n in enumerate(steps)]
        graphs = compiled_graphs()
        summaries = api.train(spec=specs, backend=backend)
        assert [s["final_step"] for s in summaries] == steps
        assert f"training 3 runs stacked ({backend})" in capsys.readouterr().out
        assert compiled_graphs() > graphs  # this backend compiled its own graph
        rows[backend] = [artifacts.read_metrics(s.out) for s in specs]
    rtol = LOSS_RTOL["vmap"][device] + LOSS_RTOL["compiled_fp32"][device]  # both differences at once
    for loop_rows, vmap_rows in zip(rows["loop"], rows["vmap"]):
        assert_rows_close(loop_rows, vmap_rows, rtol, SHARE_ATOL["near"])


def test_stacked_vmap_runs(data, tmp_path, device, quick):
    steps = 20 if quick else 40
    members = [{"data": data, "out": tmp_path / f"k{i}", "model": "gpt", "preset": "smoke", "device": device,
                "quiet": True, "sets": [f"train.max_steps={steps}", f"train.seed={i}"]} for i in range(4)]
    summaries = api.train(spec=[RunSpec.build(**m) for m in members], backend="vmap")
    assert [s["final_step"] for s in summaries] == [steps] * 4
    assert all(s["device"] == device for s in summaries)


# ------------------------------------------------------------------------------------------------ compiled vs eager


def test_compiled_and_eager_losses_agree_gpt_fp32(data, tmp_path, device, compiler):
    got = {}
    for compiled in (False, True):
        out = tmp_path / f"c{compiled}"
        api.train(data, out, "gpt", "smoke", ["train.max_steps=40", "train.eval_every=20", "train.precision=fp32",
                                              f"train.compile={str(compiled).lower()}"], device=device, quiet=True)
        got[compiled] = losses(out)
    assert compiled_graphs() > 0  # the compiled run did compile
    assert len(got[True]) == len(got[False]) == 2
    for a, b in zip(got[False], got[True]):
        assert rel_close(a, b, LOSS_RTOL["compiled_fp32"][device]), (a, b)


def test_compiled_and_eager_losses_agree_trm_bf16(data, tmp_path, device, quick, compiler):
    steps = 10 if quick else 40  # one graph: the trm recipe drops an epoch's short last batch
    got = {}
    for compiled in (False, True):
        out = tmp_path / f"c{compiled}"
        api.train(data, out, "trm", "smoke", [f"train.max_steps={steps}", f"train.eval_every={steps // 2}",
                                              "train.precision=bf16", f"train.compile={str(compiled).lower()}"],
                  device=device, quiet=True)
        got[compiled] = artifacts.read_metrics(out)
    assert compiled_graphs() > 0
    assert_rows_close(got[False], got[True], LOSS_RTOL["bf16"], SHARE_ATOL["near"])


@pytest.mark.parametrize("family, precision", [("gpt", "fp32"), ("trm", "bf16")])
def test_no_recompile_after_the_first_epoch(data, device, compiler, family, precision):
    """The first epoch compiles the full batch and, for the gpt (no drop_last), the epoch's shorter last batch; after
    it every batch shape has its graph, so any further compile is a recompile (dynamo raises under
    ``error_on_recompile``)."""
    s = stepper(data, family, device, [f"train.precision={precision}"], compile_=True)
    epoch = s.state.order.steps_per_epoch
    for _ in range(epoch):
        s.step()
    graphs = compiled_graphs()
    assert graphs >= 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(epoch + 1):  # a second epoch and the first batch of a third
            s.step()
    assert compiled_graphs() == graphs


# ------------------------------------------------------------------------------------------------ one checkpoint


def test_steps_from_one_checkpoint_agree_on_cpu_and_device(data, checkpoint, device):
    cpu = losses_from(data, checkpoint, "cpu", False, 5)
    here = losses_from(data, checkpoint, device, False, 5)
    assert all(math.isfinite(x) for x in cpu)
    rtol = LOSS_RTOL["same"] if device == "cpu" else LOSS_RTOL["devices_fp32"]
    for a, b in zip(cpu, here):
        assert rel_close(a, b, rtol), (cpu, here)


def test_steps_from_one_checkpoint_agree_compiled_and_eager(data, checkpoint, device, compiler):
    eager = losses_from(data, checkpoint, device, False, 5)
    compiled = losses_from(data, checkpoint, device, True, 5)
    assert compiled_graphs() > 0
    for a, b in zip(eager, compiled):
        assert rel_close(a, b, LOSS_RTOL["compiled_fp32"][device]), (eager, compiled)


def test_analysis_tables_agree_on_cpu_and_device(checkpoint, device):
    """Logit lens, causal tracing (with n > 0 queries) and bridge use of one checkpoint, on the CPU and on the device.
    The analyses have no compiled path (they run hooks), so there is no third side."""
    with runtime.matmul_precision(device, tf32=False):  # full fp32, as on the CPU
        cpu, here = analysis_tables(checkpoint, "cpu"), analysis_tables(checkpoint, device)
    assert (cpu["trace"].groupby("position")["n"].max() > 0).all(), "causal tracing saw no correctly answered query"
    assert (cpu["bridge_use"]["n"] > 0).all()
    for name in cpu:
        assert_tables_close(name, cpu[name], here[name])


# ------------------------------------------------------------------------------------------------ synchronisation


SYNC_CASES = [*((family, precision, False) for family in ("gpt", "trm") for precision in ("fp32", "bf16", "fp16")),
              ("gpt", "fp32", True), ("trm", "bf16", True)]


def test_a_new_epochs_batch_order_reaches_the_device_without_a_sync(device):
    """Each epoch's order is drawn on the CPU (the same on every device) and copied from pinned memory, queued on
    the stream: three epochs of batches drawn under the sync guard equal the CPU's."""
    from grokscope.training.batches import BatchOrder

    here, cpu = BatchOrder(10, 4, 3, False, device=device), BatchOrder(10, 4, 3, False)
    with no_sync_allowed(device):
        drawn = [here.next() for _ in range(9)]
    assert [b.cpu().tolist() for b in drawn] == [cpu.next().tolist() for _ in range(9)]
    assert here.epoch == 2 and all(b.device.type == torch.device(device).type for b in drawn)


@pytest.mark.parametrize("family, precision", [("gpt", "fp32"), ("trm", "bf16")])
def test_a_stacked_vmap_step_does_not_synchronise(data, tmp_path, device, monkeypatch, family, precision):
    """Three runs on the vmap backend (eager), whose stacked steps after the first two run under the sync guard:
    the batched forward and backward, and the runs' gradient filters, optimiser and EMA steps (``step.train_step``;
    evaluations, checkpoints and the batches drawn, between the steps, may synchronise)."""
    from grokscope.training import loop

    guarded, real_step, warm = [], loop.train_step, []

    def step(states, batches, forward_backward):
        if len(guarded) < 2 and len(warm) >= 2:
            with no_sync_allowed(device):
                real_step(states, batches, forward_backward)
            guarded.append(len(states))
        else:
            real_step(states, batches, forward_backward)
        warm.append(1)
    monkeypatch.setattr(loop, "train_step", step)
    sets = [f"train.precision={precision}", "train.compile=false", "train.max_steps=6", "train.eval_every=6",
            "train.grad_clip=1.0", *(["train.grokfast_lambda=2"] if family == "gpt" else [])]
    specs = [RunSpec.build(data, tmp_path / f"k{i}", family, "smoke", [*sets, f"train.seed={i}"], device=device,
                           quiet=True) for i in range(3)]
    assert [s["final_step"] for s in api.train(spec=specs, backend="vmap")] == [6] * 3
    assert guarded == [3, 3]


@pytest.mark.parametrize("family, precision, compiled", SYNC_CASES)
def test_a_training_step_does_not_synchronise(data, device, request, family, precision, compiled):
    """Two trainer steps under CUDA's sync-debug mode "error", after two warm-up steps (compilation, the optimiser's
    state, the GradScaler's scale). Every family and precision eagerly: eager runs every synchronisation the Python
    code makes (a compiled graph can only remove some); compiled once per family, on graphs the other tests compile
    too (each new graph costs a compile). Clipping is on (and Grokfast for the gpt). The batch is drawn before the
    guard (drawing batches is checked on its own above). On the CPU fp16 runs as bf16, unguarded."""
    if compiled:
        request.getfixturevalue("compiler")
    sets = [f"train.precision={precision}", "train.grad_clip=1.0",
            *(["train.grokfast_lambda=2"] if family == "gpt" else [])]
    s = stepper(data, family, device, sets, compile_=compiled)
    batch = s.batch()
    for _ in range(2):
        s.step(batch)
    with no_sync_allowed(device):
        for _ in range(2):
            s.step(batch)
    assert all(torch.isfinite(p).all() for p in s.state.model.parameters())
    assert compiled_graphs() > 0 if compiled else compiled_graphs() == 0
