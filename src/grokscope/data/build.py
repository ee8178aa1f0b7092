"""Build a pre-training dataset (one regime) or a whole family (five regimes + transfer sets) from a DataConfig."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from grokscope import artifacts
from grokscope.data.augment import SOURCE_NATURAL, augment
from grokscope.data.composition import Paths, cap_valid, sample_cap, split_paths
from grokscope.data.config import REGIMES, DataConfig
from grokscope.data.kg import STREAM_PROBES, generate_kg, stream
from grokscope.data.store import BASE_PROBE_TYPES, Dataset, save
from grokscope.data.transfer import build_transfer
from grokscope.data.vocab import Vocab
from grokscope.errors import GrokscopeError


def build_dataset(cfg: DataConfig) -> Dataset:
    """Graph, splits, phi sample, augmentation (He et al. App. C), probes. Pure function of ``cfg``."""
    cfg.validate()
    t0 = time.perf_counter()
    kg = generate_kg(cfg)
    splits = split_paths(kg, cfg)
    valid = cap_valid(cfg, splits.ood_test)
    added, added_source = augment(kg, splits.train, valid, cfg.augmentation, cfg.aug_seed)
    train = Paths.concat([splits.train, added])
    source = np.r_[np.full(len(splits.train), SOURCE_NATURAL, np.uint8), added_source]

    atomic = kg.fact_rows()
    is_ood = kg.is_ood.ravel()
    train_rows = kg.composition_rows(train.f1, train.f2)
    iid_rows = kg.composition_rows(splits.iid_test.f1, splits.iid_test.f2)
    valid_rows = kg.composition_rows(valid.f1, valid.f2)

    def probe(kind: int, rows: np.ndarray) -> np.ndarray:
        # One stream per probe type: the id_atomic probes are identical across regimes of one seed.
        return rows[sample_cap(stream(cfg.seed, STREAM_PROBES * 10 + kind), len(rows), cfg.probe_cap)]

    arrays = {
        "atomic": atomic,
        "atomic.is_ood": is_ood,
        "train_atomic": atomic,  # all atomic facts, ID and OOD, are trained (Wang et al.)
        "train_inferred": train_rows,
        "train_inferred.source": source,
        "valid": valid_rows,
        "probe.id_atomic": probe(0, atomic[~is_ood]),
        "probe.ood_atomic": probe(1, atomic[is_ood]),
        "probe.train_inferred": probe(2, train_rows),
        "probe.test_inferred_iid": probe(3, iid_rows),
        "probe.test_inferred_ood": valid_rows,
    }
    assert set(BASE_PROBE_TYPES) == {k.split(".", 1)[1] for k in arrays if k.startswith("probe.")}
    meta = {
        "kind": "base",
        "name": cfg.name(),
        "config": dataclasses.asdict(cfg),
        "seed": cfg.seed,
        "generation": {"two_hop_paths": splits.n_paths, "ood_test_all": len(splits.ood_test),
                       "discarded_mixed": splits.n_discarded, "id_pool": splits.pool,
                       "build_seconds": round(time.perf_counter() - t0, 3)},
        "warnings": [],
    }
    return Dataset(meta=meta, vocab=Vocab(cfg.num_entities, cfg.num_relations), arrays=arrays).finalize()


def check_family_dir(out: Path, force: bool, names: list[str]) -> None:
    if out.exists() and not out.is_dir():
        raise GrokscopeError(f"{out}: exists and is a file, not a folder; choose another --out")
    if out.is_dir():
        entries = [p for p in out.iterdir() if not p.name.startswith(artifacts.TMP_PREFIX) and p.name != ".lock"]
        foreign = [p.name for p in entries if artifacts.owned_kind(p) != "dataset"]
        family = any(p.name in names and artifacts.owned_kind(p) == "dataset" for p in entries)
        # With --force, a family folder's regime folders are replaced and a user's other files there are kept.
        if foreign and not (force and family):
            raise GrokscopeError(f"{out}: holds files grokscope did not write ({', '.join(sorted(foreign)[:3])}); "
                                 f"choose another --out")
    for name in names:
        artifacts.check_output_dir(out / name, force, kind="dataset")


def build_family(cfg: DataConfig, out: Path, force: bool = False, transfer: bool = True,
                 log=print) -> dict[str, Path]:
    """Build every named regime of ``cfg``'s graph into ``out/<regime>`` (and ``out/<regime>_transfer``).

    Before anything is built: ``out`` must be new, empty, or hold only dataset folders (an earlier family, replaced
    with ``force``)."""
    names = [f"{r}{s}" for r in REGIMES for s in ("", "_transfer")]
    check_family_dir(Path(out), force, names)
    artifacts.ensure_writable_parent(Path(out))
    with artifacts.FolderLock(Path(out), "dataset family"):
        check_family_dir(Path(out), force, names)  # again under the lock: another build may have finished first
        return _build_regimes(cfg, Path(out), force, transfer, log)


def _build_regimes(cfg: DataConfig, out: Path, force: bool, transfer: bool, log) -> dict[str, Path]:
    """Every dataset is built in memory before the first is written (under a second at paper size), so a build that
    fails or is stopped on a later regime leaves the old family whole, not half on the new seed and half on the
    old; the writes that follow are each atomic."""
    built = {}
    for regime, aug in REGIMES.items():
        rcfg = dataclasses.replace(cfg, **dataclasses.asdict(aug))
        built[regime] = build_dataset(rcfg)
        if transfer:
            built[f"{regime}_transfer"] = build_transfer(built[regime], rcfg)
    written = {}
    for name, ds in built.items():
        written[name] = save(ds, out / name, force=force)
        log(f"built {name:<12} {ds.meta['fingerprint']}  -> {written[name]}")
    return written
