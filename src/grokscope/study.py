"""``grokscope study``: one command runs a whole study, stage by stage, and writes the report.

A study preset (YAML under ``presets/``) names the data regimes, the models with their training budgets, the
analyses and the transfer runs. Stages run in dependency order and each job is a ``grokscope`` command (so a job
is exactly what a user could run by hand). A job whose outputs are complete is skipped and an interrupted training
job resumes, so a killed study continues where it stopped; ``fresh=True`` starts over.

Layout of a study folder::

    reports/<name>/datasets/<regime>[_transfer]/   datasets
    reports/<name>/runs/<model>_<regime>/          pre-training runs (+ analysis/)
    reports/<name>/runs/ft_<model>_<regime>_<ckpt>/ fine-tunes; ft_<model>_control/ the from-scratch control
    reports/<name>/report.html, report.md, figures/, study.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from grokscope import runs
from grokscope.errors import GrokscopeError

PRESET_KEYS = {"name", "tier", "data", "regimes", "models", "analysis", "transfer"}


def load_preset(preset: str) -> dict:
    """A preset name (smoke, micro, mini, paper) or a path to a YAML file; unknown keys are errors."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        try:
            text = resources.files("grokscope.presets").joinpath(f"{preset}.yaml").read_text()
        except FileNotFoundError:
            names = sorted(p.name[:-5] for p in resources.files("grokscope.presets").iterdir()
                           if p.name.endswith(".yaml"))
            raise GrokscopeError(f"unknown study preset {preset!r}; choose one of {', '.join(names)} or a YAML "
                                 f"file") from None
    spec = yaml.safe_load(text)
    unknown = sorted(set(spec) - PRESET_KEYS)
    if unknown:
        raise GrokscopeError([f"unknown study preset key {k!r}; valid keys: {', '.join(sorted(PRESET_KEYS))}"
                              for k in unknown])
    return spec


def apply_study_overrides(spec: dict, overrides: dict[str, str]) -> dict:
    """``--set`` on a study: ``data.KEY=V`` (generator), ``train.KEY=V`` (every model run), ``transfer.KEY=V``."""
    problems = []
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "data" and name:
            spec["data"].setdefault("set", {})[name] = value
        elif section == "train" and name:
            for model in spec["models"]:
                model.setdefault("set", {})[name] = value
        elif section == "transfer" and name:
            spec["transfer"].setdefault("set", {})[name] = value
        else:
            problems.append(f"study override {key!r} must be data.KEY, train.KEY or transfer.KEY")
    if problems:
        raise GrokscopeError(problems)
    return spec


@dataclass
class Job:
    stage: str
    name: str
    argv: list[str]
    done: Path  # exists when the job's outputs are complete
    resume: Path | None = None  # exists when an interrupted job can resume
    after: list[str] = field(default_factory=list)


def _set_args(values: dict) -> list[str]:
    return [arg for k, v in (values or {}).items() for arg in ("--set", f"{k}={v}")]


def plan(spec: dict, root: Path) -> list[Job]:
    """Every job of the study, in dependency order."""
    jobs: list[Job] = []
    data_root, run_root = root / "datasets", root / "runs"
    transfer = spec.get("transfer") or {}
    for regime in spec["regimes"]:
        out = data_root / regime
        jobs.append(Job("data", f"data {regime}", ["data", "build", "--preset", spec["data"]["preset"],
                                                   "--regime", regime, "--out", str(out), "--force",
                                                   *_set_args(spec["data"].get("set"))], out / "dataset.json"))
    for model in spec["models"]:
        for regime in model.get("regimes", spec["regimes"]):
            run = run_root / f"{model['name']}_{regime}"
            jobs.append(Job("train", f"train {run.name}",
                            ["train", "--data", str(data_root / regime), "--model", model["family"], "--preset",
                             model["preset"], "--out", str(run), "--quiet", *_set_args(model.get("set"))],
                            run / "summary.json", resume=run / "config.yaml"))
            jobs.append(Job("analyze", f"analyze {run.name}",
                            ["analyze", str(run), "--probes", spec.get("analysis", {}).get("probes", "ood,iid,train"),
                             "--steps", "sat,last"], run / "analysis" / "summary.json"))
    if transfer:
        model = transfer["model"]
        for regime in transfer["from"]:
            for ckpt in transfer.get("checkpoints", ["last"]):
                run = run_root / f"ft_{model}_{regime}_{ckpt}"
                jobs.append(Job("transfer", f"transfer {run.name}",
                                ["transfer", "--from", f"{run_root / f'{model}_{regime}'}@{ckpt}", "--out", str(run),
                                 "--preset", transfer.get("preset", "scaled"), "--quiet",
                                 *_set_args(transfer.get("set"))], run / "summary.json", resume=run / "config.yaml"))
        if transfer.get("control"):
            run = run_root / f"ft_{model}_control"
            jobs.append(Job("transfer", f"transfer {run.name}",
                            ["transfer", "--from", str(run_root / f"{model}_natural"), "--control", "--out", str(run),
                             "--preset", transfer.get("preset", "scaled"), "--quiet",
                             *_set_args(transfer.get("set"))], run / "summary.json", resume=run / "config.yaml"))
    return jobs


def resolve_checkpoint_refs(job: Job) -> Job:
    """Turn RUN@sat / RUN@last into a concrete step once the parent run exists."""
    argv = list(job.argv)
    for i, arg in enumerate(argv):
        if arg.endswith("@sat") or arg.endswith("@last"):
            run, which = arg.rsplit("@", 1)
            steps = runs.list_checkpoints(Path(run))
            if not steps:
                raise GrokscopeError(f"{run} has no checkpoints; its training job did not finish")
            if which == "last":
                argv[i] = f"{run}@{steps[-1]}"
            else:
                from grokscope.analysis.run_analysis import sat_step

                try:
                    argv[i] = f"{run}@{sat_step(Path(run), steps)}"
                except GrokscopeError:  # never saturated: the middle checkpoint, recorded in the report
                    argv[i] = f"{run}@{steps[len(steps) // 2]}"
    return Job(job.stage, job.name, argv, job.done, job.resume, job.after)


class LocalExecutor:
    """One job at a time on a CPU (it gets every core); one job per GPU in parallel on a multi-GPU machine."""

    def __init__(self, log=print):
        self.log = log
        try:
            import torch

            self.gpus = torch.cuda.device_count()
        except ImportError:
            self.gpus = 0

    def run_stage(self, jobs: list[Job]) -> dict[str, float]:
        times: dict[str, float] = {}
        if self.gpus > 1:
            pending = list(jobs)
            free = list(range(self.gpus))
            active: list[tuple[subprocess.Popen, Job, float, int]] = []
            while pending or active:
                while pending and free:
                    job, gpu = pending.pop(0), free.pop(0)
                    self.log(f"[{job.stage}] {job.name} (GPU {gpu})")
                    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
                    active.append((subprocess.Popen(_command(job), env=env), job, time.time(), gpu))
                for entry in list(active):
                    proc, job, t0, gpu = entry
                    if proc.poll() is not None:
                        active.remove(entry)
                        free.append(gpu)
                        _check(proc.returncode, job)
                        times[job.name] = time.time() - t0
                time.sleep(0.5)
            return times
        for job in jobs:
            t0 = time.time()
            self.log(f"[{job.stage}] {job.name}")
            _check(subprocess.call(_command(job)), job)
            times[job.name] = time.time() - t0
        return times


class RayExecutor:
    """Each job as a Ray task on an existing cluster (``address``) or a local Ray instance (extra ``sweep``)."""

    def __init__(self, address: str | None = None, log=print):
        try:
            import ray
        except ImportError:
            raise GrokscopeError("the ray executor needs ray: pip install 'grokscope[sweep]'") from None
        self.ray, self.log = ray, log
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

        @ray.remote(num_gpus=1 if ray.cluster_resources().get("GPU") else 0)
        def run_job(argv):
            t0 = time.time()
            return subprocess.call(argv), time.time() - t0

        self._remote = run_job

    def run_stage(self, jobs: list[Job]) -> dict[str, float]:
        refs = {job.name: (self._remote.remote(_command(job)), job) for job in jobs}
        times = {}
        for name, (ref, job) in refs.items():
            code, seconds = self.ray.get(ref)
            _check(code, job)
            times[name] = seconds
        return times


def _command(job: Job) -> list[str]:
    argv = list(job.argv)
    if job.resume is not None and job.resume.exists() and not job.done.exists():
        argv.append("--resume")
    return [sys.executable, "-m", "grokscope.cli", *argv]


def _check(code: int, job: Job) -> None:
    if code != 0:
        raise GrokscopeError(f"study job '{job.name}' failed (exit {code}); fix the cause and re-run the study: "
                             f"finished jobs are kept and skipped")


STAGES = ("data", "train", "analyze", "transfer")


def run_study(preset: str, out: Path, executor: str = "local", address: str | None = None,
              overrides: dict | None = None, fresh: bool = False, log=print) -> Path:
    from grokscope.report.build import build_report

    spec = apply_study_overrides(load_preset(preset), overrides or {})
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "study.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("spec") not in (None, spec):
        raise GrokscopeError(f"{out} holds a study with a different preset/overrides; choose another --out or "
                             f"pass --fresh to start over")
    state["spec"] = spec
    state.setdefault("stage_seconds", {})
    state.setdefault("job_seconds", {})
    ex = LocalExecutor(log) if executor == "local" else RayExecutor(address, log) if executor == "ray" else None
    if ex is None:
        raise GrokscopeError(f"unknown executor {executor!r}; choose local or ray")
    jobs = plan(spec, out)
    for stage in STAGES:
        todo = [j for j in jobs if j.stage == stage and not j.done.exists()]
        skipped = sum(1 for j in jobs if j.stage == stage) - len(todo)
        if skipped:
            log(f"[{stage}] {skipped} job(s) already complete, skipped")
        if not todo:
            continue
        t0 = time.time()
        times = ex.run_stage([resolve_checkpoint_refs(j) for j in todo])
        state["job_seconds"].update(times)
        state["stage_seconds"][stage] = state["stage_seconds"].get(stage, 0) + time.time() - t0
        runs.write_json_atomic(state_path, state)
    t0 = time.time()
    report = build_report(out)
    state["stage_seconds"]["report"] = time.time() - t0
    runs.write_json_atomic(state_path, state)
    return report
