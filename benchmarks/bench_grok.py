"""Grokking on this CPU: the micro gpt with and without Grokfast, and the micro trm, on the micro dataset.

Prints, per run, the steps and minutes to each milestone (training saturation, ID test 50%/90%, OOD, bridge) from
one run each, and the Grokfast speed-up in steps. Each gpt run stops once test_inferred_iid >= 0.9 held for 3
evaluations, or at the wall-time budget; the trm trains for the same budget (issue: trainer, CPU_CALIBRATION §2).

    python benchmarks/bench_grok.py [--budget-minutes 15] [--trm-minutes 15] [--out runs/bench_grok]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS
from grokscope.data.store import load, save
from grokscope.models.registry import model_config
from grokscope.runs import read_metrics
from grokscope.train.config import resolve_train_config
from grokscope.train.loop import train

MILESTONES = ("t_sat", "t_id50", "t_id90", "t_ood50", "t_bridge50", "t_bridge90")


def minutes_at(rows, step):
    for r in rows:
        if r["step"] == step:
            return r["wall_seconds"] / 60
    return None


def run(name, ds, data_dir, family, overrides, out, fresh):
    cfg = resolve_train_config(family, "micro", overrides)
    mcfg = model_config(family, cfg.model_config, d_vocab=ds.vocab.d_vocab,
                        overrides={"forward_dtype": "bfloat16"} if family == "trm" else None)
    run_dir = out / name
    if (run_dir / "summary.json").exists() and not fresh:
        print(f"{name}: reusing {run_dir}")
        return json.loads((run_dir / "summary.json").read_text()), read_metrics(run_dir)
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    summary = train(ds, data_dir, family, mcfg, cfg, run_dir, quiet=True)
    return summary, read_metrics(run_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--trm-minutes", type=float, default=None, help="default: the same budget")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_grok"))
    parser.add_argument("--fresh", action="store_true", help="retrain even if a finished run exists")
    parser.add_argument("--skip-trm", action="store_true")
    args = parser.parse_args()
    data_dir = args.out / "data_micro_natural"
    if not (data_dir / "dataset.json").exists():
        save(build_dataset(DATA_PRESETS["micro"]), data_dir, force=True)
    ds = load(data_dir)
    stop = {"max_steps": "100000", "stop_when": "test_inferred_iid>=0.9", "stop_patience": "3",
            "max_minutes": str(args.budget_minutes)}
    plans = [("gpt_plain", "gpt", stop),
             ("gpt_grokfast", "gpt", {**stop, "grokfast_alpha": "0.98", "grokfast_lambda": "2"})]
    if not args.skip_trm:
        plans.append(("trm", "trm", {"max_steps": "100000",
                                     "max_minutes": str(args.trm_minutes or args.budget_minutes)}))
    results = {}
    for name, family, overrides in plans:
        results[name] = run(name, ds, data_dir, family, overrides, args.out, args.fresh)

    print(f"\n{'run':<14}{'steps/s':>8}" + "".join(f"{m:>16}" for m in MILESTONES) + f"{'final id/ood/bridge':>24}")
    for name, (summary, rows) in results.items():
        cells = []
        for m in MILESTONES:
            step = summary["milestones"].get(m)
            cells.append(f"{step} ({minutes_at(rows, step):.1f}m)" if step is not None else "-")
        f = summary["final"]
        final = f"{f.get('test_inferred_iid', 0):.2f}/{f.get('test_inferred_ood', 0):.2f}/" \
                f"{f.get('bridge_found_ood', 0):.2f}"
        print(f"{name:<14}{summary['steps_per_second'] or 0:>8.1f}" + "".join(f"{c:>16}" for c in cells)
              + f"{final:>24}")
        print(f"{'':<14}final step {summary['final_step']}, train_acc {f.get('train_acc', 0):.3f}, "
              f"stop: {summary['stop_reason']}, {summary['wall_seconds'] / 60:.1f} min")
    plain, fast = results["gpt_plain"][0]["milestones"], results["gpt_grokfast"][0]["milestones"]
    if plain["t_id90"] and fast["t_id90"]:
        print(f"\nGrokfast reaches test_inferred_iid >= 0.9 in {fast['t_id90'] / plain['t_id90']:.2f}x the steps "
              f"of the plain run (target <= 0.5)")


if __name__ == "__main__":
    main()
