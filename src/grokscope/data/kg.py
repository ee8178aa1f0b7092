"""Seeded knowledge-graph generator (Wang et al.; He et al. App. B), vectorised with numpy.

Atomic fact ``f`` is the ``slot``-th out-edge of head ``h``, with ``f = h * d + slot``: every table below is
indexed that way, so two-hop paths and augmentation are pure integer arithmetic over fact indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.data.config import DataConfig

# Independent random streams per stage, so changing e.g. the probe cap never changes the graph.
STREAM_KG, STREAM_OOD, STREAM_SPLIT, STREAM_PHI, STREAM_PROBES, STREAM_AUG, STREAM_TRANSFER = range(7)


def stream(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage])


@dataclass
class KnowledgeGraph:
    """Out-edges of every head: ``rel[h, slot]`` -> ``tail[h, slot]``; ``is_ood`` marks held-out facts."""

    rel: np.ndarray  # [N, d] int64, distinct per row
    tail: np.ndarray  # [N, d] int64, uniform with replacement (self-loops allowed)
    is_ood: np.ndarray  # [N, d] bool, exactly round(ood_ratio * N * d) True

    @property
    def num_entities(self) -> int:
        return self.rel.shape[0]

    @property
    def out_degree(self) -> int:
        return self.rel.shape[1]

    def fact_rows(self, facts: np.ndarray | None = None) -> np.ndarray:
        """Atomic facts as storage rows ``(h, r, -1, -1, t)`` (see store.COLUMNS)."""
        d = self.out_degree
        facts = np.arange(self.rel.size) if facts is None else facts
        rows = np.full((len(facts), 5), -1, dtype=np.int32)
        rows[:, 0] = facts // d
        rows[:, 1] = self.rel.ravel()[facts]
        rows[:, 4] = self.tail.ravel()[facts]
        return rows

    def composition_rows(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        """Two-hop facts as rows ``(h, r1, r2, b, t)`` from their hop fact indices (bridge b kept explicitly)."""
        d = self.out_degree
        rel, tail = self.rel.ravel(), self.tail.ravel()
        rows = np.empty((len(f1), 5), dtype=np.int32)
        rows[:, 0] = f1 // d
        rows[:, 1] = rel[f1]
        rows[:, 2] = rel[f2]
        rows[:, 3] = tail[f1]
        rows[:, 4] = tail[f2]
        return rows


def generate_kg(cfg: DataConfig) -> KnowledgeGraph:
    """d distinct relations per head, uniform tails, an exact-count OOD split (``docs/methods.md``, "Data")."""
    n, r, d = cfg.num_entities, cfg.num_relations, cfg.out_degree
    rng = stream(cfg.seed, STREAM_KG)
    # d distinct relations per head, uniformly without replacement: the first d of a random permutation per row.
    rel = np.argsort(rng.random((n, r)), axis=1)[:, :d].astype(np.int64)
    tail = rng.integers(0, n, size=(n, d), dtype=np.int64)
    ood_flat = np.zeros(n * d, dtype=bool)
    ood_flat[stream(cfg.seed, STREAM_OOD).choice(n * d, size=cfg.n_ood_atomic, replace=False)] = True
    return KnowledgeGraph(rel=rel, tail=tail, is_ood=ood_flat.reshape(n, d))
