"""Fact-level ("composition") augmentation of He et al. (App. C).

Selected OOD atomic facts get compositional supervision: each exposed OOD hop is paired with ID partner hops, so
every added composition has exactly one OOD and one ID hop and no OOD test query (both hops OOD) is ever trained.
Only OOD facts that occur in the OOD test compositions (the hop universes U1, U2) are ever exposed.
"""

from __future__ import annotations

import numpy as np

from grokscope.data.composition import Paths
from grokscope.data.config import Augmentation
from grokscope.data.kg import STREAM_AUG, KnowledgeGraph, stream

SOURCE_NATURAL, SOURCE_AUG_HOP1, SOURCE_AUG_HOP2 = 0, 1, 2


def _pick_per_group(rng: np.random.Generator, group: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask choosing min(k, group size) distinct members uniformly at random within each group."""
    if len(group) == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((rng.random(len(group)), group))  # random order inside each group
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    rank = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    keep = np.zeros(len(group), dtype=bool)
    keep[order[rank < k]] = True
    return keep


def hop_universes(valid: Paths, kg: KnowledgeGraph) -> tuple[np.ndarray, np.ndarray]:
    """U1, U2: the OOD facts used as hop 1 / hop 2 by the OOD test queries (step 3), sorted fact indices."""
    ood = kg.is_ood.ravel()
    u1 = np.unique(valid.f1[ood[valid.f1]])
    u2 = np.unique(valid.f2[ood[valid.f2]])
    return u1, u2


def augment(kg: KnowledgeGraph, train: Paths, valid: Paths, aug: Augmentation,
            aug_seed: int = 42) -> tuple[Paths, np.ndarray]:
    """Return the added compositions and their source (SOURCE_AUG_HOP1 / SOURCE_AUG_HOP2), de-duplicated
    against ``train`` and each other (steps 5-8)."""
    empty = Paths(np.zeros(0, np.int64), np.zeros(0, np.int64))
    if aug.is_empty:
        return empty, np.zeros(0, np.uint8)
    rng = stream(aug_seed, STREAM_AUG)
    d = kg.out_degree
    ood = kg.is_ood.ravel()
    tail = kg.tail.ravel()
    u1, u2 = hop_universes(valid, kg)
    parts, sources = [], []

    if aug.h1ratio > 0 and aug.h1k > 0:  # step 6: OOD (h, r1, b) + ID (b, r2, t)
        picked = rng.choice(u1, size=int(round(aug.h1ratio * len(u1))), replace=False)
        f1 = np.repeat(picked, d)
        f2 = (tail[picked][:, None] * d + np.arange(d)).ravel()  # all out-edges of the bridge
        is_id = ~ood[f2]
        f1, f2 = f1[is_id], f2[is_id]  # out_ID[b]
        keep = _pick_per_group(rng, f1, aug.h1k)
        parts.append(Paths(f1[keep], f2[keep]))
        sources.append(np.full(int(keep.sum()), SOURCE_AUG_HOP1, np.uint8))

    if aug.h2ratio > 0 and aug.h2k > 0:  # step 7: ID (h, r1, b) + OOD (b, r2, t)
        picked = rng.choice(u2, size=int(round(aug.h2ratio * len(u2))), replace=False)
        # in_ID[b]: ID facts whose tail is b, as a CSR index sorted by tail.
        id_facts = np.flatnonzero(~ood)
        by_tail = id_facts[np.argsort(tail[id_facts], kind="stable")]
        counts = np.bincount(tail[id_facts], minlength=kg.num_entities)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        bridges = picked // d
        n_in = counts[bridges]
        group = np.repeat(np.arange(len(picked)), n_in)
        offset = np.arange(int(n_in.sum())) - np.repeat(np.cumsum(n_in) - n_in, n_in)
        f1 = by_tail[np.repeat(starts[bridges], n_in) + offset]
        f2 = picked[group]
        keep = _pick_per_group(rng, group, aug.h2k)
        parts.append(Paths(f1[keep], f2[keep]))
        sources.append(np.full(int(keep.sum()), SOURCE_AUG_HOP2, np.uint8))

    if not parts:
        return empty, np.zeros(0, np.uint8)
    added, source = Paths.concat(parts), np.concatenate(sources)
    # Step 5 de-duplication. A path is fully identified by its first fact and the slot of its second fact
    # (f2 = tail(f1)·d + slot), so path keys index a dense N·d² mask. Keep the first occurrence and drop any
    # already trained. (By construction hop-1 and hop-2 additions cannot collide, nor hit ID/ID training paths;
    # the check keeps that true for any future change.)
    key = added.f1 * d + added.f2 % d
    seen = np.zeros(kg.rel.size * d, dtype=bool)
    seen[train.f1 * d + train.f2 % d] = True
    _, first = np.unique(key, return_index=True)
    index = np.sort(first)
    index = index[~seen[key[index]]]
    return added.take(index), source[index]
