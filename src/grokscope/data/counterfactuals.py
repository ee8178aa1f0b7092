"""Counterfactual queries for the causal analyses, drawn per example with a generator seeded by the example index
(as Wang et al.'s causal tracing does), so a query gets the same counterfactual in every run and checkpoint.

- ``counterfactual_tokens``: Wang et al.'s causal tracing, one replacement token for h, r1 and r2 each.
- ``bridge_donors``: the donor query of the interchange intervention that measures bridge use (``docs/methods.md``):
  for a query (h, r1, r2) with bridge b and answer t, a pair (h', r1') whose bridge b' differs from b and for which
  (b', r2) is a known fact with answer t' != t. Both donor hops are ID facts, so the donor (h', r1', r2) is itself an
  ID composition.
"""

from __future__ import annotations

import numpy as np

from grokscope.data.store import Dataset


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


def bridge_donors(ds: Dataset, rows: np.ndarray, seed: int = 0, tries: int = 64) -> np.ndarray:
    """[n, 3] donor (h', r1', t') as token ids for each composition (h, r1, r2, b, t); -1 where none exists.

    b' = tail(h', r1') != b, and t' = tail(b', r2) exists and differs from t."""
    tail = id_tail_table(ds)
    facts = np.argwhere(tail >= 0)  # [F, 2] (h', r1') of every ID fact
    bridges = tail[facts[:, 0], facts[:, 1]]
    out = np.full((len(rows), 3), -1, dtype=np.int64)
    for i, (_h, _r1, r2, b, t) in enumerate(np.asarray(rows).tolist()):
        if r2 < 0:
            continue
        rng = np.random.default_rng([seed, i])
        pick = -1
        for j in rng.integers(0, len(facts), size=tries):  # a few random tries find one almost always ...
            b2 = bridges[j]
            if b2 != b and tail[b2, r2] >= 0 and tail[b2, r2] != t:
                pick = int(j)
                break
        if pick < 0:  # ... else the exhaustive filter decides
            ok = np.flatnonzero((bridges != b) & (tail[bridges, r2] >= 0) & (tail[bridges, r2] != t))
            if len(ok) == 0:
                continue
            pick = int(rng.choice(ok))
        h2, r1b = facts[pick]
        out[i] = (ds.vocab.entity_id(int(h2)), ds.vocab.relation_id(int(r1b)),
                  ds.vocab.entity_id(int(tail[bridges[pick], r2])))
    return out
