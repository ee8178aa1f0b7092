"""Study and sweep jobs as typed values: one frozen dataclass per stage, everything else derived from its fields.

- ``DataJob``: build a dataset (a composition regime's, or the comparison task's);
- ``TrainJob``: one pre-training run, its ``RunSpec`` resolved when the job is made;
- ``AnalyzeJob``: a run's analyses;
- ``TransferJob``: a fine-tune on new facts from a parent's checkpoint, or the control trained from scratch;
- ``CompareJob``: two regimes' checkpoints compared path by path;
- ``StackJob``: several training or fine-tuning jobs stepped together in one process.

From the fields come the job's name, the folder it writes and the file that says it finished (``done``), the
``record`` the report reads (role, model, family, regime, seed, checkpoint, parent, path), the ``resolved``
settings that decide whether a finished job would change, the API ``call`` that runs it, and the equivalent
command line shown to people (``argv``, recorded in ``study.json``). A job file (``<study>/jobs/<job>.json``) is
``to_dict`` with a ``kind`` tag, read back by ``from_dict``; a resume is a replaced field (``resumed``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from grokscope.errors import GrokscopeError
from grokscope.finetuning import TRANSFER_PRESETS, FineTuneBudget
from grokscope.training.runspec import RunSpec, plain

DEFAULT_DRAW = "uniform"  # the authors' draw of new facts' tails (data.config.TRANSFER_DRAWS)


def api_call(verb: str, **kwargs) -> dict:
    """A job's work as the API call a worker makes (``api.execute``), in JSON-plain values."""
    return {"verb": verb, "kwargs": plain(kwargs)}


def set_args(values: dict) -> list[str]:
    return [arg for k, v in (values or {}).items() for arg in ("--set", f"{k}={v}")]


def set_items(values: dict) -> list[str] | None:
    return [f"{k}={v}" for k, v in values.items()] or None


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every job has; subclasses derive ``name``, ``out``, ``done``, ``argv``, ``record``, ``resolved``,
    ``call`` and ``needs`` from their fields."""

    kind: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    resumable: ClassVar[bool] = False  # an interrupted job continues from its checkpoint (``resumed``)
    paths: ClassVar[tuple[str, ...]] = ()  # the fields that hold paths (strings in a job file)

    @property
    def name(self) -> str:
        """Unique within a study: the stage and the folder the job writes (data, compare and stack jobs differ)."""
        return f"{self.stage} {self.out.name}"

    def resumed(self) -> "Job":
        """The job continuing an interrupted run (only resumable jobs have one)."""
        return self

    def to_dict(self) -> dict:
        """The job file: every field, JSON-plain, with the ``kind`` tag."""
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, RunSpec):
                value = value.to_dict()
            elif f.name == "members":
                value = [m.to_dict() for m in value]
            out[f.name] = plain(value)
        return out


@dataclass(frozen=True, kw_only=True)
class DataJob(Job):
    """A dataset: a composition regime's, or (``task="comparison"``, no regime) the comparison task's."""

    kind: ClassVar[str] = "data"
    stage: ClassVar[str] = "data"
    paths: ClassVar[tuple[str, ...]] = ("out",)
    preset: str
    out: Path
    config: dict  # the resolved data config (every field): what the job builds
    sets: dict = field(default_factory=dict)  # data config overrides, bare keys (the command line's)
    regime: str | None = None
    task: str = "composition"
    label: str | None = None  # the job's name where the plan gives one (a sweep's data points)

    @property
    def which(self) -> dict:
        return {"task": self.task} if self.task == "comparison" else {"regime": self.regime}

    @property
    def name(self) -> str:
        return self.label or f"data {next(iter(self.which.values()))}"

    @property
    def done(self) -> Path:
        return self.out / "dataset.json"

    @property
    def needs(self) -> list[str]:
        return []

    @property
    def argv(self) -> list[str]:
        (flag, value), = self.which.items()
        return ["data", "build", "--preset", self.preset, f"--{flag}", value, "--out", str(self.out), "--force",
                *set_args(self.sets)]

    @property
    def record(self) -> dict:
        return {"role": "data", **self.which, "path": str(self.out)}

    @property
    def resolved(self) -> dict:
        return plain({"data": self.config, **({"task": "comparison"} if self.task == "comparison" else {})})

    @property
    def call(self) -> dict:
        return api_call("build_data", out=self.out, preset=self.preset, **self.which, sets=set_items(self.sets),
                        force=True)


@dataclass(frozen=True, kw_only=True)
class TrainJob(Job):
    """A pre-training run: its ``RunSpec`` is resolved when the job is made (preset and overrides applied) and is
    what runs."""

    kind: ClassVar[str] = "train"
    stage: ClassVar[str] = "train"
    resumable: ClassVar[bool] = True
    model: str  # the study's name of the model (run names begin with it)
    spec: RunSpec
    preset: str  # the family's training preset and the overrides, as the command line names them
    sets: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # the record's fields: regime, seed, task, stack_group, point, role
    needs: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, model: str, family: str, preset: str, data_dir: Path, run: Path, sets: dict, info: dict,
              needs: list[str]) -> "TrainJob":
        return cls(model=model, spec=RunSpec.build(data_dir, run, family, preset, sets, quiet=True), preset=preset,
                   sets=dict(sets), info=dict(info), needs=list(needs))

    @property
    def out(self) -> Path:
        return Path(self.spec.out)

    @property
    def done(self) -> Path:
        return self.out / "summary.json"

    @property
    def argv(self) -> list[str]:
        return ["train", "--data", self.spec.data, "--model", self.spec.family, "--preset", self.preset, "--out",
                self.spec.out, "--quiet", *set_args(self.sets)]

    @property
    def record(self) -> dict:
        return {"role": "pretrain", "model": self.model, "family": self.spec.family, **self.info,
                "path": self.spec.out}

    @property
    def resolved(self) -> dict:
        return plain(self.spec.settings())

    @property
    def call(self) -> dict:
        return api_call("train", spec=self.spec.to_dict())

    def resumed(self) -> "TrainJob":
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, resume=True))


@dataclass(frozen=True, kw_only=True)
class AnalyzeJob(Job):
    """A run's analyses. ``analyses`` is named only where it is not the default list (a comparison run's lens and
    trace), so that the jobs of studies planned before keep their identity."""

    kind: ClassVar[str] = "analyze"
    stage: ClassVar[str] = "analyze"
    paths: ClassVar[tuple[str, ...]] = ("run",)
    run: Path
    probes: str
    steps: str
    analyses: str | None = None
    info: dict = field(default_factory=dict)  # the analysed run's record

    @property
    def out(self) -> Path:
        return self.run

    @property
    def done(self) -> Path:
        return self.run / "analysis" / "summary.json"

    @property
    def needs(self) -> list[str]:
        return [f"train {self.run.name}"]

    @property
    def named(self) -> dict:
        return {"analyses": self.analyses} if self.analyses else {}

    @property
    def argv(self) -> list[str]:
        return ["analyze", str(self.run), "--probes", self.probes, "--steps", self.steps,
                *(["--analyses", self.analyses] if self.analyses else [])]

    @property
    def record(self) -> dict:
        return {**self.info, "role": "analysis", "path": str(self.run)}

    @property
    def resolved(self) -> dict:
        return {"probes": self.probes, "steps": self.steps, **self.named}

    @property
    def call(self) -> dict:
        return api_call("analyze", run=self.run, probes=self.probes, steps=self.steps, **self.named)


@dataclass(frozen=True, kw_only=True)
class TransferJob(Job):
    """A fine-tune on new facts from ``parent`` at ``checkpoint``, or (``control``) the same architecture trained
    from scratch on the natural transfer set. The budget options and the draw are named on the command line only
    away from their defaults: older command lines stay valid."""

    kind: ClassVar[str] = "transfer"
    stage: ClassVar[str] = "transfer"
    resumable: ClassVar[bool] = True
    paths: ClassVar[tuple[str, ...]] = ("parent", "out")
    model: str
    family: str
    regime: str
    seed: int
    parent: Path
    out: Path
    checkpoint: str | None = None  # sat | grokked | last | a step; None for the control
    control: bool = False
    preset: str = "scaled"
    sets: dict = field(default_factory=dict)  # train overrides, bare keys (the command line's)
    typed_sets: dict = field(default_factory=dict)  # the same overrides as the typed values they set
    new_fact_multiple: float = FineTuneBudget.new_fact_multiple
    flat_evals: int = FineTuneBudget.flat_evals
    flat_tolerance: float = FineTuneBudget.flat_tolerance
    draw: str = DEFAULT_DRAW
    resume: bool = False

    @property
    def done(self) -> Path:
        return self.out / "summary.json"

    @property
    def needs(self) -> list[str]:
        return [f"train {self.parent.name}"]

    @property
    def source(self) -> str:
        """The ``--from`` reference: the parent at its checkpoint (the control: the parent run)."""
        return str(self.parent) if self.control else f"{self.parent}@{self.checkpoint}"

    @property
    def budget_flags(self) -> list[str]:
        out = []
        for flag, key in (("--new-fact-multiple", "new_fact_multiple"), ("--flat-evals", "flat_evals"),
                          ("--flat-tolerance", "flat_tolerance")):
            if getattr(self, key) != getattr(FineTuneBudget, key):
                out += [flag, f"{getattr(self, key):g}"]
        return out + (["--draw", self.draw] if self.draw != DEFAULT_DRAW else [])

    @property
    def argv(self) -> list[str]:
        head = ["transfer", "--from", self.source, *(["--control"] if self.control else []), "--out", str(self.out)]
        return [*head, "--preset", self.preset, "--quiet", *set_args(self.sets), *self.budget_flags]

    @property
    def record(self) -> dict:
        return {"role": "control" if self.control else "finetune", "model": self.model, "family": self.family,
                "regime": "natural" if self.control else self.regime, "seed": self.seed,
                "checkpoint": None if self.control else self.checkpoint, "parent": str(self.parent),
                "path": str(self.out), "stack_group": f"fine-tunes of {self.model}"}

    @property
    def drawn(self) -> dict:
        return {"draw": self.draw} if self.draw != DEFAULT_DRAW else {}  # only when set: older studies keep theirs

    @property
    def resolved(self) -> dict:
        resolved = plain({"preset": self.preset, "recipe": TRANSFER_PRESETS[self.preset],
                          "set": self.typed_sets,
                          "budget": {"new_fact_multiple": float(self.new_fact_multiple),
                                     "flat_evals": self.flat_evals, "flat_tolerance": float(self.flat_tolerance)}})
        return {**resolved, **self.drawn, **({"control": str(self.parent)} if self.control else {"from": self.source})}

    @property
    def call(self) -> dict:
        return api_call("transfer", parent=self.source, out=self.out, **({"control": True} if self.control else {}),
                        preset=self.preset, sets=set_items(self.sets), quiet=True,
                        new_fact_multiple=float(self.new_fact_multiple), flat_evals=self.flat_evals,
                        flat_tolerance=float(self.flat_tolerance), **self.drawn,
                        **({"resume": True} if self.resume else {}))

    def resumed(self) -> "TransferJob":
        return dataclasses.replace(self, resume=True)


@dataclass(frozen=True, kw_only=True)
class CompareJob(Job):
    """Two regimes' last checkpoints compared path by path (He et al. §3, Finding 1)."""

    kind: ClassVar[str] = "compare"
    stage: ClassVar[str] = "compare"
    paths: ClassVar[tuple[str, ...]] = ("a", "b", "out")
    model: str
    family: str
    seed: int
    a: Path
    b: Path
    regime_a: str
    regime_b: str
    out: Path

    @property
    def name(self) -> str:
        return f"compare {self.a.name} {self.b.name}"

    @property
    def done(self) -> Path:
        return self.out

    @property
    def needs(self) -> list[str]:
        return [f"train {self.a.name}", f"train {self.b.name}"]

    @property
    def argv(self) -> list[str]:
        return ["compare", f"{self.a}@last", f"{self.b}@last", "--out", str(self.out)]

    @property
    def record(self) -> dict:
        return {"role": "compare", "model": self.model, "family": self.family, "seed": self.seed, "a": str(self.a),
                "b": str(self.b), "regime_a": self.regime_a, "regime_b": self.regime_b, "checkpoint": "last",
                "path": str(self.out)}

    @property
    def resolved(self) -> dict:
        return {"a": f"{self.a}@last", "b": f"{self.b}@last"}

    @property
    def call(self) -> dict:
        return api_call("compare", a=f"{self.a}@last", b=f"{self.b}@last", out=self.out)


@dataclass(frozen=True, kw_only=True)
class StackJob(Job):
    """Training or fine-tuning jobs that share an architecture, stepped together in one process: pre-training runs
    as ``api.train`` with a list of specs, fine-tunes as ``api.stack`` with their calls (resolved against the
    parents' checkpoints when they run). Each member keeps its own folder and record."""

    kind: ClassVar[str] = "stack"
    members: tuple[Job, ...]

    @property
    def stage(self) -> str:  # type: ignore[override]
        return self.members[0].stage

    @property
    def names(self) -> list[str]:
        return [m.out.name for m in self.members]

    @property
    def name(self) -> str:
        return f"stack {' '.join(self.names)}"

    @property
    def out(self) -> Path:
        return self.members[0].out

    @property
    def done(self) -> Path:
        return self.members[0].done

    @property
    def needs(self) -> list[str]:
        return []

    @property
    def argv(self) -> list[str]:
        return ["stack", *self.names]

    @property
    def record(self) -> dict:
        return {"role": "stack", "members": self.names}

    @property
    def resolved(self) -> dict:
        return {}

    @property
    def call(self) -> dict:
        if all(isinstance(m, TrainJob) for m in self.members):
            return api_call("train", spec=[m.spec.to_dict() for m in self.members])
        return api_call("stack", calls=[m.call for m in self.members])


KINDS: dict[str, type[Job]] = {cls.kind: cls for cls in (DataJob, TrainJob, AnalyzeJob, TransferJob, CompareJob,
                                                         StackJob)}


def from_dict(data: dict, where: str = "job file") -> Job:
    """A job file read back into its type: an unknown kind, an unknown or missing field is one line each."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or data["kind"] not in KINDS:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise GrokscopeError(f"{where}: not a job file (kind {kind!r}); expected one of {', '.join(KINDS)}")
    cls = KINDS[data["kind"]]
    names = {f.name: f for f in dataclasses.fields(cls)}
    given = {k: v for k, v in data.items() if k != "kind"}
    unknown = sorted(set(given) - set(names))
    missing = sorted(n for n, f in names.items() if n not in given and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise GrokscopeError([f"{where}: {cls.kind} job: unknown key {k!r}" for k in unknown]
                             + [f"{where}: {cls.kind} job: missing key {k!r}" for k in missing])
    for key in cls.paths:
        if isinstance(given.get(key), str):
            given[key] = Path(given[key])
    if "spec" in given:
        given["spec"] = RunSpec.from_dict(given["spec"], f"{where}: spec")
    if "members" in given:
        if not isinstance(given["members"], list) or not given["members"]:
            raise GrokscopeError(f"{where}: a stack job's members must be a non-empty list of jobs")
        given["members"] = tuple(from_dict(m, f"{where}: member") for m in given["members"])
    try:
        return cls(**given)
    except (TypeError, ValueError) as exc:
        raise GrokscopeError(f"{where}: {cls.kind} job: {exc}") from None


def stacked(jobs: list[Job]) -> list[tuple[Job, list[Job]]]:
    """Group training or fine-tuning jobs that share a ``stack_group`` into one ``StackJob`` each; returns (job to
    run, the member jobs it stands for)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.record.get("stack_group") or job.name, []).append(job)
    return [(members[0], members) if len(members) == 1 else (StackJob(members=tuple(members)), members)
            for members in groups.values()]
