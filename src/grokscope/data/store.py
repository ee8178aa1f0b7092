"""On-disk dataset format (DESIGN §4): ``dataset.json`` + ``vocab.json`` + ``arrays.npz``, written atomically.

Facts are stored as int32 rows with columns ``COLUMNS = (h, r1, r2, b, t)``: atomic facts have ``r2 = b = -1``;
compositions keep their bridge entity ``b`` so analyses never re-derive it. Array names:

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
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grokscope import __version__
from grokscope.data.vocab import Vocab
from grokscope.errors import GrokscopeError

SCHEMA_VERSION = 1
COLUMNS = ("h", "r1", "r2", "b", "t")
BASE_PROBE_TYPES = ("id_atomic", "ood_atomic", "train_inferred", "test_inferred_iid", "test_inferred_ood")
TRANSFER_PROBE_TYPES = ("atomic_new", "test_inferred_new", "test_inferred_new_mix", "test_inferred_new_mix_powered")
MIX_CATEGORIES = {1: "new+old", 2: "old+new"}


@dataclass
class Dataset:
    """A dataset in memory: metadata, vocabulary and named arrays."""

    meta: dict
    vocab: Vocab
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def probe_types(self) -> list[str]:
        return [k.split(".", 1)[1] for k in self.arrays if k.startswith("probe.") and k.count(".") == 1]

    def probe(self, probe_type: str) -> np.ndarray:
        return self.arrays[f"probe.{probe_type}"]

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
        h.update(f"{self.vocab.num_entities}:{self.vocab.num_relations}".encode())
        for name in sorted(self.arrays):
            arr = np.ascontiguousarray(self.arrays[name])
            h.update(f"|{name}:{arr.dtype.str}:{arr.shape}|".encode())
            h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def finalize(self) -> "Dataset":
        """Fill the derived metadata (counts, fingerprint, schema) before saving."""
        self.meta.update(schema_version=SCHEMA_VERSION, grokscope_version=__version__,
                         counts=self.counts(), fingerprint=self.fingerprint(),
                         d_vocab=self.vocab.d_vocab, columns=list(COLUMNS))
        return self


def check_output_dir(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise GrokscopeError(f"output folder {out} exists and is not empty; pass --force to replace it")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise GrokscopeError(f"cannot write to {parent}; choose a writable --out")


def save(ds: Dataset, out: Path, force: bool = False) -> Path:
    """Write to a temporary sibling folder and rename it into place, so a killed build never leaves a folder that
    looks complete; an existing dataset is replaced only after the new one is fully written."""
    out = Path(out)
    check_output_dir(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        np.savez(tmp / "arrays.npz", **ds.arrays)
        (tmp / "vocab.json").write_text(json.dumps(ds.vocab.to_json()))
        (tmp / "dataset.json").write_text(json.dumps(ds.meta, indent=2, sort_keys=True) + "\n")
        if out.exists():
            trash = out.resolve().parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load(path: Path) -> Dataset:
    """Load a dataset folder; every failure is a one-line GrokscopeError naming the folder and the fix."""
    path = Path(path)
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise GrokscopeError(f"{path} is not a grokscope dataset (no dataset.json); build one with "
                             f"`grokscope data build --out {path}`")
    try:
        meta = json.loads(meta_path.read_text())
        vocab_json = json.loads((path / "vocab.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        raise GrokscopeError(f"dataset {path} is unreadable ({type(exc).__name__}: {exc}); rebuild it "
                             f"with `grokscope data build --force`") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise GrokscopeError(f"dataset {path} has schema version {meta.get('schema_version')}, this grokscope "
                             f"reads {SCHEMA_VERSION}; rebuild it with `grokscope data build --force`")
    vocab = Vocab(vocab_json["num_entities"], vocab_json["num_relations"])
    return Dataset(meta=meta, vocab=vocab, arrays=arrays)
