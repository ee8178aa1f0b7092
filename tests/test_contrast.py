"""Wang et al.'s contrast in a study: the comparison section of a study file (validated, planned, run, resumed), the
sweep over the comparison task, and Finding W's rule, which must come out each way."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from grokscope.errors import GrokscopeError
from grokscope.reporting import contrast
from grokscope.reporting.contrast import finding_w, halfway, verdict_w
from grokscope.reporting.findings import FAILED, HELD, NOT_TESTABLE, OPEN, Vote
from grokscope.studies.plan import plan
from grokscope.studies.spec import load_spec
from grokscope.sweeps import sweep_jobs

from conftest import small_study


def contrast_study(**changes) -> dict:
    """A smoke study of one gpt on the natural regime and on the comparison task."""
    gpt = {"name": "gpt", "family": "gpt", "preset": "smoke", "set": {"max_steps": 40, "eval_every": 20}}
    base = small_study(name="contrast_smoke", regimes=["natural"], models=[gpt], transfer=[],
                       analysis={"probes": "ood,iid", "steps": "0,last"},
                       comparison={"preset": "smoke", "per_model": {"gpt": {"max_steps": 40, "eval_every": 20}}})
    return {**base, **changes}


def write(path, study: dict):
    path.write_text(yaml.safe_dump(study))
    return path


# ------------------------------------------------------------------------------------------------ spec and plan
def test_the_comparison_section_plans_a_dataset_a_run_and_its_analysis_per_model_and_seed(tmp_path):
    spec = load_spec(str(write(tmp_path / "s.yaml", contrast_study(seeds=[0, 1]))))
    jobs = {j.name: j for j in plan(spec, tmp_path / "study")}
    assert jobs["data comparison"].call["kwargs"]["task"] == "comparison"
    assert jobs["data comparison"].resolved["task"] == "comparison"
    for seed in (0, 1):
        train = jobs[f"train gpt_comparison_s{seed}"]
        assert train.record["role"] == "comparison" and train.record["seed"] == seed
        assert train.needs == ["data comparison"]
        assert train.call["kwargs"]["spec"]["data"].endswith("datasets/comparison")
        analyze = jobs[f"analyze gpt_comparison_s{seed}"]
        assert analyze.call["kwargs"]["analyses"] == "lens,trace"  # what a comparison run has
    # the comparison runs stack together, never with the composition runs (another vocabulary)
    groups = {j.record["stack_group"] for n, j in jobs.items() if n.startswith("train gpt_comparison")}
    assert len(groups) == 1 and groups.isdisjoint({jobs["train gpt_natural_s0"].record["stack_group"]})
    # a study without the section plans exactly what it planned before
    plain = load_spec(str(write(tmp_path / "p.yaml", {k: v for k, v in contrast_study().items()
                                                      if k != "comparison"})))
    assert not any("comparison" in j.name for j in plan(plain, tmp_path / "p"))


@pytest.mark.parametrize("section, expected", [
    ({"preset": "huge"}, "study.comparison.preset 'huge'"),
    ({"set": {"phi": 1e6}}, "study.comparison.set: phi"),
    ({"set": {"out_degree": 3}}, "out_degree"),
    ({"models": ["bert"]}, "study.comparison.models ['bert']"),
    ({"models": []}, "study.comparison.models []"),
    ({"models": ["gpt", "gpt"]}, "given twice"),
    ({"per_model": {"trm": {"max_steps": 5}}}, "study.comparison.per_model ['trm']"),
    ({"per_model": {"gpt": {"max_step": 5}}}, "study.comparison.per_model.gpt"),
    ({"per_model": {"gpt": {"seed": 3}}}, "sets train.seed"),
])
def test_a_bad_comparison_section_is_refused_before_anything_runs(tmp_path, section, expected):
    with pytest.raises(GrokscopeError) as err:
        load_spec(str(write(tmp_path / "s.yaml", contrast_study(comparison=section))))
    assert expected in str(err.value)


def test_the_sweep_trains_the_comparison_task_or_says_why_not(tmp_path):
    spec_file = write(tmp_path / "s.yaml", contrast_study())
    grid, data_jobs, train_jobs = sweep_jobs(str(spec_file), ["data.phi=2,3"], tmp_path / "sw", task="comparison")
    assert [j.call["kwargs"]["task"] for j in data_jobs] == ["comparison", "comparison"]
    assert all(j.out.name.startswith("c_") for j in data_jobs)
    assert {j.record["task"] for _, j in train_jobs} == {"comparison"}
    with pytest.raises(GrokscopeError, match="num_attributes"):  # a comparison key is refused for composition
        sweep_jobs(str(spec_file), ["data.num_attributes=2,3"], tmp_path / "sw")
    with pytest.raises(GrokscopeError, match="no comparison section"):
        sweep_jobs("smoke", ["data.phi=2,3"], tmp_path / "sw2", task="comparison")
    with pytest.raises(GrokscopeError, match="--task 'chess'"):
        sweep_jobs(str(spec_file), ["data.phi=2,3"], tmp_path / "sw3", task="chess")


def test_a_comparison_sweep_runs_and_tabulates_each_point_against_its_chance_level(cli, tmp_path):
    spec_file = write(tmp_path / "s.yaml", contrast_study())
    code, out, err = cli("sweep", "--preset", spec_file, "--task", "comparison", "--grid", "data.phi=2,3", "--out",
                         tmp_path / "sw")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert list(table["data.phi"]) == [2, 3] and table["steps"].tolist() == [40, 40]
    assert table["ood_chance"].between(0.3, 0.6).all()  # the most frequent of three labels, 2 of them common
    # the same folder holds a comparison sweep: a composition sweep there is refused, not mixed in
    code, _, err = cli("sweep", "--preset", spec_file, "--grid", "data.phi=2,3", "--out", tmp_path / "sw")
    assert code == 2 and "another preset, model or task" in err


def test_a_sweep_recorded_with_or_without_the_comparison_key_resumes(cli, tmp_path):
    """Sweeps recorded before the comparison section existed (no key) or while it was written as null resume."""
    spec_file = write(tmp_path / "s.yaml", {k: v for k, v in contrast_study().items() if k != "comparison"})
    args = ("sweep", "--preset", spec_file, "--grid", "train.seed=0", "--grid", "train.max_steps=20", "--out",
            tmp_path / "sw")
    code, _, err = cli(*args)
    assert code == 0, err
    state = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert "comparison" not in state["spec"]
    for recorded in ({**state["spec"], "comparison": None}, state["spec"]):
        (tmp_path / "sw" / "sweep.json").write_text(json.dumps({**state, "spec": recorded}))
        code, _, err = cli(*args)
        assert code == 0, err


def test_study_runs_both_tasks_reports_the_contrast_and_resumes_with_nothing_to_do(cli, tmp_path):
    spec_file = write(tmp_path / "s.yaml", contrast_study())
    code, out, err = cli("study", "--preset", spec_file, "--out", tmp_path / "st")
    assert code == 0, err
    report = (tmp_path / "st" / "report.md").read_text()
    assert "Finding W · gpt" in report and "Composition against comparison (Wang et al. Fig. 1)" in report
    assert (tmp_path / "st" / "figures" / "contrast_gpt.png").exists()
    assert (tmp_path / "st" / "runs" / "gpt_comparison" / "analysis" / "comparison_lens.parquet").exists()
    manifest = json.loads((tmp_path / "st" / "study.json").read_text())
    assert {e["status"] for e in manifest["jobs"].values()} == {"done"}
    before = {n: e["finished"] for n, e in manifest["jobs"].items()}
    code, out, err = cli("study", "--preset", spec_file, "--out", tmp_path / "st")
    assert code == 0, err
    after = json.loads((tmp_path / "st" / "study.json").read_text())["jobs"]
    assert {n: e["finished"] for n, e in after.items()} == before  # no job ran again


# ------------------------------------------------------------------------------------------------ Finding W
def _run(name: str, ood: float, n: int = 900, iid: float = 0.97, step0_ood: float = 0.0, cut: bool = False) -> dict:
    rows = [{"step": 0, "test_inferred_ood": step0_ood, "test_inferred_iid": 0.0, "n/test_inferred_ood": n}]
    rows += [{"step": s, "test_inferred_ood": ood, "test_inferred_iid": iid, "n/test_inferred_ood": n,
              "n/test_inferred_iid": n} for s in (100, 200, 300)]
    return {"name": name, "rows": rows, "config": {}, "path": ".", "summary": {"cut_short": cut}}


@pytest.fixture
def chance(monkeypatch):
    """The OOD comparisons' most frequent label share (read from the dataset in a study): 0.475, as at V 20."""
    monkeypatch.setattr(contrast, "label_chance", lambda run, probe="test_inferred_ood": 0.475)


@pytest.mark.parametrize("comparison_ood, composition_ood, expected", [
    (0.97, 0.01, "supported"),  # Wang et al. Fig. 1
    (0.66, 0.01, "partly supported"),  # above chance, not to the generalised level (the micro tier)
    (0.45, 0.01, "contradicted"),  # comparison at chance: no contrast
    (0.97, 0.95, "contradicted"),  # composition generalised OOD too: no contrast
    (0.50, 0.01, "undecided at this n"),  # n = 900 cannot tell 0.50 from the chance level 0.475
])
def test_finding_w_comes_out_each_way(chance, comparison_ood, composition_ood, expected):
    result = finding_w({0: (_run("cmp", comparison_ood), _run("nat", composition_ood))})
    assert result["verdict"].startswith(expected), result["verdict"]
    assert result["finding"] == "W" and result["source"] == "Wang et al."


def test_finding_w_needs_models_that_generalised_in_distribution(chance):
    # a composition model that learned nothing is at chance on OOD for no reason: (c) cannot be read
    result = finding_w({0: (_run("cmp", 0.97), _run("nat", 0.0, iid=0.05))})
    assert result["verdict"].startswith(NOT_TESTABLE) and "did not generalise ID composition" in result["verdict"]
    # a comparison model below the grokked level: above chance is read, the generalised level is not
    result = finding_w({0: (_run("cmp", 0.66, iid=0.84), _run("nat", 0.0))})
    assert result["verdict"].startswith("partly supported") and "did not generalise ID comparison" in \
        result["verdict"]
    # ... and at chance it still fails (a)
    assert finding_w({0: (_run("cmp", 0.45, iid=0.84), _run("nat", 0.0))})["verdict"].startswith("contradicted")
    # a run stopped by the time cap decides nothing
    assert finding_w({0: (_run("cmp", 0.97, cut=True), _run("nat", 0.0))})["verdict"].startswith(NOT_TESTABLE)


def test_finding_w_without_a_composition_run_or_a_dataset_is_not_testable(chance, monkeypatch):
    assert finding_w({0: (_run("cmp", 0.97), None)})["verdict"].startswith(NOT_TESTABLE)
    monkeypatch.setattr(contrast, "label_chance", lambda run, probe="test_inferred_ood": None)
    assert finding_w({0: (_run("cmp", 0.97), _run("nat", 0.0))})["verdict"].startswith(NOT_TESTABLE)
    monkeypatch.setattr(contrast, "label_chance", lambda run, probe="test_inferred_ood": 0.96)  # one label: no room
    assert finding_w({0: (_run("cmp", 0.99), _run("nat", 0.0))})["verdict"].startswith(NOT_TESTABLE)


def test_finding_w_across_seeds_says_when_seeds_disagree(chance):
    result = finding_w({0: (_run("cmp0", 0.97), _run("nat0", 0.0)), 1: (_run("cmp1", 0.45), _run("nat1", 0.0))})
    assert result["verdict"].startswith("partly supported (seeds disagree")


def test_the_generalised_level_is_halfway_between_chance_and_one():
    assert halfway(0.0) == 0.5 and halfway(0.475) == pytest.approx(0.7375, abs=1e-3)


def test_verdict_w_reads_the_two_deciding_votes_first():
    def v(outcome):
        return Vote("x", outcome, "")
    assert verdict_w([v(HELD), v(FAILED), v(HELD)]).startswith("partly supported")
    assert verdict_w([v(HELD), v(OPEN), v(HELD)]).startswith("partly supported")
    assert verdict_w([v(FAILED), v(HELD), v(HELD)]).startswith("contradicted")
    assert verdict_w([v(HELD), v(HELD), v(OPEN)]) == "undecided at this n"
    assert verdict_w([v(HELD), v(HELD), v(NOT_TESTABLE)]).startswith(NOT_TESTABLE)
    assert verdict_w([v(OPEN), v(HELD), v(NOT_TESTABLE)]).startswith("undecided at this n (x:")
    assert verdict_w([v(HELD), v(NOT_TESTABLE), v(HELD)]).startswith("partly supported")
