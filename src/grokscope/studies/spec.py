"""The study spec: a typed dataclass read from a preset YAML, strict at every level, validated as a whole before
the first job runs (every family, preset, regime, checkpoint name and ``set`` key of every entry).

``--set`` on a study uses the one grammar with the sections ``data``, ``train``, ``model`` (applied to every model
of the study) and ``transfer``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from grokscope import artifacts
from grokscope.config import apply_overrides, from_dict, repeated, route_sets, split_set_items, to_dict
from grokscope.data.config import DATA_PRESETS, REGIMES, TRANSFER_DRAWS, DataConfig, resolve_data_config
from grokscope.errors import GrokscopeError
from grokscope.models.registry import FAMILIES
from grokscope.training.config import TrainConfig, resolve_train_config
from grokscope.training.runspec import RunSpec, plain
from grokscope.finetuning import TRANSFER_PRESETS, FineTuneBudget
from grokscope.analysis import defaults

CHECKPOINT_NAMES = ("sat", "grokked", "last")
PROBE_NAMES = ("ood", "iid", "train", "test_inferred_ood", "test_inferred_iid", "train_inferred", "id_atomic",
               "ood_atomic")


@dataclass
class DataSpec:
    preset: str = "micro"  # a data preset (smoke, micro, mini, paper)
    set: dict[str, Any] = field(default_factory=dict)  # data config overrides


@dataclass
class ModelSpec:
    name: str  # run names are <name>_<regime>; unique within a study
    family: str  # gpt | trm | any registered family
    preset: str  # the family's training preset
    regimes: list[str] | None = None  # default: every regime of the study
    set: dict[str, Any] = field(default_factory=dict)  # train.KEY / model.KEY (bare keys: the one that has it)
    per_regime: dict[str, dict] = field(default_factory=dict)  # regime -> set entries that apply to it only


@dataclass
class AnalysisSpec:
    probes: str = defaults.PROBES
    steps: str = defaults.STEPS


@dataclass
class TransferSpec:
    model: str  # which model's runs are fine-tuned
    from_: list[str] = field(default_factory=list, metadata={"key": "from"})  # regimes of the parents
    checkpoints: list[str] = field(default_factory=lambda: ["last"])  # sat | grokked | last | a step
    control: bool = False  # plus the same architecture from scratch on the natural transfer set
    preset: str = "scaled"
    set: dict[str, Any] = field(default_factory=dict)  # train overrides of the fine-tunes (max_steps is the cap)
    # When a fine-tune stops before its cap (finetuning.FineTuneBudget; 0: always run to max_steps).
    new_fact_multiple: float = FineTuneBudget.new_fact_multiple
    flat_evals: int = FineTuneBudget.flat_evals
    flat_tolerance: float = FineTuneBudget.flat_tolerance
    # How the transfer sets draw new facts' tails: uniform (the authors') or kept (He et al.'s new+old at a usable n).
    draw: str = "uniform"


@dataclass
class ComparisonSpec:
    """Wang et al.'s comparison task beside composition (their Fig. 1): each named model also trains on one
    comparison dataset, and the report sets its OOD comparison accuracy against its OOD composition accuracy."""
    preset: str = "micro"  # a comparison data preset (data/comparison.py: smoke, micro, mini, paper)
    set: dict[str, Any] = field(default_factory=dict)  # comparison data overrides (num_entities, phi, ...)
    models: list[str] | None = None  # which models train on it; default: every model of the study
    # model name -> train.KEY / model.KEY entries for its comparison run only (on top of the model's own ``set``)
    per_model: dict[str, dict] = field(default_factory=dict)


@dataclass
class StudySpec:
    name: str
    tier: str
    data: DataSpec
    regimes: list[str]
    models: list[ModelSpec]
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    # Fine-tunes on new facts: one entry per fine-tuned model (He et al. §5 fine-tune the trm; a gpt entry is an
    # extension). A single mapping in a YAML file is read as a list of one.
    transfer: list[TransferSpec] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])  # one pre-training run per model, regime and seed
    # On a CPU, a stage's independent jobs (the gpt's stack and the trm's) run side by side in this many worker
    # processes, the cores shared out as threads; 1 = one job at a time in the study's own process.
    workers: int = 1
    comparison: ComparisonSpec | None = None  # the comparison task's runs (none by default)
    # Every setting the plan needs, resolved once by ``load_spec`` (``Resolved``). Not part of the file.
    resolved: Any = field(default=None, init=False, repr=False, compare=False)

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def regimes_of(self, model: ModelSpec) -> list[str]:
        return model.regimes if model.regimes is not None else list(self.regimes)

    def comparison_models(self) -> list[ModelSpec]:
        """The models trained on the comparison task (none without a ``comparison`` section)."""
        if self.comparison is None:
            return []
        names = self.comparison.models
        return [m for m in self.models if names is None or m.name in names]


def presets_dir():
    """The study presets shipped with the package (package data, so they come along in a wheel)."""
    return resources.files("grokscope").joinpath("presets")


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in presets_dir().iterdir() if p.name.endswith(".yaml"))


def read_preset(preset: str) -> dict:
    """A preset name (smoke, micro, mini, paper, ...) or a path to a YAML file, as a dict."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if path.exists() and not path.is_file():
            raise GrokscopeError(f"{path}: not a regular file; give a study YAML file")
        if not path.is_file():
            raise GrokscopeError(f"{path}: no such study file; give a preset name ({', '.join(preset_names())}) or "
                                 f"an existing YAML file")
        return artifacts.read_yaml(path, "fix the YAML (see the presets in src/grokscope/presets/)")
    if preset not in preset_names():
        raise GrokscopeError(f"unknown study preset {preset!r}; choose one of {', '.join(preset_names())} or a YAML "
                             f"file")
    with resources.as_file(presets_dir().joinpath(f"{preset}.yaml")) as path:
        return artifacts.read_yaml(path, "reinstall grokscope")


def apply_study_sets(raw: dict, items: list[str] | None) -> dict:
    """``--set data.K=V | train.K=V | model.K=V | transfer.K=V`` applied to a raw study dict; each value is checked
    once here (it would otherwise be reported once for every model it applies to)."""
    pairs = split_set_items(items)
    if not pairs:
        return raw
    sections = {"data": DataConfig, "train": TrainConfig, "model": None, "transfer": TrainConfig}
    routed = route_sets(pairs, sections)
    problems = []
    for section, cls in sections.items():
        if cls is not None and routed[section]:
            try:
                apply_overrides(cls(), routed[section], what=section)
            except GrokscopeError as exc:
                problems += exc.problems
    if problems:
        raise GrokscopeError(problems)
    raw = copy.deepcopy(raw)
    for key, value in routed["data"].items():
        raw.setdefault("data", {}).setdefault("set", {})[key] = value
    for model in raw.get("models") or []:
        if isinstance(model, dict):
            for section in ("train", "model"):
                for key, value in routed[section].items():
                    model.setdefault("set", {})[f"{section}.{key}"] = value
    if routed["transfer"]:
        entries = raw.get("transfer")
        if not entries or not all(isinstance(e, dict) for e in entries):
            raise GrokscopeError("--set transfer.KEY needs a study with a transfer section")
        for entry in entries:  # every fine-tuned model
            entry.setdefault("set", {}).update(routed["transfer"])
    return raw


def transfer_as_list(raw: dict) -> dict:
    """A study whose ``transfer`` is one mapping (the form before several fine-tuned models) as a list of one."""
    if isinstance(raw, dict) and isinstance(raw.get("transfer"), dict):
        raw = {**raw, "transfer": [raw["transfer"]]}
    elif isinstance(raw, dict) and raw.get("transfer", ()) is None:
        raw = {**raw, "transfer": []}
    return raw


def load_spec(preset: str, overrides: list[str] | None = None) -> StudySpec:
    """Read, override and validate a study, every problem of every entry reported at once; then resolve every
    setting its plan needs (``resolved``)."""
    spec = from_dict(StudySpec, apply_study_sets(transfer_as_list(read_preset(preset)), overrides), "study")
    problems = validate(spec)
    if problems:
        raise GrokscopeError(problems)
    spec.resolved = resolve(spec)
    return spec


@dataclass(frozen=True)
class PlannedRun:
    """A model's run on one dataset, resolved: the ``set`` items as its command line names them (``train.K``,
    ``model.K``) and its ``RunSpec`` with every setting typed (data and folder empty: the plan gives them)."""

    sets: dict
    spec: RunSpec

    @property
    def model_sets(self) -> dict:
        return {k[len("model."):]: v for k, v in self.sets.items() if k.startswith("model.")}


@dataclass(frozen=True)
class Resolved:
    """Everything a study's plan needs, every setting typed: the plan only gives runs their data, folders and seeds.

    - ``runs``: (model name, regime or "comparison") -> the model's run on that dataset;
    - ``data``: regime or "comparison" -> the dataset's config (every field, JSON-plain);
    - ``transfer``: fine-tuned model -> its fine-tunes' train overrides as typed values."""

    runs: dict[tuple[str, str], PlannedRun]
    data: dict[str, dict]
    transfer: dict[str, dict]


def resolve(spec: StudySpec) -> Resolved:
    """A valid study's settings, resolved once (``load_spec``)."""
    runs = {(model.name, regime): planned_run(model, regime) for model in spec.models
            for regime in spec.regimes_of(model)}
    runs.update({(model.name, "comparison"): planned_run(comparison_model(spec, model))
                 for model in spec.comparison_models()})
    data = {regime: plain(to_dict(resolve_data_config(spec.data.preset, regime, None, data_sets(spec))))
            for regime in spec.regimes}
    if spec.comparison is not None:
        from grokscope.data.comparison import resolve_comparison_config

        data["comparison"] = plain(to_dict(resolve_comparison_config(spec.comparison.preset,
                                                                     comparison_data_sets(spec))))
    transfer = {entry.model: plain(typed_train_sets(transfer_sets(entry))) for entry in spec.transfer}
    return Resolved(runs, data, transfer)


def planned_run(model: ModelSpec, regime: str | None = None) -> PlannedRun:
    """The model's run on one dataset (``regime``'s ``per_regime`` entries on top), resolved; a setting it cannot
    take is one line per problem (``validate`` checks every entry with it)."""
    sets = qualified_sets(*model_sets(model, regime))
    return PlannedRun(sets, RunSpec.build("", "", model.family, model.preset, sets, quiet=True))


def qualified_sets(train_over: dict, model_over: dict) -> dict:
    """Train and model overrides as one ``set`` mapping with their sections named (``train.K``, ``model.K``)."""
    return {**{f"train.{k}": v for k, v in train_over.items()}, **{f"model.{k}": v for k, v in model_over.items()}}


def spec_dict(spec: StudySpec) -> dict:
    """The spec as plain values; a study without a comparison section is written as before the section existed (a
    sweep or study recorded then keeps its identity)."""
    return without_absent_sections(to_dict(spec))


OPTIONAL_SECTIONS = tuple(f.name for f in fields(StudySpec) if f.default is None and f.init)  # (comparison)


def without_absent_sections(raw: dict) -> dict:
    """A recorded spec with its optional sections that are absent (None) left out."""
    return {k: v for k, v in raw.items() if not (k in OPTIONAL_SECTIONS and v is None)} if isinstance(raw, dict) \
        else raw


def data_sets(spec: StudySpec) -> dict:
    """The data ``set`` with bare keys (``data.phi`` and ``phi`` are the same key)."""
    return route_sets(list(spec.data.set.items()), {"data": DataConfig})["data"]


def transfer_sets(entry: TransferSpec) -> dict:
    """A transfer entry's ``set`` with bare train keys."""
    return route_sets(list(entry.set.items()), {"train": TrainConfig})["train"]


def typed_train_sets(sets: dict) -> dict:
    """Train overrides as the typed values they set (a fine-tune's config is its parent's with these on top)."""
    cfg = apply_overrides(TrainConfig(), sets, what="train") if sets else TrainConfig()
    return {k: getattr(cfg, k) for k in sets}


def model_sets(model: ModelSpec, regime: str | None = None) -> tuple[dict, dict]:
    """A model entry's ``set`` (with its ``per_regime`` entries for ``regime`` on top) split into (train overrides,
    model overrides)."""
    fam = FAMILIES.get(model.family)
    items = {**model.set, **(model.per_regime.get(regime) or {})} if regime else dict(model.set)
    routed = route_sets(list(items.items()), {"train": TrainConfig, "model": fam.config_cls if fam else None})
    return routed["train"], routed["model"]


def comparison_model(spec: StudySpec, model: ModelSpec) -> ModelSpec:
    """The model entry its comparison run trains with: its own ``set``, then the comparison section's ``per_model``
    entries for it."""
    extra = (spec.comparison.per_model.get(model.name) or {}) if spec.comparison else {}
    return ModelSpec(model.name, model.family, model.preset, set={**model.set, **extra})


def comparison_model_sets(spec: StudySpec, model: ModelSpec) -> tuple[dict, dict]:
    """A model's (train, model) overrides for its comparison run."""
    return model_sets(comparison_model(spec, model))


def comparison_data_sets(spec: StudySpec) -> dict:
    """The comparison section's data ``set`` with bare keys."""
    from grokscope.data.comparison import ComparisonConfig

    return route_sets(list(spec.comparison.set.items()), {"data": ComparisonConfig})["data"]


def _errors_or_train(model: ModelSpec, regime: str | None) -> dict:
    """The train overrides of a model entry (for ``regime``), or {} when they do not parse (reported elsewhere)."""
    try:
        return model_sets(model, regime)[0]
    except GrokscopeError:
        return {}


def validate(spec: StudySpec) -> list[str]:
    """Every problem of the spec, one line each (empty when the whole plan can run)."""
    p = []
    if not spec.name or any(c in spec.name for c in "/\\"):
        p.append(f"study.name {spec.name!r} must be a non-empty name without slashes")
    bad_regimes = [r for r in spec.regimes if r not in REGIMES]
    if bad_regimes or not spec.regimes:
        p.append(f"study.regimes {spec.regimes}: choose from {', '.join(REGIMES)}")
    if spec.data.preset not in DATA_PRESETS:
        p.append(f"study.data.preset {spec.data.preset!r}: choose one of {', '.join(DATA_PRESETS)}")
    data_ok = spec.data.preset in DATA_PRESETS and not _errors(
        lambda: resolve_data_config(spec.data.preset, None, None, data_sets(spec)).validate(), "")
    if spec.data.preset in DATA_PRESETS and not data_ok:
        p += _errors(lambda: resolve_data_config(spec.data.preset, None, None, data_sets(spec)).validate(),
                     "study.data")
    if not isinstance(spec.workers, int) or isinstance(spec.workers, bool) or not 1 <= spec.workers <= 64:
        p.append(f"study.workers {spec.workers!r}: give a whole number of worker processes, 1 to 64")
    if not spec.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in spec.seeds):
        p.append(f"study.seeds {spec.seeds}: give non-negative integers")
    p += [f"study.{where}: {x}" for where, items in (("seeds", spec.seeds), ("regimes", spec.regimes))
          for x in _repeats(items)]
    names = [m.name for m in spec.models]
    if not names or len(set(names)) != len(names):
        p.append(f"study.models: give at least one model, with unique names (got {names})")
    for i, model in enumerate(spec.models):
        where = f"study.models[{i}] ({model.name})"
        if not model.name or not model.name.replace("_", "").isalnum():
            p.append(f"{where}: name must be letters, digits or _")
        if model.family not in FAMILIES:
            p.append(f"{where}.family {model.family!r}: choose one of {', '.join(FAMILIES)}")
            continue
        if model.regimes is not None and not model.regimes:
            p.append(f"{where}.regimes is empty: name the regimes it trains on, or leave it out for all of them")
        p += [f"{where}.regimes: {x}" for x in _repeats(model.regimes or [])]
        extra = [r for r in spec.regimes_of(model) if r not in spec.regimes]
        if extra:
            p.append(f"{where}.regimes {extra} are not regimes of the study ({', '.join(spec.regimes)})")
        stray = [r for r in model.per_regime if r not in spec.regimes_of(model)]
        if stray:
            p.append(f"{where}.per_regime {stray}: not regimes this model is trained on")
        p += _errors(lambda m=model: planned_run(m), where)
        seeded = [r or "set" for r in [None, *model.per_regime] if "seed" in _errors_or_train(model, r)]
        if seeded:
            p.append(f"{where}: sets train.seed ({', '.join(seeded)}); give the seeds with the study's `seeds:` "
                     f"list in the study YAML, so that the manifest records the seed each run trains with")
        for regime in model.per_regime:
            if regime not in stray and not _errors(lambda m=model: planned_run(m), where):
                p += _errors(lambda m=model, r=regime: planned_run(m, r), f"{where}.per_regime.{regime}")
    p += [f"study.analysis.probes: {x}" for x in _probe_problems(spec.analysis.probes)]
    steps = [x.strip() for x in spec.analysis.steps.split(",")]
    p += [f"study.analysis.steps: {x}" for x in _step_problems(steps, allow_all=True) + _repeats(steps)]
    if spec.comparison is not None:
        p += _comparison_problems(spec)
    fine_tuned = [t.model for t in spec.transfer]
    if len(set(fine_tuned)) != len(fine_tuned):
        p.append(f"study.transfer: one entry per model (got {fine_tuned})")
    for i, entry in enumerate(spec.transfer):
        p += _transfer_problems(spec, entry, f"study.transfer[{i}]", data_ok)
    return p


def _comparison_problems(spec: StudySpec) -> list[str]:
    """Problems of the comparison section alone (a bad model entry is reported at the entry)."""
    from grokscope.data.comparison import COMPARISON_PRESETS, resolve_comparison_config

    c, where, p = spec.comparison, "study.comparison", []
    if c.preset not in COMPARISON_PRESETS:
        p.append(f"{where}.preset {c.preset!r}: choose one of {', '.join(COMPARISON_PRESETS)}")
    else:
        p += _errors(lambda: resolve_comparison_config(c.preset, comparison_data_sets(spec)).validate(), f"{where}.set")
    names = [m.name for m in spec.models]
    unknown = [n for n in (c.models or []) if n not in names]
    if c.models is not None and (unknown or not c.models):
        p.append(f"{where}.models {c.models}: choose models of the study ({', '.join(names)}), or leave it out for "
                 f"all of them")
    p += [f"{where}.models: {x}" for x in _repeats(c.models or [])]
    chosen = [m.name for m in spec.comparison_models()]
    stray = [n for n in c.per_model if n not in chosen]
    if stray:
        p.append(f"{where}.per_model {stray}: not models trained on the comparison task ({', '.join(chosen)}); "
                 f"remove them, or add them to {where}.models")
    for model in spec.comparison_models():
        if model.name in c.per_model and model.family in FAMILIES and not _errors(lambda m=model: planned_run(m), ""):
            merged = comparison_model(spec, model)
            p += _errors(lambda m=merged: planned_run(m), f"{where}.per_model.{model.name}")
            if "seed" in _errors_or_train(merged, None):
                p.append(f"{where}.per_model.{model.name}: sets train.seed; give the seeds with the study's `seeds:`")
    return p


def _errors(fn, where: str) -> list[str]:
    try:
        fn()
    except GrokscopeError as exc:
        return [f"{where}: {problem}" for problem in exc.problems]
    return []


def _repeats(items: list) -> list[str]:
    """A list naming one thing twice (``[last, last]``) would run or count it twice: said once, by name."""
    twice = repeated(items)
    return [f"{', '.join(map(repr, twice))} given twice; name each once"] if twice else []


def _probe_problems(spec: str) -> list[str]:
    items = [i.strip() for i in spec.split(",") if i.strip()]
    bad = [i for i in items if i not in PROBE_NAMES]
    return ([f"{', '.join(bad) or 'nothing'} is not a probe type; choose from {', '.join(PROBE_NAMES)}"]
            if bad or not items else []) + _repeats(items)


def _step_problems(items: list[str], allow_all: bool = False) -> list[str]:
    names = CHECKPOINT_NAMES + (("all",) if allow_all else ())
    bad = [repr(i) for i in items if not isinstance(i, str) or (i not in names and not i.isdigit())]
    if not items:
        return [f"empty; use {', '.join(names)} or a step number"]
    return [f"{', '.join(bad)}: not a checkpoint; use {', '.join(names)} or a step number"] if bad else []


def _transfer_problems(spec: StudySpec, t: TransferSpec, where: str, data_ok: bool) -> list[str]:
    """Problems of one transfer entry alone: problems it inherits (a bad model or data entry) are reported there."""
    p = []
    names = [m.name for m in spec.models]
    if t.model not in names:
        return [f"{where}.model {t.model!r}: not a model of the study ({', '.join(names)})"]
    model = spec.model(t.model)
    missing = [r for r in t.from_ if r not in spec.regimes_of(model)]
    if missing or not t.from_:
        p.append(f"{where}.from {t.from_}: choose regimes that {t.model} is trained on "
                 f"({', '.join(spec.regimes_of(model))})")
    if t.control and "natural" not in spec.regimes_of(model):
        p.append(f"{where}.control needs {t.model} trained on the natural regime")
    p += [f"{where}.checkpoints: {x}" for x in _step_problems(t.checkpoints)]
    p += [f"{where}.{key}: {x}" for key, items in (("from", t.from_), ("checkpoints", t.checkpoints))
          for x in _repeats(items)]
    if t.preset not in TRANSFER_PRESETS:
        p.append(f"{where}.preset {t.preset!r}: choose one of {', '.join(TRANSFER_PRESETS)}")
    p += [f"{where}.{x}" for x in FineTuneBudget(t.new_fact_multiple, t.flat_evals, t.flat_tolerance).problems()]
    if t.draw not in TRANSFER_DRAWS:
        p.append(f"{where}.draw {t.draw!r}: choose one of {', '.join(TRANSFER_DRAWS)}")
    if data_ok:
        p += _errors(lambda: resolve_data_config(spec.data.preset, None, None, data_sets(spec))
                     .validate(transfer=True), "study.data (the transfer sets)")
    if model.family in FAMILIES and not _errors(lambda: planned_run(model), ""):
        p += _errors(lambda: resolve_train_config(model.family, model.preset, {**model_sets(model)[0],
                                                                               **transfer_sets(t)}),
                     f"{where}.set")
    return p
