"""Tabulate calibration runs from their folders (finished or cut short) into the files `docs/calibration.md` shows.

    python docs/calibration/tabulate.py RUN [RUN ...] --out DIR [--key data.phi] [--title TEXT]

For every run: the milestones (t_sat = first train accuracy >= 0.97; t_id50 / t_id90 = first ID >= 0.5 / 0.9;
t_ood50 likewise on OOD), whether ID came with a delay by the regime rule (t_id50 - t_sat >= 2 t_sat), the final
train / ID / OOD, the OOD maximum, He et al.'s bridge found on OOD at step 0 (its chance floor), at its maximum and
at the end, the weight norm at step 0 and at the end, the steps (epochs) run and why it stopped.

Writes ``table.csv``, ``curves.csv`` (every evaluation row's main metrics) and ``curves.png`` (train, ID, OOD,
bridge found on OOD and the weight norm against steps); with ``--key`` (a swept value in the run folders' names,
``<key>=<value>``) also ``phase.png`` (Wang et al. Fig. 2: curves against steps and epochs, steps to ID 0.9 against
the value). Prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from grokscope import artifacts, runs  # noqa: E402
from grokscope.metrics import thresholds as th  # noqa: E402
from grokscope.metrics.milestones import first_step, is_delayed  # noqa: E402
from grokscope.reporting import plots  # noqa: E402

CURVE_COLUMNS = ("step", "epoch", "train_acc", "test_inferred_iid", "test_inferred_ood", "bridge_found_ood",
                 "weight_norm")


def stop_reason(run: Path, rows: list[dict], cap: int) -> str:
    """Why the run stopped: its summary's word, else the reason its last checkpoint recorded (a stacked run that had
    stopped before its stack was cut, from versions that wrote a stack's summaries only at its end), else cut."""
    summary = run / "summary.json"
    if summary.exists():
        return json.loads(summary.read_text()).get("stop_reason", "finished")
    steps = runs.list_checkpoints(run)
    if steps and steps[-1] == rows[-1]["step"]:
        meta = json.loads((runs.step_dir(run, steps[-1]) / "meta.json").read_text())
        if meta.get("loop", {}).get("stop_reason"):
            return meta["loop"]["stop_reason"]
    return f"cut at {rows[-1]['step']} (cap {cap:,})"


def row_of(run: Path, key: str | None) -> tuple[dict, pd.DataFrame]:
    rows = artifacts.read_metrics(run)
    cfg = artifacts.read_config(run)
    at = {r["step"]: r for r in rows}
    first, last = rows[0], rows[-1]
    t_sat = first_step(rows, "train_acc", th.SATURATION)
    t_id50 = first_step(rows, "test_inferred_iid", th.GENERALISED)
    t_id90 = first_step(rows, "test_inferred_iid", th.GROKKED)
    bridge = [r.get("bridge_found_ood") for r in rows if r.get("bridge_found_ood") is not None]
    label = run.name.split("=", 1)[1] if key and "=" in run.name else run.name
    record = {
        (key or "run"): float(label) if key else label,
        "t_sat": t_sat, "t_id50": t_id50, "t_id90": t_id90,
        "t_id90_epochs": at[t_id90].get("epoch") if t_id90 is not None else None,
        "id_delayed": is_delayed(t_sat, t_id50) if t_sat is not None and t_id50 is not None else None,
        "t_ood50": first_step(rows, "test_inferred_ood", th.GENERALISED),
        "final_train": round(last["train_acc"], 3), "final_id": round(last["test_inferred_iid"], 3),
        "final_ood": round(last["test_inferred_ood"], 3),
        "max_ood": round(max(r["test_inferred_ood"] for r in rows), 3),
        "bridge_step0": round(bridge[0], 3) if bridge else None,
        "bridge_max": round(max(bridge), 3) if bridge else None,
        "bridge_end": round(bridge[-1], 3) if bridge else None,
        "wnorm_step0": round(first["weight_norm"], 1), "wnorm_end": round(last["weight_norm"], 1),
        "steps": last["step"], "epochs": round(last.get("epoch") or 0, 1),
        "stop": stop_reason(run, rows, cfg["train"]["max_steps"]),
    }
    frame = pd.DataFrame(rows)
    return record, frame[[c for c in CURVE_COLUMNS if c in frame]].assign(**{(key or "run"): record[key or "run"]})


def curves_figure(curves: dict, title: str):
    metrics = [m for m in CURVE_COLUMNS[2:] if any(m in df for df in curves.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, df in curves.items():
            if metric in df:
                ax.plot(df["step"], df[metric], label=str(name), linewidth=1.1)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
        if metric != "weight_norm":
            ax.set_ylim(-0.02, 1.05)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--key", help="the swept value in the run folders' names, e.g. data.phi")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    records, frames = [], {}
    for run in args.runs:
        record, frame = row_of(run, args.key)
        records.append(record)
        frames[record[args.key or "run"]] = frame
    table = pd.DataFrame(records)
    if args.key:
        table = table.sort_values(args.key)
    table.to_csv(args.out / "table.csv", index=False)
    pd.concat(frames.values()).to_csv(args.out / "curves.csv", index=False)
    curves_figure(frames, args.title).savefig(args.out / "curves.png", dpi=110)
    if args.key:
        plots.phase_diagram(frames, table, args.key, args.title).savefig(args.out / "phase.png", dpi=110)
        print(plots.critical_range(table, args.key))
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for r in table.itertuples(index=False):
        print("| " + " | ".join("-" if pd.isna(v) else str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
