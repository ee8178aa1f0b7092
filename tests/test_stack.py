"""Stacked runs: several runs of one architecture in one process, each with its own data order, optimiser, RNG,
checkpoints and folder. The loop backend is bit-identical to training each run alone (fp32, CPU); the vmap backend
(one batched forward/backward, the GPU default) agrees within floating-point tolerance."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from grokscope import api, artifacts, runs
from grokscope.errors import GrokscopeError
from grokscope.training.runspec import RunSpec

VOLATILE = {"wall_seconds"}


def _kwargs(data, out, family, seed, extra=(), steps=30):
    sets = [f"train.max_steps={steps}", "train.eval_every=10", "train.threads=1", f"train.seed={seed}", *extra]
    sets += ["model.forward_dtype=float32"] if family == "trm" else ["train.precision=fp32"]
    return {"data": data, "out": out, "model": family, "preset": "smoke", "sets": sets, "quiet": True}


def _train_stacked(members, **kwargs):
    """``api.train`` with a list of resolved specs (a stack), from ``train``'s keyword arguments per run."""
    return api.train(spec=[RunSpec.build(**m) for m in members], **kwargs)


def _final(run):
    step = runs.list_checkpoints(run)[-1]
    return step, load_file(runs.step_dir(run, step) / "model.safetensors"), load_file(
        runs.step_dir(run, step) / "state.safetensors")


def _rows(run):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in artifacts.read_metrics(run)]


@pytest.fixture(scope="module")
def regimes(tmp_path_factory):
    """Two datasets on one graph (natural and both_full): runs on different data can share a stack."""
    root = tmp_path_factory.mktemp("stack_data")
    api.build_data(root / "natural", preset="smoke")
    api.build_data(root / "both_full", preset="smoke", regime="both_full")
    return root


EXTRA = {"gpt": ("model.dropout=0.1",), "trm": ()}  # dropout: each stacked run must keep its own RNG stream


def _members(regimes, root, family, extra, steps=30):
    """Three runs: two datasets, three seeds, and a third run with its own lr, Grokfast filter and clipping (every
    part of the step that takes all runs at once)."""
    return [_kwargs(regimes / "natural", root / "s0", family, 0, extra, steps),
            _kwargs(regimes / "both_full", root / "s1", family, 1, extra, steps),
            _kwargs(regimes / "natural", root / "s2", family, 2,
                    (*extra, "train.lr=3e-3", "train.grokfast_lambda=2", "train.grad_clip=0.5"), steps)]


@pytest.fixture(scope="module", params=["gpt", "trm"])
def alone(request, regimes, tmp_path_factory):
    """Two runs of one family (different seeds and datasets), each trained alone: the reference."""
    family, root = request.param, tmp_path_factory.mktemp(f"alone_{request.param}")
    for kw in _members(regimes, root, family, EXTRA[family]):
        api.train(**kw)
    return family, root


def test_loop_backend_is_bit_identical_to_training_alone(regimes, alone, tmp_path):
    """The one step (``step.train_step``) over a stack of three runs gives each run's metrics, weights and
    optimiser state bit for bit as the same step over a stack of one (the run trained alone)."""
    family, reference = alone
    _train_stacked(_members(regimes, tmp_path, family, EXTRA[family]), backend="loop")
    for i in range(3):
        (sa, wa, ta), (sb, wb, tb) = _final(reference / f"s{i}"), _final(tmp_path / f"s{i}")
        assert sa == sb == 30 and _rows(reference / f"s{i}") == _rows(tmp_path / f"s{i}")
        assert all(torch.equal(wa[k], wb[k]) for k in wa) and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("family", ["gpt", "trm"])
def test_vmap_backend_agrees_within_tolerance(regimes, family, tmp_path, capsys):
    """vmap cannot reproduce dropout, so both families are compared with runs trained alone without it (10 steps:
    vmap is slow on a CPU)."""
    members = _members(regimes, tmp_path, family, (), steps=10)
    for i, kw in enumerate(members):
        api.train(**{**kw, "out": tmp_path / f"alone{i}"})
    capsys.readouterr()
    summaries = _train_stacked(members, backend="vmap")
    assert "runs stacked (vmap)" in capsys.readouterr().out  # really stacked, not one run after the other
    assert [s["final_step"] for s in summaries] == [10, 10, 10]
    for i in range(3):
        (_, wa, _), (_, wb, _) = _final(tmp_path / f"alone{i}"), _final(tmp_path / f"s{i}")
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-3)


def test_vmap_backend_refuses_dropout_before_writing(regimes, tmp_path):
    with pytest.raises(GrokscopeError, match="dropout"):
        _train_stacked(_members(regimes, tmp_path / "drop", "gpt", EXTRA["gpt"]), backend="vmap")
    assert not list((tmp_path / "drop").rglob("config.yaml"))  # refused before any run was written


def test_stacked_runs_resume_and_stop_independently(regimes, tmp_path):
    members = [_kwargs(regimes / "natural", tmp_path / "s0", "gpt", 0),
               _kwargs(regimes / "natural", tmp_path / "s1", "gpt", 1, ("train.max_steps=20",))]
    _train_stacked([{**m, "sets": [*m["sets"], "train.max_steps=10"]} for m in members], backend="loop")
    _train_stacked([{**m, "resume": True} for m in members], backend="loop")  # to 30 and 20: stops apart
    api.train(**{**members[0], "out": tmp_path / "straight"})
    assert _rows(tmp_path / "straight") == _rows(tmp_path / "s0")
    assert json.loads((tmp_path / "s1" / "summary.json").read_text())["final_step"] == 20
    (_, wa, _), (_, wb, _) = _final(tmp_path / "straight"), _final(tmp_path / "s0")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_stacked_run_that_stops_writes_its_summary_while_the_others_train(regimes, tmp_path, monkeypatch):
    """A run that stops (its budget, or a stop rule) is finished on disk at once: a stack cut later (a session's end,
    a kill) leaves it with its summary, not looking like a run cut short."""
    from grokscope.training import step

    seen, real_call = [], step.LoopPass.__call__

    def call(self, states, batches):
        seen.append((len(states), (tmp_path / "s0" / "summary.json").exists()))
        return real_call(self, states, batches)
    monkeypatch.setattr(step.LoopPass, "__call__", call)
    members = [_kwargs(regimes / "natural", tmp_path / "s0", "gpt", 0, ("train.max_steps=10",)),
               _kwargs(regimes / "natural", tmp_path / "s1", "gpt", 1, ("train.max_steps=20",))]
    _train_stacked(members, backend="loop")
    assert (2, False) in seen and (1, True) in seen  # s0 was done and summarised while s1 trained on
    assert json.loads((tmp_path / "s0" / "summary.json").read_text())["final_step"] == 10


def test_runs_of_different_architectures_train_one_after_another(regimes, tmp_path, capsys):
    members = [_kwargs(regimes / "natural", tmp_path / "a", "gpt", 0),
               _kwargs(regimes / "natural", tmp_path / "b", "gpt", 0, ("model.d_model=64",))]
    _train_stacked(members)
    assert "one after another" in capsys.readouterr().out
    assert all((tmp_path / n / "summary.json").exists() for n in "ab")


def test_stack_cli(cli, regimes, tmp_path):
    """`train --spec-only` writes a run's resolved spec and trains nothing; `stack` trains such specs together."""
    data = regimes / "natural"
    for name, sets in (("a", "max_steps=10"), ("b", "max_steps=10,seed=3")):
        code, out, err = cli("train", "--data", data, "--preset", "smoke", "--quiet", "--out", tmp_path / name,
                             "--set", sets, "--spec-only", tmp_path / f"{name}.json")
        assert code == 0 and "nothing trained" in out, err
    assert not (tmp_path / "a").exists()  # nothing trained, nothing written but the spec
    assert json.loads((tmp_path / "b.json").read_text())["train"]["seed"] == 3
    code, _, err = cli("train", "--data", data, "--out", tmp_path / "a", "--spec-only", tmp_path / "a.json")
    assert code == 2 and "exists" in err  # a spec is never written over a file
    code, out, err = cli("stack", tmp_path / "a.json", tmp_path / "b.json")
    assert code == 0, err
    assert "stacked" in out and json.loads((tmp_path / "b" / "summary.json").read_text())["final_step"] == 10
    (tmp_path / "data.json").write_text(json.dumps({"kind": "data", "preset": "smoke", "out": "x"}))
    code, _, err = cli("stack", tmp_path / "data.json")
    assert code == 2 and "not a training job" in err
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    code, _, err = cli("stack", tmp_path / "other.json")
    assert code == 2 and "neither a run spec nor a job file" in err
    for name in "cd":
        assert cli("train", "--data", data, "--out", tmp_path / "c", "--spec-only", tmp_path / f"{name}.json")[0] == 0
    # d as a job file was written before jobs were typed (an API call): still read as a training run
    spec = json.loads((tmp_path / "d.json").read_text())
    (tmp_path / "d.json").write_text(json.dumps({"verb": "train", "kwargs": {"spec": spec}}))
    code, _, err = cli("stack", tmp_path / "c.json", tmp_path / "d.json")
    assert code == 2 and "same --out" in err
    (tmp_path / "odd.json").write_text(json.dumps({"kind": ["train"]}))
    code, _, err = cli("stack", tmp_path / "odd.json")
    assert code == 2 and "odd.json" in err and len(err.strip().splitlines()) == 1


def test_a_compiled_vmap_stack_keeps_stopped_runs_slots_until_half_are_idle(regimes, tmp_path, monkeypatch):
    """A compiled graph is fixed to the stack's size (vmap specialises it), so a compiled stack rebuilds only when
    half its slots are idle: five runs stopping one by one compile for 5 and 2 runs (the last run steps alone),
    where the eager stack rebuilds at every stop. Both give the runs' own results (the idle slots' gradients are
    left out): compiled with a recording backend that runs the captured graph as it is, the metrics and weights
    equal the eager stack's bit for bit."""
    from grokscope.training import step

    graphs, sizes = [], {"compiled": [], "eager": []}

    def recording(gm, example_inputs):
        graphs.append({x.shape[0] for x in example_inputs if isinstance(x, torch.Tensor) and x.dim()})
        return gm.forward
    real_compile, real_restack = torch.compile, step.VmapPass._restack
    monkeypatch.setattr(step.torch, "compile", lambda fn, **kw: real_compile(fn, backend=recording, **kw))
    torch._dynamo.reset()
    for mode in ("eager", "compiled"):
        monkeypatch.setattr(step, "compiles", lambda *a, compiled=mode == "compiled": compiled)
        monkeypatch.setattr(step.VmapPass, "_restack",
                            lambda self, active, mode=mode: (sizes[mode].append(len(active)),
                                                             real_restack(self, active))[1])
        members = [_kwargs(regimes / "natural", tmp_path / mode / f"s{i}", "gpt", i,
                           (f"train.max_steps={6 + 2 * i}",)) for i in range(5)]
        summaries = _train_stacked(members, backend="vmap")
        assert [s["final_step"] for s in summaries] == [6, 8, 10, 12, 14]
    torch._dynamo.reset()
    assert sizes == {"eager": [5, 4, 3, 2], "compiled": [5, 2]}
    # the stack's graphs (every input leads with the stack's size), and the last run's own graph as it steps alone
    stacked = [g for g in graphs if len(g) == 1]
    assert stacked and all(g == {5} or g == {2} for g in stacked) and len(stacked) <= 4, graphs
    assert len(graphs) - len(stacked) <= 2, graphs
    for i in range(5):
        (sa, wa, ta), (sb, wb, tb) = _final(tmp_path / "eager" / f"s{i}"), _final(tmp_path / "compiled" / f"s{i}")
        assert sa == sb and _rows(tmp_path / "eager" / f"s{i}") == _rows(tmp_path / "compiled" / f"s{i}")
        assert all(torch.equal(wa[k], wb[k]) for k in wa) and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_grokscope_train_reaches_the_optimiser_step_in_four_calls(regimes, tmp_path, monkeypatch):
    """From the CLI verb to the optimiser step: api.train, loop.train, step.train_step, the step itself (torch's
    wrapper around AdamW.step). A new layer between them shows here."""
    import inspect

    from grokscope.cli import app

    paths, real_step = [], torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        if not paths:
            names = [frame.function for frame in inspect.stack()[1:]]
            paths.append(names[:names.index("train_cmd")][::-1])
        return real_step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    app(["train", "--data", str(regimes / "natural"), "--out", str(tmp_path / "r"), "--preset", "smoke", "--quiet",
         "--set", "max_steps=2"], standalone_mode=False)
    assert paths[0][:3] == ["train", "train", "train_step"] and len(paths[0]) <= 4, paths[0]
