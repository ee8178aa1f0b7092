"""Older study and sweep folders, read in today's layout: every rule for what an earlier grokscope recorded, in one
place, so that the code that compares, resumes and reports reads one layout.

What changed, and how an older record is read:

- **0.1.x run settings** (``LEGACY_TRAIN_KEYS``): the trm's halting and puzzle-embedding settings were kept under
  ``train``; they belong to the family's model config now (``artifacts.upgrade_settings``). Moving a setting between
  sections is not a change of its value (``in_todays_layout``).
- **Settings added later**: a key an older record lacks, whose new value is today's default, is no change
  (``differences``).
- **Manifests before resolved settings were recorded** are compared by command line, without the fine-tuning flags
  their command lines always carried at their default values (``without_default_flags``).
- **A moved or copied study** records the folder it was written in; its paths are read under the folder it is in
  now (``artifacts.relocated``; manifests before ``root`` was recorded: the study folder of its jobs' outputs).
  A job's recorded inputs (its dataset, parent, compared runs) are compared from the study's own folders on
  (``portable``): a study or sweep written with a relative ``--out`` and continued by an absolute one is unchanged.
- **Sweeps** record the study spec they ran: one recorded before a spec field existed (``workers``, a transfer's
  ``draw``, the ``comparison`` section) or before ``task`` is read with today's defaults (``sweep_identity``); a
  sweep recorded before its folder was (``root``) is moved by its outputs' paths (``read_sweep``).
"""

from __future__ import annotations

from pathlib import Path

from grokscope import artifacts, runs
from grokscope.config import from_dict, to_dict
from grokscope.errors import GrokscopeError
from grokscope.studies.jobs import Job, TrainJob
from grokscope.studies.spec import StudySpec, spec_dict, transfer_as_list, without_absent_sections
from grokscope.training.config import TrainConfig
from grokscope.training.runspec import plain

MANIFEST_SCHEMA = 1
# Fine-tuning flags that study command lines once always carried at their default values.
DEFAULT_FLAGS = {("--new-fact-multiple", "5"), ("--flat-evals", "4"), ("--flat-tolerance", "0.02")}


def read_manifest(root: Path) -> dict | None:
    """``<root>/study.json`` in today's layout (None when there is none); a file this grokscope cannot read is one
    line that says how to start over."""
    path = Path(root) / "study.json"
    if not path.exists():
        return None
    data = artifacts.read_json(path, "remove the study folder or pass --fresh to start over")
    jobs = data.get("jobs")
    if data.get("schema") != MANIFEST_SCHEMA or not isinstance(jobs, dict) or \
            not all(isinstance(e, dict) for e in jobs.values()) or \
            not isinstance(data.setdefault("stage_seconds", {}), dict):
        raise GrokscopeError(f"{path}: not a study manifest this grokscope reads; pass --fresh to start over")
    return artifacts.relocated(data, root)


def settings_defaults(task: str | None = None) -> dict:
    """Default values of the config sections a resolved record holds (a setting added in a later version, at its
    default, is not a change of a job recorded before it existed); ``task``: a comparison dataset's own config."""
    from grokscope.data.comparison import ComparisonConfig
    from grokscope.data.config import DataConfig

    data = ComparisonConfig() if task == "comparison" else DataConfig()
    return plain({"train": to_dict(TrainConfig()), "data": to_dict(data)})


def differences(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """``key: old -> new`` for every resolved setting that differs (nested keys joined by dots); a key ``old`` lacks
    whose new value is today's default is no change."""
    defaults = settings_defaults(new.get("task") if isinstance(new, dict) else None) if defaults is None \
        else defaults
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


_OUTPUT_FOLDERS = ("runs", "datasets", "compare")  # where a study or sweep keeps what its jobs write
_PATH_SETTINGS = ("data", "from", "control", "a", "b")  # the resolved settings that name a job's inputs


def portable(resolved: dict) -> dict:
    """Resolved settings with the paths of the study's own folders from that folder on (``/x/s/runs/r@last`` ->
    ``runs/r@last``): the same job recorded with a relative ``--out``, an absolute one, or before its folder moved is
    the same job (compared as written, an unfinished run would be taken as changed and started over)."""
    def short(value):
        if not isinstance(value, str):
            return value
        parts = Path(value).parts
        ends = [i for i, part in enumerate(parts[:-1]) if part in _OUTPUT_FOLDERS]
        return "/".join(parts[ends[-1]:]) if ends else value
    return {k: short(v) if k in _PATH_SETTINGS else v for k, v in resolved.items()}


def compared(old: dict, job: Job) -> list[str]:
    """How ``job``'s resolved settings differ from the recorded ``old`` ones, both in today's layout."""
    return differences(portable(in_todays_layout(old, job)), portable(job.resolved))


def in_todays_layout(resolved: dict, job: Job) -> dict:
    """A training job's recorded settings in today's layout (``artifacts.upgrade_settings``): moving a setting
    between sections in an upgrade is not a change of value."""
    if not (isinstance(job, TrainJob) and isinstance(resolved.get("train"), dict)
            and isinstance(resolved.get("model"), dict)):
        return resolved
    train, model = artifacts.upgrade_settings(job.spec.family, resolved["train"], resolved["model"])
    return {**resolved, "train": train, "model": model}


def budget_only(old, job: Job) -> bool:
    """Whether an unfinished training job's recorded settings ``old`` differ from today's only in what a resume may
    change (its budget and stop rules, ``runs.RESUMABLE_KEYS``): it then continues from its checkpoint under the new
    budget, as ``train --resume`` does, instead of starting over (a long run raised from 40,000 to 60,000 steps keeps
    its first 40,000)."""
    if job.stage != "train" or not isinstance(old, dict) or not isinstance(old.get("train"), dict):
        return False

    def without_budget(resolved: dict) -> dict:
        return {**resolved, "train": {k: v for k, v in (resolved.get("train") or {}).items()
                                      if k not in runs.RESUMABLE_KEYS}}
    return without_budget(portable(in_todays_layout(old, job))) == without_budget(portable(job.resolved))


def stale(old, job: Job) -> bool:
    """Whether an unfinished job must start over: its recorded settings changed beyond its budget."""
    return isinstance(old, dict) and bool(compared(old, job)) and not budget_only(old, job)


def without_default_flags(argv: list) -> list:
    """A recorded command line without the fine-tuning flags older ones always carried at their defaults."""
    out, i = [], 0
    while i < len(argv):
        if i + 1 < len(argv) and (argv[i], argv[i + 1]) in DEFAULT_FLAGS:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def recorded_changes(entry: dict, job: Job) -> list[str]:
    """How ``job`` differs from its recorded manifest ``entry``: by resolved settings, or for a manifest written
    before settings were recorded, by command line."""
    if isinstance(entry.get("resolved"), dict):
        return compared(entry["resolved"], job)
    argv = entry.get("argv")
    return [] if argv is None or without_default_flags(argv) == job.argv else ["command line"]


def read_sweep(out: Path) -> dict | None:
    """``<out>/sweep.json`` with its paths under the folder it is in now (None when there is none)."""
    path = Path(out) / "sweep.json"
    if not path.exists():
        return None
    state = artifacts.read_json(path, "pass --fresh to start the sweep over")
    if not isinstance(state, dict):
        raise GrokscopeError(f"{path}: not a sweep record this grokscope reads; pass --fresh to start over")
    return artifacts.relocated(state, out)


def sweep_identity(state: dict) -> tuple:
    """What a recorded sweep is (its spec, model and task), as today's sweeps record it: the spec read into today's
    type, so a field added since is at its default (a spec no longer readable is compared as recorded)."""
    spec = state.get("spec")
    try:
        spec = spec_dict(from_dict(StudySpec, transfer_as_list(spec), "the recorded spec"))
    except GrokscopeError:
        spec = without_absent_sections(spec)
    return spec, state.get("model"), state.get("task", "composition")
