"""``grokscope sweep``: a grid over any data / train / model keys on the study executors, and a milestone table.

Each grid point builds its dataset (one per distinct data point) and trains one model of a study preset (the first,
or ``--model NAME``) on the natural regime; the result is ``sweep.csv`` (one row per point: the grid values,
milestones, final accuracies, steps and minutes), ``sweep.png`` (steps to each milestone against the first grid
key, as Wang et al. Fig. 2 plots them) and ``sweep_curves.png`` (every point's curves). Every point is validated
before the first job; finished points are skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import pandas as pd

from grokscope import artifacts
from grokscope.config import repeated, route_sets, to_dict
from grokscope.data.comparison import ComparisonConfig, resolve_comparison_config
from grokscope.data.config import DataConfig, resolve_data_config
from grokscope.data.vocab import ComparisonVocab
from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import first_step, is_delayed
from grokscope.errors import INTERRUPTED_MESSAGE, GrokscopeError, Interrupted
from grokscope.models.registry import family, model_config
from grokscope.studies.executors import Runner, make_executor
from grokscope.studies.jobs import Job, TrainJob, stacked
from grokscope.studies.migrations import compared, read_sweep, stale, sweep_identity
from grokscope.studies.plan import data_job, resumed
from grokscope.studies.run import INTERRUPTED
from grokscope.studies.spec import (comparison_data_sets, comparison_model_sets, data_sets, load_spec, model_sets,
                                    qualified_sets, spec_dict)
from grokscope.training.config import TrainConfig, resolve_train_config
from grokscope.training.runspec import plain


def parse_grid(items: list[str], model_family: str, data_cls: type = DataConfig) -> dict[str, list[str]]:
    """``section.KEY=v1,v2`` items (sections data, train, model) -> {qualified key: [values]}; ``data_cls``: the
    task's data config (``DataConfig``, or ``ComparisonConfig`` for the comparison task)."""
    grid, problems = {}, []
    fam = family(model_family)
    for item in items:
        key, sep, values = item.partition("=")
        section = key.split(".", 1)[0]
        if not sep or section not in ("data", "train", "model") or "." not in key or not values.strip():
            problems.append(f"grid item {item!r} must be data.KEY=v1,v2, train.KEY=v1,v2 or model.KEY=v1,v2")
            continue
        try:
            route_sets([(key, "")], {"data": data_cls, "train": TrainConfig, "model": fam.config_cls})
        except GrokscopeError as exc:
            problems.extend(exc.problems)
            continue
        if key in grid:
            problems.append(f"--grid {key} given twice; give all its values in one --grid {key}=v1,v2")
            continue
        raw = [v.strip() for v in values.split(",")]
        if not all(raw):
            problems.append(f"--grid {item!r} has an empty value; give {key}=v1,v2 with no empty item")
            continue
        twice = repeated(raw)
        if twice:
            problems.append(f"--grid {key}: value(s) {', '.join(map(repr, twice))} given twice "
                            f"(the same point twice); name each once")
            continue
        grid[key] = raw
        odd = [v for v in grid[key] if "/" in v or "\\" in v or v in (".", "..") or len(v) > 64]
        if odd:
            problems.append(f"--grid {key}: value(s) {', '.join(map(repr, odd))} cannot name a folder (a path "
                            f"separator, '.' or '..', or over 64 characters); give plain values")
    if problems or not grid:
        raise GrokscopeError(problems or ["give at least one --grid section.KEY=v1,v2"])
    return grid


TASKS = ("composition", "comparison")
SWEEP_FILES = ("sweep.json", "sweep.csv", "sweep.png", "sweep_curves.png", "phase.png", "jobs")


def point_name(point: dict[str, str]) -> str:
    """A grid point's folder name: every section.key=value of it, so that two points never share a folder
    (``train.seed=1`` and ``data.seed=1`` once both became ``seed1``)."""
    return "_".join(f"{k}={v}" for k, v in point.items())


def sweep_jobs(preset: str, grid_items: list[str], out: Path, model_name: str | None = None,
               task: str = "composition"):
    """The data and train jobs of every grid point, validated before anything runs. ``task="comparison"``: the points
    train on the preset's comparison dataset (its ``comparison`` section) instead of its natural regime."""
    spec = load_spec(preset)
    names = [m.name for m in spec.models]
    if model_name is not None and model_name not in names:
        raise GrokscopeError(f"--model {model_name!r} is not a model of {preset} ({', '.join(names)})")
    if task not in TASKS:
        raise GrokscopeError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    comparison = task == "comparison"
    if comparison and spec.comparison is None:
        raise GrokscopeError(f"--task comparison: the preset {preset} has no comparison section; choose a preset "
                             f"that has one (contrast) or add one to your study file")
    trained = [m.name for m in spec.comparison_models()] if comparison else names
    model = spec.model(model_name or trained[0])  # default: the first model trained on the task
    if model.name not in trained:
        raise GrokscopeError(f"--model {model.name}: not trained on the comparison task in {preset}; pass --model "
                             f"one of {', '.join(trained)}")
    grid = parse_grid(grid_items, model.family, ComparisonConfig if comparison else DataConfig)
    base_train, base_model = comparison_model_sets(spec, model) if comparison else model_sets(model)
    base_data = comparison_data_sets(spec) if comparison else data_sets(spec)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    data_jobs: dict[str, Job] = {}
    train_jobs, problems = [], []
    for point in points:
        data_set = {**base_data, **{k[5:]: v for k, v in point.items() if k.startswith("data.")}}
        train_set = {**base_train, **{k[6:]: v for k, v in point.items() if k.startswith("train.")}}
        model_set = {**base_model, **{k[6:]: v for k, v in point.items() if k.startswith("model.")}}
        try:
            if comparison:
                preset_name = spec.comparison.preset
                data_cfg = resolve_comparison_config(preset_name, data_set).validate()
                d_vocab = ComparisonVocab(data_cfg.num_entities, data_cfg.num_attributes, data_cfg.num_values).d_vocab
            else:
                preset_name = spec.data.preset
                data_cfg = resolve_data_config(preset_name, "natural", None, data_set).validate()
                d_vocab = data_cfg.num_entities
            tcfg = resolve_train_config(model.family, model.preset, train_set)
            model_config(model.family, tcfg.model_config, d_vocab=d_vocab, overrides=model_set)
        except GrokscopeError as exc:
            problems += [f"grid point {point_name(point)}: {p}" for p in exc.problems]
            continue
        # named by its settings (and the comparison task by its own prefix): a later sweep in the same folder never
        # mixes them up
        key = json.dumps(data_set, sort_keys=True)
        if key not in data_jobs:
            data_dir = out / "datasets" / f"{'c' if comparison else 'd'}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
            data_jobs[key] = data_job(preset_name, None if comparison else "natural", data_dir, data_set,
                                      plain(to_dict(data_cfg)), name=f"data {data_dir.name}", task=task)
        data_dir = data_jobs[key].out
        sets = qualified_sets(train_set, model_set)
        run = out / "runs" / point_name(point)
        group = json.dumps([model.name, model_set], sort_keys=True, default=str)  # same model settings: stackable
        record = {"regime": None, "task": task} if comparison else {"regime": "natural"}
        train_jobs.append((point, TrainJob.build(model.name, model.family, model.preset, data_dir, run, sets,
                                                 {**record, "point": point, "stack_group": group},
                                                 [data_jobs[key].name])))
    if problems:
        raise GrokscopeError(problems)
    return grid, list(data_jobs.values()), train_jobs


def run_sweep(preset: str, grid_items: list[str], out: Path, executor: str = "local", address: str | None = None,
              model_name: str | None = None, log=print, runner: Runner | None = None, stack: bool = True,
              fresh: bool = False, task: str = "composition") -> Path:
    """Run (or continue) a sweep in ``out``. A folder holding another sweep's finished points is refused unless
    ``fresh``: its runs would be reused under settings they were not trained with."""
    out = Path(out)
    grid, data_jobs, train_jobs = sweep_jobs(preset, grid_items, out, model_name, task)
    if out.exists() and any(p.name != ".lock" for p in out.iterdir()) and not (out / "sweep.json").exists():
        raise GrokscopeError(f"{out}: exists and is not a sweep folder; choose another --out")
    artifacts.ensure_writable_dir(out)
    with artifacts.FolderLock(out, "sweep"):
        spec = spec_dict(load_spec(preset))
        old = None
        if fresh:  # the sweep's own outputs, by name: a user's files in the folder stay
            paths = [*_recorded_outputs(out), *(j.out for j in data_jobs), *(j.out for _, j in train_jobs)]
            artifacts.remove_own(out, [*SWEEP_FILES, *(Path(p).resolve() for p in paths)])
        elif (old := read_sweep(out)) is not None:
            if sweep_identity(old) != (spec, model_name, task):
                raise GrokscopeError(f"{out}: holds a sweep of another preset, model or task; choose another --out "
                                     f"or pass --fresh to start over")
            changed = _changed_points(old.get("resolved"), [*data_jobs, *(j for _, j in train_jobs)])
            if changed:
                raise GrokscopeError(f"{out}: finished points would change ({', '.join(changed[:3])}"
                                     f"{' ...' if len(changed) > 3 else ''}); choose another --out or pass --fresh")
        recorded = (old or {}).get("resolved")
        recorded = recorded if isinstance(recorded, dict) else {}
        state = {"root": str(out.resolve()), "preset": preset, "spec": spec, "grid": grid, "model": model_name,
                 "task": task, "points": [p for p, _ in train_jobs],
                 "resolved": {j.name: j.resolved for j in [*data_jobs, *(j for _, j in train_jobs)]},
                 "outputs": sorted({*(() if fresh else _recorded_outputs(out)),
                                    *(str(Path(j.out).resolve()) for j in [*data_jobs, *(j for _, j in train_jobs)])})}
        artifacts.write_json_atomic(out / "sweep.json", state)
        ex = make_executor(executor, out / "jobs", address, runner, log)

        def on_done(job: Job, code: int, seconds: float) -> None:
            if code in INTERRUPTED:  # Ctrl-C: the user stopped it; finished points are kept
                raise Interrupted(INTERRUPTED_MESSAGE)
            if code != 0:
                raise GrokscopeError(f"sweep job '{job.name}' failed (exit {code}); fix the cause and re-run: "
                                     f"finished points are kept")

        try:
            todo = [j for j in data_jobs if not j.done.exists()]
            if todo:
                ex.run(todo, on_done)
            # An unfinished point whose settings changed starts over, as a study's job does (a resume would meet
            # "config changed"); one whose budget only was raised continues.
            todo = [resumed(j, stale=stale(recorded.get(j.name), j)) for _, j in train_jobs if not j.done.exists()]
            grouped = stacked(todo) if stack else [(job, [job]) for job in todo]
            if grouped:
                ex.run([job for job, _ in grouped], on_done)
            return write_table(out, grid, train_jobs)
        except KeyboardInterrupt:  # Ctrl-C between jobs: the same one line as inside a job
            raise Interrupted(INTERRUPTED_MESSAGE) from None


def _changed_points(recorded, jobs: list[Job]) -> list[str]:
    """Finished jobs whose resolved settings differ from those the sweep recorded (an edited training preset too),
    each with what differs. A sweep recorded before settings were recorded is compared by spec only."""
    if not isinstance(recorded, dict):
        return []
    out = []
    for job in jobs:
        old = recorded.get(job.name)
        if isinstance(old, dict) and job.done.exists() and (diff := compared(old, job)):
            out.append(f"{job.name} ({'; '.join(diff[:2])})")
    return out


def _save_figure(fig, path: Path) -> None:
    """Whole or not at all: a temporary sibling, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _recorded_outputs(out: Path) -> list[str]:
    """The outputs an earlier sweep in ``out`` recorded (kept, so that a later --fresh removes them too)."""
    try:
        old = read_sweep(out)
    except GrokscopeError:
        return []
    outputs = old.get("outputs") if isinstance(old, dict) else None
    return [o for o in outputs if isinstance(o, str)] if isinstance(outputs, list) else []


def write_table(out: Path, grid: dict, train_jobs) -> Path:
    from grokscope.reporting.contrast import label_chance

    rows = []
    for point, job in train_jobs:
        summary = artifacts.read_summary(job.out)
        final = summary["final"]
        metrics = artifacts.read_metrics(job.out)
        chance = {}
        if job.record.get("task") == "comparison":  # the OOD comparisons' most frequent label: the floor to read
            chance = {"ood_chance": label_chance({"config": artifacts.read_config(job.out), "path": job.out})}
        rows.append({**point, **summary["milestones"], **_id_phase(metrics), "final_train": final.get("train_acc"),
                     "final_iid": final.get("test_inferred_iid"), "final_ood": final.get("test_inferred_ood"),
                     **chance,
                     f"final_{summary.get('bridge_metric', 'bridge_use')}_ood":
                         final.get(f"{summary.get('bridge_metric', 'bridge_use')}_ood"),
                     "steps": summary["final_step"], "stop_reason": summary["stop_reason"],
                     "minutes": round(summary["wall_seconds"] / 60, 2)})
    df = pd.DataFrame(rows)
    artifacts.write_text_atomic(out / "sweep.csv", df.to_csv(index=False))
    from grokscope.reporting import plots

    first = next(iter(grid))
    x = pd.to_numeric(df[first], errors="coerce")
    fig = plots.milestone_sweep(df.assign(**{first: x if x.notna().all() else df[first]}), first,
                                f"steps to milestones vs {first}", by=[k for k in grid if k != first])
    _save_figure(fig, out / "sweep.png")
    plots.plt.close(fig)
    curves = {point_name(point): pd.DataFrame(artifacts.read_metrics(job.out)) for point, job in train_jobs}
    fig = plots.sweep_curves(curves, "curves of every grid point")
    _save_figure(fig, out / "sweep_curves.png")
    plots.plt.close(fig)
    if x.notna().all() and len(grid) == 1:  # one numeric key: Wang et al.'s phase diagram over it
        by_value = {float(v): pd.DataFrame(artifacts.read_metrics(job.out))
                    for v, (_, job) in zip(x, train_jobs)}
        fig = plots.phase_diagram(by_value, df.assign(**{first: x}), first,
                                  f"ID generalisation against {first} (Wang et al. Fig. 2)")
        _save_figure(fig, out / "phase.png")
        plots.plt.close(fig)
    return out / "sweep.csv"


def _id_phase(rows: list[dict]) -> dict:
    """When ID generalisation came: first ID >= 0.9 in steps and epochs, first ID >= 0.5, and whether that came
    with a delay after saturation (the regime rule: ``metrics.milestones.is_delayed``)."""
    t_sat = first_step(rows, "train_acc", th.SAT_CHECKPOINT)
    t_gen = first_step(rows, "test_inferred_iid", th.GENERALISED)
    t_90 = first_step(rows, "test_inferred_iid", th.GROKKED)
    epoch = {r["step"]: r.get("epoch") for r in rows}
    return {"t_id90_epochs": epoch.get(t_90) if t_90 is not None else None,
            "id_delayed": is_delayed(t_sat, t_gen) if t_gen is not None else None}

