"""Counterfactual queries for the causal analyses, drawn per example with a generator seeded by the example index
(as Wang et al.'s causal tracing does), so a query gets the same counterfactual in every checkpoint of a run (and,
for causal tracing, in every run; bridge-use patches avoid each dataset's own trained compositions).

- ``counterfactual_tokens``: Wang et al.'s causal tracing, one replacement token for h, r1 and r2 each.
- ``bridge_patches``: the other query of the interchange intervention that measures bridge use (``docs/methods.md``):
  a donor whose r1 state goes into an ID query (forward), or a recipient that takes the r1 state of a query whose
  first or second hop is OOD or new (reverse); never a trained composition where a memoriser could look one up.
"""

from __future__ import annotations

import numpy as np

from grokscope.data.store import Dataset, is_composition


def id_tail_table(ds: Dataset) -> np.ndarray:
    """[N, R] tail of every ID atomic fact of the pre-training graph, -1 elsewhere (OOD and new facts excluded)."""
    atomic = ds.arrays["atomic"]
    is_id = ~ds.arrays["atomic.is_ood"].astype(bool)
    if "atomic.is_new" in ds.arrays:
        is_id &= ~ds.arrays["atomic.is_new"].astype(bool)
    tail = np.full((ds.vocab.num_entities, ds.vocab.num_relations), -1, dtype=np.int64)
    tail[atomic[is_id, 0], atomic[is_id, 1]] = atomic[is_id, 4]
    return tail


def counterfactual_tokens(ds: Dataset, rows: np.ndarray, seed: int = 0, tries: int = 50) -> np.ndarray:
    """[n, 3] token id replacing h / r1 / r2 of each composition (-1 where no valid counterfactual exists).

    h': an entity with ID facts such that (h', r1, r2) has no answer or another one; r1': another ID relation of h
    whose bridge b' gives no or another answer via r2; r2': another ID relation of b whose tail is not t."""
    tail = id_tail_table(ds)
    heads = np.flatnonzero((tail >= 0).any(1))
    out = np.full((len(rows), 3), -1, dtype=np.int64)

    def answer(h, r1, r2):
        b = tail[h, r1]
        return -1 if b < 0 else tail[b, r2]

    for i, (h, r1, r2, b, t) in enumerate(np.asarray(rows).tolist()):
        rng = np.random.default_rng([seed, i])
        for _ in range(tries):
            h2 = int(rng.choice(heads))
            if h2 != h and answer(h2, r1, r2) != t:
                out[i, 0] = ds.vocab.entity_id(h2)
                break
        rels = [r for r in np.flatnonzero(tail[h] >= 0) if r != r1 and answer(h, r, r2) != t]
        if rels:
            out[i, 1] = ds.vocab.relation_id(int(rng.choice(rels)))
        rels = [r for r in np.flatnonzero(tail[b] >= 0) if r != r2 and tail[b, r] != t]
        if rels:
            out[i, 2] = ds.vocab.relation_id(int(rng.choice(rels)))
    return out


# Direction of a bridge-use patch (``bridge_patches``).
FORWARD, REVERSE, NO_PATCH = 0, 1, -1


def trained_compositions(ds: Dataset) -> set[tuple[int, int, int]]:
    """Every (h, r1, r2) a model of ``ds`` was trained on: its own training compositions, plus the parent's for a
    transfer set (a fine-tune starts from a model that saw them)."""
    rows = [ds.arrays["train_inferred"]]
    if "pretrain_inferred" in ds.arrays:
        rows.append(ds.arrays["pretrain_inferred"])
    keys = np.concatenate([r[:, :3] for r in rows]).astype(np.int64)
    return set(map(tuple, keys.tolist()))


def both_hops_id(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """[n] whether both hops of each composition are ID facts of the pre-training graph (neither OOD nor new)."""
    tail = id_tail_table(ds)
    rows = np.asarray(rows, dtype=np.int64)
    first = tail[rows[:, 0], rows[:, 1]] == rows[:, 3]
    second = tail[rows[:, 3].clip(0), rows[:, 2].clip(0)] == rows[:, 4]
    return first & second & is_composition(rows)


def bridge_patches(ds: Dataset, rows: np.ndarray, seed: int = 0, trained: set | None = None) -> dict[str, np.ndarray]:
    """The other query of each composition's bridge-use patch (``docs/methods.md``, "Bridge use"), as entity and
    relation indices.

    Both hops ID -> FORWARD: a donor (h', r1', r2) with b' = tail(h', r1') != b and t' = tail(b', r2) != t, whose
    composition (h', r1', r2) was never trained; its r1 state goes into the query, and the patch succeeds when the
    query's answer becomes t'.
    Otherwise (the first or second hop is OOD or new) -> REVERSE: a recipient (h*, r1*, r2*) with an ID first hop
    b* = tail(h*, r1*) != b, an ID fact (b, r2*) -> t*, tail(b*, r2*) != t*, and (h, r1, r2*) never trained; the
    query's r1 state goes into the recipient, and the patch succeeds when the recipient's answer becomes t* (the
    query's r1 state carried b, which the recipient's second hop read). Where every ID relation of b was trained
    with (h, r1) (the hop-1 augmentation of both-hop regimes trains them all), r2* is the query's own r2 and t* = t:
    (h, r1, r2) is the query itself, a test composition.

    In both directions the composition a memoriser would look up after the patch (the patched state's first hop with
    the receiving query's r2) was never trained, so a model whose r1 state carries only the identity of (h, r1) and
    answers from a table of trained compositions cannot pass. Returns arrays ``other`` [n, 5] (rows in storage
    layout, -1 where no patch exists), ``expect`` [n] (t' or t*, an entity index, -1 where none) and ``direction``
    [n] (FORWARD, REVERSE or NO_PATCH)."""
    rows = np.asarray(rows, dtype=np.int64)
    tail = id_tail_table(ds)
    trained = trained_compositions(ds) if trained is None else trained
    facts = np.argwhere(tail >= 0)  # [F, 2] (h', r1') of every ID fact
    bridges = tail[facts[:, 0], facts[:, 1]]
    forward = both_hops_id(ds, rows)
    n = len(rows)
    other = np.full((n, 5), -1, dtype=np.int64)
    expect = np.full(n, -1, dtype=np.int64)
    direction = np.full(n, NO_PATCH, dtype=np.int64)
    for i, (h, r1, r2, b, t) in enumerate(rows.tolist()):
        if r2 < 0 or b < 0:
            continue
        rng = np.random.default_rng([seed, i])
        if forward[i]:
            t2 = tail[bridges, r2]
            ok = np.flatnonzero((bridges != b) & (t2 >= 0) & (t2 != t))
            ok = [j for j in rng.permutation(ok)[:256].tolist()
                  if (int(facts[j, 0]), int(facts[j, 1]), r2) not in trained]
            if ok:
                j = ok[0]
                other[i] = (facts[j, 0], facts[j, 1], r2, bridges[j], t2[j])
                expect[i], direction[i] = t2[j], FORWARD
            continue
        # REVERSE: r2* among b's ID relations with (h, r1, r2*) untrained, else the query's own r2 (its composition
        # is the query itself, a test item); then a recipient first hop whose bridge has r2* as an ID fact.
        candidates = [r for r in rng.permutation(np.flatnonzero(tail[b] >= 0)).tolist() if (h, r1, r) not in trained]
        for r2s in candidates + [r2]:
            ts = t if r2s == r2 else tail[b, r2s]
            rec = tail[bridges, r2s]
            ok = np.flatnonzero((bridges != b) & (rec >= 0) & (rec != ts))
            if len(ok) and (h, r1, r2s) not in trained:
                j = int(rng.choice(ok))
                other[i] = (facts[j, 0], facts[j, 1], r2s, bridges[j], rec[j])
                expect[i], direction[i] = ts, REVERSE
                break
    return {"other": other, "expect": expect, "direction": direction}
