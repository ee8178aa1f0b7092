"""Dataset generator parameters (He et al. App. B-C, §5.1), the named augmentation regimes and the scale presets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from grokscope.errors import GrokscopeError


TRANSFER_DRAWS = ("uniform", "kept")


@dataclass(frozen=True)
class Augmentation:
    """Fact-level augmentation knobs (He et al. App. C): expose a fraction of the OOD hop-1 / hop-2 universes,
    each exposed fact in at most ``k`` new training compositions."""

    h1ratio: float = 0.0
    h1k: int = 0
    h2ratio: float = 0.0
    h2k: int = 0

    @property
    def is_empty(self) -> bool:
        return not ((self.h1ratio > 0 and self.h1k > 0) or (self.h2ratio > 0 and self.h2k > 0))

    def suffix(self) -> str:
        """The original code's dataset-name suffix."""
        return (f"_factaug_h1ratio{float(self.h1ratio)}_h1k{self.h1k}"
                f"_h2ratio{float(self.h2ratio)}_h2k{self.h2k}")


# The five regimes of He et al. Fig. 2 (App. C). k = 18 / 9 is tied to d = 20, not to N.
REGIMES: dict[str, Augmentation] = {
    "natural": Augmentation(0.0, 0, 0.0, 0),
    "both_full": Augmentation(1.0, 18, 1.0, 18),
    "both_half": Augmentation(0.5, 9, 0.5, 9),
    "first_full": Augmentation(1.0, 18, 0.0, 0),
    "second_full": Augmentation(0.0, 0, 1.0, 18),
}


@dataclass(frozen=True)
class DataConfig:
    """Everything that determines a dataset; two builds with equal configs produce identical arrays."""

    num_entities: int = 2000  # N (He et al.: 2,000)
    num_relations: int = 200  # R
    out_degree: int = 20  # d: distinct relations per head entity
    phi: float = 18.0  # |train_inferred| / |atomic_ID| (Wang et al.)
    ood_ratio: float = 0.05  # exact fraction of atomic facts held out as OOD
    id_test_prob: float = 0.005  # probability an ID/ID composition is held out as test_inferred_iid
    probe_cap: int = 3000  # max probes per type
    valid_cap: int = 3000  # max OOD test compositions kept
    seed: int = 0  # KG, splits and probes; the original generator was unseeded
    # Augmentation (He et al. App. C); the original reseeds with 42 regardless of the KG, we keep that as aug_seed.
    h1ratio: float = 0.0
    h1k: int = 0
    h2ratio: float = 0.0
    h2k: int = 0
    aug_seed: int = 42
    # Transfer set (He et al. §5.1), scaled by N: the paper's 2,000 new facts and 8,000 kept items at N = 2,000.
    num_new_atomic: int | None = None  # default N
    keep_old_train: int | None = None  # default 4 N
    cap_test_inferred_new: int = 3000
    cap_test_inferred_mix: int = 3000
    transfer_seed: int = 0  # the original's random.Random(0)
    new_fact_attempts: int = 500_000  # attempts at drawing new facts as chains
    # How new facts' tails are drawn: "uniform" (the authors' code) or "kept": among the heads of the kept old facts,
    # so that every new fact composes new+old with a kept old hop (He et al.'s category, at a usable n; the
    # categories themselves are unchanged).
    transfer_draw: str = "uniform"

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.h1ratio, self.h1k, self.h2ratio, self.h2k)

    @property
    def n_new_atomic(self) -> int:
        return self.num_entities if self.num_new_atomic is None else self.num_new_atomic

    @property
    def n_keep_old(self) -> int:
        return 4 * self.num_entities if self.keep_old_train is None else self.keep_old_train

    @property
    def n_atomic(self) -> int:
        return self.num_entities * self.out_degree

    @property
    def n_ood_atomic(self) -> int:
        # Python round() as the original (banker's rounding on exact halves).
        return int(round(self.ood_ratio * self.n_atomic))

    @property
    def n_train_inferred(self) -> int:
        return int(round(self.phi * (self.n_atomic - self.n_ood_atomic)))

    def max_feasible_phi(self) -> float:
        """Expected ID training pool / |atomic_ID|: ≈ 0.945·d at the paper's settings."""
        n_id = self.n_atomic - self.n_ood_atomic
        if n_id <= 0:
            return 0.0
        p_id = n_id / self.n_atomic
        pool = self.n_atomic * self.out_degree * p_id * p_id * (1 - self.id_test_prob)
        return pool / n_id

    def name(self) -> str:
        """Dataset name in the original code's convention."""
        base = f"composition.{self.num_entities}.{self.num_relations}.{float(self.phi)}"
        return base if self.augmentation.is_empty else base + self.augmentation.suffix()

    def problems(self, transfer: bool = False) -> list[str]:
        """Every reason this config cannot be built, one line each (empty when it can)."""
        p = []
        for key in ("num_entities", "num_relations", "out_degree", "probe_cap", "valid_cap"):
            if getattr(self, key) <= 0:
                p.append(f"{key} must be positive (got {getattr(self, key)})")
        paths = self.num_entities * self.out_degree ** 2
        if paths > MAX_TWO_HOP_PATHS:
            p.append(f"num_entities x out_degree^2 = {paths:.3g} two-hop paths is over the limit of "
                     f"{MAX_TWO_HOP_PATHS:.0e} (the paper's graph has 8e5); lower num_entities or out_degree")
        if self.num_relations > MAX_RELATIONS:
            p.append(f"num_relations {self.num_relations} is over the limit of {MAX_RELATIONS}")
        if 0 < self.num_relations < self.out_degree:
            p.append(f"out_degree {self.out_degree} exceeds num_relations {self.num_relations}: each head needs "
                     f"distinct relations; lower out_degree or raise num_relations")
        for key in ("seed", "aug_seed", "transfer_seed"):
            if getattr(self, key) < 0:
                p.append(f"{key} must be >= 0 (got {getattr(self, key)})")
        for key in ("ood_ratio", "id_test_prob", "h1ratio", "h2ratio"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                p.append(f"{key} must be in [0, 1] (got {value})")
        if not p:
            p += self._memory_problems()
        for key in ("h1k", "h2k", "cap_test_inferred_new", "cap_test_inferred_mix", "new_fact_attempts"):
            if getattr(self, key) < 0:
                p.append(f"{key} must be >= 0 (got {getattr(self, key)})")
        if self.phi < 0:
            p.append(f"phi must be >= 0 (got {self.phi})")
        elif not p and self.phi > 0:
            limit = self.max_feasible_phi()
            # 1% slack below the expectation: the pool size is random, the exact check happens after sampling.
            if self.phi > 0.99 * limit:
                p.append(f"phi {self.phi} is infeasible: the ID training pool allows at most about "
                         f"{0.99 * limit:.2f} at out_degree {self.out_degree} (max phi ≈ 0.945·d); lower phi or "
                         f"raise out_degree")
        if transfer and not p:
            if self.num_relations <= self.out_degree:
                p.append(f"the transfer set needs unused (entity, relation) pairs but out_degree {self.out_degree}"
                         f" = num_relations {self.num_relations}; use --set num_relations={2 * self.out_degree} or "
                         f"--set out_degree={self.num_relations - 1}")
            if self.n_new_atomic <= 0:
                p.append(f"num_new_atomic must be positive (got {self.n_new_atomic})")
            if self.n_keep_old < 0:
                p.append(f"keep_old_train must be >= 0 (got {self.n_keep_old})")
        if self.transfer_draw not in TRANSFER_DRAWS:
            p.append(f"transfer_draw must be one of {', '.join(TRANSFER_DRAWS)} (got {self.transfer_draw!r})")
        return p

    def memory_bytes(self) -> int:
        """Peak memory of a build, roughly: the relation draw (N x R floats and indices) and the N * d^2 two-hop
        paths with their masks."""
        n, r, d = self.num_entities, self.num_relations, self.out_degree
        return 16 * n * r + 40 * n * d * d

    def _memory_problems(self) -> list[str]:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return []
        need = self.memory_bytes()
        if need > 0.8 * total:
            return [f"num_entities {self.num_entities} x out_degree {self.out_degree} needs about {need / 2 ** 30:.0f} "
                    f"GiB to build, more than this machine's {total / 2 ** 30:.0f} GiB; lower num_entities or "
                    f"out_degree"]
        return []

    def validate(self, transfer: bool = False) -> "DataConfig":
        problems = self.problems(transfer)
        if problems:
            raise GrokscopeError(problems)
        return self


# Sizes beyond these are typos, not experiments: the enumeration of every two-hop path would not fit in memory.
MAX_TWO_HOP_PATHS = 10 ** 8  # 125x the paper's 800,000
MAX_RELATIONS = 100_000

# Scale tiers (README "Scale tiers"; docs/calibration.md for the CPU tier).
DATA_PRESETS: dict[str, DataConfig] = {
    "smoke": DataConfig(num_entities=50, num_relations=20, out_degree=5, phi=4.0, probe_cap=200),
    # N 100, R 20, d 20, phi 12: the micro gpt (with d 19, as the study uses it) passes ID 0.9 after 7,200-8,800
    # steps, 3,400-5,000 steps after saturating (docs/calibration.md §4).
    "micro": DataConfig(num_entities=100, num_relations=20, out_degree=20, phi=12.0),
    "mini": DataConfig(num_entities=500, num_relations=200, out_degree=20, phi=18.0),
    "paper": DataConfig(num_entities=2000, num_relations=200, out_degree=20, phi=18.0),
}


def resolve_data_config(preset: str, regime: str | None = None, aug: dict | None = None,
                        overrides: dict | None = None) -> DataConfig:
    """Preset -> regime -> custom augmentation -> ``--set`` overrides, each later step winning."""
    from grokscope.config import apply_overrides

    problems = []
    if preset not in DATA_PRESETS:
        problems.append(f"unknown preset {preset!r}; choose one of {', '.join(DATA_PRESETS)}")
    if regime is not None and regime not in REGIMES:
        problems.append(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    aug_keys = {f.name for f in dataclasses.fields(Augmentation)}
    for key in sorted(set(aug or {}) - aug_keys):
        problems.append(f"unknown --aug key {key!r}; valid keys: {', '.join(sorted(aug_keys))}")
    if problems:
        raise GrokscopeError(problems)
    cfg = DATA_PRESETS[preset]
    if regime is not None:
        cfg = dataclasses.replace(cfg, **dataclasses.asdict(REGIMES[regime]))
    if aug:
        cfg = apply_overrides(cfg, aug, what="--aug")
    if overrides:
        cfg = apply_overrides(cfg, overrides, what="data")
    return cfg
