"""Notebook handles on runs and studies, and the analyses as functions of a model and a probe set.

    import grokscope as gs
    run = gs.open_run("reports/micro/runs/gpt_natural")
    run.metrics.plot(x="step", y=["train_acc", "test_inferred_iid"])
    gs.lens(run.model("last"), run.dataset.probes["test_inferred_iid"])

``Run`` and ``Study`` read a run or study folder's files (torch only when a model is loaded); ``lens``, ``trace``
and ``bridge_use`` return the tables ``grokscope analyze`` writes. The API (``api.py``) re-exports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from grokscope import artifacts
from grokscope.data.store import Dataset, ProbeSet, is_composition
from grokscope.errors import GrokscopeError


# ------------------------------------------------------------------------------------------------ analyses


def _probe_set(probes) -> ProbeSet:
    if not isinstance(probes, ProbeSet):
        raise TypeError("pass a probe set, e.g. run.dataset.probes['test_inferred_iid']")
    return probes


def lens(model, probes: ProbeSet, step: int = 0, run: str = "") -> pd.DataFrame:
    """The logit-lens table (as ``analysis/lens.parquet``) of ``model`` on a probe set; on a comparison dataset's,
    the comparison task's value and label lens (as ``analysis/comparison_lens.parquet``) on up to 300 comparisons."""
    from grokscope.analysis.logit_lens import lens_table
    from grokscope.data.encoding import encode

    probes = _probe_set(probes)
    if probes.dataset.task == "comparison":
        return _comparison(model, probes, step, run, lens=True)
    return lens_table(model, encode(probes.dataset, probes.rows).to(model.device), probes.name, run, step)


def trace(model, probes: ProbeSet, step: int = 0, run: str = "") -> pd.DataFrame:
    """The causal-tracing table (as ``analysis/trace.parquet``) on up to 300 compositions of a probe set; on a
    comparison dataset's, the comparison task's tracing at e1 and e2 (as ``analysis/comparison_trace.parquet``)."""
    from grokscope.analysis.patching import trace_table
    from grokscope.analysis.run_analysis import TRACE_EXAMPLES, sample_rows
    from grokscope.data.encoding import encode

    probes = _probe_set(probes)
    if probes.dataset.task == "comparison":
        return _comparison(model, probes, step, run, lens=False)
    rows = sample_rows(probes.rows[is_composition(probes.rows)], TRACE_EXAMPLES)
    return trace_table(model, encode(probes.dataset, rows), probes.dataset, rows, probes.name, run, step)


def _comparison(model, probes: ProbeSet, step: int, run: str, lens: bool) -> pd.DataFrame:
    from grokscope.analysis.comparison import comparison_table
    from grokscope.analysis.run_analysis import TRACE_EXAMPLES, sample_rows

    rows = sample_rows(probes.rows[is_composition(probes.rows)], TRACE_EXAMPLES)
    return comparison_table(model, probes.dataset, rows, probes.name, run, step, lens=lens, trace=not lens)


def bridge_use(model, probes: ProbeSet, step: int = 0, run: str = "") -> pd.DataFrame:
    """The bridge-use table (as ``analysis/bridge_use.parquet``): per stage, the share of interchanges of the r1 state
    (forward from an untrained donor for ID queries, reverse into a recipient for OOD and new hops) whose answer
    follows the moved bridge (``docs/methods.md``, "Bridge use")."""
    from grokscope.analysis.queries import bridge_use_table, query_records

    probes = _probe_set(probes)
    if probes.dataset.task != "composition":
        raise GrokscopeError(f"bridge use is the composition task's measure (the bridge entity of two hops); "
                             f"{probes.name} is a {probes.dataset.task} probe set: use gs.trace for its tracing")
    frame, schema = query_records(model, probes.dataset, probes.rows)
    return bridge_use_table(frame, schema, probes.name, run, step)


# ------------------------------------------------------------------------------------------------ handles


@dataclass
class Checkpoints:
    """A run's checkpoint steps, with the named ones (``sat``, ``grokked``, ``last``; None when never reached)."""

    steps: list[int]
    sat: int | None
    grokked: int | None

    @property
    def last(self) -> int:
        return self.steps[-1]

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)


class Run:
    """A run folder: its config, metrics, summary, checkpoints, models and dataset."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = artifacts.read_config(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, family={self.config['model']['family']!r}, steps={len(self.checkpoints)})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(artifacts.read_metrics(self.path))

    @property
    def summary(self) -> dict:
        return artifacts.read_summary(self.path)

    @property
    def checkpoints(self) -> Checkpoints:
        from grokscope import runs

        steps = runs.list_checkpoints(self.path)
        if not steps:
            return Checkpoints([], None, None)
        return Checkpoints(steps, runs.named_step(self.path, "sat", steps),
                           runs.named_step(self.path, "grokked", steps))

    def model(self, step: int | str = "last", device: str = "cpu"):
        """The hooked model at ``step`` (a number, 'sat', 'grokked' or 'last') in eval mode."""
        from grokscope import runs

        if isinstance(step, bool) or not isinstance(step, (int, str)):  # 20.5 is not step 20
            raise GrokscopeError(f"model(): step must be a step number or sat, grokked, last (got {step!r})")
        return runs.load_model(self.path, step, device)[0]

    @cached_property
    def dataset(self) -> Dataset:
        from grokscope.analysis.run_analysis import run_dataset

        return run_dataset(self.path)

    @property
    def analysis(self) -> dict[str, pd.DataFrame]:
        """The tables ``grokscope analyze`` wrote (lens, trace, bridge_use), empty when not analysed."""
        folder = self.path / "analysis"
        return {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("lens", "trace", "bridge_use")
                if (folder / f"{name}.parquet").exists()}


class Study:
    """A study folder: its spec, findings and runs by role, read from the manifest ``study.json``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest = artifacts.read_json(self.path / "study.json", "re-run `grokscope study`")

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}, {len(self.jobs)} jobs)"

    @property
    def spec(self) -> dict:
        return self.manifest.get("spec", {})

    @property
    def jobs(self) -> pd.DataFrame:
        return pd.DataFrame([{"job": name, "status": e.get("status"), **e.get("record", {})}
                             for name, e in self.manifest.get("jobs", {}).items()])

    def runs(self, role: str = "pretrain", **where) -> dict[str, Run]:
        """Runs of a role (pretrain, finetune, control, comparison), filtered by record fields: ``runs(model="gpt")``,
        ``runs("comparison")`` (Wang et al.'s comparison task, a study's ``comparison`` section)."""
        out = {}
        for e in self.manifest.get("jobs", {}).values():
            record = e.get("record", {})
            if record.get("role") == role and all(record.get(k) == v for k, v in where.items()) and \
                    (Path(record["path"]) / "summary.json").exists():
                out[Path(record["path"]).name] = Run(record["path"])
        return out

    def run(self, model: str, regime: str, seed: int = 0) -> Run:
        found = self.runs("pretrain", model=model, regime=regime, seed=seed)
        if not found:
            raise GrokscopeError(f"{self.path}: no finished {model} run on {regime} (seed {seed})")
        return next(iter(found.values()))

    @property
    def findings(self) -> pd.DataFrame:
        """The findings table of the report, recomputed from the files."""
        from grokscope.reporting.build import study_findings

        return pd.DataFrame(study_findings(self.path))
