"""Where study and sweep jobs run.

- ``local``: on a CPU (or one GPU), one job at a time in this process, so no job pays for a fresh interpreter and
  torch import (about 3 s each); with several GPUs, one job per GPU in parallel subprocesses.
- ``ray``: each job as a Ray task on a cluster (``--address``) or a local Ray instance (extra ``sweep``).

A job is a ``grokscope`` command line; a runner turns it into an exit code. The in-process runner is supplied by
the caller (the CLI), since this package sits below it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from grokscope.errors import GrokscopeError
from grokscope.studies.plan import Job

Runner = Callable[[list[str]], int]
EXECUTORS = ("local", "ray")


def subprocess_runner(argv: list[str], env: dict | None = None) -> int:
    return subprocess.call([sys.executable, "-m", "grokscope.cli", *argv], env=env)


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


class LocalExecutor:
    """One job at a time through ``runner`` (in-process by default); one subprocess per GPU on a multi-GPU host."""

    def __init__(self, runner: Runner | None = None, log=print):
        self.runner, self.log = runner or subprocess_runner, log
        self.gpus = gpu_count()

    def run(self, jobs: list[tuple[Job, list[str]]], on_done) -> None:
        """Run (job, argv) pairs; ``on_done(job, code, seconds)`` is called as each one ends."""
        if self.gpus > 1:
            return self._run_parallel(jobs, on_done)
        for job, argv in jobs:
            self.log(f"[{job.stage}] {job.name}")
            t0 = time.time()
            on_done(job, self.runner(argv), time.time() - t0)

    def _run_parallel(self, jobs, on_done) -> None:
        pending, free, active = list(jobs), list(range(self.gpus)), []
        while pending or active:
            while pending and free:
                (job, argv), gpu = pending.pop(0), free.pop(0)
                self.log(f"[{job.stage}] {job.name} (GPU {gpu})")
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
                proc = subprocess.Popen([sys.executable, "-m", "grokscope.cli", *argv], env=env)
                active.append((proc, job, time.time(), gpu))
            for entry in list(active):
                proc, job, t0, gpu = entry
                if proc.poll() is not None:
                    active.remove(entry)
                    free.append(gpu)
                    try:
                        on_done(job, proc.returncode, time.time() - t0)
                    except BaseException:  # a failed job ends the stage: stop the others, leave no orphans
                        for other, *_ in active:
                            other.terminate()
                        for other, *_ in active:
                            other.wait()
                        raise
            time.sleep(0.2)


class RayExecutor:
    """Each job as a Ray task on an existing cluster (``address``) or a local Ray instance."""

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
            return subprocess_runner(argv), time.time() - t0

        self._remote = run_job

    def run(self, jobs: list[tuple[Job, list[str]]], on_done) -> None:
        refs = [(self._remote.remote(argv), job) for job, argv in jobs]
        for ref, job in refs:
            code, seconds = self.ray.get(ref)
            on_done(job, code, seconds)


def make_executor(name: str, address: str | None = None, runner: Runner | None = None, log=print):
    if name == "local":
        return LocalExecutor(runner, log)
    if name == "ray":
        return RayExecutor(address, log)
    raise GrokscopeError(f"unknown executor {name!r}; choose local or ray")
