"""Dataset builder invariants (He et al. App. B-C, §5.1): paper-scale counts and property tests on random configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS, REGIMES, DataConfig
from grokscope.data.transfer import build_transfer, fact_lookup
from grokscope.data.vocab import Vocab

PAPER = DATA_PRESETS["paper"]


def _paths_key(rows):
    return {tuple(r) for r in rows[:, :3].tolist()}


@pytest.fixture(scope="module")
def paper_family():
    return {name: build_dataset(dataclasses.replace(PAPER, **dataclasses.asdict(aug)))
            for name, aug in REGIMES.items()}


@pytest.mark.parametrize("seed", [0, 7])
def test_paper_scale_counts(seed):
    ds = build_dataset(dataclasses.replace(PAPER, seed=seed))
    c, g = ds.meta["counts"], ds.meta["generation"]
    assert c["atomic"] == 40_000 and c["atomic/ood"] == 2_000
    assert g["two_hop_paths"] == 800_000
    assert abs(g["ood_test_all"] - 2_000) <= 200  # within 10% of N·d²·0.05²
    assert c["train_inferred"] == 684_000
    assert c["train_atomic"] + c["train_inferred"] == 724_000
    assert len(Vocab(2000, 200).original_tokens()) == 2_206
    for t in ("id_atomic", "train_inferred", "test_inferred_iid"):
        assert c[f"probe/{t}"] == 3_000
    assert c["probe/ood_atomic"] == 2_000


def test_paper_scale_augmentation_counts(paper_family):
    # The added compositions the authors' generator produced for each regime, within 15%.
    expected = {"both_full": 44_189, "both_half": 11_502, "first_full": 22_697, "second_full": 21_492}
    for name, n in expected.items():
        c = paper_family[name].meta["counts"]
        added = c["train_inferred/aug_hop1"] + c["train_inferred/aug_hop2"]
        assert abs(added - n) <= 0.15 * n, (name, added, n)
        assert c["train_inferred"] == 684_000 + added
    assert paper_family["first_full"].meta["counts"]["train_inferred/aug_hop2"] == 0
    assert paper_family["second_full"].meta["counts"]["train_inferred/aug_hop1"] == 0


def test_paper_scale_transfer(paper_family):
    tds = build_transfer(paper_family["both_half"], PAPER)
    kept = tds.meta["kept_old"]
    assert kept["atomic"] + kept["inferred"] == 8_000
    assert tds.meta["counts"]["probe/atomic_new"] == 2_000
    assert tds.meta["counts"]["train_atomic"] + tds.meta["counts"]["train_inferred"] == 10_000
    assert tds.meta["counts"]["probe/test_inferred_new"] == 3_000
    # The original kept ~220 atomic facts and found 459 faithful mixed probes; same order here.
    assert 150 <= kept["atomic"] <= 300
    assert 200 <= tds.meta["counts"]["probe/test_inferred_new_mix"] <= 800
    assert tds.meta["counts"]["probe/test_inferred_new_mix_powered"] == 3_000


# ---------------------------------------------------------------- property tests on random small configs
configs = st.builds(
    lambda n, extra_r, d, phi_frac, seed, h1r, h1k, h2r, h2k: DataConfig(
        num_entities=n, num_relations=d + extra_r, out_degree=d, phi=round(phi_frac * 0.9 * d, 2), seed=seed,
        ood_ratio=0.1, id_test_prob=0.05, h1ratio=h1r, h1k=h1k, h2ratio=h2r, h2k=h2k, probe_cap=100),
    n=st.integers(20, 60), extra_r=st.integers(1, 10), d=st.integers(3, 8), phi_frac=st.floats(0.1, 0.9),
    seed=st.integers(0, 10_000), h1r=st.sampled_from([0.0, 0.5, 1.0]), h1k=st.integers(0, 5),
    h2r=st.sampled_from([0.0, 0.5, 1.0]), h2k=st.integers(0, 5))


def _check_dataset(ds):
    atomic = ds.arrays["atomic"]
    n, r = ds.vocab.num_entities, ds.vocab.num_relations
    lookup = fact_lookup(atomic, n, r)
    is_ood = ds.arrays["atomic.is_ood"].astype(bool)
    # every composition is derivable from two atomic facts through its stored bridge
    comps = [ds.arrays["train_inferred"], ds.arrays["valid"]] + [
        ds.probe(t) for t in ds.probe_types if "inferred" in t]
    for rows in comps:
        f1, f2 = lookup[rows[:, 0], rows[:, 1]], lookup[rows[:, 3], rows[:, 2]]
        assert (f1 >= 0).all() and (f2 >= 0).all()
        assert (atomic[f1, 4] == rows[:, 3]).all() and (atomic[f2, 4] == rows[:, 4]).all()
    train = ds.arrays["train_inferred"]
    f1, f2 = lookup[train[:, 0], train[:, 1]], lookup[train[:, 3], train[:, 2]]
    # no OOD test (both hops OOD) composition is trained; mixed ones only as augmentation, one OOD hop each
    assert not (is_ood[f1] & is_ood[f2]).any()
    src = ds.arrays["train_inferred.source"]
    assert (is_ood[f1] == (src == 1)).all() and (is_ood[f2] == (src == 2)).all()
    assert len(_paths_key(train)) == len(train)  # no duplicates
    assert not _paths_key(train) & _paths_key(ds.arrays["valid"])
    assert not _paths_key(train) & _paths_key(ds.probe("test_inferred_iid"))
    v = ds.arrays["valid"]
    assert (is_ood[lookup[v[:, 0], v[:, 1]]] & is_ood[lookup[v[:, 3], v[:, 2]]]).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs)
def test_random_configs_invariants(cfg):
    ds = build_dataset(cfg)
    _check_dataset(ds)
    assert ds.meta["counts"]["train_inferred/aug_hop1"] + ds.meta["counts"]["train_inferred/aug_hop2"] + \
        cfg.n_train_inferred == ds.meta["counts"]["train_inferred"]
    # fingerprints: same config + seed -> same; another seed -> different
    assert build_dataset(cfg).fingerprint() == ds.fingerprint()
    assert build_dataset(dataclasses.replace(cfg, seed=cfg.seed + 1)).fingerprint() != ds.fingerprint()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs)
def test_random_transfer_invariants(cfg):
    parent = build_dataset(cfg)
    tds = build_transfer(parent, cfg)
    _check_dataset(tds)
    old = parent.arrays["atomic"]
    is_new = tds.arrays["atomic.is_new"].astype(bool)
    new = tds.arrays["atomic"][is_new]
    # new facts use (head, relation) pairs unused before, and are distinct
    old_pairs = {(h, r) for h, r in old[:, :2].tolist()}
    new_pairs = [(h, r) for h, r in new[:, :2].tolist()]
    assert not old_pairs & set(new_pairs) and len(set(new_pairs)) == len(new_pairs)
    assert len(new) == cfg.n_new_atomic
    # kept items fit the budget exactly when possible; no trained composition involves a new fact
    kept = tds.meta["kept_old"]
    assert kept["atomic"] + kept["inferred"] <= cfg.n_keep_old
    assert _paths_key(tds.arrays["train_inferred"]) <= _paths_key(parent.arrays["train_inferred"])
    new_set = {tuple(x) for x in new[:, [0, 1]].tolist()}
    for rows in (tds.probe("test_inferred_new"),):
        assert all((h, r1) in new_set and (b, r2) in new_set for h, r1, r2, b, _ in rows.tolist())
    for name in ("test_inferred_new_mix", "test_inferred_new_mix_powered"):
        rows, cat = tds.probe(name), tds.arrays[f"probe.{name}.category"]
        first_new = np.array([(h, r1) in new_set for h, r1 in rows[:, :2].tolist()], dtype=bool)
        second_new = np.array([(b, r2) in new_set for b, r2 in rows[:, [3, 2]].tolist()], dtype=bool)
        assert (first_new ^ second_new).all()
        assert ((cat == 1) == first_new).all()


def test_closure_selection_keeps_dependents(smoke_dataset, smoke_cfg):
    tds = build_transfer(smoke_dataset, smoke_cfg)
    kept_atomic = {(h, r) for h, r in tds.arrays["train_atomic"][~tds.arrays["train_atomic.is_new"]][:, :2].tolist()}
    kept_inferred = _paths_key(tds.arrays["train_inferred"])
    # every old composition that uses a kept atomic fact (as either hop) is kept too
    for h, r1, r2, b, _ in smoke_dataset.arrays["train_inferred"].tolist():
        if (h, r1) in kept_atomic or (b, r2) in kept_atomic:
            assert (h, r1, r2) in kept_inferred
    assert tds.meta["kept_old"]["atomic"] + tds.meta["kept_old"]["inferred"] == smoke_cfg.n_keep_old


def test_the_kept_draw_raises_new_old_without_changing_what_it_is():
    """``transfer_draw=kept`` draws new facts' tails among the kept old facts' heads: He et al.'s new+old category
    (a new first hop, then a kept old fact that is an ID probe) grows several-fold, while every query still is one, the
    fine-tuning data (kept items) is the same, and the authors' uniform draw stays the default."""
    cfg = dataclasses.replace(DATA_PRESETS["micro"], out_degree=19)
    parent = build_dataset(cfg)
    uniform, kept = (build_transfer(parent, dataclasses.replace(cfg, transfer_draw=d)) for d in ("uniform", "kept"))
    assert DataConfig().transfer_draw == "uniform"

    def faithful_new_old(tds):
        cat, ok = tds.arrays["probe.test_inferred_new_mix.category"], tds.arrays[
            "probe.test_inferred_new_mix.old_in_id_probe"].astype(bool)
        return tds.probe("test_inferred_new_mix")[(cat == 1) & ok]

    assert len(faithful_new_old(kept)) >= 3 * len(faithful_new_old(uniform))
    kept_old = {tuple(x) for x in kept.arrays["train_atomic"][~kept.arrays["train_atomic.is_new"].astype(bool)][
        :, [0, 1]].tolist()}
    assert all((b, r2) in kept_old for _, _, r2, b, _ in faithful_new_old(kept).tolist())
    np.testing.assert_array_equal(uniform.arrays["train_inferred"], kept.arrays["train_inferred"])
    assert kept.meta["config"]["transfer_draw"] == "kept"
    with pytest.raises(Exception, match="transfer_draw"):
        build_transfer(parent, dataclasses.replace(cfg, transfer_draw="biased"))


def test_retention_sets_split_the_old_facts_by_how_they_are_replayed(smoke_dataset, smoke_cfg):
    tds = build_transfer(smoke_dataset, smoke_cfg)
    sets = {k: {tuple(x) for x in tds.probe(k)[:, [0, 1]].tolist()}
            for k in ("atomic_kept", "atomic_hop_replayed", "atomic_not_replayed")}
    old = {tuple(x) for x in smoke_dataset.arrays["atomic"][:, [0, 1]].tolist()}
    assert set.union(*sets.values()) == old and sum(len(v) for v in sets.values()) == len(old)
    kept = {tuple(x) for x in tds.arrays["train_atomic"][~tds.arrays["train_atomic.is_new"].astype(bool)][
        :, [0, 1]].tolist()}
    hops = {(h, r1) for h, r1, _, _, _ in tds.arrays["train_inferred"].tolist()} | {
        (b, r2) for _, _, r2, b, _ in tds.arrays["train_inferred"].tolist()}
    assert sets["atomic_kept"] == kept and sets["atomic_hop_replayed"] == hops - kept
    assert sets["atomic_hop_replayed"] and sets["atomic_not_replayed"]


def test_encoding_matches_original_strings(smoke_dataset):
    vocab = smoke_dataset.vocab
    rows = np.array([[3, 1, -1, -1, 7], [3, 1, 4, 7, 9]])
    seqs = vocab.encode(rows)
    assert vocab.decode(seqs[0]) == "<e_3><r_1><e_7></a>"
    assert vocab.decode(seqs[1]) == "<e_3><r_1><r_4><e_9></a>"
    assert seqs[0, 4] == vocab.pad_id and vocab.d_vocab == 50 + 20 + 7
