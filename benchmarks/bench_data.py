"""Paper-scale dataset family: grokscope's vectorised builder vs a pure-Python baseline, in one run.

Builds the base dataset (N=2000, R=200, d=20, phi=18), the five regimes of He et al. and the transfer set, and
prints wall time and peak traced memory of each part. The baseline re-implements the original authors' pipeline
the way their notebooks work (dicts, per-path Python loops, ``random``, JSON written; ``docs/methods.md``, "Data"),
which takes about 5 s for the base dataset and 2 s per augmentation regime on a 2-core machine.

    python benchmarks/bench_data.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS, REGIMES
from grokscope.data.store import save
from grokscope.data.transfer import build_transfer


# ------------------------------------------------------------------ baseline: the original's pure-Python logic
def baseline_base(out: Path, n=2000, r=200, d=20, phi=18.0, seed=0):
    rng = random.Random(seed)
    ent = [f"<e_{i}>" for i in range(n)]
    rel = [f"<r_{i}>" for i in range(r)]
    atomic, out_edges = [], {e: [] for e in ent}
    for h in ent:
        for rr in rng.sample(rel, d):
            t = rng.choice(ent)
            atomic.append((h, rr, t))
            out_edges[h].append((rr, t))
    ood = set(rng.sample(atomic, round(0.05 * len(atomic))))
    ood_pairs = {(h, rr) for h, rr, _ in ood}
    ood_test, id_test, pool = [], [], []
    for h in ent:
        for r1, b in out_edges[h]:
            for r2, t in out_edges[b]:
                o1, o2 = (h, r1) in ood_pairs, (b, r2) in ood_pairs
                if o1 and o2:
                    ood_test.append((h, r1, r2, t))
                elif not o1 and not o2:
                    (id_test if rng.random() < 0.005 else pool).append((h, r1, r2, t))
    train_inf = rng.sample(pool, round(phi * (len(atomic) - len(ood))))
    item = lambda f: {"input_text": "".join(f[:-1]), "target_text": "".join(f) + "</a>"}  # noqa: E731
    train = [item(f) for f in atomic] + [item(f) for f in train_inf]
    test = [dict(item(f), type="id_atomic") for f in rng.sample([a for a in atomic if a not in ood], 3000)]
    test += [dict(item(f), type="test_inferred_ood") for f in ood_test]
    for name, content in (("train.json", train), ("valid.json", [item(f) for f in ood_test]),
                          ("test.json", test), ("vocab.json", ent + rel)):
        (out / name).write_text(json.dumps(content))
    return atomic, ood, ood_test, train_inf


def baseline_augment(atomic, ood, ood_test, train_inf, h1ratio, h1k, h2ratio, h2k):
    rng = random.Random(42)
    tail = {(h, rr): t for h, rr, t in atomic}
    u1, u2 = set(), set()
    for h, r1, r2, t in ood_test:
        b = tail[(h, r1)]
        u1.add((h, r1, b))
        u2.add((b, r2, t))
    out_id, in_id = {}, {}
    for h, rr, t in atomic:
        if (h, rr, t) not in ood:
            out_id.setdefault(h, []).append((rr, t))
            in_id.setdefault(t, []).append((h, rr))
    used = set(train_inf)
    added = []
    for h, r1, b in rng.sample(sorted(u1), round(h1ratio * len(u1))) if h1k else []:
        cands = out_id.get(b, [])
        for r2, t in rng.sample(cands, min(h1k, len(cands))):
            if (h, r1, r2, t) not in used:
                used.add((h, r1, r2, t))
                added.append((h, r1, r2, t))
    for b, r2, t in rng.sample(sorted(u2), round(h2ratio * len(u2))) if h2k else []:
        cands = in_id.get(b, [])
        for h, r1 in rng.sample(cands, min(h2k, len(cands))):
            if (h, r1, r2, t) not in used:
                used.add((h, r1, r2, t))
                added.append((h, r1, r2, t))
    return list(train_inf) + added


# ------------------------------------------------------------------ measurement helpers
def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def peak_mib(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="median over this many runs of each part")
    args = parser.parse_args()
    cfg = DATA_PRESETS["paper"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    rows = []

    def ours_base():
        ds = build_dataset(cfg)
        save(ds, tmp / "natural", force=True)
        return ds

    t, natural = timed(ours_base, args.repeats)
    rows.append(("base dataset (natural, written)", t, peak_mib(ours_base)))
    ours_total = t
    for name, aug in REGIMES.items():
        if name == "natural":
            continue
        rcfg = dataclasses.replace(cfg, **dataclasses.asdict(aug))
        fn = lambda rcfg=rcfg, name=name: save(build_dataset(rcfg), tmp / name, force=True)  # noqa: E731
        t, _ = timed(fn, args.repeats)
        rows.append((f"regime {name} (full build, written)", t, peak_mib(fn)))
        ours_total += t
    fn = lambda: save(build_transfer(natural, cfg), tmp / "natural_transfer", force=True)  # noqa: E731
    t, _ = timed(fn, args.repeats)
    rows.append(("transfer set (natural)", t, peak_mib(fn)))
    ours_total += t

    print(f"{'part':<42}{'median s':>10}{'peak MiB':>10}")
    for name, t, mem in rows:
        print(f"{name:<42}{t:>10.3f}{mem:>10.0f}")
    print(f"{'grokscope: whole family':<42}{ours_total:>10.3f}")
    print(f"process peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

    base_dir = tmp / "baseline"
    base_dir.mkdir()
    t_base, state = timed(lambda: baseline_base(base_dir), 1)
    base_total = t_base
    print(f"\nbaseline (pure Python, JSON) base dataset: {t_base:.2f} s")
    for name, aug in REGIMES.items():
        if name == "natural":
            continue
        t, _ = timed(lambda aug=aug: baseline_augment(*state, **dataclasses.asdict(aug)), 1)
        base_total += t
        print(f"baseline augmentation {name:<12}: {t:.2f} s")
    print(f"\nbase dataset: grokscope {rows[0][1]:.3f} s vs baseline {t_base:.2f} s -> {t_base / rows[0][1]:.1f}x")
    print(f"family: grokscope {ours_total:.2f} s (base + 4 regimes + transfer) vs baseline {base_total:.2f} s "
          f"(base + 4 regimes, no transfer) -> {base_total / ours_total:.1f}x")
    print("the original code's time on a 2-core machine, about 5 s base + 2 s per regime = 13 s "
          f"-> {13 / ours_total:.0f}x")


if __name__ == "__main__":
    main()
