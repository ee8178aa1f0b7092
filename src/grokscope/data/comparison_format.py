"""The comparison task in the original authors' JSON format (Wang et al.'s ``comparison.ipynb``): export and import.

Items are ``{"input_text": "<e_12><attr_3>", "target_text": "<e_12><attr_3><7></a>", "type": "id_atomic"}`` for an
atomic fact and ``{"input_text": "<attr_3><q><e_12><mask><e_40>", "target_text": "...<attr_3_2></a>", "type":
"train_inferred"}`` for a comparison (label 0: smaller, 1: equal, 2: larger). As in the notebook, ``train.json``'s
atomic facts carry their ``id_atomic`` / ``ood_atomic`` type, which is how an import knows which are OOD. Export order
equals storage order and import reads in order, so a round trip keeps the content fingerprint.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from grokscope import artifacts
from grokscope.data.comparison import value_table
from grokscope.data.store import Dataset, is_composition
from grokscope.data.vocab import TOKEN_RE, ComparisonVocab
from grokscope.errors import GrokscopeError

ATTRIBUTE_RE = re.compile(r"<attr_(\d+)>")
LABEL_RE = re.compile(r"<attr_(\d+)_([012])>")
VALUE_RE = re.compile(r"<(\d+)>")
ENTITY_RE = re.compile(r"<e_(\d+)>")


def is_comparison_vocab(tokens: list) -> bool:
    """Whether an original ``vocab.json`` is the comparison task's (it has attribute tokens)."""
    return any(isinstance(t, str) and ATTRIBUTE_RE.fullmatch(t) for t in tokens)


def _items(rows: np.ndarray, types: list[str] | str | None = None) -> list[dict]:
    out = []
    for k, (e1, a, e2, _v1, _v2, answer) in enumerate(rows.tolist()):
        if e2 < 0:
            inp, answer_token = f"<e_{e1}><attr_{a}>", f"<{answer}>"
        else:
            inp, answer_token = f"<attr_{a}><q><e_{e1}><mask><e_{e2}>", f"<attr_{a}_{answer}>"
        item = {"input_text": inp, "target_text": f"{inp}{answer_token}</a>"}
        if types is not None:
            item["type"] = types if isinstance(types, str) else types[k]
        out.append(item)
    return out


def export_comparison(ds: Dataset, out: Path, force: bool = False) -> Path:
    """Write train.json (atomic facts typed id_atomic / ood_atomic, then the training comparisons), valid.json,
    test.json (every probe, typed) and vocab.json."""
    def fill(tmp: Path) -> None:
        is_ood = dict(zip(map(tuple, ds.arrays["atomic"][:, :2].tolist()), ds.arrays["atomic.is_ood"].tolist()))
        train_atomic = ds.arrays["train_atomic"]
        kinds = ["ood_atomic" if is_ood[(e, a)] else "id_atomic" for e, a in train_atomic[:, :2].tolist()]
        files = {"train.json": _items(train_atomic, kinds) + _items(ds.arrays["train_inferred"], "train_inferred"),
                 "valid.json": _items(ds.arrays["valid"], "test_inferred_ood"),
                 "test.json": [item for t in ds.probe_types for item in _items(ds.probe(t), t)],
                 "vocab.json": ds.vocab.original_tokens(),
                 # the probe types in order, so an empty one (an atomic-only dataset's train_inferred) comes back
                 "grokscope-export.json": {"fingerprint": ds.meta["fingerprint"], "name": ds.meta["name"],
                                           "probe_types": ds.probe_types}}
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content))
    return artifacts.write_owned_dir(Path(out), force, "original-format export", fill)


def _vocab(tokens: list[str], where: Path) -> ComparisonVocab:
    sizes = []
    for pattern, what in ((ENTITY_RE, "entity"), (ATTRIBUTE_RE, "attribute"), (VALUE_RE, "value")):
        ids = sorted(int(m.group(1)) for t in tokens if (m := pattern.fullmatch(t)))
        if not ids or ids != list(range(len(ids))):
            raise GrokscopeError(f"{where}: {what} tokens are missing or not numbered 0..n-1; re-export the dataset")
        sizes.append(len(ids))
    vocab = ComparisonVocab(*sizes)
    if tokens != vocab.original_tokens():
        raise GrokscopeError(f"{where}: the token list is not the comparison task's for {sizes[0]} entities, "
                             f"{sizes[1]} attributes and {sizes[2]} values; re-export the dataset")
    return vocab


def _parse(items: list[dict], where: str, vocab: ComparisonVocab) -> np.ndarray:
    """Items -> rows ``(e1, attr, e2, -1, -1, answer)``; the values of a comparison are filled in from the atomic
    facts."""
    rows = np.full((len(items), 6), -1, dtype=np.int64)
    for i, item in enumerate(items):
        try:
            tokens = TOKEN_RE.findall(item["target_text"])
            n_in = len(TOKEN_RE.findall(item["input_text"]))
            if n_in == 2:
                e, a = ENTITY_RE.fullmatch(tokens[0]), ATTRIBUTE_RE.fullmatch(tokens[1])
                v = VALUE_RE.fullmatch(tokens[2])
                rows[i] = (int(e.group(1)), int(a.group(1)), -1, -1, -1, int(v.group(1)))
            elif n_in == 5:
                a, e1 = ATTRIBUTE_RE.fullmatch(tokens[0]), ENTITY_RE.fullmatch(tokens[2])
                e2 = ENTITY_RE.fullmatch(tokens[4])
                label = LABEL_RE.fullmatch(tokens[5])
                if tokens[1] != "<q>" or tokens[3] != "<mask>" or label.group(1) != a.group(1):
                    raise ValueError("not [attr, <q>, e1, <mask>, e2] answered by that attribute's label")
                rows[i] = (int(e1.group(1)), int(a.group(1)), int(e2.group(1)), -1, -1, int(label.group(2)))
            else:
                raise ValueError(f"{n_in} input tokens")
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            raise GrokscopeError(f"{where} item {i} is not a comparison-task item ({exc}): {item!r:.120}") from None
    limits = vocab.row_limits()
    if len(rows) and (rows >= limits).any():
        raise GrokscopeError(f"{where}: an item names an entity, attribute or value outside vocab.json")
    return rows


def import_comparison(folder: Path, tokens: list[str], train: list, valid: list, test: list) -> Dataset:
    """The comparison dataset of an original-format folder whose JSON files are read; every (entity, attribute) of
    a comparison must have its atomic fact in train.json (that is where its values come from)."""
    vocab = _vocab(tokens, folder / "vocab.json")
    train_rows = _parse(train, "train.json", vocab)
    is_atomic = ~is_composition(train_rows)
    atomic = train_rows[is_atomic]
    value = value_table(atomic, vocab.num_entities, vocab.num_attributes)

    def with_values(rows: np.ndarray, where: str) -> np.ndarray:
        inferred = is_composition(rows)
        rows = rows.copy()
        rows[inferred, 3] = value[rows[inferred, 0], rows[inferred, 1]]
        rows[inferred, 4] = value[rows[inferred, 2], rows[inferred, 1]]
        if (rows[inferred, 3:5] < 0).any():
            raise GrokscopeError(f"{where}: a comparison names an (entity, attribute) with no atomic fact in "
                                 f"train.json; its values cannot be recovered")
        problem = vocab.row_problem(rows) if len(rows) else None
        if problem:
            raise GrokscopeError(f"{where}: {problem}; re-export the dataset")
        return rows.astype(np.int32)

    types = [item.get("type") for item, atomic_item in zip(train, is_atomic) if atomic_item]
    if any(t not in ("id_atomic", "ood_atomic") for t in types):
        raise GrokscopeError(f"{folder / 'train.json'}: every atomic fact must have type id_atomic or ood_atomic "
                             f"(the notebook's); re-export the dataset")
    is_ood = np.array([t == "ood_atomic" for t in types], dtype=bool)
    inferred = with_values(train_rows[~is_atomic], "train.json")
    arrays = {"atomic": atomic.astype(np.int32), "atomic.is_ood": is_ood,
              "train_atomic": atomic.astype(np.int32), "train_inferred": inferred,
              "valid": with_values(_parse(valid, "valid.json", vocab), "valid.json")}
    exported = folder / "grokscope-export.json"
    named = json.loads(exported.read_text()).get("probe_types", []) if exported.is_file() else []
    for t in dict.fromkeys([*named, *(x.get("type") for x in test)]):
        part = [x for x in test if x.get("type") == t]
        arrays[f"probe.{t}"] = with_values(_parse(part, f"test.json[{t}]", vocab), f"test.json[{t}]")
    n_id = int((~is_ood).sum())
    meta = {"kind": "base", "task": "comparison", "name": folder.name, "imported_from": os.path.abspath(folder),
            "config": {"num_entities": vocab.num_entities, "num_attributes": vocab.num_attributes,
                       "num_values": vocab.num_values, "phi": round(len(inferred) / max(n_id, 1), 4)},
            "seed": None, "warnings": []}
    return Dataset(meta=meta, vocab=vocab, arrays=arrays).finalize()
