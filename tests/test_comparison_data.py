"""Wang et al.'s comparison task: the generator's splits, the encoding, the authors' format both ways, the CLI and its
bad input."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grokscope.data.comparison import COMPARISON_PRESETS, ComparisonConfig, build_comparison
from grokscope.data.vocab import comparison_labels as labels
from grokscope.data.encoding import encode
from grokscope.data.store import load, save
from grokscope.errors import GrokscopeError


def _unordered(rows: np.ndarray) -> set[tuple[int, int, int]]:
    return {(a, min(e1, e2), max(e1, e2)) for e1, a, e2 in rows[:, :3].tolist()}


def _check(ds, cfg: ComparisonConfig) -> None:
    """Every rule of the notebook's generator, checked on the stored arrays."""
    n, a, v = cfg.num_entities, cfg.num_attributes, cfg.num_values
    atomic, is_ood = ds.arrays["atomic"], ds.arrays["atomic.is_ood"].astype(bool)
    # one atomic fact per (entity, attribute), every one trained; round(id_ratio * N) ID entities per attribute
    assert len(atomic) == n * a and len({(e, k) for e, k in atomic[:, :2].tolist()}) == n * a
    assert (atomic[:, 2:5] == -1).all() and ((atomic[:, 5] >= 0) & (atomic[:, 5] < v)).all()
    assert (ds.arrays["train_atomic"] == atomic).all()
    for k in range(a):
        assert int((~is_ood[atomic[:, 1] == k]).sum()) == cfg.n_id_entities
    value = np.full((n, a), -1)
    value[atomic[:, 0], atomic[:, 1]] = atomic[:, 5]
    ood = np.zeros((n, a), dtype=bool)
    ood[atomic[:, 0], atomic[:, 1]] = is_ood
    comparisons = {name: ds.arrays[name] for name in ("train_inferred", "valid")}
    comparisons.update({f"probe.{t}": ds.probe(t) for t in ("train_inferred", "test_inferred_iid",
                                                              "test_inferred_ood")})
    for name, rows in comparisons.items():
        e1, k, e2, v1, v2, label = rows.T
        assert (e1 != e2).all(), name
        assert (v1 == value[e1, k]).all() and (v2 == value[e2, k]).all(), name  # the stored values are the facts'
        assert (label == labels(v1, v2)).all() and set(label.tolist()) <= {0, 1, 2}, name
        both_ood = ood[e1, k] & ood[e2, k]
        both_id = ~ood[e1, k] & ~ood[e2, k]
        assert (both_ood if "ood" in name or name == "valid" else both_id).all(), name  # no ID/OOD mixes
    train = ds.arrays["train_inferred"]
    assert len(train) == cfg.n_train_inferred
    assert len({tuple(r) for r in train[:, :3].tolist()}) == len(train)  # no ordered item twice
    # held-out pairs are held out in both orders: no ID test pair is trained in either order
    assert not _unordered(train) & _unordered(ds.probe("test_inferred_iid"))
    assert (ds.probe("test_inferred_ood") == ds.arrays["valid"]).all()
    assert _unordered(ds.probe("train_inferred")) <= _unordered(train)


configs = st.builds(
    ComparisonConfig,
    num_entities=st.integers(8, 60), num_attributes=st.integers(1, 6), num_values=st.integers(2, 12),
    id_ratio=st.sampled_from([0.5, 0.8, 0.9]), phi=st.sampled_from([0.0, 0.5, 2.0, 3.6]),
    id_test_prob=st.sampled_from([0.0, 0.1, 0.3]), probe_cap=st.integers(5, 300), seed=st.integers(0, 50))


def _build_or_refuse(cfg: ComparisonConfig):
    """The dataset, or None when the config is refused: by ``problems()`` up front, or, for a phi within 1% of the
    expected pool, by the drawn pool being smaller than the sample (the exact check after the draw)."""
    if cfg.problems():
        with pytest.raises(GrokscopeError):
            build_comparison(cfg)
        return None
    try:
        return build_comparison(cfg)
    except GrokscopeError as exc:
        assert "the ID pool has only" in str(exc)
        return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs)
def test_random_configs_keep_every_rule_of_the_generator(cfg):
    ds = _build_or_refuse(cfg)
    if ds is None:
        return
    _check(ds, cfg)
    assert build_comparison(cfg).fingerprint() == ds.fingerprint()
    other = _build_or_refuse(dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert other is None or other.fingerprint() != ds.fingerprint()


def test_paper_preset_has_the_notebooks_sizes():
    cfg = COMPARISON_PRESETS["paper"]
    ds = build_comparison(cfg)
    _check(ds, cfg)
    counts = ds.meta["counts"]
    # 1,000 entities x 20 attributes; 900 ID entities per attribute; phi 7.2 x 18,000 ID atomic facts
    assert counts["atomic"] == 20_000 and counts["atomic/ood"] == 2_000
    assert counts["train_inferred"] == round(7.2 * 18_000)
    gen = ds.meta["generation"]
    assert gen["ood_test_all"] == 20 * 100 * 99  # every ordered pair of the 100 OOD entities of each attribute
    # about 10% of the 20 x C(900, 2) ID pairs are held out (both orders)
    assert abs(gen["test_inferred_iid_all"] / (20 * 900 * 899) - 0.1) < 0.005
    assert all(counts[f"probe/{t}"] == 3000 for t in ("id_atomic", "train_inferred", "test_inferred_iid",
                                                      "test_inferred_ood"))
    assert counts["probe/ood_atomic"] == 2_000


def test_encoding_is_the_notebooks_strings():
    ds = build_comparison(COMPARISON_PRESETS["smoke"])
    rows = np.concatenate([ds.probe("id_atomic")[:3], ds.probe("test_inferred_ood")[:3]])
    enc = encode(ds, rows)
    assert enc.seq.shape == (6, 7) and ds.vocab.seq_len == 7
    for row, seq, prompt_len, at, targets in zip(rows.tolist(), enc.seq.tolist(), enc.prompt_len.tolist(),
                                                 enc.at.tolist(), enc.targets.tolist()):
        e1, a, e2, _, _, answer = row
        if e2 < 0:
            assert ds.vocab.decode(seq) == f"<e_{e1}><attr_{a}><{answer}></a>" and prompt_len == 2
        else:
            assert ds.vocab.decode(seq) == f"<attr_{a}><q><e_{e1}><mask><e_{e2}><attr_{a}_{answer}></a>"
            assert prompt_len == 5
        assert at == [prompt_len - 1, prompt_len] and targets == [seq[prompt_len], ds.vocab.end_id]
    assert (enc.bridge == -1).all()  # no bridge entity: the composition lens and bridge use skip these sets
    vocab = ds.vocab
    assert len(set(vocab.tokens())) == vocab.d_vocab
    # the last id is the unused </q>, the one the trm's quirk_vocab_offset leaves without a row
    assert vocab.tokens()[-1] == "</q>" and vocab.special_id("</q>") == vocab.d_vocab - 1
    assert vocab.label_id(vocab.num_attributes - 1, 2) < vocab.special_id("<mask>")
    assert all(vocab.tokens()[vocab.label_id(a, k)] == f"<attr_{a}_{k}>" for a in range(4) for k in range(3))
    assert vocab.original_tokens()[-3 * vocab.num_attributes - 6:][:6] == ["<mask>", "<sep>", "<a>", "</a>", "<q>",
                                                                           "</q>"]  # the notebook's order


def test_build_show_export_import_round_trip(cli, tmp_path):
    out = tmp_path / "ds"
    code, stdout, err = cli("data", "build", "--task", "comparison", "--preset", "smoke", "--set", "phi=2.0",
                            "--seed", "3", "--out", out)
    assert code == 0, err
    assert "comparison task" in stdout
    code, stdout, _ = cli("data", "show", out, "--json")
    info = json.loads(stdout)
    assert info["task"] == "comparison" and info["config"]["phi"] == 2.0 and info["config"]["seed"] == 3
    assert info["fingerprint"] == load(out).fingerprint()
    code, stdout, err = cli("data", "export", out, "--out", tmp_path / "orig")
    assert code == 0, err
    assert "vocab.json" in stdout and "id_facts.json" not in stdout
    train = json.loads((tmp_path / "orig" / "train.json").read_text())
    assert train[0]["type"] in ("id_atomic", "ood_atomic")
    assert re.fullmatch(r"<e_\d+><attr_\d+>", train[0]["input_text"])
    assert re.fullmatch(r"<e_\d+><attr_\d+><\d+></a>", train[0]["target_text"])
    comp = train[-1]
    assert comp["type"] == "train_inferred"
    assert re.fullmatch(r"(<attr_(\d+)>)<q><e_\d+><mask><e_\d+>", comp["input_text"])
    attr = re.match(r"<attr_(\d+)>", comp["input_text"]).group(1)
    assert re.fullmatch(re.escape(comp["input_text"]) + rf"<attr_{attr}_[012]></a>", comp["target_text"])
    code, _, err = cli("data", "import", tmp_path / "orig", "--out", tmp_path / "back")
    assert code == 0, err
    back = load(tmp_path / "back")
    assert back.task == "comparison" and back.fingerprint() == info["fingerprint"]
    assert back.meta["config"]["phi"] == pytest.approx(load(out).meta["counts"]["train_inferred"] / (
        COMPARISON_PRESETS["smoke"].n_id_atomic))


def test_import_reads_a_folder_in_the_notebooks_layout(cli, tmp_path):
    """A folder as ``comparison.ipynb`` writes it (atomic facts typed, both orders of a pair, labels per
    attribute), written here by hand: the import recovers the values and the OOD facts."""
    folder = tmp_path / "comparison.3.1.0"
    folder.mkdir()
    values = {(0, 0): 5, (1, 0): 5, (2, 0): 1}  # entities 0 and 1 ID, entity 2 OOD for attribute 0
    vocab = ["<e_0>", "<e_1>", "<e_2>", "<attr_0>"] + [f"<{v}>" for v in range(6)] + \
        ["<mask>", "<sep>", "<a>", "</a>", "<q>", "</q>", "<attr_0_0>", "<attr_0_1>", "<attr_0_2>"]

    def atomic(e, t):
        return {"input_text": f"<e_{e}><attr_0>", "target_text": f"<e_{e}><attr_0><{values[(e, 0)]}></a>", "type": t}

    def comp(e1, e2, t):
        label = 0 if values[(e1, 0)] < values[(e2, 0)] else 1 if values[(e1, 0)] == values[(e2, 0)] else 2
        inp = f"<attr_0><q><e_{e1}><mask><e_{e2}>"
        return {"input_text": inp, "target_text": f"{inp}<attr_0_{label}></a>", "type": t}

    files = {"train.json": [atomic(0, "id_atomic"), atomic(1, "id_atomic"), atomic(2, "ood_atomic"),
                            comp(0, 1, "train_inferred"), comp(1, 0, "train_inferred")],
             "valid.json": [], "test.json": [atomic(2, "ood_atomic"), comp(0, 1, "train_inferred")],
             "vocab.json": vocab}
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    code, _, err = cli("data", "import", folder, "--out", tmp_path / "ds")
    assert code == 0, err
    ds = load(tmp_path / "ds")
    assert ds.task == "comparison" and ds.arrays["atomic.is_ood"].tolist() == [False, False, True]
    assert ds.arrays["train_inferred"].tolist() == [[0, 0, 1, 5, 5, 1], [1, 0, 0, 5, 5, 1]]
    assert ds.meta["config"]["phi"] == 1.0
    # a comparison whose entity has no atomic fact cannot get its values: refused by name
    files["train.json"] = files["train.json"][1:]
    (folder / "train.json").write_text(json.dumps(files["train.json"]))
    code, _, err = cli("data", "import", folder, "--out", tmp_path / "ds2")
    assert code == 2 and "no atomic fact" in err


@pytest.mark.parametrize("args, needle", [
    (["--regime", "natural"], "--regime is a composition-task option"),
    (["--transfer"], "--transfer is a composition-task option"),
    (["--set", "phi=40"], "phi 40.0 is infeasible"),
    (["--set", "num_relations=5"], "num_relations"),
    (["--set", "id_ratio=0.01"], "fewer than 2 ID entities"),
    (["--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_comparison_input_is_one_line_exit_2(cli, tmp_path, args, needle):
    base = ["data", "build", "--task", "comparison", "--out", tmp_path / "ds"]
    code, _, err = cli(*base, *(args if "--preset" in args else ["--preset", "smoke", *args]))
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "ds").exists()


def test_a_comparison_dataset_has_no_transfer_set_and_a_damaged_one_is_refused(cli, tmp_path):
    ds = build_comparison(COMPARISON_PRESETS["smoke"])
    save(ds, tmp_path / "ds")
    code, _, err = cli("data", "transfer", tmp_path / "ds", "--out", tmp_path / "t")
    assert code == 2 and "comparison dataset" in err
    # rows of the wrong width (a composition array dropped into a comparison folder) are refused by name
    ds.arrays["valid"] = ds.arrays["valid"][:, :5]
    save(ds, tmp_path / "bad")
    with pytest.raises(GrokscopeError, match=r"array valid has shape .*expected \[n, 6\]"):
        load(tmp_path / "bad", verify=False)
    vocab = json.loads((tmp_path / "ds" / "vocab.json").read_text())
    (tmp_path / "ds" / "vocab.json").write_text(json.dumps({**vocab, "task": "sorting"}))
    with pytest.raises(GrokscopeError, match="unknown task 'sorting'"):
        load(tmp_path / "ds")


def test_an_atomic_only_dataset_round_trips_and_a_wrong_label_is_refused(cli, tmp_path):
    """phi 0 (the control's data) has an empty train_inferred probe: it comes back empty, same fingerprint."""
    ds = build_comparison(dataclasses.replace(COMPARISON_PRESETS["smoke"], phi=0.0))
    assert len(ds.arrays["train_inferred"]) == 0 and len(ds.probe("train_inferred")) == 0
    save(ds, tmp_path / "ds")
    assert cli("data", "export", tmp_path / "ds", "--out", tmp_path / "orig")[0] == 0
    code, _, err = cli("data", "import", tmp_path / "orig", "--out", tmp_path / "back")
    assert code == 0, err
    assert load(tmp_path / "back").fingerprint() == ds.fingerprint()
    # a comparison whose label is not the one its values give is refused by name, on load and on import
    bad = build_comparison(COMPARISON_PRESETS["smoke"])
    bad.arrays["valid"] = bad.arrays["valid"].copy()
    bad.arrays["valid"][0, 5] = (bad.arrays["valid"][0, 5] + 1) % 3
    save(bad, tmp_path / "bad")
    with pytest.raises(GrokscopeError, match="label is not the one its two values give"):
        load(tmp_path / "bad", verify=False)
    items = json.loads((tmp_path / "orig" / "test.json").read_text())
    atomic = next(i for i in items if i["type"] == "id_atomic")
    atomic["target_text"] = atomic["input_text"] + "<99></a>"  # a value the vocabulary does not have
    (tmp_path / "orig" / "test.json").write_text(json.dumps(items))
    code, _, err = cli("data", "import", tmp_path / "orig", "--out", tmp_path / "back2")
    assert code == 2 and "Traceback" not in err
