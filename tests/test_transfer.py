"""Transfer experiments: category split, fine-tune vs control initialisation, refusal of mismatched data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from grokscope import artifacts, runs
from grokscope.data.store import Dataset, load
from grokscope.data.vocab import Vocab
from grokscope.models.registry import build_model, config_from_dict
from grokscope.finetuning import FineTuneBudget, category_rows, transfer_summary


def test_categories_on_hand_built_example():
    mix = np.array([[0, 1, 2, 5, 6], [1, 1, 2, 5, 6], [2, 1, 2, 5, 6], [3, 1, 2, 5, 6]], dtype=np.int32)
    powered = np.array([[7, 1, 2, 5, 6], [8, 1, 2, 5, 6], [9, 1, 2, 5, 6]], dtype=np.int32)
    new_new = np.array([[4, 1, 2, 5, 6]], dtype=np.int32)
    ds = Dataset(meta={}, vocab=Vocab(10, 3), arrays={
        "probe.test_inferred_new_mix": mix,
        "probe.test_inferred_new_mix.category": np.array([1, 1, 2, 2], np.uint8),
        "probe.test_inferred_new_mix.old_in_id_probe": np.array([True, False, True, True]),
        "probe.test_inferred_new_mix_powered": powered,
        "probe.test_inferred_new_mix_powered.category": np.array([2, 1, 1], np.uint8),
        "probe.test_inferred_new": new_new,
    })
    cats = category_rows(ds)
    assert cats["new_old"][:, 0].tolist() == [0]  # row 1 fails the faithful filter
    assert cats["old_new"][:, 0].tolist() == [2, 3]
    assert cats["new_old_powered"][:, 0].tolist() == [8, 9] and cats["old_new_powered"][:, 0].tolist() == [7]
    assert cats["new_new"][:, 0].tolist() == [4]
    summary = transfer_summary([{"step": 0, "atomic_new": 0.5, "new_old": 0.2},
                                {"step": 250, "atomic_new": 0.995, "new_old": 0.95, "bridge_found_new_old": 1.0}],
                               {"new_old": 1, "atomic_new": 50})
    assert summary["steps_to_new_fact"] == 250 and summary["steps_to_new_old"] == 250
    assert summary["final"]["new_old"] == {"exact_match": 0.95, "bridge_found": 1.0, "bridge_use": None, "n": 1,
                                           "retained": None, "n_retained": None, "retention": None}


@pytest.fixture(scope="module")
def parent(trained):
    """The shared smoke gpt (300 steps) as the parent run."""
    return trained[0] / "gpt"


def _step0_weights(run):
    return load_file(runs.step_dir(run, 0) / "model.safetensors")


def test_finetune_and_control(cli, parent, tmp_path):
    code, out, err = cli("transfer", "--from", f"{parent}@300", "--out", tmp_path / "ft", "--quiet",
                         "--set", "max_steps=20,eval_every=10")
    assert code == 0, err
    assert "new_old" in out and "retention" in out
    cfg = artifacts.read_config(tmp_path / "ft")
    assert cfg["transfer"]["parent_step"] == 300 and not cfg["transfer"]["control"]
    assert cfg["data"]["kind"] == "transfer"
    assert load(tmp_path / "ft" / "data").meta["parent_fingerprint"] == artifacts.read_config(parent)[
        "data"]["fingerprint"]
    row = artifacts.read_metrics(tmp_path / "ft")[-1]
    for key in ("atomic_new", "new_old", "old_new", "new_new", "new_old_powered", "bridge_found_new_old",
                "bridge_found_old_new_powered", "bridge_use_new_old_powered", "id_atomic", "test_inferred_ood"):
        assert key in row, key
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["transfer"]["final"]["atomic_new"]["n"] == 50
    # the paper's step relative to the weights' scale: 2e-5 x (the gpt's init std 0.02 / 1536^-0.5); 5% warm-up
    assert cfg["train"]["lr"] == pytest.approx(2e-5 * 0.02 * 1536 ** 0.5)
    assert cfg["train"]["warmup_steps"] == round(0.05 * cfg["train"]["max_steps"]) and not cfg["train"]["sat_multiple"]
    parent_w = load_file(runs.step_dir(parent, 300) / "model.safetensors")
    ft0 = _step0_weights(tmp_path / "ft")
    assert all(torch.equal(parent_w[k], ft0[k]) for k in parent_w)  # fine-tune starts from the parent

    code, _, err = cli("transfer", "--from", f"{parent}@300", "--control", "--out", tmp_path / "ctl",
                       "--quiet", "--set", "max_steps=10,eval_every=10")
    assert code == 0, err
    ctl0 = _step0_weights(tmp_path / "ctl")
    assert not all(torch.equal(parent_w[k], ctl0[k]) for k in parent_w)
    cfg = artifacts.read_config(tmp_path / "ctl")
    torch.manual_seed(cfg["train"]["seed"])
    fresh = build_model(config_from_dict("gpt", cfg["model"]["config"])).state_dict()
    assert all(torch.equal(fresh[k], ctl0[k]) for k in fresh)  # really fresh weights
    assert cfg["transfer"]["control"] and cfg["train"]["lr"] == artifacts.read_config(parent)["train"]["lr"]


def test_mismatched_transfer_data_refused(cli, parent, smoke_data, tmp_path):
    assert cli("data", "build", "--preset", "smoke", "--seed", "4", "--transfer", "--out", tmp_path / "other")[0] == 0
    code, _, err = cli("transfer", "--from", str(parent), "--data", tmp_path / "other",
                       "--out", tmp_path / "ft")
    assert code == 2 and "was derived from dataset" in err and not (tmp_path / "ft").exists()
    code, _, err = cli("transfer", "--from", str(parent), "--data", smoke_data, "--out",
                       tmp_path / "ft")
    assert code == 2 and "not a transfer dataset" in err


def _rows(new_fact: list[float], new_old: list[float], every: int = 100) -> list[dict]:
    return [{"step": i * every, "atomic_new": a, "new_old_powered": b}
            for i, (a, b) in enumerate(zip(new_fact, new_old))]


def test_budget_runs_five_times_the_new_fact_step_then_stops_when_new_old_is_flat():
    budget = FineTuneBudget(new_fact_multiple=5, flat_evals=3, flat_tolerance=0.02)
    # New facts reach 0.99 at step 200: nothing stops before step 1000, however flat new+old is.
    flat = _rows([0.2, 0.7, 0.99] + [1.0] * 8, [0.1] * 11)
    assert [budget.stop_reason(flat[:k]) for k in range(1, 10)] == [""] * 9  # up to step 800
    assert budget.stop_reason(flat[:11]).startswith("new facts >= 0.99 at step 200; ran 5x")  # step 1000
    # Still rising at step 1000: it goes on, and stops once the last 3 evaluations agree within 0.02.
    rising = _rows([0.99] * 14, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.94, 0.96, 0.97, 0.975, 0.98])
    assert budget.stop_reason(rising[:11]) == ""
    assert [k for k in range(1, 15) if budget.stop_reason(rising[:k])][0] == 13
    # Never learned: only max_steps ends it; 0 turns the rule off.
    assert budget.stop_reason(_rows([0.5] * 40, [0.0] * 40)) == ""
    assert FineTuneBudget(new_fact_multiple=0).stop_reason(flat) == ""
    # A watched metric never measured never stops it.
    assert budget.stop_reason([{"step": s, "atomic_new": 1.0} for s in range(0, 2000, 100)]) == ""


def test_budget_problems_name_the_option():
    assert FineTuneBudget().problems() == []
    bad = FineTuneBudget(new_fact_multiple=-1, flat_evals=0, flat_tolerance=float("nan")).problems()
    assert len(bad) == 3 and "--new-fact-multiple" in bad[0] and "--flat-evals" in bad[1]


def test_finetune_stops_where_its_budget_says_and_records_why(parent, tmp_path, cli, capsys, monkeypatch):
    """The stop rule is applied at an evaluation; the run checkpoints there, says why, and a finished fine-tune is
    not resumed."""
    from grokscope import api

    monkeypatch.setattr(FineTuneBudget, "stop_reason", lambda self, rows: "test rule" if rows[-1]["step"] >= 20
                        else "")
    out, sets = tmp_path / "ft", ["max_steps=100", "eval_every=10"]
    summary = api.transfer(f"{parent}@300", out, sets=sets, quiet=True)
    assert summary["final_step"] == 20 and summary["stop_reason"] == "test rule"
    assert runs.list_checkpoints(out)[-1] == 20
    assert artifacts.read_config(out)["transfer"]["budget"]["new_fact_multiple"] == 5.0
    rows = artifacts.read_metrics(out)
    assert [r["step"] for r in rows] == [0, 10, 20]
    # Mixed categories are also scored on the old hops the model still answers, with their n.
    last = rows[-1]
    for cat in ("new_old_powered", "old_new_powered"):
        n, kept = last[f"n/retention_{cat}"], last[f"n/{cat}_retained"]
        assert n == len(category_rows(load(out / "data"))[cat]) and kept == round(last[f"retention_{cat}"] * n)
        assert (f"{cat}_retained" in last) == (kept > 0)
    # Resumed at its last checkpoint (as after a kill before summary.json), it stops there again.
    (out / "summary.json").unlink()
    again = api.transfer(f"{parent}@300", out, sets=sets, quiet=True, resume=True)
    assert again["final_step"] == 20 and again["stop_reason"] == "test rule"
    assert [r["step"] for r in artifacts.read_metrics(out)] == [0, 10, 20]
    # Resumed with another budget, it keeps the one it started with (and says so).
    monkeypatch.undo()
    (out / "summary.json").unlink()
    kept = api.transfer(f"{parent}@300", out, sets=sets, resume=True, new_fact_multiple=0)
    assert kept["final_step"] == 100  # new facts never reach 0.99 here: either budget runs to the cap ...
    assert artifacts.read_config(out)["transfer"]["budget"]["new_fact_multiple"] == 5.0  # ... but the recorded one ran
    assert "resumes with the budget it started with" in capsys.readouterr().out
    code, _, err = cli("transfer", "--from", f"{parent}@300", "--out", tmp_path / "x", "--flat-evals", "0")
    assert code == 2 and "flat_evals" in err and "Traceback" not in err


def test_scaled_recipe_keeps_the_papers_step_at_each_width():
    """He et al. fine-tune at 2e-5 with width 1536: the scaled recipe keeps lr / init scale, an EMA of 0.999 where the
    parent has one, a 5% warm-up, and none of the parent's stop rule or saturation multiple; the control keeps the
    pre-training lr and EMA."""
    from grokscope.finetuning import transfer_config

    trm = {"train": {"lr": 6e-3, "ema_decay": 0.99, "sat_multiple": 3.0, "stop_when": "test_inferred_ood>=0.9",
                     "max_steps": 40000},
           "model": {"family": "trm", "config": {"d_model": 64}}}
    cfg = transfer_config(trm, "scaled", {"max_steps": 4000}, control=False)
    assert cfg.lr == pytest.approx(2e-5 * (1536 / 64) ** 0.5) and cfg.ema_decay == 0.999
    assert cfg.warmup_steps == 200 and cfg.sat_multiple == 0 and cfg.stop_when == ""
    assert transfer_config({**trm, "model": {"family": "trm", "config": {"d_model": 1536}}}, "scaled", None,
                           False).lr == pytest.approx(2e-5)  # at the paper's width, the paper's lr
    control = transfer_config(trm, "scaled", {"max_steps": 4000}, control=True)
    assert control.lr == 6e-3 and control.ema_decay == 0.99 and control.sat_multiple == 0
    assert transfer_config(trm, "scaled", {"warmup_steps": 7}, False).warmup_steps == 7  # a user's warm-up stands


def test_draw_kept_reaches_the_derived_transfer_set_and_a_bad_draw_is_refused(cli, parent, tmp_path):
    from grokscope.data.store import load

    code, out, err = cli("transfer", "--from", f"{parent}@300", "--out", tmp_path / "ft", "--quiet", "--draw", "kept",
                         "--set", "max_steps=20", "--set", "eval_every=10")
    assert code == 0, err
    ds = load(tmp_path / "ft" / "data")
    assert ds.meta["config"]["transfer_draw"] == "kept"
    for kind in ("atomic_kept", "atomic_hop_replayed", "atomic_not_replayed"):  # retention by kind, measured
        assert kind in artifacts.read_metrics(tmp_path / "ft")[-1]
        assert kind in json.loads((tmp_path / "ft" / "summary.json").read_text())["transfer"]["retention"]
    code, _, err = cli("transfer", "--from", f"{parent}@300", "--out", tmp_path / "bad", "--draw", "biased")
    assert code == 2 and "--draw 'biased'" in err and not (tmp_path / "bad").exists()


def test_a_study_passes_the_draw_only_when_it_is_set():
    from grokscope.studies.plan import plan
    from grokscope.studies.spec import load_spec

    jobs = {j.name: j for j in plan(load_spec("micro"), Path("/tmp/study"))}
    ft = jobs["transfer ft_trm_natural_last"]
    assert ft.call["kwargs"]["draw"] == "kept" and ft.resolved["draw"] == "kept" and "--draw" in ft.argv
    smoke = {j.name: j for j in plan(load_spec("smoke"), Path("/tmp/study"))}
    ft = next(j for j in smoke.values() if j.stage == "transfer")
    assert "draw" not in ft.call["kwargs"] and "draw" not in ft.resolved and "--draw" not in ft.argv


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


def test_finetunes_stack_and_each_equals_the_same_fine_tune_alone(parent, tmp_path, cli):
    """A fine-tune is a RunSpec: two fine-tunes (from two checkpoints) and the control stack in one process, and each
    ends with the metrics and weights, bit for bit, of the same fine-tune trained alone."""
    from grokscope import api

    sets = ["max_steps=20", "eval_every=10"]
    members = [dict(parent=f"{parent}@100"), dict(parent=f"{parent}@300"), dict(parent=str(parent), control=True)]
    for i, m in enumerate(members):
        api.transfer(out=tmp_path / f"alone{i}", sets=sets, quiet=True, **m)
    summaries = api.stack([{"verb": "transfer", "kwargs": {"out": str(tmp_path / f"stacked{i}"), "sets": sets,
                                                           "quiet": True, **m}} for i, m in enumerate(members)])
    assert [s["final_step"] for s in summaries] == [20, 20, 20]
    for i in range(len(members)):
        alone, stacked = tmp_path / f"alone{i}", tmp_path / f"stacked{i}"
        assert _without_time(artifacts.read_metrics(alone)) == _without_time(artifacts.read_metrics(stacked))
        a, b = (load_file(runs.step_dir(r, 20) / "model.safetensors") for r in (alone, stacked))
        assert all(torch.equal(a[k], b[k]) for k in a)
        a_cfg, b_cfg = artifacts.read_config(alone), artifacts.read_config(stacked)
        assert a_cfg["transfer"]["parent_step"] == b_cfg["transfer"]["parent_step"] and \
            a_cfg["train"] == b_cfg["train"]
    # The two fine-tunes start from their own checkpoints; the control from scratch, with the pre-training lr.
    assert [artifacts.read_config(tmp_path / f"stacked{i}")["transfer"]["parent_step"] for i in range(3)] == \
        [100, 300, 300]
    # From the command line: fine-tunes' specs (transfer --spec-only) stack the same way, each resumable alone.
    for i, source in enumerate(([f"{parent}@300"], [str(parent), "--control"])):
        assert cli("transfer", "--from", *source, "--out", tmp_path / f"cli{i}", "--quiet", "--set",
                   "max_steps=20,eval_every=10", "--spec-only", tmp_path / f"cli{i}.json")[0] == 0
    code, out, err = cli("stack", tmp_path / "cli0.json", tmp_path / "cli1.json")
    assert code == 0, err
    assert "training 2 runs stacked" in out and out.count("done: ") == 2
    assert _without_time(artifacts.read_metrics(tmp_path / "cli0")) == \
        _without_time(artifacts.read_metrics(tmp_path / "alone1"))
    code, _, err = cli("transfer", "--from", f"{parent}@300", "--out", tmp_path / "cli0", "--resume", "--quiet",
                       "--set", "max_steps=30,eval_every=10,warmup_steps=1")
    assert code == 0, err
    assert artifacts.read_metrics(tmp_path / "cli0")[-1]["step"] == 30


def test_a_stack_refuses_what_is_not_a_training_call(parent, tmp_path, cli):
    from grokscope import api
    from grokscope.errors import GrokscopeError

    with pytest.raises(GrokscopeError, match="not a training call"):
        api.stack([{"verb": "analyze", "kwargs": {"run": str(parent)}}])
    with pytest.raises(GrokscopeError, match="non-empty list"):
        api.stack([])
    with pytest.raises(GrokscopeError, match="transfer\\(\\): .*unexpected keyword"):
        api.stack([{"verb": "transfer", "kwargs": {"parent": str(parent), "out": str(tmp_path / "x"), "lr": 1}}])
    (tmp_path / "analyze.json").write_text(json.dumps({"kind": "analyze", "run": str(parent), "probes": "ood",
                                                         "steps": "last"}))
    code, _, err = cli("stack", tmp_path / "analyze.json")
    assert code == 2 and "not a training job" in err
    assert not (tmp_path / "x").exists()
    # A fine-tune's spec is data: it round-trips through a job file, and a damaged source is refused by name.
    from grokscope.training.runspec import RunSpec

    spec = api.run_spec({"verb": "transfer", "kwargs": {"parent": f"{parent}@300", "out": str(tmp_path / "x")}})
    assert spec.finetune["step"] == 300 and spec.finetune["budget"]["new_fact_multiple"] == 5.0 and spec.data == ""
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.settings()["finetune"] == spec.finetune
    with pytest.raises(GrokscopeError, match="finetune must be a mapping of exactly parent, step"):
        RunSpec.from_dict({**spec.to_dict(), "finetune": {"parent": str(parent)}})


def test_a_refused_stack_leaves_no_fine_tune_folder_behind(parent, smoke_data, tmp_path):
    """Its second member is refused after the first fine-tune's folder was locked and its transfer set derived:
    that folder goes again (the command leaves nothing behind), and the existing run is untouched."""
    from grokscope import api
    from grokscope.errors import GrokscopeError

    before = sorted(p.name for p in parent.iterdir())
    with pytest.raises(GrokscopeError, match="already holds a run"):
        api.stack([{"verb": "transfer", "kwargs": {"parent": f"{parent}@300", "out": str(tmp_path / "ft"),
                                                   "sets": ["max_steps=10"], "quiet": True}},
                   {"verb": "train", "kwargs": {"data": str(smoke_data), "out": str(parent), "preset": "smoke"}}])
    assert not (tmp_path / "ft").exists()
    assert sorted(p.name for p in parent.iterdir()) == before


def test_stacked_calls_and_fine_tune_specs_are_checked_by_name(parent, smoke_data, tmp_path):
    from grokscope import api
    from grokscope.errors import GrokscopeError
    from grokscope.training.runspec import RunSpec

    spec = RunSpec.build(smoke_data, tmp_path / "a", "gpt", "smoke")
    assert api.run_spec({"verb": "train", "kwargs": {"spec": spec}}) == spec  # a RunSpec as well as its dict
    with pytest.raises(GrokscopeError, match="takes nothing beside it .*resume"):
        api.run_spec({"verb": "train", "kwargs": {"spec": spec.to_dict(), "resume": True}})
    with pytest.raises(GrokscopeError, match="backend belongs to the whole stack"):
        api.run_spec({"verb": "train", "kwargs": {"data": str(smoke_data), "out": "x", "backend": "vmap"}})
    assert "finetune" not in spec.to_dict()  # a pre-training run's spec file is as before
    ft = api.run_spec({"verb": "transfer", "kwargs": {"parent": f"{parent}@300", "out": str(tmp_path / "ft")}})
    bad = {**ft.to_dict(), "finetune": {**ft.finetune, "budget": {**ft.finetune["budget"], "colour": 1},
                                        "step": "300", "draw": "biased"}}
    with pytest.raises(GrokscopeError) as caught:
        RunSpec.from_dict(bad, "job.json")
    message = str(caught.value)
    assert "job.json: finetune.step" in message and "draw must be one of" in message and "colour" in message
    with pytest.raises(GrokscopeError, match="finetune.control must be true or false"):
        RunSpec(**{**ft.to_dict(), "finetune": {**ft.finetune, "control": "no"}})  # however the spec is made
