"""The ``grokscope data`` verbs: build/show/export/import/transfer, bad input and crash safety."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from grokscope.data import store
from grokscope.data.store import load


def test_build_show_json(cli, tmp_path):
    out = tmp_path / "ds"
    code, stdout, _ = cli("data", "build", "--preset", "smoke", "--regime", "both_full", "--out", out)
    assert code == 0 and "fingerprint" in stdout
    code, stdout, _ = cli("data", "show", out, "--json")
    info = json.loads(stdout)
    assert code == 0
    assert info["counts"]["train_atomic"] == 250
    assert info["counts"]["train_inferred/aug_hop1"] > 0
    assert info["fingerprint"] == load(out).fingerprint()


def test_set_and_aug_overrides(cli, tmp_path):
    out = tmp_path / "ds"
    code, _, err = cli("data", "build", "--preset", "smoke", "--aug", "h1ratio=1,h1k=2", "--set",
                       "num_entities=40", "--seed", "3", "--out", out)
    assert code == 0, err
    ds = load(out)
    assert ds.meta["config"]["num_entities"] == 40 and ds.meta["config"]["seed"] == 3
    assert ds.meta["counts"]["train_inferred/aug_hop2"] == 0


def test_infeasible_config_lists_every_problem(cli, tmp_path):
    code, out, err = cli("data", "build", "--preset", "smoke", "--out", tmp_path / "x", "--set",
                         "out_degree=30,ood_ratio=1.5,num_entities=-1,bogus=3", "--aug", "h2ratio=2")
    assert code == 2
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in err
    assert any("bogus" in line for line in lines)
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", tmp_path / "x",
                       "--set", "out_degree=30,ood_ratio=1.5,num_entities=-1", "--aug", "h2ratio=2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 4, lines  # all problems at once, one line each
    assert any("out_degree 30 exceeds num_relations 20" in line for line in lines)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, needle", [
    (["--set", "phi=4.9"], "phi 4.9 is infeasible"),
    (["--regime", "sideways"], "unknown regime"),
    (["--preset", "huge"], "unknown preset"),
    (["--set", "phi=abc"], "is not a number"),
    (["--set", "num_relations=4", "--transfer"], "exceeds num_relations"),
    (["--set", "num_relations=5,out_degree=5", "--transfer"], "unused (entity, relation) pairs"),
])
def test_bad_input_one_line_exit_2(cli, tmp_path, args, needle):
    code, _, err = cli("data", "build", "--out", tmp_path / "x", *(["--preset", "smoke"] if "--preset" not in
                                                                  args else []), *args)
    assert code == 2 and needle in err and "Traceback" not in err


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "grokscope.cli", "data", "show", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_non_empty_output_needs_force(cli, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", out)
    assert code == 2 and "--force" in err
    assert (out / "precious.txt").read_text() == "keep me"
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", out, "--force")
    assert code == 2 and "will not replace" in err  # --force replaces only a dataset, never a user's folder
    assert (out / "precious.txt").read_text() == "keep me"
    ds = tmp_path / "ds2"
    assert cli("data", "build", "--preset", "smoke", "--out", ds)[0] == 0
    code, _, err = cli("data", "build", "--preset", "smoke", "--seed", "3", "--out", ds)
    assert code == 2 and "holds a dataset" in err and "--force" in err
    assert cli("data", "build", "--preset", "smoke", "--seed", "3", "--out", ds, "--force")[0] == 0
    assert load(ds).meta["seed"] == 3


def test_killed_build_leaves_no_complete_looking_folder(cli, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    assert cli("data", "build", "--preset", "smoke", "--out", out)[0] == 0
    before = load(out).fingerprint()

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # stands for SIGINT/SIGKILL midway through writing

    monkeypatch.setattr(store.np, "savez", killed)
    code, _, _ = cli("data", "build", "--preset", "smoke", "--seed", "5", "--out", out, "--force")
    assert code == 130
    assert load(out).fingerprint() == before  # the old dataset is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folder left behind
    code, _, _ = cli("data", "build", "--preset", "smoke", "--out", tmp_path / "fresh")
    assert code == 130 and not (tmp_path / "fresh").exists()


def test_export_import_round_trip(cli, tmp_path):
    ds_dir, exp, back = tmp_path / "ds", tmp_path / "orig", tmp_path / "back"
    assert cli("data", "build", "--preset", "smoke", "--regime", "both_full", "--out", ds_dir)[0] == 0
    assert cli("data", "export", ds_dir, "--format", "original", "--out", exp)[0] == 0
    train = json.loads((exp / "train.json").read_text())
    test = json.loads((exp / "test.json").read_text())
    assert train[0]["target_text"].endswith("</a>") and train[0]["target_text"].startswith(train[0]["input_text"])
    assert {t["type"] for t in test} == {"id_atomic", "ood_atomic", "train_inferred", "test_inferred_iid",
                                         "test_inferred_ood"}
    assert len(json.loads((exp / "vocab.json").read_text())) == 50 + 20 + 6
    code, _, err = cli("data", "import", exp, "--out", back)
    assert code == 0, err
    a, b = load(ds_dir), load(back)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.arrays["train_inferred"][:, 3], b.arrays["train_inferred"][:, 3])
    # Wang's generator writes no ood_facts.json: OOD flags then come from the ood_atomic probes.
    (exp / "ood_facts.json").unlink()
    (exp / "id_facts.json").unlink()
    assert cli("data", "import", exp, "--out", tmp_path / "back2")[0] == 0
    assert load(tmp_path / "back2").fingerprint() == a.fingerprint()


def test_import_rejects_malformed(cli, tmp_path):
    exp = tmp_path / "orig"
    exp.mkdir()
    code, _, err = cli("data", "import", exp, "--out", tmp_path / "x")
    assert code == 2 and "lacks train.json" in err
    (exp / "vocab.json").write_text(json.dumps({"not": "a list"}))
    for name in ("train.json", "valid.json", "test.json"):
        (exp / name).write_text("[]")
    code, _, err = cli("data", "import", exp, "--out", tmp_path / "x")
    assert code == 2 and "vocab.json" in err and "Traceback" not in err
    for name in ("valid.json", "test.json"):
        (exp / name).write_text("[]")
    (exp / "vocab.json").write_text(json.dumps(["<e_0>", "<r_0>"]))
    (exp / "train.json").write_text(json.dumps([{"input_text": "<e_0><r_9>", "target_text": "<e_0><r_9><e_0>"}]))
    code, _, err = cli("data", "import", exp, "--out", tmp_path / "x")
    assert code == 2 and "train.json item 0" in err and not (tmp_path / "x").exists()


def test_transfer_from_existing_dataset(cli, tmp_path):
    parent, child = tmp_path / "ds", tmp_path / "ds_t"
    assert cli("data", "build", "--preset", "smoke", "--out", parent)[0] == 0
    code, _, err = cli("data", "transfer", parent, "--out", child)
    assert code == 0, err
    t = load(child)
    assert t.meta["parent_fingerprint"] == load(parent).fingerprint()
    assert t.meta["counts"]["probe/atomic_new"] == 50
    # same result as building with --transfer in one go
    assert cli("data", "build", "--preset", "smoke", "--transfer", "--out", tmp_path / "direct")[0] == 0
    assert load(tmp_path / "direct").fingerprint() == t.fingerprint()
    code, _, err = cli("data", "transfer", child, "--out", tmp_path / "again")
    assert code == 2 and "already a transfer dataset" in err


def test_family(cli, tmp_path):
    code, out, err = cli("data", "family", "--preset", "smoke", "--out", tmp_path / "fam")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "fam").iterdir() if p.name != ".lock")  # the lock is not data
    assert names == sorted([*(r for r in ("natural", "both_full", "both_half", "first_full", "second_full")),
                            *(f"{r}_transfer" for r in ("natural", "both_full", "both_half", "first_full",
                                                         "second_full"))])
    # the id_atomic probes are shared across the regimes of one graph
    np.testing.assert_array_equal(load(tmp_path / "fam" / "natural").probe("id_atomic"),
                                  load(tmp_path / "fam" / "second_full").probe("id_atomic"))
    code, out, _ = cli("data", "family", "--preset", "micro", "--out", tmp_path / "micro")
    assert code == 0 and "transfer sets skipped" in out
    code, _, err = cli("data", "family", "--preset", "micro", "--transfer", "--out", tmp_path / "m2")
    assert code == 2 and "num_relations=40" in err
