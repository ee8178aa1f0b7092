"""Fine-tune calibration (docs/calibration.md §9): one parent checkpoint fine-tuned at a grid of learning rates with
the scaled recipe's EMA and warm-up and the kept draw, each run to max_steps; then one table row per lr: New Fact,
He et al.'s new+old (n and 95% interval), old+new, new+new, and the recall of the old facts by how the fine-tuning
data replays them.

    python benchmarks/calibrate_finetune.py --from RUN@STEP --out DIR [--lrs 9.8e-5,3e-4,1e-3,3e-3] [--steps 3000]
    python benchmarks/calibrate_finetune.py --out DIR --table-only

Runs already finished in DIR are kept (each is a `grokscope transfer` folder; an interrupted one resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from grokscope.metrics.intervals import Rate

KINDS = ("atomic_kept", "atomic_hop_replayed", "atomic_not_replayed")


def run_grid(parent: str, out: Path, lrs: list[str], steps: int) -> None:
    exe = str(Path(sys.executable).parent / "grokscope")
    for lr in lrs:
        folder = out / f"lr_{lr}"
        if (folder / "summary.json").exists():
            continue
        args = [exe, "transfer", "--from", parent, "--out", str(folder), "--draw", "kept", "--new-fact-multiple", "0",
                "--quiet", "--set", f"train.max_steps={steps}", "--set", "train.eval_every=250",
                "--set", f"train.lr={lr}"]
        if (folder / "config.yaml").exists():
            args.append("--resume")
        print(f"lr {lr}: {' '.join(args[1:])}", flush=True)
        subprocess.run(args, check=True)


def row(folder: Path) -> dict:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    t, last = summary["transfer"], summary["final"]

    def rate(name: str) -> str:
        n = (t["final"].get(name) or {}).get("n") or last.get(f"n/{name}")
        value = last.get(name)
        return "-" if value is None else Rate(value, n).text(compact=True)

    return {"lr": cfg["train"]["lr"], "EMA": cfg["train"]["ema_decay"], "warm-up": cfg["train"]["warmup_steps"],
            "steps": summary["final_step"], "New Fact >= 0.99 at": t["steps_to_new_fact"],
            "New Fact": rate("atomic_new"), "new+old": rate("new_old"), "old+new": rate("old_new"),
            "new+new": rate("new_new"), **{k.replace("atomic_", "old facts "): rate(k) for k in KINDS},
            "OOD test": rate("test_inferred_ood")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="parent")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lrs", default="9.8e-05,3e-04,1e-03,3e-03")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.table_only:
        if not args.parent:
            parser.error("--from RUN@STEP is needed unless --table-only")
        run_grid(args.parent, args.out, args.lrs.split(","), args.steps)
    done = [f for f in args.out.glob("lr_*") if (f / "summary.json").exists()]
    rows = [row(f) for f in sorted(done, key=lambda f: float(f.name[3:]))]
    if not rows:
        sys.exit(f"{args.out}: no finished fine-tune to tabulate")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
