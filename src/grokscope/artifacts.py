"""Files on disk, without torch: atomic writes, validated reads of every file the tool writes, write-target checks,
and the lock that keeps two processes out of one run folder.

A folder this tool wrote is recognised by its marker files (``OWNED``); ``--force`` replaces only such folders, never
a folder holding anything else. Every read failure becomes one line, ``<path>: <what is wrong>; <how to fix>``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

import yaml

from grokscope.errors import GrokscopeError

# What kind of folder the tool's own output makes -> the files that together identify it.
OWNED = {"dataset": ("dataset.json", "vocab.json"), "run": ("config.yaml", "metrics.jsonl"),
         "study": ("study.json",), "sweep": ("sweep.json",),
         "TransformerLens export": ("tl_config.json", "tl_model.safetensors"),
         "original-format export": ("grokscope-export.json",)}
TMP_PREFIX = ".grokscope-tmp-"  # temporary siblings of atomic writes; leftovers are removed by the next write


def as_path(value, what: str) -> Path:
    """``value`` as a Path, or one line naming ``what`` when it is not a path (an API caller's None or number)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise GrokscopeError(f"{what} must be a path (got {value!r})")
    return Path(value)


# ------------------------------------------------------------------------------------------------ atomic writes
def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A temporary folder to fill and then rename into place, with the mode a plain ``mkdir`` would give it
    (``mkdtemp`` makes it 0700, so a checkpoint or dataset swapped in would be private to its writer)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GrokscopeError(f"{path}: cannot write ({exc.strerror}); choose a writable location") from None


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value):
    """JSON has no NaN: write non-finite floats as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data) -> str:
    return json.dumps(_finite(data), indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, dumps(data))


def write_yaml_atomic(path: Path, data) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


# ------------------------------------------------------------------------------------------------ validated reads
def _read(path: Path, fix: str, kind: type, parse, syntax: type, describe) -> object:
    """Parse a file, then check the type of what it holds; every problem is one line naming the file and ``fix``.
    Only a regular file is read (a named pipe in its place would block forever), and nesting deeper than Python's
    recursion limit is refused rather than crashing the parser."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise GrokscopeError(f"{path}: not a regular file (a pipe, device or folder); {fix}")
        data = parse(path.read_text())
    except FileNotFoundError:
        raise GrokscopeError(f"{path}: missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GrokscopeError(f"{path}: unreadable ({exc}); {fix}") from None
    except RecursionError:
        raise GrokscopeError(f"{path}: nested too deeply to read; {fix}") from None
    except syntax as exc:
        raise GrokscopeError(f"{path}: {describe(exc)}; {fix}") from None
    if not isinstance(data, kind):
        raise GrokscopeError(f"{path}: holds a {type(data).__name__}, expected a {kind.__name__}; {fix}")
    return data


def read_json(path: Path, fix: str, kind: type = dict):
    """A JSON file holding a ``kind``."""
    return _read(path, fix, kind, json.loads, ValueError, lambda exc: f"not valid JSON ({exc})")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    where = getattr(exc, "problem_mark", None)
    at = f" at line {where.line + 1}" if where is not None else ""
    return f"not valid YAML{at} ({getattr(exc, 'problem', None) or exc})"


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (the safe loader keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} written twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml_text(text: str):
    """Parse YAML text as ``read_yaml`` does (safe, duplicate keys refused)."""
    return yaml.load(text, Loader=_StrictLoader)


def read_yaml(path: Path, fix: str, kind: type = dict):
    """A YAML file holding a ``kind``."""
    return _read(path, fix, kind, load_yaml_text, yaml.YAMLError, _yaml_problem)


RUN_SECTIONS = ("data", "model", "train")
# Settings that version 0.1.0 recorded under ``train`` and that from 0.2.0 belong to one family's model config: the
# trm's q-halt weight and its puzzle vector's SignSGD lr and decay (the gpt never used them).
MOVED_TO_MODEL = {"trm": ("q_halt_weight", "puzzle_lr", "puzzle_weight_decay")}
LEGACY_TRAIN_KEYS = tuple(dict.fromkeys(key for keys in MOVED_TO_MODEL.values() for key in keys))


def upgrade_settings(family: str, train: dict, model: dict) -> tuple[dict, dict]:
    """A run's recorded (train, model) settings in today's layout: keys 0.1.0 kept under ``train`` move to the
    family's model config or, for a family that never used them, are dropped. Returns new dicts (this reader
    rewrites nothing; a resumed run writes its config.yaml anew, in today's layout). A key recorded in both places
    with two values is an error: the record was edited by hand."""
    if not any(key in train for key in LEGACY_TRAIN_KEYS):
        return train, model
    moved = MOVED_TO_MODEL.get(family, ())
    clash = [k for k in moved if k in train and k in model and train[k] != model[k]]
    if clash:
        both = ", ".join(f"train.{k}={train[k]!r} vs model.{k}={model[k]!r}" for k in clash)
        raise GrokscopeError(f"{family} settings recorded twice with two values ({both}); keep the model one and "
                             f"delete the other")
    model = {**{k: train[k] for k in moved if k in train}, **model}
    return {k: v for k, v in train.items() if k not in LEGACY_TRAIN_KEYS}, model


def read_config(run: Path) -> dict:
    """A run's ``config.yaml``, checked for the sections every stage relies on, in today's layout
    (``upgrade_settings``)."""
    run = Path(run)
    if not run.is_dir():
        raise GrokscopeError(f"{run}: no such run folder; train one with `grokscope train --out {run}`")
    path = run / "config.yaml"
    if not path.exists():
        raise GrokscopeError(f"{run}: not a grokscope run (no config.yaml); train one with `grokscope train`")
    fix = "restore it from a backup or train the run again"
    cfg = read_yaml(path, fix)
    for section in RUN_SECTIONS:
        if not isinstance(cfg.get(section), dict):
            raise GrokscopeError(f"{path}: section {section!r} is missing or not a mapping; {fix}")
    for key in ("path", "fingerprint"):
        if not isinstance(cfg["data"].get(key), str):
            raise GrokscopeError(f"{path}: data.{key} is missing; {fix}")
    if not isinstance(cfg["model"].get("family"), str) or not isinstance(cfg["model"].get("config"), dict):
        raise GrokscopeError(f"{path}: model.family / model.config are missing; {fix}")
    cfg["train"], cfg["model"]["config"] = upgrade_settings(cfg["model"]["family"], cfg["train"],
                                                            cfg["model"]["config"])
    # Paths are also recorded relative to the run folder: a run moved or copied with its study reads its own dataset
    # and parent, not the ones at the place it was trained (which may be gone, or another copy's).
    here = run.resolve()
    for section, key, relative in (("data", "path", "relative"), ("transfer", "parent_run", "parent_relative")):
        values = cfg.get(section)
        if isinstance(values, dict) and isinstance(values.get(relative), str):
            moved = Path(os.path.normpath(here / values[relative]))
            if moved.is_dir():
                values[key] = str(moved)
    return cfg


def relative_to_run(target: Path, run: Path) -> str:
    """``target`` as a path relative to the run folder ``run`` (what ``read_config`` resolves again)."""
    return os.path.relpath(Path(target).resolve(), Path(run).resolve())


# The folders of a study whose jobs' outputs tell where the study was when its manifest was written.
_STUDY_OUTPUT_FOLDERS = ("runs", "datasets")


def relocated(manifest: dict, root: Path) -> dict:
    """A study manifest read from the folder ``root``, every recorded path under the folder it was written in moved
    under ``root``: a study moved (``mv``), copied or reached by another path reads its own folders, never those of
    the place it was written (gone, or another copy's). The old place is the manifest's ``root``, or for a manifest
    written before it was recorded, the study folder of its jobs' outputs."""
    here = str(Path(root).resolve())
    was = manifest.get("root")
    if not isinstance(was, str):
        jobs = manifest.get("jobs") if isinstance(manifest.get("jobs"), dict) else {}
        outputs = manifest.get("outputs") if isinstance(manifest.get("outputs"), list) else []  # a sweep's
        outs = [Path(e["out"]) for e in jobs.values() if isinstance(e, dict) and isinstance(e.get("out"), str)] + \
            [Path(o) for o in outputs if isinstance(o, str)]
        was = next((str(p.parent.parent) for p in outs if p.parent.name in _STUDY_OUTPUT_FOLDERS), None)
    if was is None or was == here:
        return manifest

    def move(value):
        if isinstance(value, str) and (value == was or value.startswith(was + os.sep)):
            return here + value[len(was):]
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    return {**move(manifest), "root": here}


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def read_metrics(run: Path, warn=warn_stderr) -> list[dict]:
    """Every readable row of ``metrics.jsonl`` in order. Damaged lines are skipped, counted and reported through
    ``warn`` (one message naming them; stderr unless told otherwise), never silently: the rows after them are
    kept."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows, damaged = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a metrics row")
        except (ValueError, RecursionError):  # RecursionError: a hand-edited row nested thousands deep
            damaged.append(number)
            continue
        rows.append(row)
    if damaged and warn is not None:
        lines = ", ".join(map(str, damaged[:5])) + (" ..." if len(damaged) > 5 else "")
        warn(f"{path}: {len(damaged)} damaged row(s) skipped (line {lines}); the other {len(rows)} kept")
    return rows


def read_summary(run: Path) -> dict:
    return read_json(Path(run) / "summary.json", "re-run the command that wrote it (e.g. `grokscope train "
                                                   "--resume`)")


# ------------------------------------------------------------------------------------------------ write targets
def owned_kind(path: Path) -> str | None:
    """What kind of grokscope output ``path`` holds, or None when it is not one of this tool's folders."""
    path = Path(path)
    for kind, markers in OWNED.items():
        if all((path / marker).is_file() for marker in markers):
            return kind
    return None


def check_output_dir(out: Path, force: bool, kind: str, allow_kinds: tuple[str, ...] = ()) -> None:
    """Before any work starts: ``out`` may be new or empty; with ``force`` it may hold this tool's own output of
    ``kind`` (or ``allow_kinds``), which is then replaced. A file, a foreign folder or a read-only place is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GrokscopeError(f"{out}: exists and is a file, not a folder; choose another --out")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(TMP_PREFIX) and p.name != ".lock"):
        found = owned_kind(out)
        if not force:
            what = f"holds a {found}" if found else "is not empty"
            raise GrokscopeError(f"{out}: {what}; pass --force to replace it, or choose another --out")
        if found not in (kind, *allow_kinds):
            what = f"a {found}" if found else "files grokscope did not write"
            raise GrokscopeError(f"{out}: holds {what}, so --force will not replace it; choose another --out")
    ensure_writable_parent(out)


def ensure_writable_parent(out: Path) -> None:
    parent = Path(out).resolve().parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise GrokscopeError(f"{blocker}: is a file, so {out} cannot be created; choose another --out")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GrokscopeError(f"{parent}: cannot create ({exc.strerror}); choose a writable --out") from None
    if not os.access(parent, os.W_OK) or not _can_create_in(parent):
        raise GrokscopeError(f"{parent}: not writable; choose a writable --out")


def _can_create_in(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + "probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def ensure_writable_dir(folder: Path) -> None:
    folder = Path(folder)
    ensure_writable_parent(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GrokscopeError(f"{folder}: cannot create ({exc.strerror}); choose a writable --out") from None
    if not _can_create_in(folder):
        raise GrokscopeError(f"{folder}: not writable; choose a writable --out")


def _leftover_pattern(name: str) -> re.Pattern:
    """A temporary sibling of ``name`` exactly: ``<prefix><name>-<8 random>`` (a new folder being written) or
    ``<prefix><name>-old-<pid>`` (the folder it replaces); never one of ``name-v2``, whatever characters ``name``
    holds."""
    return re.compile(re.escape(f"{TMP_PREFIX}{name}-") + r"(?:old-\d+|[A-Za-z0-9_]{8})$")


def clean_leftovers(parent: Path, name: str) -> None:
    """Finish or undo what a killed write of ``name`` left in ``parent``. A new folder that never moved into place
    is removed. The old folder of an interrupted swap is put back when ``name`` is missing, else the entries that
    are missing from the new ``name`` (a user's files) are moved back into it, and the rest (superseded output)
    removed: a kill at any point never loses a user's file."""
    out, pattern = Path(parent) / name, _leftover_pattern(name)
    leftovers = sorted(p for p in Path(parent).iterdir() if pattern.fullmatch(p.name)) if Path(parent).is_dir() \
        else []
    for leftover in [p for p in leftovers if "-old-" in p.name[len(TMP_PREFIX) + len(name):]]:
        if not out.exists():
            os.replace(leftover, out)
            continue
        _move_missing(leftover, out)
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in leftovers:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _move_missing(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` that ``dst`` does not have (a user's files beside the tool's) into ``dst``."""
    for entry in src.iterdir():
        if not (dst / entry.name).exists() and not (dst / entry.name).is_symlink():
            os.replace(entry, dst / entry.name)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the complete folder ``tmp`` to ``out``. An old ``out`` loses only the entries ``tmp`` replaces: it is
    moved aside, the new folder moved in, and then everything else of the old one (a user's notes, a notebook, the
    held .lock) moved into the new one before the rest is removed. A kill at any step leaves what
    ``clean_leftovers`` puts right: the user's files are never in the temporary folder that gets deleted."""
    out, tmp = Path(out), Path(tmp)
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = out.with_name(f"{TMP_PREFIX}{out.name}-old-{os.getpid()}")
    os.replace(out, trash)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(trash, out)  # put the old folder back
        raise
    _move_missing(trash, out)
    shutil.rmtree(trash, ignore_errors=True)


COMPARE_KIND = "grokscope compare"


def is_comparison(path: Path) -> bool:
    """A JSON file that ``grokscope compare --out`` wrote."""
    try:
        data = json.loads(Path(path).read_text()) if Path(path).is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("kind") == COMPARE_KIND or {"a", "b", "verdict"} <= set(data))


def is_own_output(path: Path) -> bool:
    """One of the tool's output folders (by its marker files), a comparison file, or a run folder that died
    before it wrote its markers (only the tool's own entries in it)."""
    path = Path(path)
    if path.is_dir():
        if owned_kind(path) is not None:
            return True
        return all(p.name in RUN_ENTRIES or p.name.startswith(TMP_PREFIX) for p in path.iterdir())
    return is_comparison(path)


FIGURES_INDEX = ".grokscope-figures.json"  # the files the report wrote in figures/
FIGURE_NAME = re.compile(r"(regimes|grokking|bridge_use|b_decodable_at_r1|trace)_.+\.png$|transfer\.png$")


def _remove_listed(folder: Path) -> None:
    """Remove the files a folder's index lists (or, for a folder written before indexes, the files named like the
    report's figures), the index, and the folder when nothing else is left."""
    index = folder / FIGURES_INDEX
    try:
        listed = set(json.loads(index.read_text())) if index.is_file() else None
    except (OSError, ValueError):
        listed = None
    for entry in folder.iterdir():
        own = entry.name in listed if listed is not None else bool(FIGURE_NAME.fullmatch(entry.name))
        if entry.is_file() and not entry.is_symlink() and (own or entry.name == FIGURES_INDEX):
            entry.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _own_entry_names(folder: Path) -> tuple[str, ...]:
    kind = owned_kind(folder)
    return {"dataset": DATASET_ENTRIES}.get(kind, RUN_ENTRIES if kind in ("run", None) else OWNED.get(kind, ()))


def foreign_entries(folder: Path) -> list[str]:
    """The entries of one of the tool's folders that the tool did not write (a user's notes)."""
    names = _own_entry_names(folder)
    return sorted(e.name for e in folder.iterdir()
                  if e.name not in names and not e.name.startswith(TMP_PREFIX) and e.name != ".lock")


def _remove_entries(folder: Path) -> None:
    """Remove what the tool writes in one of its folders, then the folder if nothing else (a user's notebook) is
    left in it. In a run's subfolders only the files the tool writes there go (``remove_own_tree``)."""
    names = _own_entry_names(folder)
    for entry in folder.iterdir():
        if entry.name in names or entry.name.startswith(TMP_PREFIX) or entry.name == ".lock":
            remove_own_tree(entry)
    if not any(folder.iterdir()):
        folder.rmdir()


# The files the tool writes below a run folder, by path relative to it: a run's subfolders hold nothing else unless
# a user put it there, and such a file survives a run being cleared (--fresh, --force, a resume that starts over).
RUN_TREE_FILES = re.compile(r"""
    checkpoints/step_\d{8}/(model\.safetensors|state\.safetensors|meta\.json)
  | tensorboard/events\.out\.tfevents\.[^/]+
  | analysis/(lens|trace|bridge_use)\.parquet
  | analysis/(summary|regime|probe|compare)\.json
  | analysis/queries/(schema\.json|step_\d{8}\.[a-z_]+\.parquet)
  | data/(dataset\.json|vocab\.json|arrays\.npz|\.lock)
""", re.X)


def remove_own_tree(entry: Path) -> list[Path]:
    """Remove one entry of a tool's folder: a file (or link) as it is; a folder file by file, only the files the
    tool writes there (``RUN_TREE_FILES``, temporary leftovers and locks), then every folder left empty. Returns the
    files kept (a user's), each also named on stderr."""
    if not entry.is_dir() or entry.is_symlink():
        entry.unlink(missing_ok=True)
        return []
    base, kept = entry.parent, []
    for folder, dirs, files in os.walk(entry, topdown=False):
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            rel = path.relative_to(base).as_posix()
            if RUN_TREE_FILES.fullmatch(rel) or name == ".lock" or any(
                    part.startswith(TMP_PREFIX) for part in path.relative_to(base).parts):
                path.unlink()
            else:
                kept.append(path)
        with contextlib.suppress(OSError):  # not empty: it holds a user's file
            Path(folder).rmdir()
    for path in kept:
        warn_stderr(f"kept {path}: not a file grokscope wrote")
    return kept


DATASET_ENTRIES = ("dataset.json", "vocab.json", "arrays.npz")
RUN_ENTRIES = (".lock", "config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard", "analysis",
               "data")


def write_owned_dir(out: Path, force: bool, kind: str, fill) -> Path:
    """Write one of the tool's output folders whole or not at all: under the folder's lock, check the target
    (``check_output_dir``), let ``fill(tmp)`` write everything into a temporary sibling, then move it into place
    (``replace_dir``: a user's other files in an old folder are kept). A failure leaves the old folder as it was."""
    out = Path(out)
    if out.is_symlink():  # replace the folder the link points to, not the link
        out = out.resolve()
    if out.exists() and not out.is_dir():
        raise GrokscopeError(f"{out}: exists and is a file, not a folder; choose another --out")
    ensure_writable_parent(out)
    check_output_dir(out, force, kind)  # before the lock: a refusal leaves no .lock behind in someone's folder
    created = not out.exists()
    try:
        with FolderLock(out, kind):
            check_output_dir(out, force, kind)
            tmp = new_tmp_dir(out)
            try:
                fill(tmp)
                replace_dir(tmp, out)
            except OSError as exc:
                raise GrokscopeError(f"{out}: cannot write ({exc.strerror}); choose a writable --out") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        if created and out.is_dir() and [p.name for p in out.iterdir()] == [".lock"]:
            shutil.rmtree(out, ignore_errors=True)  # nothing was written: leave no folder that was not there
        raise
    return out


def remove_own(root: Path, outputs) -> list[Path]:
    """``--fresh``: remove the named outputs (names relative to ``root``, or absolute paths inside it) and then the
    folders they leave empty; nothing else in ``root`` is touched, nor anything outside it. Returns what was
    removed."""
    root = Path(root).resolve()
    targets = []
    for item in dict.fromkeys(map(str, outputs)):
        named = not Path(item).is_absolute()  # a fixed name of the command's own (study.json, figures, ...)
        path = Path(item) if not named else root / item
        path = path.parent.resolve() / path.name
        if root not in path.parents or path.is_symlink():
            continue  # never outside the folder the command owns, never through a link
        if not named and not is_own_output(path):
            continue  # a recorded output (a manifest can be hand-edited) must look like the tool's own
        targets.append((path, named))
    # A run folder that keeps a user's file would block the re-run ("not a run"): refuse before removing anything.
    blocked = [(p, foreign_entries(p)) for p, named in targets if p.is_dir() and not named]
    blocked = [(p, f) for p, f in blocked if f]
    if blocked:
        path, names = blocked[0]
        raise GrokscopeError(f"{path}: holds {', '.join(names[:3])}, which grokscope did not write; move it out of "
                             f"the way and run --fresh again (nothing was removed)")
    removed = []
    for path, named in targets:
        if path.is_dir() and named:
            _remove_listed(path)  # a folder of the command's own by name (figures/): the files it lists
        elif path.is_dir():
            _remove_entries(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
        for parent in path.parents:  # runs/, datasets/: removed once empty, kept when a user's file is there
            if parent == root or root not in parent.parents or any(parent.iterdir()):
                break
            parent.rmdir()
    return removed


def new_tmp_dir(out: Path) -> Path:
    """A temporary sibling of ``out`` for an atomic folder write, with the permissions a plain mkdir would give (a
    shared folder stays readable by the group)."""
    out = Path(out)
    clean_leftovers(out.resolve().parent, out.name)
    return make_temp_dir(out.resolve().parent, f"{TMP_PREFIX}{out.name}-")


# ------------------------------------------------------------------------------------------------ the run lock
class FolderLock:
    """An exclusive lock on a folder for one process (``fcntl.flock`` on ``<folder>/.lock``).

    The kernel releases the lock when its holder dies, so a lock left by a killed process is taken over at once; the
    file records the holder's pid and host for the message a second process prints. Re-entrant within a process (a
    study that holds its folder's lock writes its report, which takes the same lock)."""

    _held: dict[str, list] = {}  # resolved lock path -> [fd, depth] of the locks this process holds

    def __init__(self, folder: Path, what: str = "run"):
        self.path = Path(folder) / ".lock"
        self.what = what
        self._key: str | None = None

    def acquire(self) -> "FolderLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._key = str(self.path.resolve())
        except OSError as exc:
            raise GrokscopeError(f"{self.path.parent}: cannot create ({exc.strerror}); choose another --out") \
                from None
        if self._key in FolderLock._held:
            FolderLock._held[self._key][1] += 1
            return self
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise GrokscopeError(f"{self.path}: is not a lock file grokscope wrote (a link or a folder); move it "
                                 f"and try again")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise GrokscopeError(f"{self.path}: cannot create the lock ({exc.strerror}); choose a writable --out") \
                from None
        mine = os.read(fd, 200)
        if mine and not mine.startswith(b"pid "):  # a user's own .lock: never overwritten
            os.close(fd)
            raise GrokscopeError(f"{self.path}: is not a lock file grokscope wrote; move it and try again")
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise GrokscopeError(f"{self.path.parent}: this {self.what} is in use by {holder}; wait for it to "
                                     f"finish or stop it, then try again") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode())
        FolderLock._held[self._key] = [fd, 1]
        return self

    def release(self) -> None:
        entry = FolderLock._held.get(self._key) if self._key else None
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del FolderLock._held[self._key]
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
