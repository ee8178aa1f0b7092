"""Where study and sweep jobs run.

- ``local``: on a CPU (or one GPU), one job at a time in this process, so no job pays for a fresh interpreter and
  torch import (about 3 s each); with several GPUs, one job per GPU in parallel worker processes; on a CPU with
  ``workers`` > 1 (a study's ``workers:``), that many worker processes side by side, each with its share of the
  cores as threads (two single-thread stacks on two cores do more steps than one two-thread process: OpenMP
  scales poorly at this width, ``docs/calibration.md``).
- ``ray``: each job as a Ray task on a cluster (``--address``) or a local Ray instance (extra ``sweep``).

A job is a typed value (``studies/jobs.py``; a training job holds its resolved ``RunSpec``). Every executor writes
it to ``<study>/jobs/<job>.json`` (``Job.to_dict``, with its kind) before it runs (a record, and a way to re-run one
job by hand); a worker process reads that file (``python -m grokscope.worker JOB.json``), a Ray task gets the same
mapping and writes it to a file on its own node. Nothing is turned into a command line and parsed back. The
in-process runner (``api.execute``, which dispatches on the job's type) is supplied by the caller, since this
package sits below the API.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from grokscope import artifacts
from grokscope.errors import GrokscopeError
from grokscope.studies.jobs import Job

Runner = Callable[[Job], int]
EXECUTORS = ("local", "ray")


def worker_command(spec_file: Path) -> list[str]:
    return [sys.executable, "-m", "grokscope.worker", str(spec_file)]


def spec_file(spec_dir: Path, job: Job) -> Path:
    """Where a job file is written: one per job, named after it."""
    return Path(spec_dir) / f"{re.sub(r'[^A-Za-z0-9_.=-]+', '_', job.name)[:150]}.json"


def write_spec(spec_dir: Path, job: Job) -> Path:
    path = spec_file(spec_dir, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(path, job.to_dict())
    return path


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def subprocess_runner(spec_path: Path, env: dict | None = None) -> int:
    return subprocess.call(worker_command(spec_path), env=env)


class LocalExecutor:
    """One job at a time through ``runner`` (in this process when given, else a worker process each); one worker per
    GPU on a multi-GPU host; on a CPU, ``workers`` worker processes side by side, the cores shared out as threads."""

    def __init__(self, spec_dir: Path, runner: Runner | None = None, log=print, workers: int = 1):
        self.spec_dir, self.runner, self.log = Path(spec_dir), runner, log
        self.gpus = gpu_count()
        self.workers = workers

    def slots(self, n_jobs: int) -> list[tuple[str, dict]]:
        """Where parallel jobs go: (label, environment) per slot; one slot means one job at a time in order."""
        if self.gpus > 1:
            return [(f"GPU {g}", {"CUDA_VISIBLE_DEVICES": str(g)}) for g in range(self.gpus)]
        workers = min(self.workers, n_jobs)
        if self.gpus == 0 and workers > 1:
            from grokscope.runtime import available_cores

            threads = max(1, available_cores() // workers)
            return [(f"worker {w}, {threads} thread(s)", {"GROKSCOPE_THREADS": str(threads)}) for w in range(workers)]
        return [("", {})]

    def one_at_a_time(self, n_jobs: int) -> bool:
        """Whether ``n_jobs`` jobs would run one after another (then stacking them costs no parallelism)."""
        return len(self.slots(n_jobs)) == 1

    def run(self, jobs: list[Job], on_done) -> None:
        """Run the jobs; ``on_done(job, code, seconds)`` is called as each one ends."""
        slots = self.slots(len(jobs))
        if len(slots) > 1:
            return self._run_parallel(jobs, on_done, slots)
        for job in jobs:
            self.log(f"[{job.stage}] {job.name}")
            path = write_spec(self.spec_dir, job)
            t0 = time.time()
            code = self.runner(job) if self.runner is not None else subprocess_runner(path)
            on_done(job, code, time.time() - t0)

    def _run_parallel(self, jobs, on_done, slots: list[tuple[str, dict]]) -> None:
        """One worker process per free slot. However this ends (a failed job, Ctrl-C, a SIGTERM to the study), no
        worker outlives it: each is stopped and waited for, and resumes from its last checkpoint next time."""
        pending, free, active = list(jobs), list(range(len(slots))), []
        with _sigterm_as_interrupt():
            try:
                while pending or active:
                    while pending and free:
                        job, slot = pending.pop(0), free.pop(0)
                        label, extra = slots[slot]
                        self.log(f"[{job.stage}] {job.name} ({label})")
                        proc = subprocess.Popen(worker_command(write_spec(self.spec_dir, job)),
                                                env={**os.environ, **extra})
                        active.append((proc, job, time.time(), slot))
                    for entry in list(active):
                        proc, job, t0, slot = entry
                        if proc.poll() is not None:
                            active.remove(entry)
                            free.append(slot)
                            on_done(job, proc.returncode, time.time() - t0)
                    time.sleep(0.2)
            except BaseException:
                _stop_all([proc for proc, *_ in active])
                raise


def _stop_all(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM to the study while its workers run: raised as an interrupt, so the workers are stopped with it (a
    process killed outright would leave them training, holding their runs' locks)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job_in_worker(job: dict) -> tuple[int, float]:
    """What a Ray task does: write the job file on its own node and run a worker process on it."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="grokscope-job-") as tmp:
        path = Path(tmp) / "job.json"
        artifacts.write_json_atomic(path, job)
        return subprocess_runner(path), time.time() - t0


class RayExecutor:
    """Each job as a Ray task on an existing cluster (``address``) or a local Ray instance."""

    def __init__(self, spec_dir: Path, address: str | None = None, log=print):
        try:
            import ray
        except ImportError:
            raise GrokscopeError("the ray executor needs ray: pip install 'grokscope[sweep]'") from None
        self.ray, self.spec_dir, self.log = ray, Path(spec_dir), log
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self._remote = ray.remote(num_gpus=1 if ray.cluster_resources().get("GPU") else 0)(run_job_in_worker)

    def one_at_a_time(self, n_jobs: int) -> bool:
        return False  # tasks spread over the cluster's nodes

    def run(self, jobs: list[Job], on_done) -> None:
        refs = []
        for job in jobs:
            write_spec(self.spec_dir, job)  # the record on the driver; the task ships the same mapping
            refs.append((self._remote.remote(job.to_dict()), job))
        for ref, job in refs:
            code, seconds = self.ray.get(ref)
            on_done(job, code, seconds)


def make_executor(name: str, spec_dir: Path, address: str | None = None, runner: Runner | None = None, log=print,
                  workers: int = 1):
    if name == "local":
        return LocalExecutor(spec_dir, runner, log, workers)
    if name == "ray":
        return RayExecutor(spec_dir, address, log)
    raise GrokscopeError(f"unknown executor {name!r}; choose local or ray")
