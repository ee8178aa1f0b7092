"""The job plan of a study, and its manifest ``study.json``.

Every job is an API call (``{"verb": ..., "kwargs": ...}``; a training job's kwargs hold its resolved ``RunSpec``)
that an executor runs in this process or ships as ``spec.json`` to a worker (``python -m grokscope.worker``), plus
a structured record of what it is: its role (data, pretrain, analysis, finetune, control, compare), model, family,
regime, seed, checkpoint reference, parent and output folder. The report reads roles from these records and never
parses run names. The equivalent ``grokscope`` command line is kept for people to read. ``sweep`` builds its jobs
with the same builders.

Layout of a study folder::

    <study>/datasets/<regime>/            datasets
    <study>/runs/<model>_<regime>[_s<seed>]/                  pre-training runs (+ analysis/)
    <study>/runs/ft_<model>_<regime>_<checkpoint>/             fine-tunes; ft_<model>_control: the control
    <study>/compare/<model>_natural_vs_both_full.json          cross-regime path comparisons
    <study>/report.html, report.md, figures/, study.json
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from grokscope import artifacts, runs
from grokscope.errors import GrokscopeError
from grokscope.config import apply_overrides, to_dict
from grokscope.data.config import DataConfig, resolve_data_config
from grokscope.studies.spec import (StudySpec, TransferSpec, comparison_data_sets, comparison_model_sets, data_sets,
                                    model_sets, spec_dict, transfer_sets)
from grokscope.training.config import TrainConfig
from grokscope.training.runspec import RunSpec, plain
from grokscope.finetuning import TRANSFER_PRESETS

STAGES = ("data", "train", "analyze", "transfer", "compare")
COMPARISON_PROBES = "iid,ood"  # a comparison run's analysed probe sets: ID and OOD comparisons
COMPARISON_ANALYSES = "lens,trace"  # what a comparison run has (analysis/run_analysis.py)
MANIFEST_SCHEMA = 1


@dataclass
class Job:
    name: str  # unique within the study, e.g. "train gpt_natural"
    stage: str
    argv: list[str]  # the equivalent grokscope command line, without the program name (for people to read)
    out: Path  # the folder (or file) the job writes
    done: Path  # exists when the job's outputs are complete
    record: dict = field(default_factory=dict)  # role, model, family, regime, seed, checkpoint, parent, ...
    resumable: bool = False  # an interrupted job continues with --resume
    needs: list[str] = field(default_factory=list)  # names of jobs whose outputs it reads
    # Every setting the job runs with, resolved from its presets and overrides to typed values: what decides
    # whether a finished job would change (a preset edit counts; lr 1e-3 and 0.001 are the same value).
    resolved: dict = field(default_factory=dict)
    call: dict = field(default_factory=dict)  # what runs: {"verb": an api function, "kwargs": its keywords}


# ----------------------------------------------------------------------------------------------- resolved settings
def api_call(verb: str, **kwargs) -> dict:
    """A job's work as the API call a worker makes (``api.execute``), in JSON-plain values."""
    return {"verb": verb, "kwargs": plain(kwargs)}


def resolved_data(preset: str, regime: str, sets: dict) -> dict:
    return plain({"data": to_dict(resolve_data_config(preset, regime, None, sets))})


def resolved_comparison_data(preset: str, sets: dict) -> dict:
    from grokscope.data.comparison import resolve_comparison_config

    return plain({"data": to_dict(resolve_comparison_config(preset, sets)), "task": "comparison"})


def resolved_overrides(sets: dict) -> dict:
    """Train overrides as the typed values they set (a fine-tune's config is its parent's with these on top)."""
    cfg = apply_overrides(TrainConfig(), sets, what="train") if sets else TrainConfig()
    return plain({k: getattr(cfg, k) for k in sets})


def settings_hash(resolved: dict) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


def _defaults(task: str | None = None) -> dict:
    """Default values of the config sections a resolved record holds (a setting added in a later version, at its
    default, is not a change of a job recorded before it existed); ``task``: a comparison dataset's own config."""
    from grokscope.data.comparison import ComparisonConfig

    data = ComparisonConfig() if task == "comparison" else DataConfig()
    return plain({"train": to_dict(TrainConfig()), "data": to_dict(data)})


def differences(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """``key: old -> new`` for every resolved setting that differs (nested keys joined by dots)."""
    defaults = _defaults(new.get("task") if isinstance(new, dict) else None) if defaults is None else defaults
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.", defaults.get(key) if isinstance(defaults.get(key), dict)
                               else {})
        elif key not in old and key in defaults and b == defaults[key]:
            continue
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def upgraded(resolved: dict, job: Job) -> dict:
    """A training job's recorded settings in today's layout (``artifacts.upgrade_settings``): moving a setting
    between sections in an upgrade is not a change of value."""
    spec = (job.call.get("kwargs") or {}).get("spec") if isinstance(job.call, dict) else None
    if not (isinstance(spec, dict) and isinstance(resolved.get("train"), dict)
            and isinstance(resolved.get("model"), dict)):
        return resolved
    train, model = artifacts.upgrade_settings(spec.get("family", ""), resolved["train"], resolved["model"])
    return {**resolved, "train": train, "model": model}


# Fine-tuning flags that study command lines once always carried at their default values.
_DEFAULT_FLAGS = {("--new-fact-multiple", "5"), ("--flat-evals", "4"), ("--flat-tolerance", "0.02")}


def _without_default_flags(argv: list) -> list:
    out, i = [], 0
    while i < len(argv):
        if i + 1 < len(argv) and (argv[i], argv[i + 1]) in _DEFAULT_FLAGS:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def set_args(values: dict) -> list[str]:
    return [arg for k, v in (values or {}).items() for arg in ("--set", f"{k}={v}")]


# ----------------------------------------------------------------------------------------------- job builders
def data_job(preset: str, regime: str | None, out: Path, sets: dict, name: str | None = None,
             task: str = "composition") -> Job:
    """A dataset: a composition regime's, or (``task="comparison"``, no regime) the comparison task's."""
    which = {"task": task} if task == "comparison" else {"regime": regime}
    (flag, value), = which.items()
    resolved = resolved_comparison_data(preset, sets) if task == "comparison" else resolved_data(preset, regime, sets)
    return Job(name or f"data {value}", "data", ["data", "build", "--preset", preset, f"--{flag}", value, "--out",
                                                 str(out), "--force", *set_args(sets)],
               out, out / "dataset.json", {"role": "data", **which, "path": str(out)}, resolved=resolved,
               call=api_call("build_data", out=out, preset=preset, **which,
                             sets=[f"{k}={v}" for k, v in sets.items()] or None, force=True))


def train_job(model_name: str, family: str, preset: str, data_dir: Path, run: Path, sets: dict, record: dict,
              needs: list[str]) -> Job:
    """A training run: its ``RunSpec`` is resolved here, once (preset and overrides applied), and is what runs."""
    spec = RunSpec.build(data_dir, run, family, preset, sets, quiet=True)
    return Job(f"train {run.name}", "train", ["train", "--data", str(data_dir), "--model", family, "--preset", preset,
                                              "--out", str(run), "--quiet", *set_args(sets)],
               run, run / "summary.json", {"role": "pretrain", "model": model_name, "family": family, **record,
                                           "path": str(run)}, resumable=True, needs=needs,
               resolved=plain(spec.settings()), call=api_call("train", spec=spec.to_dict()))


def analyze_job(run: Path, probes: str, steps: str, record: dict, analyses: str | None = None) -> Job:
    """``analyses``: named only where they are not the default list (a comparison run's lens and trace), so that the
    jobs of studies planned before keep their identity."""
    named = {"analyses": analyses} if analyses else {}
    return Job(f"analyze {run.name}", "analyze", ["analyze", str(run), "--probes", probes, "--steps", steps,
                                                  *(["--analyses", analyses] if analyses else [])], run,
               run / "analysis" / "summary.json", {**record, "role": "analysis", "path": str(run)},
               needs=[f"train {run.name}"], resolved={"probes": probes, "steps": steps, **named},
               call=api_call("analyze", run=run, probes=probes, steps=steps, **named))


def plan(spec: StudySpec, root: Path) -> list[Job]:
    """Every job of the study, in dependency order."""
    root = Path(root)
    data_root, run_root = root / "datasets", root / "runs"
    jobs: list[Job] = [data_job(spec.data.preset, r, data_root / r, data_sets(spec)) for r in spec.regimes]
    pretrain: dict[tuple[str, str, int], Path] = {}
    for model in spec.models:
        for regime in spec.regimes_of(model):
            train_over, model_over = model_sets(model, regime)
            # Runs of one model with the same model settings share an architecture: they may be stacked.
            group = json.dumps([model.name, model_over], sort_keys=True, default=str)
            for seed, job in _seeded_runs(spec, model, regime, data_root / regime, run_root, train_over, model_over,
                                          {"regime": regime}, group, [f"data {regime}"]):
                jobs.append(job)
                jobs.append(analyze_job(job.out, spec.analysis.probes, spec.analysis.steps, job.record))
                pretrain[(model.name, regime, seed)] = job.out
    jobs += _comparison_jobs(spec, data_root, run_root)
    for entry in spec.transfer:
        jobs += _transfer_jobs(spec, entry, run_root, pretrain)
    for model in spec.models:
        regimes = spec.regimes_of(model)
        # Finding 1: the natural model against the both-hop-full one (He et al. §3), and first-hop full when present.
        for other in ("both_full", "first_full"):
            if "natural" not in regimes or other not in regimes:
                continue
            for seed in spec.seeds:
                a, b = pretrain[(model.name, "natural", seed)], pretrain[(model.name, other, seed)]
                out = root / "compare" / f"{a.name}_vs_{b.name}.json"
                jobs.append(Job(f"compare {a.name} {b.name}", "compare",
                                ["compare", f"{a}@last", f"{b}@last", "--out", str(out)], out, out,
                                {"role": "compare", "model": model.name, "family": model.family, "seed": seed,
                                 "a": str(a), "b": str(b), "regime_a": "natural", "regime_b": other,
                                 "checkpoint": "last", "path": str(out)},
                                needs=[f"train {a.name}", f"train {b.name}"],
                                resolved={"a": f"{a}@last", "b": f"{b}@last"},
                                call=api_call("compare", a=f"{a}@last", b=f"{b}@last", out=out)))
    return jobs


def _seeded_runs(spec: StudySpec, model, label: str, data_dir: Path, run_root: Path, train_over: dict,
                 model_over: dict, record: dict, group: str, needs: list[str]) -> list[tuple[int, Job]]:
    """(seed, training job) of ``model`` on one dataset for every seed of the study: ``runs/<model>_<label>`` (with
    ``_s<seed>`` when the study has several seeds)."""
    sets = {**{f"train.{k}": v for k, v in train_over.items()}, **{f"model.{k}": v for k, v in model_over.items()}}
    out = []
    for seed in spec.seeds:
        suffix = f"_s{seed}" if len(spec.seeds) > 1 else ""
        run = run_root / f"{model.name}_{label}{suffix}"
        # The study's seed is the run's seed (the spec refuses a train.seed of its own); the default seed is left out
        # of the job so that runs planned before this rule keep their identity.
        seeded = sets if seed == TrainConfig.seed else {**sets, "train.seed": seed}
        out.append((seed, train_job(model.name, model.family, model.preset, data_dir, run, seeded,
                                    {**record, "seed": seed, "stack_group": group}, needs=needs)))
    return out


def named_steps(steps: str) -> str:
    """The analysis steps a run of another budget surely has: step 0 and the named ones (a step number of the
    composition runs may lie past a comparison run's end)."""
    kept = [s.strip() for s in steps.split(",") if not s.strip().isdigit() or s.strip() == "0"]
    return ",".join(kept) or "0,last"


def _comparison_jobs(spec: StudySpec, data_root: Path, run_root: Path) -> list[Job]:
    """Wang et al.'s comparison task beside composition: one dataset, and per model and seed a run on it
    (``<model>_comparison[_s<seed>]``, role ``comparison``) with its lens and causal tracing."""
    if spec.comparison is None:
        return []
    data = data_job(spec.comparison.preset, None, data_root / "comparison", comparison_data_sets(spec),
                    task="comparison")
    jobs = [data]
    for model in spec.comparison_models():
        train_over, model_over = comparison_model_sets(spec, model)
        # its vocabulary differs from composition's: it stacks only with the model's other comparison runs
        group = json.dumps([model.name, "comparison", model_over], sort_keys=True, default=str)
        for _, job in _seeded_runs(spec, model, "comparison", data.out, run_root, train_over, model_over,
                                   {"role": "comparison", "task": "comparison", "regime": None}, group, [data.name]):
            jobs.append(job)
            jobs.append(analyze_job(job.out, COMPARISON_PROBES, named_steps(spec.analysis.steps), job.record,
                                    COMPARISON_ANALYSES))
    return jobs


def _transfer_jobs(spec: StudySpec, t: TransferSpec, run_root: Path, pretrain: dict) -> list[Job]:
    jobs = []
    model = spec.model(t.model)
    common = ["--preset", t.preset, "--quiet", *set_args(transfer_sets(t))]
    defaults = TransferSpec(model=t.model)
    for flag, key in (("--new-fact-multiple", "new_fact_multiple"), ("--flat-evals", "flat_evals"),
                      ("--flat-tolerance", "flat_tolerance")):
        if getattr(t, key) != getattr(defaults, key):  # the defaults are the CLI's: older command lines stay valid
            common += [flag, f"{getattr(t, key):g}"]
    resolved = plain({"preset": t.preset, "recipe": TRANSFER_PRESETS[t.preset],
                       "set": resolved_overrides(transfer_sets(t)),
                       "budget": {"new_fact_multiple": float(t.new_fact_multiple), "flat_evals": t.flat_evals,
                                  "flat_tolerance": float(t.flat_tolerance)}})
    kwargs = {"preset": t.preset, "sets": [f"{k}={v}" for k, v in transfer_sets(t).items()] or None, "quiet": True,
              "new_fact_multiple": float(t.new_fact_multiple), "flat_evals": t.flat_evals,
              "flat_tolerance": float(t.flat_tolerance)}
    if t.draw != defaults.draw:  # only when set: studies finished before the option keep their settings
        common += ["--draw", t.draw]
        resolved["draw"] = kwargs["draw"] = t.draw
    seed = spec.seeds[0]
    for regime in t.from_:
        parent = pretrain[(model.name, regime, seed)]
        for ckpt in t.checkpoints:
            run = run_root / f"ft_{model.name}_{regime}_{ckpt}"
            jobs.append(Job(f"transfer {run.name}", "transfer", ["transfer", "--from", f"{parent}@{ckpt}", "--out",
                                                                 str(run), *common],
                            run, run / "summary.json",
                            {"role": "finetune", "model": model.name, "family": model.family, "regime": regime,
                             "seed": seed, "checkpoint": ckpt, "parent": str(parent), "path": str(run),
                             "stack_group": f"fine-tunes of {model.name}"},
                            resumable=True, needs=[f"train {parent.name}"],
                            resolved={**resolved, "from": f"{parent}@{ckpt}"},
                            call=api_call("transfer", parent=f"{parent}@{ckpt}", out=run, **kwargs)))
    if t.control:
        parent = pretrain[(model.name, "natural", seed)]
        run = run_root / f"ft_{model.name}_control"
        jobs.append(Job(f"transfer {run.name}", "transfer", ["transfer", "--from", str(parent), "--control", "--out",
                                                             str(run), *common],
                        run, run / "summary.json",
                        {"role": "control", "model": model.name, "family": model.family, "regime": "natural",
                         "seed": seed, "checkpoint": None, "parent": str(parent), "path": str(run),
                         "stack_group": f"fine-tunes of {model.name}"},
                        resumable=True, needs=[f"train {parent.name}"], resolved={**resolved, "control": str(parent)},
                        call=api_call("transfer", parent=str(parent), out=run, control=True, **kwargs)))
    return jobs


def stacked(jobs: list[tuple[Job, dict]]) -> list[tuple[Job, dict, list[Job]]]:
    """Group (job, call) pairs of training or fine-tuning jobs that share a ``stack_group`` into one stacked call
    each (pre-training runs: ``api.train`` with a list of specs; fine-tunes: ``api.stack`` with their calls, which
    resolve against the parents' checkpoints when they run); returns (job to run, its call, the member jobs it
    stands for)."""
    groups: dict[str, list[tuple[Job, dict]]] = {}
    for job, call in jobs:
        groups.setdefault(job.record.get("stack_group") or job.name, []).append((job, call))
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append((members[0][0], members[0][1], [members[0][0]]))
            continue
        names = [job.out.name for job, _ in members]
        if all(c["verb"] == "train" and "spec" in c["kwargs"] for _, c in members):
            call = api_call("train", spec=[c["kwargs"]["spec"] for _, c in members])
        else:
            call = api_call("stack", calls=[c for _, c in members])
        first = members[0][0]
        group = Job(f"stack {' '.join(names)}", first.stage, ["stack", *names], first.out, first.done,
                    {"role": "stack", "members": names}, call=call)
        out.append((group, call, [job for job, _ in members]))
    return out


def resume_call(job: Job, stale: bool = False) -> dict:
    """The job's call, resuming an interrupted run (the trainer starts it over when it died before its first
    checkpoint); a ``stale`` run, whose settings changed before it finished, is cleared and starts over."""
    if not job.resumable or not (job.out / "config.yaml").exists():
        return job.call
    if stale:
        runs.clear_run(job.out, keep=("data",))
        return job.call
    kwargs = dict(job.call["kwargs"])
    if "spec" in kwargs:
        kwargs["spec"] = {**kwargs["spec"], "resume": True}
    else:
        kwargs["resume"] = True
    return {**job.call, "kwargs": kwargs}


# ----------------------------------------------------------------------------------------------- the manifest
class Manifest:
    """``study.json``: the spec, every job's command and record, its status and time, and stage timings."""

    def __init__(self, root: Path, data: dict):
        self.root, self.data = Path(root), data

    @classmethod
    def open(cls, root: Path) -> "Manifest":
        path = Path(root) / "study.json"
        if not path.exists():
            return cls(root, {"schema": MANIFEST_SCHEMA, "jobs": {}, "stage_seconds": {}})
        data = artifacts.read_json(path, "remove the study folder or pass --fresh to start over")
        jobs = data.get("jobs")
        if data.get("schema") != MANIFEST_SCHEMA or not isinstance(jobs, dict) or \
                not all(isinstance(e, dict) for e in jobs.values()) or \
                not isinstance(data.setdefault("stage_seconds", {}), dict):
            raise GrokscopeError(f"{path}: not a study manifest this grokscope reads; pass --fresh to start over")
        return cls(root, artifacts.relocated(data, root))

    def status(self, job: Job) -> str:
        return self.data["jobs"].get(job.name, {}).get("status", "pending")

    def budget_only(self, job: Job) -> bool:
        """Whether an unfinished training job's settings changed only in what a resume may change (its budget and
        stop rules, ``runs.RESUMABLE_KEYS``): it then continues from its checkpoint under the new budget, as
        ``train --resume`` does, instead of starting over (a long run raised from 40,000 to 60,000 steps keeps
        its first 40,000)."""
        old = (self.data["jobs"].get(job.name) or {}).get("resolved")
        if job.stage != "train" or not isinstance(old, dict) or not isinstance(old.get("train"), dict):
            return False

        def without_budget(resolved: dict) -> dict:
            return {**resolved, "train": {k: v for k, v in (resolved.get("train") or {}).items()
                                          if k not in runs.RESUMABLE_KEYS}}
        return without_budget(upgraded(old, job)) == without_budget(job.resolved)

    def changes(self, job: Job) -> list[str]:
        """How the job's resolved settings differ from the recorded ones (``key: old -> new``); a manifest written
        before settings were recorded is compared by command line."""
        old = self.data["jobs"].get(job.name) or {}
        if isinstance(old.get("resolved"), dict):
            return differences(upgraded(old["resolved"], job), job.resolved)
        argv = old.get("argv")
        return [] if argv is None or _without_default_flags(argv) == job.argv else ["command line"]

    def changed_finished(self, jobs: list[Job]) -> list[str]:
        """Finished jobs whose resolved settings would now differ (continuing would mix two configurations), each
        with the settings that differ."""
        out = []
        for job in jobs:
            old = self.data["jobs"].get(job.name)
            if old and old.get("status") == "done" and job.done.exists() and (diff := self.changes(job)):
                out.append(f"{job.name} ({'; '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})")
        return out

    def update(self, spec: StudySpec, jobs: list[Job]) -> None:
        self.data["spec"] = spec_dict(spec)
        recorded = self.data["jobs"]
        for job in jobs:
            old = recorded.get(job.name, {})
            stale = bool(old) and old.get("status") != "done" and bool(self.changes(job)) and not self.budget_only(job)
            entry = {**old, "stage": job.stage, "argv": job.argv, "call": job.call, "record": job.record,
                     "needs": job.needs,
                     "out": str(job.out), "resolved": job.resolved, "settings_hash": settings_hash(job.resolved)}
            if stale:
                entry["status"] = "stale"  # changed before it finished: its partial output is cleared
            recorded[job.name] = entry
        for name in [n for n in recorded if n not in {j.name for j in jobs}]:
            del recorded[name]  # jobs the new spec no longer has (never finished ones: changed_finished checked)
        self.save()

    def mark(self, job: Job, status: str, seconds: float | None = None, note: str | None = None,
             ran_with: dict | None = None) -> None:
        entry = self.data["jobs"].setdefault(job.name, {})
        entry.update(status=status, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        if ran_with:
            entry["ran_with"] = ran_with
        if seconds is not None:
            entry["seconds"] = round(seconds, 2)
        if note:
            entry["note"] = note
        self.save()

    def add_stage_time(self, stage: str, seconds: float) -> None:
        self.data["stage_seconds"][stage] = self.data["stage_seconds"].get(stage, 0.0) + seconds
        self.save()

    def save(self) -> None:
        # where the study is: a manifest read from another place moves its paths there (artifacts.relocated)
        self.data["root"] = str(self.root.resolve())
        artifacts.write_json_atomic(self.root / "study.json", self.data)

