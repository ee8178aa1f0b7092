"""Final exact match of runs with their 95% intervals, and the steps to each milestone, as one Markdown table.

    python docs/calibration/final_rates.py RUN [RUN ...] [--at STEP] [--out FILE.csv]

Per run: its steps, t_sat (first train accuracy >= 0.99, as `tabulate.py` and the findings), the first steps at which
ID and OOD exact match reach 0.5 and 0.9, the OOD maximum, and the final train, ID and OOD exact match as the findings
read them (the mean of the last 3 evaluations, its Wilson interval and n). `docs/calibration.md` §10 reads the
comparison and shared-layer runs with it. ``--at STEP``: each run read as if it had stopped there (runs of other
budgets compared at the same step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from grokscope import artifacts
from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import final_rate
from grokscope.metrics.milestones import first_step


def row(run: Path, at: int | None = None) -> dict:
    rows = [r for r in artifacts.read_metrics(run) if at is None or r["step"] <= at]
    out = {"run": run.name, "steps": rows[-1]["step"] if rows else 0,
           "t_sat": first_step(rows, "train_acc", th.SATURATION)}
    for probe, short in (("test_inferred_iid", "id"), ("test_inferred_ood", "ood")):
        for level in (0.5, 0.9):
            out[f"t_{short}{int(level * 100)}"] = first_step(rows, probe, level)
    values = [r["test_inferred_ood"] for r in rows if r.get("test_inferred_ood") is not None]
    out["max_ood"] = round(max(values), 3) if values else None
    for metric, label in (("train_acc", "final train"), ("test_inferred_iid", "final ID"),
                          ("test_inferred_ood", "final OOD")):
        rate = final_rate(rows, metric)
        out[label] = "-" if rate is None else rate.text(compact=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--at", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table = pd.DataFrame([row(r, args.at) for r in args.runs]).astype(object).fillna("-")
    if args.out:
        table.to_csv(args.out, index=False)
    cols = list(table.columns)
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for _, r in table.iterrows():
        print("| " + " | ".join(f"{int(v):,}" if isinstance(v, float) and v.is_integer() and c != "max_ood"
                                 else str(v) for c, v in r.items()) + " |")


if __name__ == "__main__":
    main()
