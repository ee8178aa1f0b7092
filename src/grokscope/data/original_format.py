"""The original authors' JSON format (Wang et al.'s and He et al.'s released generators): export and import,
so datasets move both ways between grokscope and the released code (Wang et al.'s ``composition.ipynb``, He et al.'s
``Grokking_analysis``; the comparison task's in ``comparison_format.py``, chosen by the dataset's task on export and
by the vocabulary on import).

Items are ``{"input_text": "<e_12><r_3>", "target_text": "<e_12><r_3><e_907></a>"}``; probes carry a ``type``.
Export order equals storage order and import reads in order, so a round trip keeps the content fingerprint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from grokscope.data.augment import SOURCE_AUG_HOP1, SOURCE_AUG_HOP2, SOURCE_NATURAL
from grokscope import artifacts
from grokscope.data.comparison_format import export_comparison, import_comparison, is_comparison_vocab
from grokscope.data.store import Dataset, is_composition
from grokscope.data.transfer import fact_lookup
from grokscope.data.vocab import TOKEN_RE, Vocab
from grokscope.errors import GrokscopeError


def _items(rows: np.ndarray, probe_type: str | None = None) -> list[dict]:
    out = []
    for h, r1, r2, _b, t in rows.tolist():
        inp = f"<e_{h}><r_{r1}>" if r2 < 0 else f"<e_{h}><r_{r1}><r_{r2}>"
        item = {"input_text": inp, "target_text": f"{inp}<e_{t}></a>"}
        if probe_type is not None:
            item["type"] = probe_type
        out.append(item)
    return out


def _hrt(rows: np.ndarray) -> list[list[str]]:
    return [[f"<e_{h}>", f"<r_{r}>", f"<e_{t}>"] for h, r, _, _, t in rows.tolist()]


def export_original(ds: Dataset, out: Path, force: bool = False) -> Path:
    """Write train.json, valid.json, test.json, vocab.json (+ He's id_facts.json / ood_facts.json)."""
    if ds.meta.get("kind") == "transfer":
        raise GrokscopeError("export of transfer datasets is not supported; export the pre-training dataset and "
                             "rebuild the transfer set with `grokscope data transfer`")
    if ds.task == "comparison":
        return export_comparison(ds, out, force)
    def fill(tmp: Path) -> None:
        train = _items(ds.arrays["train_atomic"]) + _items(ds.arrays["train_inferred"])
        test = [item for t in ds.probe_types for item in _items(ds.probe(t), t)]
        atomic, is_ood = ds.arrays["atomic"], ds.arrays["atomic.is_ood"].astype(bool)
        files = {"train.json": train, "valid.json": _items(ds.arrays["valid"]), "test.json": test,
                 "vocab.json": ds.vocab.original_tokens(), "id_facts.json": _hrt(atomic[~is_ood]),
                 "ood_facts.json": _hrt(atomic[is_ood])}
        files["grokscope-export.json"] = {"fingerprint": ds.meta["fingerprint"], "name": ds.meta["name"]}
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content))
    return artifacts.write_owned_dir(Path(out), force, "original-format export", fill)


def _parse(items: list[dict], where: str, ent: dict, rel: dict) -> np.ndarray:
    """Items -> rows (h, r1, r2, -1, t); the bridge is filled in later from the atomic facts."""
    rows = np.full((len(items), 5), -1, dtype=np.int64)
    for i, item in enumerate(items):
        try:
            tokens = TOKEN_RE.findall(item["target_text"])
            n_in = len(TOKEN_RE.findall(item["input_text"]))
            if n_in == 2:
                rows[i] = (ent[tokens[0]], rel[tokens[1]], -1, -1, ent[tokens[2]])
            elif n_in == 3:
                rows[i] = (ent[tokens[0]], rel[tokens[1]], rel[tokens[2]], -1, ent[tokens[3]])
            else:
                raise ValueError(f"{n_in} input tokens")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise GrokscopeError(f"{where} item {i} is not a composition-task item ({exc}): {item!r:.120}") from None
    return rows


def import_original(folder: Path) -> Dataset:
    """Read an original-format folder; bridges are recovered from the atomic facts (every (h, r) has one tail).
    Any malformed content is one line naming the folder."""
    try:
        return _import_original(Path(folder))
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise GrokscopeError(f"{folder}: malformed original-format data ({type(exc).__name__}: {exc}); re-export "
                             f"it with `grokscope data export`") from None


def _import_original(folder: Path) -> Dataset:
    missing = [n for n in ("train.json", "valid.json", "test.json", "vocab.json") if not (folder / n).is_file()]
    if missing:
        raise GrokscopeError(f"{folder} lacks {', '.join(missing)}; point at a folder written by the original "
                             f"generator or by `grokscope data export`")
    try:
        load = lambda name: json.loads((folder / name).read_text())  # noqa: E731
        tokens, train, valid, test = (load(n) for n in ("vocab.json", "train.json", "valid.json", "test.json"))
    except ValueError as exc:
        raise GrokscopeError(f"{folder} holds invalid JSON ({exc}); re-export it") from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise GrokscopeError(f"{folder / 'vocab.json'}: not a list of token strings; re-export the dataset")
    for name, items in (("train.json", train), ("valid.json", valid), ("test.json", test)):
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise GrokscopeError(f"{folder / name}: not a list of items; re-export the dataset")
    if is_comparison_vocab(tokens):
        return import_comparison(folder, tokens, train, valid, test)
    ent = {t: int(t[3:-1]) for t in tokens if t.startswith("<e_")}
    rel = {t: int(t[3:-1]) for t in tokens if t.startswith("<r_")}
    if not ent or not rel or sorted(ent.values()) != list(range(len(ent))) or \
            sorted(rel.values()) != list(range(len(rel))):
        raise GrokscopeError(f"{folder / 'vocab.json'}: entity / relation tokens are missing or not numbered "
                             f"0..n-1; re-export the dataset")
    vocab = Vocab(len(ent), len(rel))
    train_rows = _parse(train, "train.json", ent, rel)
    is_atomic = ~is_composition(train_rows)
    atomic = train_rows[is_atomic]
    lookup = fact_lookup(atomic, vocab.num_entities, vocab.num_relations)

    def with_bridge(rows: np.ndarray, where: str) -> np.ndarray:
        inferred = is_composition(rows)
        f1 = lookup[rows[inferred, 0], rows[inferred, 1]]
        if (f1 < 0).any():
            raise GrokscopeError(f"{where}: {int((f1 < 0).sum())} compositions have a first hop that is not an "
                                 f"atomic fact of train.json; the bridge cannot be recovered")
        rows = rows.copy()
        rows[inferred, 3] = atomic[f1, 4]
        return rows.astype(np.int32)

    if (folder / "ood_facts.json").is_file():
        ood = {tuple(f) for f in load("ood_facts.json")}
        is_ood = np.array([(f"<e_{h}>", f"<r_{r}>", f"<e_{t}>") in ood for h, r, _, _, t in atomic.tolist()])
    else:  # Wang's generator: OOD facts are the ood_atomic probes (all of them when there are at most 3,000)
        ood_probe = {(x["input_text"], x["target_text"]) for x in test if x.get("type") == "ood_atomic"}
        is_ood = np.array([(i["input_text"], i["target_text"]) in ood_probe for i in np.array(train)[is_atomic]])
    inferred = with_bridge(train_rows[~is_atomic], "train.json")
    ood_lut = fact_lookup(atomic, vocab.num_entities, vocab.num_relations)
    o1 = is_ood[ood_lut[inferred[:, 0], inferred[:, 1]]]
    o2 = is_ood[ood_lut[inferred[:, 3], inferred[:, 2]]]
    source = np.select([o1 & ~o2, ~o1 & o2], [SOURCE_AUG_HOP1, SOURCE_AUG_HOP2], SOURCE_NATURAL).astype(np.uint8)
    arrays = {"atomic": atomic.astype(np.int32), "atomic.is_ood": is_ood.astype(bool),
              "train_atomic": atomic.astype(np.int32), "train_inferred": inferred,
              "train_inferred.source": source,
              "valid": with_bridge(_parse(valid, "valid.json", ent, rel), "valid.json")}
    types = list(dict.fromkeys(x.get("type") for x in test))
    for t in types:
        part = [x for x in test if x.get("type") == t]
        arrays[f"probe.{t}"] = with_bridge(_parse(part, f"test.json[{t}]", ent, rel), f"test.json[{t}]")
    n_atomic = len(atomic)
    d = int(round(n_atomic / max(vocab.num_entities, 1)))
    n_id = int((~is_ood).sum())
    meta = {"kind": "base", "name": folder.name, "imported_from": os.path.abspath(folder),
            "config": {"num_entities": vocab.num_entities, "num_relations": vocab.num_relations, "out_degree": d,
                       "phi": round(int((source == SOURCE_NATURAL).sum()) / max(n_id, 1), 4)},
            "seed": None, "warnings": []}
    return Dataset(meta=meta, vocab=vocab, arrays=arrays).finalize()
