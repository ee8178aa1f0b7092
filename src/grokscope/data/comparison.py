"""Wang et al.'s comparison task: a seeded, vectorised generator (their ``comparison.ipynb``, ``docs/comparison.md``).

Every entity has one value in ``[0, V)`` for each of ``A`` attributes (the atomic facts ``(e, attr) -> value``). A
comparison asks, for an attribute, whether the first entity's value is smaller than, equal to or larger than the
second's. Per attribute, a share ``id_ratio`` of the entities is in distribution (ID): their comparisons with each
other are trained (a ``phi`` x |atomic ID| sample) or held out as ``test_inferred_iid`` (each unordered pair with
probability ``id_test_prob``, both orders); comparisons between two OOD entities are the ``test_inferred_ood`` set;
comparisons of an ID with an OOD entity are never used. Every atomic fact, ID or OOD, is trained: OOD means only that
the entity's comparisons were never seen. Wang et al. find that a grokked transformer generalises to the OOD
comparisons, where it does not to OOD compositions.

Rows are int32 with columns ``COMPARISON_COLUMNS = (e1, attr, e2, v1, v2, answer)``: an atomic fact is
``(e, attr, -1, -1, -1, value)``; a comparison ``(e1, attr, e2, v1, v2, label)`` with label 0 (v1 < v2), 1 (equal) or
2 (v1 > v2), and both values kept so analyses never re-derive them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from grokscope.data.composition import sample_cap
from grokscope.data.kg import STREAM_KG, STREAM_OOD, STREAM_PHI, STREAM_PROBES, STREAM_SPLIT, stream
from grokscope.data.store import Dataset
from grokscope.data.vocab import ComparisonVocab, comparison_labels
from grokscope.errors import GrokscopeError

TASK = "comparison"
# Sizes beyond these are typos: every attribute's ID pairs are enumerated (A x n_id^2 / 2 of them, 8.1 million at
# the authors' size, about 0.2 GB).
MAX_ENTITIES = 20_000
MAX_ATTRIBUTES = 10_000
MAX_VALUES = 100_000
MAX_ID_PAIRS = 5 * 10 ** 7


@dataclass(frozen=True)
class ComparisonConfig:
    """Everything that determines a comparison dataset; equal configs give identical arrays. Defaults are the
    authors' (``comparison.ipynb``): 1,000 entities, 20 attributes, 20 values, 90% ID entities per attribute, 10% of
    the ID pairs held out; phi from their list {3.6, 7.2, 9.0, 12.6}."""

    num_entities: int = 1000
    num_attributes: int = 20
    num_values: int = 20  # values 0..V-1, drawn uniformly per (entity, attribute)
    id_ratio: float = 0.9  # share of the entities, per attribute, whose comparisons are ID
    phi: float = 7.2  # |train comparisons| / |atomic ID|
    id_test_prob: float = 0.1  # probability an unordered ID pair is held out (both orders) as test_inferred_iid
    probe_cap: int = 3000  # max probes per type (the authors' test_size)
    valid_cap: int = 3000  # max OOD comparisons kept (valid.json; also the test_inferred_ood probes)
    seed: int = 0  # values, splits and probes; the original notebook was unseeded

    @property
    def n_id_entities(self) -> int:
        """ID entities per attribute: Python round() as the notebook's ``split``."""
        return int(round(self.id_ratio * self.num_entities))

    @property
    def n_id_atomic(self) -> int:
        return self.num_attributes * self.n_id_entities

    @property
    def n_train_inferred(self) -> int:
        return int(round(self.phi * self.n_id_atomic))

    def max_feasible_phi(self) -> float:
        """Expected ordered ID training pool / |atomic ID| = (n_id - 1)(1 - id_test_prob)."""
        return max(self.n_id_entities - 1, 0) * (1 - self.id_test_prob)

    def name(self) -> str:
        """Dataset name in the notebook's convention."""
        return f"comparison.{self.num_entities}.{float(self.phi)}"

    def problems(self) -> list[str]:
        """Every reason this config cannot be built, one line each (empty when it can)."""
        p = []
        for key, limit in (("num_entities", MAX_ENTITIES), ("num_attributes", MAX_ATTRIBUTES),
                           ("num_values", MAX_VALUES)):
            value = getattr(self, key)
            if value <= 0:
                p.append(f"{key} must be positive (got {value})")
            elif value > limit:
                p.append(f"{key} {value} is over the limit of {limit}")
        for key in ("probe_cap", "valid_cap"):
            if getattr(self, key) <= 0:
                p.append(f"{key} must be positive (got {getattr(self, key)})")
        if self.seed < 0:
            p.append(f"seed must be >= 0 (got {self.seed})")
        for key in ("id_ratio", "id_test_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                p.append(f"{key} must be in [0, 1] (got {getattr(self, key)})")
        pairs = self.num_attributes * self.n_id_entities * (self.n_id_entities - 1) // 2
        if not p and pairs > MAX_ID_PAIRS:
            p.append(f"num_attributes x the ID entities' pairs = {pairs:.3g} comparisons to enumerate is over the "
                     f"limit of {MAX_ID_PAIRS:.0e} (the authors' is 8.1e6); lower num_entities or num_attributes")
        if not p and self.n_id_entities < 2:
            p.append(f"id_ratio {self.id_ratio} x num_entities {self.num_entities} leaves fewer than 2 ID entities "
                     f"per attribute: nothing to compare; raise id_ratio or num_entities")
        if self.phi < 0:
            p.append(f"phi must be >= 0 (got {self.phi})")
        elif not p and self.phi > 0.99 * self.max_feasible_phi():
            # 1% slack below the expectation: the pool size is random, the exact check happens after sampling.
            p.append(f"phi {self.phi} is infeasible: the ID comparison pool allows at most about "
                     f"{0.99 * self.max_feasible_phi():.2f} (about (n_id - 1)(1 - id_test_prob)); lower phi or raise "
                     f"num_entities")
        return p

    def validate(self) -> "ComparisonConfig":
        problems = self.problems()
        if problems:
            raise GrokscopeError(problems)
        return self


# Scale tiers (README "Scale tiers"). "paper" is the authors' generator; the smaller tiers keep its ratios.
COMPARISON_PRESETS: dict[str, ComparisonConfig] = {
    "smoke": ComparisonConfig(num_entities=40, num_attributes=4, num_values=10, phi=3.6, probe_cap=200),
    "micro": ComparisonConfig(num_entities=100, num_attributes=10, num_values=20, phi=7.2),
    "mini": ComparisonConfig(num_entities=400, num_attributes=20, num_values=20, phi=7.2),
    "paper": ComparisonConfig(),
}


def resolve_comparison_config(preset: str, overrides: dict | None = None) -> ComparisonConfig:
    """Preset, then ``--set`` overrides."""
    from grokscope.config import apply_overrides

    if preset not in COMPARISON_PRESETS:
        raise GrokscopeError(f"unknown preset {preset!r} for the comparison task; choose one of "
                             f"{', '.join(COMPARISON_PRESETS)}")
    cfg = COMPARISON_PRESETS[preset]
    return apply_overrides(cfg, overrides, what="data") if overrides else cfg


def value_table(atomic: np.ndarray, num_entities: int, num_attributes: int) -> np.ndarray:
    """[N, A] each entity's value for each attribute, from the atomic rows (-1 where a fact is missing)."""
    value = np.full((num_entities, num_attributes), -1, dtype=np.int64)
    value[atomic[:, 0], atomic[:, 1]] = atomic[:, 5]
    return value


def atomic_rows(values: np.ndarray) -> np.ndarray:
    """Every atomic fact ``(e, attr, -1, -1, -1, value)``, fact ``f = e * A + attr``."""
    n, a = values.shape
    rows = np.full((n * a, 6), -1, dtype=np.int32)
    rows[:, 0] = np.repeat(np.arange(n), a)
    rows[:, 1] = np.tile(np.arange(a), n)
    rows[:, 5] = values.ravel()
    return rows


def comparison_rows(values: np.ndarray, attr: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Comparisons ``(e1, attr, e2, v1, v2, label)``."""
    v1, v2 = values[e1, attr], values[e2, attr]
    return np.stack([e1, attr, e2, v1, v2, comparison_labels(v1, v2)], axis=1).astype(np.int32)


@dataclass
class PairSet:
    """Unordered entity pairs ``(i, j)`` per attribute; ordered item ``k`` is pair ``k // 2``, as given (even k) or
    flipped (odd k), the notebook's "flip"."""

    attr: np.ndarray
    i: np.ndarray
    j: np.ndarray

    def __len__(self) -> int:
        return 2 * len(self.attr)  # ordered items

    def ordered(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(attr, e1, e2) of ordered items ``index``."""
        pair, flip = index // 2, (index % 2).astype(bool)
        i, j = self.i[pair], self.j[pair]
        return self.attr[pair], np.where(flip, j, i), np.where(flip, i, j)

    def all_ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.ordered(np.arange(len(self)))


def entity_pairs(members: np.ndarray) -> PairSet:
    """Every unordered pair of distinct entities within each attribute's ``members`` ([A, n] entity ids)."""
    a, n = members.shape
    i, j = np.triu_indices(n, 1)
    attr = np.repeat(np.arange(a), len(i))
    return PairSet(attr, members[attr, np.tile(i, a)], members[attr, np.tile(j, a)])


def build_comparison(cfg: ComparisonConfig) -> Dataset:
    """Values, per-attribute ID/OOD split, ID pairs held out or pooled, phi sample, probes. Pure function of
    ``cfg``."""
    cfg.validate()
    t0 = time.perf_counter()
    n, a = cfg.num_entities, cfg.num_attributes
    values = stream(cfg.seed, STREAM_KG).integers(0, cfg.num_values, size=(n, a))
    # per attribute, a random n_id of the entities are ID (the notebook's split(entities, 0.9), one per attribute)
    order = np.argsort(stream(cfg.seed, STREAM_OOD).random((a, n)), axis=1, kind="stable")
    n_id = cfg.n_id_entities
    id_members, ood_members = np.sort(order[:, :n_id], axis=1), np.sort(order[:, n_id:], axis=1)
    is_ood = np.ones((n, a), dtype=bool)
    is_ood[id_members, np.arange(a)[:, None]] = False

    id_pairs = entity_pairs(id_members)
    held = stream(cfg.seed, STREAM_SPLIT).random(len(id_pairs.attr)) < cfg.id_test_prob
    pool = PairSet(id_pairs.attr[~held], id_pairs.i[~held], id_pairs.j[~held])
    test_iid = PairSet(id_pairs.attr[held], id_pairs.i[held], id_pairs.j[held])
    k = cfg.n_train_inferred
    if k > len(pool):
        raise GrokscopeError(f"phi {cfg.phi} needs {k} training comparisons but the ID pool has only {len(pool)}; "
                             f"lower phi to at most {len(pool) / cfg.n_id_atomic:.2f}")
    chosen = np.sort(stream(cfg.seed, STREAM_PHI).choice(len(pool), size=k, replace=False))
    train_rows = comparison_rows(values, *pool.ordered(chosen))
    ood_all = entity_pairs(ood_members)
    valid_index = sample_cap(stream(cfg.seed, STREAM_PROBES + 100), len(ood_all), cfg.valid_cap)
    valid_rows = comparison_rows(values, *ood_all.ordered(valid_index))

    atomic = atomic_rows(values)
    atomic_ood = is_ood.ravel()

    def probe(kind: int, count: int) -> np.ndarray:
        # one stream per probe type, as for composition
        return sample_cap(stream(cfg.seed, STREAM_PROBES * 10 + kind), count, cfg.probe_cap)

    arrays = {
        "atomic": atomic,
        "atomic.is_ood": atomic_ood,
        "train_atomic": atomic,  # every atomic fact, ID and OOD, is trained (the notebook's train.json)
        "train_inferred": train_rows,
        "valid": valid_rows,
        "probe.id_atomic": atomic[~atomic_ood][probe(0, int((~atomic_ood).sum()))],
        "probe.ood_atomic": atomic[atomic_ood][probe(1, int(atomic_ood.sum()))],
        "probe.train_inferred": train_rows[probe(2, len(train_rows))],
        "probe.test_inferred_iid": comparison_rows(values, *test_iid.ordered(probe(3, len(test_iid)))),
        "probe.test_inferred_ood": valid_rows,
    }
    meta = {
        "kind": "base",
        "task": TASK,
        "name": cfg.name(),
        "config": dataclasses.asdict(cfg),
        "seed": cfg.seed,
        # ordered comparisons (both orders of each pair) in each set before sampling
        "generation": {"id_comparisons": len(id_pairs), "id_pool": len(pool), "test_inferred_iid_all": len(test_iid),
                       "ood_test_all": len(ood_all), "build_seconds": round(time.perf_counter() - t0, 3)},
        "warnings": [],
    }
    return Dataset(meta=meta, vocab=ComparisonVocab(n, a, cfg.num_values), arrays=arrays).finalize()
