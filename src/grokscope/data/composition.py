"""Two-hop enumeration, the three-way ID/OOD rule, phi down-sampling and probe selection (Wang et al.)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.data.config import DataConfig
from grokscope.data.kg import STREAM_PHI, STREAM_PROBES, STREAM_SPLIT, KnowledgeGraph, stream
from grokscope.errors import GrokscopeError


@dataclass
class Paths:
    """Two-hop paths as pairs of atomic fact indices (hop 1 ``f1``, hop 2 ``f2``)."""

    f1: np.ndarray
    f2: np.ndarray

    def __len__(self) -> int:
        return len(self.f1)

    def take(self, index: np.ndarray) -> "Paths":
        return Paths(self.f1[index], self.f2[index])

    @staticmethod
    def concat(parts: list["Paths"]) -> "Paths":
        return Paths(np.concatenate([p.f1 for p in parts]), np.concatenate([p.f2 for p in parts]))


@dataclass
class BaseSplits:
    """The natural (un-augmented) dataset before storage."""

    n_paths: int
    ood_test: Paths  # both hops OOD (all of them, before the valid cap)
    n_discarded: int  # exactly one OOD hop: never trained, never tested
    iid_test: Paths  # held-out ID/ID compositions
    pool: int  # size of the ID training pool
    train: Paths  # phi-sampled training compositions


def enumerate_paths(kg: KnowledgeGraph) -> Paths:
    """All N·d² two-hop paths: fact f1 = (h, r1, b) followed by each of b's d out-edges."""
    nd, d = kg.rel.size, kg.out_degree
    f1 = np.repeat(np.arange(nd, dtype=np.int64), d)
    f2 = (kg.tail.ravel()[:, None] * d + np.arange(d, dtype=np.int64)).ravel()
    return Paths(f1, f2)


def split_paths(kg: KnowledgeGraph, cfg: DataConfig) -> BaseSplits:
    """Both OOD -> OOD test; mixed -> discarded; both ID -> ID test with prob. p, else the training pool;
    then phi down-sampling relative to |atomic_ID| (``docs/methods.md``, "Data")."""
    paths = enumerate_paths(kg)
    ood = kg.is_ood.ravel()
    o1, o2 = ood[paths.f1], ood[paths.f2]
    both_ood = o1 & o2
    both_id = ~o1 & ~o2
    id_index = np.flatnonzero(both_id)
    held_out = stream(cfg.seed, STREAM_SPLIT).random(len(id_index)) < cfg.id_test_prob
    pool_index = id_index[~held_out]
    k = cfg.n_train_inferred
    if k > len(pool_index):
        raise GrokscopeError(
            f"phi {cfg.phi} needs {k} training compositions but the ID pool has only {len(pool_index)}; "
            f"lower phi to at most {len(pool_index) / (kg.rel.size - cfg.n_ood_atomic):.2f}")
    chosen = np.sort(stream(cfg.seed, STREAM_PHI).choice(len(pool_index), size=k, replace=False))
    return BaseSplits(
        n_paths=len(paths),
        ood_test=paths.take(np.flatnonzero(both_ood)),
        n_discarded=int(np.count_nonzero(o1 ^ o2)),
        iid_test=paths.take(id_index[held_out]),
        pool=len(pool_index),
        train=paths.take(pool_index[chosen]),
    )


def sample_cap(rng: np.random.Generator, n: int, cap: int) -> np.ndarray:
    """Indices of a uniform sample without replacement of size min(n, cap), in ascending order."""
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def cap_valid(cfg: DataConfig, ood_test: Paths) -> Paths:
    """valid.json = OOD test compositions sampled down to ``valid_cap``; also the OOD probes."""
    rng = stream(cfg.seed, STREAM_PROBES + 100)
    return ood_test.take(sample_cap(rng, len(ood_test), cfg.valid_cap))
