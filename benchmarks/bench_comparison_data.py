"""The comparison-task generator: grokscope's vectorised builder vs a pure-Python baseline of the authors' notebook
(``comparison.ipynb``: per-attribute Python loops over every entity pair, ``np.random.uniform`` per pair, dict items,
JSON written), in one run, at the same sizes.

Both build the mini tier (400 entities, 20 attributes, 20 values, phi 7.2) and write the same JSON files (grokscope
through its export of the authors' format, the same work as the notebook's writing); grokscope also builds the
authors' size (1,000 entities), where the notebook's loop visits 10 million pairs. Prints medians and the ratio
(baseline / grokscope).

    python benchmarks/bench_comparison_data.py [--repeats 3] [--baseline-entities 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time  # noqa: E402

from grokscope.data.comparison import COMPARISON_PRESETS, build_comparison  # noqa: E402
from grokscope.data.comparison_format import export_comparison  # noqa: E402


def baseline(out: Path, n: int, a: int = 20, v: int = 20, phi: float = 7.2, id_ratio: float = 0.9, seed: int = 0):
    """The notebook's algorithm, as it is written (seeded here; the notebook was not)."""
    np.random.seed(seed)
    entities = [f"<e_{i}>" for i in range(n)]
    ent_index = {e: i for i, e in enumerate(entities)}
    attributes = [f"<attr_{i}>" for i in range(a)]
    kb = np.random.randint(low=0, high=v, size=(n, a))

    def compare(x, y):
        return 0 if x < y else 1 if x == y else 2

    def fmt_atomic(e, attr, val, t):
        inp = e + attr
        return {"input_text": inp, "target_text": inp + f"<{val}></a>", "type": t}

    def fmt_comp(attr, e1, e2, label, t):
        inp = f"{attr}<q>{e1}<mask>{e2}"
        return {"input_text": inp, "target_text": inp + f"<{attr.strip('<>')}_{label}></a>", "type": t}

    id_atomic, ood_atomic, train_inferred, test_iid, test_ood = [], [], [], [], []
    for k, attr in enumerate(attributes):
        chosen = set(np.random.choice(n, round(id_ratio * n), replace=False).tolist())
        id_ents = {e for e in entities if ent_index[e] in chosen}
        for e in entities:
            (id_atomic if e in id_ents else ood_atomic).append(
                fmt_atomic(e, attr, kb[ent_index[e], k], "id_atomic" if e in id_ents else "ood_atomic"))
        for e1, e2 in itertools.combinations(entities, 2):
            v1, v2 = kb[ent_index[e1], k], kb[ent_index[e2], k]
            if e1 not in id_ents and e2 not in id_ents:
                bucket, t = test_ood, "test_inferred_ood"
            elif e1 in id_ents and e2 in id_ents:
                bucket, t = (test_iid, "test_inferred_iid") if np.random.uniform() < 0.1 else \
                    (train_inferred, "train_inferred")
            else:
                continue
            bucket.append(fmt_comp(attr, e1, e2, compare(v1, v2), t))
            bucket.append(fmt_comp(attr, e2, e1, compare(v2, v1), t))
    picks = np.random.choice(len(train_inferred), round(phi * len(id_atomic)), replace=False)
    train = id_atomic + ood_atomic + [train_inferred[i] for i in picks.tolist()]
    for name, content in (("train.json", train), ("valid.json", test_ood[:3000]),
                          ("test.json", test_ood[:3000] + id_atomic[:3000] + test_iid[:3000])):
        (out / name).write_text(json.dumps(content))
    return len(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="median over this many builds (the baseline: 1)")
    parser.add_argument("--baseline-entities", type=int, default=400, help="the size both build")
    args = parser.parse_args()
    n = args.baseline_entities
    cfg = dataclasses.replace(COMPARISON_PRESETS["paper"], num_entities=n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = median_time(lambda: export_comparison(build_comparison(cfg), tmp / "ours", force=True), args.repeats,
                           warmup=0)
        paper = median_time(lambda: export_comparison(build_comparison(COMPARISON_PRESETS["paper"]), tmp / "paper",
                                                      force=True), args.repeats, warmup=0)
        (tmp / "base").mkdir()
        base = median_time(lambda: baseline(tmp / "base", n), 1, warmup=0)
    print(f"comparison dataset, {n} entities x 20 attributes (JSON written): grokscope {ours:.3f} s (median of "
          f"{args.repeats}), baseline {base:.2f} s -> ratio {base / ours:.0f}x")
    print(f"grokscope at the authors' 1,000 entities: {paper:.3f} s (the baseline's loop grows with N^2: about "
          f"{base * (1000 / n) ** 2:.0f} s by extrapolation, not run)")


if __name__ == "__main__":
    main()
