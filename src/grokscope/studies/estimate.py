"""``study --plan`` and ``sweep --plan``: every job's budget, size and cost before anything runs (He et al.'s own
question: what does waiting for grokking cost?).

For each training and fine-tuning job: its step budget (the most it can run; stop rules may end it sooner), its
parameters, its training FLOPs (the model's ``flops_per_step``, the estimate the report uses) and an estimated time
on this device. The time comes from a short timed probe of each architecture: a warm-up step and a few timed
optimiser steps (eager: a compiled run on CUDA is faster) at a reduced batch where the full one would be slow,
scaled linearly to the full batch and the budget. Evaluation, analyses and data building are not in the estimate
(the table says so). Datasets are built in memory (a fraction of a second even at paper scale) to know each run's
training-set size; nothing is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from grokscope import runtime
from grokscope.config import from_dict
from grokscope.data.build import build_dataset
from grokscope.data.comparison import ComparisonConfig, build_comparison
from grokscope.data.config import DataConfig
from grokscope.data.encoding import encode, training_rows
from grokscope.data.store import Dataset
from grokscope.data.transfer import build_transfer
from grokscope.models.registry import FAMILIES, build_model
from grokscope.studies.jobs import Job
from grokscope.training.config import TrainConfig
from grokscope.training.request import TRAIN_BYTES_PER_PARAM, budget
from grokscope.training.step import LoopPass, train_step
from grokscope.training.state import TrainState
from grokscope.finetuning import transfer_config

PROBE_FLOPS = 2e10  # the probe batch is the largest power of two (at most the full batch) under this per step
PROBE_STEPS = 5


@dataclass
class Cost:
    steps: int
    params: int
    flops_per_step: float
    seconds_per_step: float | None
    how: str

    @property
    def flops(self) -> float:
        return self.steps * self.flops_per_step

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_per_step is None else self.steps * self.seconds_per_step


class Estimator:
    """Costs of training jobs, with one dataset build per data job and one timed probe per architecture."""

    def __init__(self, jobs: list[Job], device: str, threads: int = 0):
        self.device, self.threads = device, threads  # threads: each worker's share of the cores (0: all)
        self.data_cfg = {str(j.out): from_dict(ComparisonConfig if j.resolved.get("task") == "comparison"
                                               else DataConfig, j.resolved["data"], j.name)
                         for j in jobs if j.stage == "data"}
        self.datasets: dict = {}
        self.transfer_sets: dict = {}
        self.probes: dict[str, float] = {}

    def dataset(self, path) -> Dataset:
        path = str(path)
        if path not in self.datasets:
            cfg = self.data_cfg[path]
            self.datasets[path] = build_comparison(cfg) if isinstance(cfg, ComparisonConfig) else build_dataset(cfg)
        return self.datasets[path]

    def transfer_set(self, path) -> Dataset:
        path = str(path)
        if path not in self.transfer_sets:
            self.transfer_sets[path] = build_transfer(self.dataset(path), self.data_cfg[path])
        return self.transfer_sets[path]

    def cost(self, family: str, model_dict: dict, cfg: TrainConfig, ds: Dataset) -> Cost:
        # the precision the run will train in on this device (bf16 on a CPU without it trains in fp32)
        cfg = replace(cfg, precision=runtime.resolve_precision(cfg.precision, self.device)[0])
        model_cfg = FAMILIES[family].config_cls(**model_dict).for_dataset(ds.vocab.d_vocab, ds.vocab.seq_len) \
            .for_precision(cfg.precision)
        with torch.device("meta"):  # sizes and FLOPs without allocating the weights
            meta = build_model(model_cfg)
        rows = training_rows(ds)
        steps = budget(cfg, len(rows)).max_steps
        per_step = meta.flops_per_step(cfg.batch_size)
        probe_batch = cfg.batch_size
        while probe_batch > 1 and meta.flops_per_step(probe_batch) > PROBE_FLOPS:
            probe_batch //= 2
        need, have = meta.num_params() * TRAIN_BYTES_PER_PARAM, runtime.memory_bytes(self.device)
        if need > have:  # `train` refuses it up front; building it to time it would exhaust the memory
            return Cost(steps, meta.num_params(), per_step, None,
                        f"not timed: its training state needs about {need / 2 ** 30:.0f} GiB, over the "
                        f"{have / 2 ** 30:.0f} GiB of this {self.device}")
        key = json.dumps([family, model_dict, cfg.precision, probe_batch, ds.vocab.d_vocab], sort_keys=True,
                         default=str)
        if key not in self.probes:
            self.probes[key] = self._probe(model_cfg, replace(cfg, batch_size=probe_batch), ds, rows)
        seconds = self.probes[key] * cfg.batch_size / probe_batch
        how = f"best of {PROBE_STEPS} timed eager steps at batch {probe_batch} on {self.device}"
        if probe_batch != cfg.batch_size:
            how += f", scaled x{cfg.batch_size // probe_batch} to batch {cfg.batch_size}"
        return Cost(steps, meta.num_params(), per_step, seconds, how)

    def _probe(self, model_cfg, cfg: TrainConfig, ds: Dataset, rows) -> float:
        """Seconds per optimiser step at ``cfg.batch_size`` on this device (the fastest of the timed steps)."""
        # the threads and allocator settings training uses: a worker's share of the cores where workers run side by
        # side (executors.LocalExecutor gives each cores / workers)
        runtime.configure(self.device, self.threads or cfg.threads)
        torch.manual_seed(0)
        model = build_model(model_cfg).to(self.device).train()
        state = TrainState(model, replace(cfg, compile=False), len(rows), self.device)  # eager: no compile time
        forward_backward = LoopPass([state], max_steps=0)
        batch = encode(ds, rows[:cfg.batch_size]).to(self.device)
        times = []
        threads = torch.get_num_threads()
        with runtime.training_matmuls(self.device):  # and its matmul precision
            for i in range(PROBE_STEPS + 1):  # the first step warms up (allocations, kernel selection)
                _synchronize(self.device)
                t0, c0 = time.perf_counter(), time.process_time()
                state.loop.step = i
                train_step([state], [batch], forward_backward)
                _synchronize(self.device)
                times.append(step_seconds(time.perf_counter() - t0, time.process_time() - c0, threads, self.device))
        # The fastest step: other work on a busy machine only ever slows a step down, so the minimum is the
        # estimate that load disturbs least.
        return min(times[1:])


def step_seconds(wall: float, cpu: float, threads: int, device: str) -> float:
    """A timed step's seconds on an idle machine. On the CPU, the process's CPU time over its threads: the time its
    threads ran (OpenMP's waiting threads spin, so on an idle machine this is the wall time), which other processes
    competing for the cores do not inflate, where the wall time grows with them (a study planned beside another
    training job was estimated at several times its length). Never more than the wall time; on an accelerator the
    wall time, as the host's CPU time does not measure the device's work."""
    if device != "cpu" or threads < 1 or cpu <= 0:
        return wall
    return min(wall, cpu / threads)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def plan_rows(jobs: list[Job], device: str, log=print, workers: int = 1) -> list[dict]:
    """One row per job (training and fine-tuning jobs with their cost), then the totals: the sum of the jobs' times,
    and with ``workers`` > 1 the wall time of running each stage's jobs side by side in that many processes, each
    timed on its share of the cores."""
    threads = max(1, runtime.available_cores() // workers) if workers > 1 and device == "cpu" else 0
    est = Estimator(jobs, device, threads)
    by_name = {j.name: j for j in jobs}
    rows, total_flops, total_seconds, untimed = [], 0.0, 0.0, 0
    seconds_of: dict[str, float] = {}
    for job in jobs:
        row = {"job": job.name, "role": job.record.get("role", job.stage), "steps (at most)": "-", "parameters": "-",
               "GFLOP/step": "-", "training FLOP": "-", "est. time": "-", "how": "not estimated (minor)"}
        cost = None
        if job.stage == "train":
            family = job.record["family"]
            cfg = from_dict(TrainConfig, job.resolved["train"], job.name)
            cost = est.cost(family, job.resolved["model"], cfg, est.dataset(job.resolved["data"]))
        elif job.stage == "transfer":
            parent = by_name[f"train {Path(job.record['parent']).name}"]
            # The fine-tune's recipe exactly as `grokscope transfer` derives it from its parent's.
            parent_cfg = {"train": parent.resolved["train"],
                          "model": {"family": parent.record["family"], "config": parent.resolved["model"]}}
            cfg = transfer_config(parent_cfg, job.resolved["preset"], job.resolved["set"],
                                  control=job.record.get("role") == "control")
            cost = est.cost(parent.record["family"], parent.resolved["model"], cfg,
                            est.transfer_set(parent.resolved["data"]))
        if cost is not None:
            log(f"  estimated {job.name}")
            total_flops += cost.flops
            total_seconds += cost.seconds or 0.0
            seconds_of[job.name] = cost.seconds or 0.0
            untimed += cost.seconds is None
            row.update({"steps (at most)": f"{cost.steps:,}", "parameters": f"{cost.params:,}",
                        "GFLOP/step": f"{cost.flops_per_step / 1e9:.3g}", "training FLOP": f"{cost.flops:.3g}",
                        "est. time": _duration(cost.seconds), "how": cost.how})
        rows.append(row)
    how = "training steps only: evaluation, analyses and data building are not included"
    if workers > 1:
        wall = side_by_side(jobs, seconds_of, workers)
        how += f"; {_duration(wall)} as {workers} workers run each stage's jobs side by side"
    rows.append({"job": "total", "role": "", "steps (at most)": "", "parameters": "", "GFLOP/step": "",
                 "training FLOP": f"{total_flops:.3g}",
                 "est. time": f"over {_duration(total_seconds)}" if untimed else _duration(total_seconds),
                 "how": f"{how}; {untimed} job(s) not timed" if untimed else how})
    return rows


def side_by_side(jobs: list[Job], seconds_of: dict[str, float], workers: int) -> float:
    """The wall time of the stages one after another, each stage's units on ``workers`` processes: a unit is a job,
    or the pre-training runs of one stack group (trained in one process, one after another per step; side by side,
    fine-tunes are not stacked), longest first onto the least loaded worker."""
    total = 0.0
    for stage in dict.fromkeys(j.stage for j in jobs):
        units: dict[str, float] = {}
        for job in (j for j in jobs if j.stage == stage):
            # Fine-tunes stack only where jobs run one at a time (studies/run.py), never beside other workers.
            key = (job.record.get("stack_group") if stage == "train" else None) or job.name
            units[key] = units.get(key, 0.0) + seconds_of.get(job.name, 0.0)
        loads = [0.0] * workers
        for seconds in sorted(units.values(), reverse=True):
            loads[loads.index(min(loads))] += seconds
        total += max(loads)
    return total


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def print_table(rows: list[dict], out=print) -> None:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols if c != "how"}
    out("  ".join(c.ljust(widths[c]) if c != "how" else c for c in cols))
    for r in rows:
        out("  ".join(str(r[c]).ljust(widths[c]) if c != "how" else str(r[c]) for c in cols))
