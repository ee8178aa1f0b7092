"""``grokscope study``: one command runs a whole study, stage by stage, and writes the report.

The whole plan is validated before the first job. Stages run in dependency order (data, train, analyze, transfer,
compare, then the report). A finished job is skipped; an interrupted training job resumes from its last checkpoint,
or starts over when it died before its first one. A re-run with changed settings continues as long as only jobs
that have not finished change; ``--fresh`` is needed only when a finished job would change.
"""

from __future__ import annotations

import time
from pathlib import Path

from grokscope import artifacts, runs
from grokscope.analysis import defaults
from grokscope.errors import INTERRUPTED_MESSAGE, GrokscopeError, Interrupted
from grokscope.metrics import thresholds as th
from grokscope.studies.executors import EXECUTORS, Runner, make_executor
from grokscope.studies.jobs import AnalyzeJob, Job, stacked
from grokscope.studies.manifest import Manifest
from grokscope.studies.plan import STAGES, plan, resumed
from grokscope.studies.spec import load_spec


def check_study_dir(out: Path) -> None:
    """``out`` is new, empty or a study folder (the only kind ``--fresh`` may clear)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GrokscopeError(f"{out}: exists and is a file; choose another --out")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()) and not (out / "study.json").exists():
        raise GrokscopeError(f"{out}: exists and is not a study folder; choose another --out (--fresh only "
                             f"replaces a study folder)")
    artifacts.ensure_writable_dir(out)


STUDY_FILES = ("study.json", "report.html", "report.md", "figures", "jobs")


def clear_study(out: Path, jobs: list[Job]) -> None:
    """``--fresh``: remove the study's own outputs by name (the manifest, report and figures, and the output of every
    job the old manifest or the new plan names); a user's notebook or notes anywhere in the folder stay."""
    out = Path(out)
    old = Manifest.open(out).data.get("jobs", {}) if (out / "study.json").exists() else {}
    recorded = [e.get("out") or (e.get("record") if isinstance(e.get("record"), dict) else {}).get("path")
                for e in old.values()]
    paths = [*(str(j.out) for j in jobs), *(p for p in recorded if isinstance(p, str) and p)]
    artifacts.remove_own(out, [*STUDY_FILES, *(Path(p).resolve() for p in paths)])


def run_study(preset: str, out: Path, executor: str = "local", address: str | None = None,
              overrides: list[str] | None = None, fresh: bool = False, log=print, runner: Runner | None = None,
              stack: bool = True) -> Path:
    from grokscope.reporting.build import build_report

    spec = load_spec(preset, overrides)
    if executor not in EXECUTORS:
        raise GrokscopeError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    out = Path(out)
    check_study_dir(out)
    with artifacts.FolderLock(out, "study"):  # before --fresh clears anything: a running study keeps its files
        jobs = plan(spec, out)
        if fresh:
            clear_study(out, jobs)
        manifest = Manifest.open(out)
        changed = manifest.changed_finished(jobs)
        if changed:
            raise GrokscopeError(f"{out}: finished jobs would change ({', '.join(changed[:4])}"
                                 f"{' ...' if len(changed) > 4 else ''}); choose another --out or pass --fresh to "
                                 f"start over")
        manifest.update(spec, jobs)
        ex = make_executor(executor, out / "jobs", address, runner, log, spec.workers)
        try:
            for stage in STAGES:
                _run_stage(stage, [j for j in jobs if j.stage == stage], manifest, ex, log, stack)
            t0 = time.time()
            report = build_report(out)
            manifest.add_stage_time("report", time.time() - t0)
        except KeyboardInterrupt:  # Ctrl-C between jobs: the same one line as inside a job
            raise StudyInterrupted(INTERRUPTED_MESSAGE) from None
    return report


def _run_stage(stage: str, jobs: list[Job], manifest: Manifest, ex, log, stack: bool = True) -> None:
    todo = []
    for job in jobs:
        status = manifest.status(job)
        # Done is the study's own record: a job it started ("running") whose output exists finished before its
        # process could record it. A file a user made (e.g. `analyze --analyses regime` writes analysis/summary.json
        # too) never marks a job the study has not run as done.
        if job.done.exists() and (status == "done" or (status == "running" and outputs_check_out(job))):
            if status != "done":
                manifest.mark(job, "done", ran_with=ran_with(job))
            continue
        if status == "skipped":
            continue
        skip = _skip_reason(job)
        if skip:
            log(f"[{stage}] {job.name}: skipped ({skip})")
            manifest.mark(job, "skipped", note=skip)
            continue
        todo.append(resumed(job, stale=status == "stale"))
    skipped = len(jobs) - len(todo)
    if skipped:
        log(f"[{stage}] {skipped} job(s) already complete or skipped")
    if not todo:
        return
    t0 = time.time()
    # Pre-training runs stack by architecture. Fine-tunes of one model stack only where jobs run one at a time (a
    # single GPU, vmap; or one CPU worker): side by side, single fine-tunes share the workers out more evenly.
    if stack and (stage == "train" or (stage == "transfer" and ex.one_at_a_time(len(todo)))):
        grouped = stacked(todo)
    else:
        grouped = [(job, [job]) for job in todo]
    members = {job.name: group for job, group in grouped}
    for job in todo:
        manifest.mark(job, "running")

    def finished(member: Job) -> bool:
        """A member of a stack that stopped short (a failed or interrupted sibling) may still have finished: its
        run wrote its summary when it stopped, during this stage."""
        return member.done.exists() and member.done.stat().st_mtime >= t0 and outputs_check_out(member)

    def on_done(job: Job, code: int, seconds: float) -> None:
        group = members[job.name]
        done = group if code == 0 else [m for m in group if len(group) > 1 and finished(m)]
        for member in done:
            manifest.mark(member, "done", seconds / len(group), ran_with=ran_with(member))
        if code in INTERRUPTED:  # the user asked it to stop: nothing failed
            for member in group:
                if member not in done:
                    manifest.mark(member, "interrupted")
            raise StudyInterrupted(INTERRUPTED_MESSAGE)
        for member in group:
            if member not in done:
                manifest.mark(member, "failed", seconds / len(group))
        if code != 0:
            raise GrokscopeError(f"study job '{job.name}' failed (exit {code}); fix the cause and re-run the study: "
                                 f"finished jobs are kept and skipped")

    ex.run([job for job, _ in grouped], on_done)
    manifest.add_stage_time(stage, time.time() - t0)


def outputs_check_out(job: Job) -> bool:
    """Whether a job the study started, and whose output file exists, finished: an analysis summary counts only when
    it covers every analysis the job asked for (a user's own `analyze --analyses regime` writes one too, and must not
    mark a job interrupted mid-way done without its lens and trace tables)."""
    if not isinstance(job, AnalyzeJob):
        return True
    try:
        covered = artifacts.read_json(job.done, "re-run the study").get("analyses")
    except GrokscopeError:
        return False
    wanted = job.analyses or defaults.ANALYSES
    return isinstance(covered, list) and set(wanted.split(",")) <= set(covered)


def ran_with(job: Job) -> dict | None:
    """What a finished job actually ran with, from its own files: for a training or fine-tuning job the seed, device,
    threads and versions; for an analysis or a comparison the device its models ran on."""
    if job.stage in ("analyze", "compare"):
        try:  # the analysis summary / the comparison file (older ones have no device: None)
            return {"device": artifacts.read_json(job.done, "re-run the job").get("device")}
        except GrokscopeError:
            return None
    if job.stage not in ("train", "transfer") or not (job.out / "summary.json").exists():
        return None
    try:
        cfg, summary = artifacts.read_config(job.out), artifacts.read_summary(job.out)
    except GrokscopeError:
        return None
    return {"seed": (cfg.get("train") or {}).get("seed"), "device": summary.get("device"),
            "threads": summary.get("threads"), "grokscope": cfg.get("grokscope_version"),
            "git_commit": cfg.get("git_commit"), "torch": cfg.get("torch_version")}


INTERRUPTED = (130, -2)  # Ctrl-C: the in-process CLI exits 130; a subprocess killed by SIGINT returns -2


class StudyInterrupted(Interrupted):
    """Ctrl-C during a study job: the CLI prints the message and exits 130; the job is marked interrupted."""


def _skip_reason(job: Job) -> str | None:
    """A fine-tune from a named checkpoint its parent never reached is not run (and the report says why)."""
    ckpt, parent = job.record.get("checkpoint"), job.record.get("parent")
    if job.stage == "transfer" and ckpt in ("sat", "grokked") and parent:
        steps = runs.list_checkpoints(Path(parent))
        if steps and runs.named_step(Path(parent), ckpt, steps) is None:
            return f"the parent never reached {'training saturation' if ckpt == 'sat' else f'ID test >= {th.GROKKED}'}"
    return None
