"""The job plan of a study: every job it runs, as typed values (``studies/jobs.py``), in dependency order.

A job is one stage's work (build data, train, analyse, fine-tune, compare) with a structured record of what it is:
its role, model, family, regime, seed, checkpoint reference, parent and output folder. The report reads roles from
these records and never parses run names. ``sweep`` builds its jobs with the same builders; ``studies/manifest.py``
records them in ``study.json``.

Layout of a study folder::

    <study>/datasets/<regime>/            datasets
    <study>/runs/<model>_<regime>[_s<seed>]/                  pre-training runs (+ analysis/)
    <study>/runs/ft_<model>_<regime>_<checkpoint>/             fine-tunes; ft_<model>_control: the control
    <study>/compare/<model>_natural_vs_both_full.json          cross-regime path comparisons
    <study>/report.html, report.md, figures/, study.json, jobs/
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from grokscope import runs
from grokscope.studies.jobs import AnalyzeJob, CompareJob, DataJob, Job, TrainJob, TransferJob
from grokscope.studies.spec import (PlannedRun, Resolved, StudySpec, TransferSpec, comparison_data_sets, data_sets,
                                    resolve, transfer_sets)
from grokscope.training.config import TrainConfig

STAGES = ("data", "train", "analyze", "transfer", "compare")
COMPARISON_PROBES = "iid,ood"  # a comparison run's analysed probe sets: ID and OOD comparisons
COMPARISON_ANALYSES = "lens,trace"  # what a comparison run has (analysis/run_analysis.py)


# ----------------------------------------------------------------------------------------------- job builders
def data_job(preset: str, regime: str | None, out: Path, sets: dict, config: dict, name: str | None = None,
             task: str = "composition") -> DataJob:
    """A dataset: a composition regime's, or (``task="comparison"``, no regime) the comparison task's; ``config``:
    its resolved config."""
    return DataJob(preset=preset, out=Path(out), sets=dict(sets), config=config,
                   regime=None if task == "comparison" else regime, task=task, label=name)


def plan(spec: StudySpec, root: Path) -> list[Job]:
    """Every job of the study, in dependency order."""
    root = Path(root)
    data_root, run_root = root / "datasets", root / "runs"
    resolved = spec.resolved or resolve(spec)  # by load_spec; a spec made by hand is resolved here
    runs = resolved.runs
    jobs: list[Job] = [data_job(spec.data.preset, r, data_root / r, data_sets(spec), resolved.data[r])
                       for r in spec.regimes]
    pretrain: dict[tuple[str, str, int], Path] = {}
    for model in spec.models:
        for regime in spec.regimes_of(model):
            planned = runs[(model.name, regime)]
            # Runs of one model with the same model settings share an architecture: they may be stacked.
            group = json.dumps([model.name, planned.model_sets], sort_keys=True, default=str)
            for seed, job in _seeded_runs(spec, model, regime, planned, data_root / regime, run_root,
                                          {"regime": regime}, group, [f"data {regime}"]):
                jobs.append(job)
                jobs.append(AnalyzeJob(run=job.out, probes=spec.analysis.probes, steps=spec.analysis.steps,
                                       info=job.record))
                pretrain[(model.name, regime, seed)] = job.out
    jobs += _comparison_jobs(spec, resolved, data_root, run_root)
    for entry in spec.transfer:
        jobs += _transfer_jobs(spec, entry, resolved.transfer[entry.model], run_root, pretrain)
    for model in spec.models:
        regimes = spec.regimes_of(model)
        # Finding 1: the natural model against the both-hop-full one (He et al. §3), and first-hop full when present.
        for other in ("both_full", "first_full"):
            if "natural" not in regimes or other not in regimes:
                continue
            for seed in spec.seeds:
                a, b = pretrain[(model.name, "natural", seed)], pretrain[(model.name, other, seed)]
                jobs.append(CompareJob(model=model.name, family=model.family, seed=seed, a=a, b=b, regime_a="natural",
                                       regime_b=other, out=root / "compare" / f"{a.name}_vs_{b.name}.json"))
    return jobs


def _seeded_runs(spec: StudySpec, model, label: str, planned: PlannedRun, data_dir: Path, run_root: Path,
                 record: dict, group: str, needs: list[str]) -> list[tuple[int, TrainJob]]:
    """(seed, training job) of ``model`` on one dataset for every seed of the study: ``runs/<model>_<label>`` (with
    ``_s<seed>`` when the study has several seeds), each the planned run with its data, folder and seed."""
    out = []
    for seed in spec.seeds:
        suffix = f"_s{seed}" if len(spec.seeds) > 1 else ""
        run = run_root / f"{model.name}_{label}{suffix}"
        # The study's seed is the run's seed (the spec refuses a train.seed of its own); the default seed is left out
        # of the command line so that runs planned before this rule keep their identity.
        seeded = planned.sets if seed == TrainConfig.seed else {**planned.sets, "train.seed": seed}
        run_spec = replace(planned.spec, data=str(data_dir), out=str(run), train={**planned.spec.train, "seed": seed})
        out.append((seed, TrainJob(model=model.name, spec=run_spec, preset=model.preset, sets=seeded,
                                   info={**record, "seed": seed, "stack_group": group}, needs=list(needs))))
    return out


def named_steps(steps: str) -> str:
    """The analysis steps a run of another budget surely has: step 0 and the named ones (a step number of the
    composition runs may lie past a comparison run's end)."""
    kept = [s.strip() for s in steps.split(",") if not s.strip().isdigit() or s.strip() == "0"]
    return ",".join(kept) or "0,last"


def _comparison_jobs(spec: StudySpec, resolved: Resolved, data_root: Path, run_root: Path) -> list[Job]:
    """Wang et al.'s comparison task beside composition: one dataset, and per model and seed a run on it
    (``<model>_comparison[_s<seed>]``, role ``comparison``) with its lens and causal tracing."""
    if spec.comparison is None:
        return []
    data = data_job(spec.comparison.preset, None, data_root / "comparison", comparison_data_sets(spec),
                    resolved.data["comparison"], task="comparison")
    jobs: list[Job] = [data]
    for model in spec.comparison_models():
        planned = resolved.runs[(model.name, "comparison")]
        # its vocabulary differs from composition's: it stacks only with the model's other comparison runs
        group = json.dumps([model.name, "comparison", planned.model_sets], sort_keys=True, default=str)
        for _, job in _seeded_runs(spec, model, "comparison", planned, data.out, run_root,
                                   {"role": "comparison", "task": "comparison", "regime": None}, group, [data.name]):
            jobs.append(job)
            jobs.append(AnalyzeJob(run=job.out, probes=COMPARISON_PROBES, steps=named_steps(spec.analysis.steps),
                                   analyses=COMPARISON_ANALYSES, info=job.record))
    return jobs


def _transfer_jobs(spec: StudySpec, t: TransferSpec, typed_sets: dict, run_root: Path,
                   pretrain: dict) -> list[TransferJob]:
    """The fine-tunes of one transfer entry (from the first seed's parents), and its control."""
    model = spec.model(t.model)
    seed = spec.seeds[0]
    common = dict(model=model.name, family=model.family, seed=seed, preset=t.preset, sets=transfer_sets(t),
                  typed_sets=typed_sets,
                  new_fact_multiple=float(t.new_fact_multiple), flat_evals=t.flat_evals,
                  flat_tolerance=float(t.flat_tolerance), draw=t.draw)
    jobs = [TransferJob(regime=regime, parent=pretrain[(model.name, regime, seed)], checkpoint=ckpt,
                        out=run_root / f"ft_{model.name}_{regime}_{ckpt}", **common)
            for regime in t.from_ for ckpt in t.checkpoints]
    if t.control:
        jobs.append(TransferJob(regime="natural", parent=pretrain[(model.name, "natural", seed)], control=True,
                                out=run_root / f"ft_{model.name}_control", **common))
    return jobs


def resumed(job: Job, stale: bool = False) -> Job:
    """The job as it runs now: continuing an interrupted run (the trainer starts it over when it died before its
    first checkpoint); a ``stale`` run, whose settings changed before it finished, is cleared and starts over."""
    if not job.resumable or not (job.out / "config.yaml").exists():
        return job
    if stale:
        runs.clear_run(job.out, keep=("data",))
        return job
    return job.resumed()
