"""On-disk dataset format: ``dataset.json`` + ``vocab.json`` + ``arrays.npz``, written atomically.

Facts are stored as int32 rows whose columns the dataset's task gives (``vocab.columns``). The composition task's
are ``COLUMNS = (h, r1, r2, b, t)``: atomic facts have ``r2 = b = -1``; compositions keep their bridge entity ``b`` so
analyses never re-derive it. The comparison task's are ``(e1, attr, e2, v1, v2, answer)`` (``data/comparison.py``).
In both, column 2 is set exactly in the inferred rows (compositions, comparisons). Array names:

- ``atomic`` / ``atomic.is_ood`` (/ ``atomic.is_new`` in transfer sets): every fact of the graph;
- ``train_atomic``, ``train_inferred`` (+ ``train_inferred.source``: 0 natural, 1 hop-1 aug, 2 hop-2 aug),
  ``valid`` (OOD test compositions);
- ``probe.<type>`` for each probe type (+ ``probe.<type>.category`` for mixed transfer probes:
  1 = new+old, 2 = old+new; ``probe.<type>.old_in_id_probe`` for the faithful filter).

The content fingerprint hashes every array (name, dtype, shape, bytes) and the vocabulary size, so a dataset
exported to the original JSON format and imported back has the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grokscope import artifacts
from grokscope.version import __version__
from grokscope.data.vocab import ComparisonVocab, Vocab, vocab_from_json
from grokscope.errors import GrokscopeError

SCHEMA_VERSION = 1
COLUMNS = ("h", "r1", "r2", "b", "t")
BASE_PROBE_TYPES = ("id_atomic", "ood_atomic", "train_inferred", "test_inferred_iid", "test_inferred_ood")
TRANSFER_PROBE_TYPES = ("atomic_new", "test_inferred_new", "test_inferred_new_mix", "test_inferred_new_mix_powered")
MIX_CATEGORIES = {1: "new+old", 2: "old+new"}
R2 = COLUMNS.index("r2")


def is_composition(rows: np.ndarray) -> np.ndarray:
    """[n] whether each stored row is an inferred item: a two-hop composition (atomic facts have r2 = -1), or in a
    comparison dataset a comparison (column 2, e2, likewise -1 in atomic facts)."""
    return np.asarray(rows)[:, R2] >= 0


@dataclass
class Dataset:
    """A dataset in memory: metadata, vocabulary and named arrays."""

    meta: dict
    vocab: Vocab | ComparisonVocab
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``composition`` or ``comparison``."""
        return self.vocab.task

    @property
    def probe_types(self) -> list[str]:
        return [k.split(".", 1)[1] for k in self.arrays if k.startswith("probe.") and k.count(".") == 1]

    def probe(self, probe_type: str) -> np.ndarray:
        return self.arrays[f"probe.{probe_type}"]

    @property
    def probes(self) -> dict[str, "ProbeSet"]:
        """Every probe set by name (``id_atomic``, ``test_inferred_iid``, ...)."""
        return {name: ProbeSet(self, name, self.probe(name)) for name in self.probe_types}

    def counts(self) -> dict[str, int]:
        """Rows per split and probe type (plus augmentation sources), the table ``data show`` prints."""
        out = {}
        for name, arr in self.arrays.items():
            if arr.ndim == 2:
                out[name.replace("probe.", "probe/")] = int(len(arr))
        if "train_inferred.source" in self.arrays:
            src = self.arrays["train_inferred.source"]
            out["train_inferred/aug_hop1"] = int(np.count_nonzero(src == 1))
            out["train_inferred/aug_hop2"] = int(np.count_nonzero(src == 2))
        if "atomic.is_ood" in self.arrays:
            out["atomic/ood"] = int(self.arrays["atomic.is_ood"].sum())
        return out

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.vocab.signature().encode())
        for name in sorted(self.arrays):
            arr = np.ascontiguousarray(self.arrays[name])
            h.update(f"|{name}:{arr.dtype.str}:{arr.shape}|".encode())
            h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def finalize(self) -> "Dataset":
        """Fill the derived metadata (counts, fingerprint, schema) before saving."""
        self.meta.update(schema_version=SCHEMA_VERSION, grokscope_version=__version__,
                         counts=self.counts(), fingerprint=self.fingerprint(),
                         d_vocab=self.vocab.d_vocab, columns=list(self.vocab.columns))
        return self


@dataclass
class ProbeSet:
    """A named set of facts of a dataset: what the analyses run on."""

    dataset: Dataset
    name: str
    rows: np.ndarray  # [n, columns] storage rows (composition: h, r1, r2, b, t)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ProbeSet({self.name!r}, n={len(self)})"


def save(ds: Dataset, out: Path, force: bool = False) -> Path:
    """Write to a temporary sibling folder and rename it into place, so a killed build never leaves a folder that
    looks complete; an existing dataset is replaced only after the new one is fully written, and ``force`` replaces
    only a folder that holds a dataset."""
    def fill(tmp: Path) -> None:
        np.savez(tmp / "arrays.npz", **ds.arrays)
        (tmp / "vocab.json").write_text(json.dumps(ds.vocab.to_json()))
        (tmp / "dataset.json").write_text(artifacts.dumps(ds.meta))
    return artifacts.write_owned_dir(Path(out), force, "dataset", fill)


def is_row_array(name: str) -> bool:
    """Fact arrays are named ``atomic``, ``valid``, ... or ``probe.<type>``; other dotted names are per-row flags."""
    return "." not in name or (name.startswith("probe.") and name.count(".") == 1)


REQUIRED_ARRAYS = ("atomic", "atomic.is_ood", "train_atomic", "train_inferred", "valid")
META_KEYS = {"schema_version": int, "fingerprint": str, "kind": str, "name": str, "config": dict, "counts": dict}


def load(path: Path, verify: bool = True) -> Dataset:
    """Load a dataset folder, checking every file; each failure is one line ``<path>: <problem>; <fix>``.

    ``verify`` recomputes the content fingerprint, so a damaged or hand-edited array is caught here, not as a crash
    in training."""
    path = artifacts.as_path(path, "the dataset")
    fix = f"rebuild it with `grokscope data build --out {path} --force`"
    if not path.is_dir():
        raise GrokscopeError(f"{path}: no such dataset folder; build one with `grokscope data build --out {path}`")
    if not (path / "dataset.json").is_file():
        raise GrokscopeError(f"{path}: not a grokscope dataset (no dataset.json); build one with "
                             f"`grokscope data build --out {path}`")
    meta = artifacts.read_json(path / "dataset.json", fix)
    for key, kind in META_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise GrokscopeError(f"{path / 'dataset.json'}: {key} is missing or not a {kind.__name__}; {fix}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise GrokscopeError(f"{path / 'dataset.json'}: schema version {meta['schema_version']}, this grokscope "
                             f"reads {SCHEMA_VERSION}; {fix}")
    vocab = _load_vocab(path / "vocab.json", fix)
    arrays = _load_arrays(path / "arrays.npz", vocab, fix)
    ds = Dataset(meta=meta, vocab=vocab, arrays=arrays)
    if verify and ds.fingerprint() != meta["fingerprint"]:
        raise GrokscopeError(f"{path}: arrays.npz does not match the fingerprint in dataset.json (damaged or "
                             f"edited); {fix}")
    return ds


def _load_vocab(path: Path, fix: str) -> Vocab | ComparisonVocab:
    data = artifacts.read_json(path, fix)
    if not isinstance(data, dict):
        raise GrokscopeError(f"{path}: not a vocabulary (a JSON object); {fix}")
    try:
        vocab = vocab_from_json(data)
    except ValueError as exc:
        raise GrokscopeError(f"{path}: {exc}; {fix}") from None
    if data.get("tokens") != vocab.tokens():
        raise GrokscopeError(f"{path}: the token list does not match the sizes it states ({vocab.signature()}; a "
                             f"token is missing, extra or renamed); {fix}")
    return vocab


def _load_arrays(path: Path, vocab: Vocab | ComparisonVocab, fix: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise GrokscopeError(f"{path}: missing; {fix}") from None
    except Exception as exc:  # numpy/zipfile raise many types for a truncated or foreign file
        raise GrokscopeError(f"{path}: unreadable ({type(exc).__name__}); {fix}") from None
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise GrokscopeError(f"{path}: arrays {', '.join(missing)} are missing; {fix}")
    limits, width = vocab.row_limits(), len(vocab.columns)
    for name, arr in arrays.items():
        if not is_row_array(name):
            continue  # per-row flags (is_ood, source, category, ...)
        if arr.ndim != 2 or arr.shape[1] != width or not np.issubdtype(arr.dtype, np.integer):
            raise GrokscopeError(f"{path}: array {name} has shape {arr.shape} ({arr.dtype}), expected [n, {width}] "
                                 f"integers ({vocab.task} rows); {fix}")
        if len(arr) and ((arr >= limits).any() or (arr < -1).any() or
                         (arr[:, list(vocab.REQUIRED_COLUMNS)] < 0).any()):
            raise GrokscopeError(f"{path}: array {name} holds ids outside the vocabulary; {fix}")
        problem = vocab.row_problem(arr) if len(arr) else None
        if problem:
            raise GrokscopeError(f"{path}: array {name} holds {problem}; {fix}")
    return arrays
