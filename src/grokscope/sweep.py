"""``grokscope sweep``: a grid over any data / train / model keys on the study executors, and a milestone table.

Each grid point builds its dataset (when data keys vary) and trains the preset's first model on the natural regime;
the result is ``sweep.csv`` (one row per point: the grid values, milestones, final accuracies, wall time) and
``sweep.png`` (steps to each milestone vs the first grid key, Wang Fig. 2 style). Finished points are skipped.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.study import Job, LocalExecutor, RayExecutor, load_preset


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid, problems = {}, []
    for item in items:
        key, _, values = item.partition("=")
        section = key.split(".", 1)[0]
        if not values or section not in ("data", "train", "model") or "." not in key:
            problems.append(f"grid item {item!r} must be data.KEY=v1,v2 / train.KEY=v1,v2 / model.KEY=v1,v2")
            continue
        grid[key] = [v for v in values.split(",") if v]
    if problems or not grid:
        raise GrokscopeError(problems or ["give at least one --grid key=v1,v2"])
    return grid


def point_name(point: dict[str, str]) -> str:
    return "_".join(f"{k.split('.', 1)[1]}{v}" for k, v in point.items())


def run_sweep(preset: str, grid_items: list[str], out: Path, executor: str = "local", address: str | None = None,
              log=print) -> Path:
    spec = load_preset(preset)
    grid = parse_grid(grid_items)
    model = spec["models"][0]
    out = Path(out)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    data_jobs, train_jobs = {}, []
    for point in points:
        data_set = {**spec["data"].get("set", {}), **{k[5:]: v for k, v in point.items() if k.startswith("data.")}}
        data_key = json.dumps(data_set, sort_keys=True)
        if data_key in data_jobs:
            data_dir = data_jobs[data_key].done.parent
        else:
            data_dir = out / "datasets" / f"d{len(data_jobs)}"
        if data_key not in data_jobs:
            data_jobs[data_key] = Job("data", f"data {data_dir.name}", [
                "data", "build", "--preset", spec["data"]["preset"], "--regime", "natural", "--out", str(data_dir),
                "--force", *[a for k, v in data_set.items() for a in ("--set", f"{k}={v}")]], data_dir / "dataset.json")
        train_set = {**model.get("set", {}), **{k.split(".", 1)[1] if k.startswith("train.") else k: v
                                                 for k, v in point.items() if not k.startswith("data.")}}
        run = out / "runs" / point_name(point)
        train_jobs.append((point, Job("train", f"train {run.name}", [
            "train", "--data", str(data_dir), "--model", model["family"], "--preset", model["preset"], "--out",
            str(run), "--quiet", *[a for k, v in train_set.items() for a in ("--set", f"{k}={v}")]],
            run / "summary.json", resume=run / "config.yaml")))
    ex = LocalExecutor(log) if executor == "local" else RayExecutor(address, log)
    for stage_jobs in (list(data_jobs.values()), [j for _, j in train_jobs]):
        todo = [j for j in stage_jobs if not j.done.exists()]
        if todo:
            ex.run_stage(todo)
    rows = []
    for point, job in train_jobs:
        summary = json.loads(job.done.read_text())
        final = summary["final"]
        rows.append({**point, **summary["milestones"], "final_train": final.get("train_acc"),
                     "final_iid": final.get("test_inferred_iid"), "final_ood": final.get("test_inferred_ood"),
                     "steps": summary["final_step"], "minutes": round(summary["wall_seconds"] / 60, 2)})
    df = pd.DataFrame(rows)
    df.to_csv(out / "sweep.csv", index=False)
    from grokscope.report import plots

    first = next(iter(grid))
    x = pd.to_numeric(df[first], errors="coerce")
    fig = plots.milestone_sweep(df.assign(**{first: x if x.notna().all() else df[first]}), first,
                                f"steps to milestones vs {first}")
    fig.savefig(out / "sweep.png", dpi=110)
    plots.plt.close(fig)
    return out / "sweep.csv"
