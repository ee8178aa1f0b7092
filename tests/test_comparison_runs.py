"""The comparison task end to end from the CLI, for both families (build, train, analyze), and the control its
measures must fail: a model trained on atomic facts only."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import yaml

from grokscope import api
from grokscope.analysis.comparison import comparison_table, counterfactuals
from grokscope.data.comparison import COMPARISON_PRESETS, build_comparison
from grokscope.data.store import save
from grokscope.runs import load_model


def _tables(run) -> pd.DataFrame:
    found = [pd.read_parquet(p) for p in sorted((run / "analysis").glob("comparison_*.parquet"))]
    return pd.concat(found, ignore_index=True)


def _train(cli, data, out, family, steps, every=None):
    code, _, err = cli("train", "--data", data, "--model", family, "--preset", "smoke", "--out", out, "-q",
                       "--set", f"train.max_steps={steps}", "--set", f"train.eval_every={every or steps}")
    assert code == 0, err


def test_both_families_train_and_analyse_on_comparison(cli, tmp_path):
    code, _, err = cli("data", "build", "--task", "comparison", "--preset", "smoke", "--out", tmp_path / "d")
    assert code == 0, err
    _train(cli, tmp_path / "d", tmp_path / "gpt", "gpt", 40, 20)
    config = yaml.safe_load((tmp_path / "gpt" / "config.yaml").read_text())
    assert config["model"]["config"]["n_ctx"] == 7  # sized from the dataset's sequences
    summary = json.loads((tmp_path / "gpt" / "summary.json").read_text())
    assert {"test_inferred_ood", "test_inferred_iid", "train_inferred", "id_atomic"} <= set(summary["final"])
    assert not any(k.startswith("bridge") for k in summary["final"])  # no bridge in this task
    code, _, err = cli("analyze", tmp_path / "gpt", "--steps", "0,last")
    assert code == 0, err
    table = _tables(tmp_path / "gpt")
    assert set(table.metric) == {"value_top1", "value_mrr", "label_top1", "patch_flip"} or \
        set(table.metric) == {"value_top1", "value_mrr", "label_top1"}  # (patch_flip: where a query is answered)
    assert set(table.step) == {0, 40} and set(table.probe_type) == {"test_inferred_ood", "test_inferred_iid",
                                                                    "train_inferred"}
    assert set(table[table.metric == "patch_flip"].position) <= {2, 4}
    assert (table[table.metric == "patch_flip"].n > 0).all()
    analysis = json.loads((tmp_path / "gpt" / "analysis" / "summary.json").read_text())
    assert analysis["task"] == "comparison" and "40/test_inferred_ood" in analysis["comparison"]
    # re-running one analysis keeps the other's rows (one file each)
    code, _, err = cli("analyze", tmp_path / "gpt", "--steps", "last", "--analyses", "trace")
    assert code == 0, err
    assert len(_tables(tmp_path / "gpt")) == len(table)
    # the composition task's analyses are refused by name, not run on comparisons
    code, _, err = cli("analyze", tmp_path / "gpt", "--analyses", "lens,queries")
    assert code == 2 and "composition-task analyses" in err
    code, _, err = cli("compare", f"{tmp_path / 'gpt'}@0", f"{tmp_path / 'gpt'}@40")
    assert code == 2 and "path comparison" in err
    code, _, err = cli("transfer", "--from", f"{tmp_path / 'gpt'}@last", "--out", tmp_path / "ft")
    assert code == 2 and "comparison dataset" in err and not (tmp_path / "ft").exists()

    _train(cli, tmp_path / "d", tmp_path / "trm", "trm", 10)
    assert yaml.safe_load((tmp_path / "trm" / "config.yaml").read_text())["model"]["config"]["seq_len"] == 7
    code, _, err = cli("analyze", tmp_path / "trm", "--steps", "last", "--analyses", "lens,trace")
    assert code == 0, err
    table = _tables(tmp_path / "trm")
    assert {"value_top1", "value_mrr", "label_top1"} <= set(table.metric)
    assert (table[table.metric == "label_top1"].position == 5).all()  # the trm reads the label at its own slot


def test_counterfactuals_change_the_label():
    ds = build_comparison(COMPARISON_PRESETS["smoke"])
    rows = ds.probe("test_inferred_iid")
    for entity, col in (("e1", 0), ("e2", 2)):
        keep, ctf = counterfactuals(ds, rows, entity)
        assert len(keep) > 0.9 * len(rows)
        assert (ctf[:, 5] != rows[keep, 5]).all()  # every counterfactual answers another label
        other = [c for c in (0, 2) if c != col][0]
        assert (ctf[:, other] == rows[keep, other]).all() and (ctf[:, col] != rows[keep, col]).all()


def test_a_model_that_never_compared_fails_the_measures_one_that_did_passes(tmp_path):
    """The controls: the same values, trained with comparisons and with atomic facts only (phi 0), 1,500 steps of
    the smoke gpt each. The atomic-only model must fail the comparison read (``label_top1``) and the causal tracing
    (no query it answers, so no ``patch_flip`` row); the model that trained on comparisons must pass both, its e1
    effect high at the embeddings and lower once the value has moved on (Wang et al.'s picture). The value lens is
    descriptive: an untrained model (step 0) must score near its chance 1 / V."""
    cfg = COMPARISON_PRESETS["smoke"]
    tables, final = {}, {}
    for name, phi in (("compared", cfg.phi), ("atomic_only", 0.0)):
        ds = build_comparison(dataclasses.replace(cfg, phi=phi))
        save(ds, tmp_path / name / "data")
        api.train(data=tmp_path / name / "data", out=tmp_path / name / "run", preset="smoke", quiet=True,
                  sets=["train.max_steps=1500", "train.eval_every=1500"])
        for step in (0, 1500):
            model, _ = load_model(tmp_path / name / "run", step, "cpu")
            tables[name, step] = comparison_table(model, ds, ds.probe("test_inferred_iid"), "test_inferred_iid")
        final[name] = json.loads((tmp_path / name / "run" / "summary.json").read_text())["final"]

    def values(name, step, metric, position=None):
        t = tables[name, step]
        t = t[(t.metric == metric) & ((t.position == position) if position is not None else True)]
        return t.sort_values("stage_index").value.tolist()

    assert final["atomic_only"]["id_atomic"] > 0.9 and final["atomic_only"]["test_inferred_iid"] == 0.0
    assert max(values("atomic_only", 1500, "label_top1")) <= 0.1
    assert values("atomic_only", 1500, "patch_flip") == []  # it answers no comparison: nothing to trace
    assert final["compared"]["test_inferred_iid"] > 0.6
    assert values("compared", 1500, "label_top1")[-1] > 0.6
    flip_e1 = tables["compared", 1500]
    flip_e1 = flip_e1[(flip_e1.metric == "patch_flip") & (flip_e1.position == 2)].sort_values("stage_index")
    assert flip_e1.n.iloc[0] >= 20 and flip_e1.value.iloc[0] >= 0.9 and flip_e1.value.iloc[-1] <= 0.7
    for name in tables:
        if name[1] == 0:  # untrained: no value decoded beyond chance (1 / 10 values), no label read
            assert max(values(*name, "value_top1")) <= 0.25 and max(values(*name, "label_top1")) <= 0.1
