"""Transfer experiments: category split, fine-tune vs control initialisation, refusal of mismatched data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from grokscope import artifacts, runs
from grokscope.data.store import Dataset, load
from grokscope.data.vocab import Vocab
from grokscope.models.registry import build_model, config_from_dict
from grokscope.transfer import category_rows, transfer_summary


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
    assert summary["final"]["new_old"] == {"exact_match": 0.95, "bridge_found": 1.0, "bridge_use": None, "n": 1}


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
    assert cfg["train"]["lr"] == pytest.approx(artifacts.read_config(parent)["train"]["lr"] / 2)
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
