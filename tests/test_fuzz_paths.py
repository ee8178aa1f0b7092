"""The second fuzz corpus: what a hostile but realistic user does with paths, places that cannot be written, two
processes on one folder, hand-edited files, mismatched datasets, values a config accepts but a model cannot use,
and the Python API's handles given odd arguments.

Every case: no traceback; exit 0 or 2 (an API call returns or raises GrokscopeError); an exit 2 prints one
``error:`` line (or typer's usage message); every file that existed before is unchanged, except the tool's own
outputs a case names in ``may_change``; a user's files (``notes/``, ``file.txt``, ``mine.ipynb``) are never
touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from collections.abc import Callable

import pytest

from grokscope.errors import GrokscopeError
from conftest import wait_until
from test_fuzz import _run  # the first corpus's in-process runner: an escaped exception counts as a traceback

TINY = "max_steps=6,eval_every=3,eval_bridge_use=8"
USER_FILES = ("notes/notes.txt", "file.txt", "mine.ipynb")


@dataclass
class Case:
    name: str
    args: Callable[[Path], list] | None = None  # the command line, given the case folder
    call: Callable[[Path], object] | None = None  # or a Python API call
    needs: tuple[str, ...] = ()  # pristine items copied into the case folder
    setup: Callable[[Path], None] | None = None  # what the user did before
    cwd: str | None = None  # run from this folder (relative to the case folder)
    codes: tuple[int, ...] = (0, 2)
    expect: str = ""  # a substring of the error line, when the case must fail
    may_change: tuple[str, ...] = ()  # glob patterns of the tool's own files the case may replace


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Datasets on two graphs, a transfer set, a tiny trained gpt on each graph, its analysis and a comparison."""
    root = tmp_path_factory.mktemp("pristine2")
    for args in (["data", "build", "--preset", "smoke", "--out", root / "ds"],
                 ["data", "build", "--preset", "smoke", "--seed", "7", "--out", root / "ds2"],
                 ["data", "build", "--preset", "smoke", "--transfer", "--out", root / "ds_t"],
                 ["train", "--data", root / "ds", "--preset", "smoke", "--quiet", "--out", root / "run", "--set",
                  TINY],
                 ["train", "--data", root / "ds2", "--preset", "smoke", "--quiet", "--out", root / "run2", "--set",
                  TINY],
                 ["analyze", root / "run", "--steps", "last", "--probes", "iid", "--analyses", "lens,regime"],
                 ["compare", f"{root / 'run'}@0", f"{root / 'run'}@last", "--out", root / "cmp.json"],
                 ["data", "export", root / "ds", "--out", root / "orig"]):
        code, out, err = _run([str(a) for a in args])
        assert code == 0, (args, err)
    (root / "notes").mkdir()
    (root / "notes" / "notes.txt").write_text("a user's own notes")
    (root / "file.txt").write_text("a plain file")
    (root / "mine.ipynb").write_text("{}")
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and p.name != ".lock"}


def _rewrite(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / rel
        path.write_text(path.read_text().replace(old, new))
    return setup


# ------------------------------------------------------------------------------------------------ the writers
def writers(r: Path) -> dict[str, Callable[[object], list]]:
    """Every verb that writes, as a function of its --out."""
    run = r / "run"
    return {
        "data build": lambda o: ["data", "build", "--preset", "smoke", "--out", o],
        "data export": lambda o: ["data", "export", r / "ds", "--out", o],
        "data transfer": lambda o: ["data", "transfer", r / "ds", "--out", o],
        "train": lambda o: ["train", "--data", r / "ds", "--preset", "smoke", "--quiet", "--set", TINY, "--out", o],
        "transfer": lambda o: ["transfer", "--from", f"{run}@last", "--quiet", "--set", TINY, "--out", o],
        "compare": lambda o: ["compare", f"{run}@0", f"{run}@last", "--out", o],
        "export tl": lambda o: ["export", "tl", f"{run}@last", "--no-check", "--out", o],
    }


WRITERS = ("data build", "data export", "data transfer", "train", "transfer", "compare", "export tl")
NEEDS = ("ds", "run", "notes", "file.txt", "mine.ipynb")
HEAVY = ("train", "transfer", "export tl")  # a successful run of these costs about a second: fewer variants


def path_cases() -> list[Case]:
    def case(writer, label, out_fn, **kw):
        return Case(f"paths: {writer} {label}", lambda r, w=writer, f=out_fn: writers(r)[w](f(r)), needs=NEEDS,
                    **kw)
    c = []
    for w in WRITERS:
        c += [
            case(w, "--out under a file", lambda r: r / "file.txt" / "out", codes=(2,)),
            case(w, "--out is a user's folder", lambda r: r / "notes", codes=(2,)),
            case(w, "--out . inside a user's folder", lambda r: ".", cwd="notes", codes=(2,)),
            case(w, "--out is a symlink to a user's folder", lambda r: _link(r, "link", r / "notes"), codes=(2,)),
            case(w, "--out name of 300 characters", lambda r: r / ("x" * 300), codes=(2,)),
            case(w, "--out path of 5000 characters", lambda r: r / "/".join(["y" * 200] * 25), codes=(2,)),
            case(w, "--out under a dangling symlink", lambda r: _link(r, "dangling", r / "gone") / "out"),
            case(w, "--out is a user's file", lambda r: r / "file.txt", codes=(2,)),
            case(w, "--out is the dataset folder", lambda r: r / "ds", codes=(2,)),
            case(w, "--out is the run folder", lambda r: r / "run", codes=(2,)),
            case(w, "--out with a newline in its name", lambda r: r / "out\nname"),
        ]
        if w not in HEAVY:
            c += [
                case(w, "relative --out", lambda r: "rel/out", cwd=".", codes=(0,)),
                case(w, "--out with spaces and unicode", lambda r: r / "my öut – x", codes=(0,)),
                case(w, "--out is a symlink to an empty folder", lambda r: _link(r, "elink", _mkdir(r / "empty")),
                     codes=(2,) if w == "compare" else (0,)),  # a comparison is a file, not a folder
                case(w, "--out with a trailing slash", lambda r: str(r / "slash") + "/", codes=(0,)),
                case(w, "--out starts with a dash", lambda r: "-x", cwd="."),
            ]
    c += [case("train", "relative --out", lambda r: "rel/out", cwd=".", codes=(0,)),
          case("transfer", "--out with spaces and unicode", lambda r: r / "my öut – x", codes=(0,))]
    # moved folders
    c += [
        Case("paths: analyze a moved run (its dataset is where it was)", lambda r: ["analyze", r / "moved", "--steps",
                                                                                    "last", "--analyses", "regime"],
             needs=NEEDS, setup=lambda r: (r / "run").rename(r / "moved"), codes=(0,),
             may_change=("moved/analysis/*",)),
        Case("paths: analyze a run whose dataset moved", lambda r: ["analyze", r / "run", "--analyses", "regime"],
             needs=NEEDS, setup=lambda r: (r / "ds").rename(r / "ds_moved"), codes=(2,), expect="--data"),
        Case("paths: analyze with the moved dataset given", lambda r: ["analyze", r / "run", "--analyses", "regime",
                                                                       "--data", r / "ds_moved"],
             needs=NEEDS, setup=lambda r: (r / "ds").rename(r / "ds_moved"), codes=(0,),
             may_change=("run/analysis/*",)),
        Case("paths: resume a run whose dataset moved", lambda r: writers(r)["train"](r / "run") + ["--resume"],
             needs=NEEDS, setup=lambda r: (r / "ds").rename(r / "ds_moved"), codes=(2,)),
        Case("paths: compare into a folder that is a dataset", lambda r: writers(r)["compare"](r / "ds" / "x.json"),
             needs=NEEDS, codes=(0,)),
        Case("paths: run given as a relative path", lambda r: ["analyze", "run", "--analyses", "regime"],
             needs=NEEDS, cwd=".", codes=(0,), may_change=("run/analysis/*",)),
        Case("paths: run given through a symlink", lambda r: ["analyze", _link(r, "rl", r / "run"), "--analyses",
                                                              "regime"], needs=NEEDS, codes=(0,),
             may_change=("run/analysis/*",)),
        Case("paths: data show of a symlinked dataset", lambda r: ["data", "show", _link(r, "dl", r / "ds")],
             needs=NEEDS, codes=(0,)),
    ]
    return c


def _link(r: Path, name: str, target: Path) -> Path:
    link = r / name
    if not link.is_symlink():
        link.symlink_to(target)
    return link


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------------ blocked halfway
def blocked_cases() -> list[Case]:
    def block(rel: str, kind: str = "file"):
        def setup(r: Path) -> None:
            path = r / rel
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir() if kind == "dir" else path.write_text("in the way")
        return setup
    analyze = ["--steps", "last", "--probes", "iid"]
    return [
        Case("blocked: analysis/queries is a file", lambda r: ["analyze", r / "run", *analyze], needs=NEEDS,
             setup=block("run/analysis/queries"), codes=(2,), expect="in the way"),
        Case("blocked: analysis/summary.json is a folder", lambda r: ["analyze", r / "run", *analyze], needs=NEEDS,
             setup=block("run/analysis/summary.json", "dir"), codes=(2,), expect="in the way"),
        Case("blocked: analysis/lens.parquet is a folder", lambda r: ["analyze", r / "run", *analyze], needs=NEEDS,
             setup=block("run/analysis/lens.parquet", "dir"), codes=(2,)),
        Case("blocked: analysis is a file", lambda r: ["analyze", r / "run", *analyze], needs=NEEDS,
             setup=block("run/analysis"), codes=(2,)),
        Case("blocked: a finished run's checkpoints folder is a file (resume refuses: its result stays)",
             lambda r: writers(r)["train"](r / "run") + ["--resume"], needs=NEEDS,
             setup=block("run/checkpoints"), codes=(2,), expect="finished run"),
        Case("blocked: a fine-tune's data is a file", lambda r: writers(r)["transfer"](r / "ft"), needs=NEEDS,
             setup=block("ft/data"), codes=(2,)),
        Case("blocked: a dataset's arrays.npz is a folder (--force)",
             lambda r: ["data", "build", "--preset", "smoke", "--out", r / "ds", "--force"], needs=NEEDS,
             setup=block("ds/arrays.npz", "dir"), codes=(0, 2), may_change=("ds/*",)),
        Case("blocked: compare --out is a folder", lambda r: writers(r)["compare"](r / "notes"), needs=NEEDS,
             codes=(2,)),
        Case("blocked: a study's datasets is a file", lambda r: ["study", "--preset", "smoke", "--out", r / "s"],
             needs=NEEDS, setup=_study_blocked_by("datasets"), codes=(2,), may_change=("s/study.json",)),
        Case("blocked: a report's figures is a file", lambda r: ["report", r / "study"], needs=NEEDS,
             setup=_fake_study("figures"), codes=(2,)),
        Case("blocked: a report's report.html is a folder", lambda r: ["report", r / "study"], needs=NEEDS,
             setup=_fake_study("report.html"), codes=(2,)),
        Case("blocked: export tl target holds a folder in the model's place (--force)",
             lambda r: writers(r)["export tl"](r / "tl") + ["--force"], needs=NEEDS,
             setup=lambda r: _run([str(a) for a in writers(r)["export tl"](r / "tl")]) and None,
             may_change=("tl/*",)),
    ]


def _study_blocked_by(name: str) -> Callable[[Path], None]:
    def setup(r: Path) -> None:
        (_mkdir(r / "s") / "study.json").write_text(json.dumps({"schema": 1, "jobs": {}}))
        (r / "s" / name).write_text("in the way")
    return setup


def _fake_study(blocker: str | None) -> Callable[[Path], None]:
    def setup(r: Path) -> None:
        study = _mkdir(r / "study")
        spec = {"name": "fake", "tier": "smoke", "models": [{"name": "gpt", "family": "gpt"}], "seeds": [0]}
        (study / "study.json").write_text(json.dumps({"schema": 1, "jobs": {}, "spec": spec}))
        (study / "report.md").write_text("an earlier report")
        if blocker == "figures":
            (study / "figures").write_text("in the way")
        elif blocker is not None:
            (study / blocker).mkdir()
    return setup


# ------------------------------------------------------------------------------------------------ hand-edited files
def edited_cases() -> list[Case]:
    cfg = "run/config.yaml"
    analyze = lambda r: ["analyze", r / "run", "--steps", "last", "--probes", "iid", "--analyses", "lens"]  # noqa
    resume = lambda r: writers(r)["train"](r / "run") + ["--resume"]  # noqa
    edits = {
        "config.yaml data path to nowhere": (_rewrite(cfg, "/ds\n", "/nowhere\n"), analyze, (2,)),
        "config.yaml family swapped": (_rewrite(cfg, "family: gpt", "family: trm"), analyze, (2,)),
        "config.yaml unknown family": (_rewrite(cfg, "family: gpt", "family: lstm"), analyze, (2,)),
        "config.yaml d_model changed": (_rewrite(cfg, "d_model: 32", "d_model: 64"), analyze, (2,)),
        "config.yaml lr not a number": (_rewrite(cfg, "lr: 0.001", "lr: abc"), resume, (2,)),
        "config.yaml seed negative": (_rewrite(cfg, "seed: 0", "seed: -5"), resume, (2,)),
        "config.yaml emptied": (lambda r: (r / cfg).write_text(""), analyze, (2,)),
        "config.yaml is a list": (lambda r: (r / cfg).write_text("- 1\n"), analyze, (2,)),
        "config.yaml fingerprint edited": (_rewrite(cfg, "fingerprint: ", "fingerprint: x"), analyze, (2,)),
        "summary.json emptied": (lambda r: (r / "run" / "summary.json").write_text("{}"), analyze, (0, 2)),
        "metrics.jsonl with a garbage line": (lambda r: (r / "run" / "metrics.jsonl").open("a").write("garbage\n"),
                                              lambda r: ["analyze", r / "run", "--analyses", "regime"], (0,)),
        "metrics.jsonl emptied": (lambda r: (r / "run" / "metrics.jsonl").write_text(""),
                                  lambda r: ["analyze", r / "run", "--analyses", "regime"], (0, 2)),
        "dataset.json counts edited": (_rewrite("ds/dataset.json", '"atomic": ', '"atomic": 1'), analyze, (0, 2)),
        "vocab.json truncated": (lambda r: (r / "ds" / "vocab.json").write_text("{"), analyze, (2,)),
        "compare output hand-edited then replaced": (
            lambda r: (r / "cmp.json").write_text(json.dumps({"kind": "grokscope compare", "a": 1})),
            lambda r: writers(r)["compare"](r / "cmp.json"), (0,)),
        "transfer config edited parent": (None, None, (2,)),
    }
    c = []
    for name, (setup, args, codes) in edits.items():
        if setup is None:
            continue
        may = ("run/analysis/*",) if args is analyze else ("cmp.json",) if "compare" in name else ()
        c.append(Case(f"edited: {name}", args, needs=(*NEEDS, "cmp.json"), setup=setup, codes=codes,
                      may_change=(*may, "run/analysis/*", "run/analysis/queries/*")))

    def manifest(jobs) -> Callable[[Path], None]:
        def setup(r: Path) -> None:
            study = _mkdir(r / "s")
            (study / "study.json").write_text(json.dumps({"schema": 1, "jobs": jobs, "spec": {}}))
        return setup
    study = lambda r: ["study", "--preset", "smoke", "--set", "data.nonsense=1", "--out", r / "s"]  # noqa
    for label, jobs in (("jobs is a list", [1, 2]), ("job entry is a string", {"train x": "done"}),
                        ("job out outside the study", {"train x": {"out": "/", "status": "done"}}),
                        ("status unknown", {"train x": {"status": "sideways"}})):
        c.append(Case(f"edited: study.json {label}", study, needs=NEEDS, setup=manifest(jobs), codes=(2,)))
    def old_layout(record: dict) -> Callable[[Path], None]:
        def setup(r: Path) -> None:
            _fake_study(None)(r)
            data = json.loads((r / "study" / "study.json").read_text())
            data["jobs"] = {"train x": {"status": "done", "record": record}}
            (r / "study" / "study.json").write_text(json.dumps(data))
        return setup
    for label, record in (("record without a path", {"role": "pretrain", "model": "gpt", "regime": "natural"}),
                          ("record path null", {"role": "pretrain", "model": "gpt", "regime": "natural",
                                                "path": None}),
                          ("fine-tune record without a checkpoint", {"role": "finetune", "regime": "natural",
                                                                     "path": "x", "parent": "y"}),
                          ("record is a list", [1, 2])):
        c.append(Case(f"edited: report of a study.json whose {label}", lambda r: ["report", r / "study"],
                      needs=NEEDS, setup=old_layout(record), codes=(2,)))
    c.append(Case("edited: a damaged lens.parquet", lambda r: ["analyze", r / "run", "--steps", "last", "--probes",
                                                               "iid", "--analyses", "lens"], needs=NEEDS,
                  setup=lambda r: (r / "run" / "analysis" / "lens.parquet").write_text("garbage"), codes=(2,),
                  expect="unreadable"))
    c += [Case("edited: study.json job output outside the study, then --fresh", lambda r: [
        "study", "--preset", "smoke", "--fresh", "--set", "data.nonsense=1", "--out", r / "s"], needs=NEEDS,
        setup=manifest({"train x": {"out": "../notes", "status": "done"}}), codes=(2,))]
    return c


# ------------------------------------------------------------------------------------------------ mismatched data
def mismatch_cases() -> list[Case]:
    run, run2 = "run", "run2"
    needs = (*NEEDS, "ds2", "run2", "ds_t")
    return [
        Case("across: compare runs of two graphs", lambda r: ["compare", f"{r / run}@last", f"{r / run2}@last"],
             needs=needs, codes=(2,), expect="different graphs"),
        Case("across: compare two graphs into a file", lambda r: ["compare", f"{r / run}@last", f"{r / run2}@last",
                                                                  "--out", r / "c.json"], needs=needs, codes=(2,)),
        Case("across: analyze with another graph's dataset", lambda r: ["analyze", r / run, "--data", r / "ds2"],
             needs=needs, codes=(2,), expect="fingerprint"),
        Case("across: analyze with a transfer dataset", lambda r: ["analyze", r / run, "--data", r / "ds_t"],
             needs=needs, codes=(2,)),
        Case("across: resume on another graph's dataset",
             lambda r: ["train", "--data", r / "ds2", "--preset", "smoke", "--quiet", "--set", TINY, "--out", r / run,
                        "--resume"], needs=needs, codes=(2,)),
        Case("across: fine-tune with another graph's transfer set",
             lambda r: ["transfer", "--from", f"{r / run2}@last", "--data", r / "ds_t", "--quiet", "--set", TINY,
                        "--out", r / "ft"], needs=needs, codes=(2,)),
        Case("across: fine-tune with a pre-training dataset as the transfer set",
             lambda r: ["transfer", "--from", f"{r / run}@last", "--data", r / "ds", "--quiet", "--set", TINY,
                        "--out", r / "ft"], needs=needs, codes=(2,)),
        Case("across: transfer set derived from a transfer set", lambda r: ["data", "transfer", r / "ds_t", "--out",
                                                                           r / "tt"], needs=needs, codes=(2,)),
        Case("across: compare a run with itself at two steps", lambda r: ["compare", f"{r / run}@0",
                                                                          f"{r / run}@last"], needs=needs, codes=(0,)),
        Case("across: export tl of a step that does not exist", lambda r: ["export", "tl", f"{r / run}@999",
                                                                           "--out", r / "tl"], needs=needs,
             codes=(2,)),
    ]


# ------------------------------------------------------------------------------------------------ unusable values
def value_cases() -> list[Case]:
    def train(setting: str, model: str = "gpt") -> Callable[[Path], list]:
        return lambda r: ["train", "--data", r / "ds", "--model", model, "--preset", "smoke", "--quiet", "--set",
                          f"{TINY},{setting}", "--out", r / "v"]
    gpt_bad = ["model.n_layers=100000", "model.d_model=65537", "model.d_model=3,model.n_heads=2",
               "model.n_heads=0", "model.n_ctx=2", "model.init_std=-0.1", "model.dropout=1.5",
               "model.n_unique_blocks=9", "threads=100000", "threads=0", "max_epochs=1e30",
               "max_steps=1000000001", "seed=9223372036854775808", "batch_size=0", "eval_every=0",
               "lr=inf", "ema_decay=1.0", "stop_when=bogus>=1", "warmup_steps=-1",
               "model.d_model=16384,model.n_layers=100"]
    trm_bad = ["model.H_cycles=1000", "model.L_cycles=100000", "model.d_model=0", "model.seq_len=3",
               "model.puzzle_emb_len=0", "model.num_puzzle_ids=10000000"]
    ok = ["batch_size=1000000000", "eval_batch_size=1000000000", "ckpt_every=1", "warmup_steps=100000",
          "eval_every=1000000", "lr=100"]
    data_bad = ["num_entities=10000000", "num_relations=1000000", "out_degree=0", "phi=1e9", "ood_ratio=2",
                "seed=-1"]
    c = [Case(f"values: gpt {s}", train(s), needs=NEEDS, codes=(2,)) for s in gpt_bad]
    c += [Case(f"values: trm {s}", train(s, "trm"), needs=NEEDS, codes=(2,)) for s in trm_bad]
    c += [Case(f"values: accepted {s}", train(s), needs=NEEDS, codes=(0,)) for s in ok]
    c += [Case(f"values: data {s}", lambda r, s=s: ["data", "build", "--preset", "smoke", "--set", s, "--out",
                                                      r / "d"], needs=NEEDS, codes=(2,)) for s in data_bad]
    return c


# ------------------------------------------------------------------------------------------------ the Python API
def api_cases() -> list[Case]:
    import grokscope as gs

    run = lambda r: r / "run"  # noqa
    return [
        Case("api: open_run of nothing", call=lambda r: gs.open_run(r / "nowhere"), needs=NEEDS),
        Case("api: open_run of a file", call=lambda r: gs.open_run(r / "file.txt"), needs=NEEDS),
        Case("api: open_run of a dataset", call=lambda r: gs.open_run(r / "ds"), needs=NEEDS),
        Case("api: open_run of a user's folder", call=lambda r: gs.open_run(r / "notes"), needs=NEEDS),
        Case("api: open_study of a run", call=lambda r: gs.open_study(run(r)), needs=NEEDS),
        Case("api: open_study of nothing", call=lambda r: gs.open_study(r / "nowhere"), needs=NEEDS),
        Case("api: a run's model at step 'abc'", call=lambda r: gs.open_run(run(r)).model("abc"), needs=NEEDS),
        Case("api: a run's model at step -1", call=lambda r: gs.open_run(run(r)).model(-1), needs=NEEDS),
        Case("api: a run's model at a missing step", call=lambda r: gs.open_run(run(r)).model(10 ** 9),
             needs=NEEDS),
        Case("api: a run's model at step None", call=lambda r: gs.open_run(run(r)).model(None), needs=NEEDS),
        Case("api: compare of two strings that are no runs", call=lambda r: gs.compare("x@1", "y@2"), needs=NEEDS),
        Case("api: analyze of a user's folder", call=lambda r: gs.analyze(r / "notes"), needs=NEEDS),
        Case("api: analyze with analyses 'everything'", call=lambda r: gs.analyze(run(r), analyses="everything"),
             needs=NEEDS),
        Case("api: build a dataset with a set that is no key=value",
             call=lambda r: gs.build_data(r / "d", preset="smoke", sets=["justtext"]), needs=NEEDS),
        Case("api: build a dataset of an unknown preset", call=lambda r: gs.build_data(r / "d", preset="galaxy"),
             needs=NEEDS),
        Case("api: train with data=None", call=lambda r: gs.train(None, r / "t"), needs=NEEDS),
        Case("api: train with a set of the wrong type", call=lambda r: gs.train(r / "ds", r / "t", sets=[3]),
             needs=NEEDS),
        Case("api: train with an unknown model", call=lambda r: gs.train(r / "ds", r / "t", model="lstm"),
             needs=NEEDS),
        Case("api: transfer from a run@step that is text", call=lambda r: gs.transfer(f"{run(r)}@soon", r / "ft"),
             needs=NEEDS),
        Case("api: report of a run folder", call=lambda r: gs.report(run(r)), needs=NEEDS),
        Case("api: a run's checkpoints of a user's folder", call=lambda r: gs.open_run(r / "notes").checkpoints,
             needs=NEEDS),
        Case("api: open_run(None)", call=lambda r: gs.open_run(None), needs=NEEDS),
        Case("api: report(None)", call=lambda r: gs.report(None), needs=NEEDS),
        Case("api: compare(None, run)", call=lambda r: gs.compare(None, f"{run(r)}@last"), needs=NEEDS),
        Case("api: compare with out=123", call=lambda r: gs.compare(f"{run(r)}@0", f"{run(r)}@last", out=123),
             needs=NEEDS),
        Case("api: compare with probes=None", call=lambda r: gs.compare(f"{run(r)}@0", f"{run(r)}@last",
                                                                        probes=None), needs=NEEDS),
        Case("api: export_tl with out=5", call=lambda r: gs.export_tl(f"{run(r)}@last", out=5), needs=NEEDS),
        Case("api: analyze with steps=None", call=lambda r: gs.analyze(run(r), steps=None), needs=NEEDS),
        Case("api: transfer(None, out)", call=lambda r: gs.transfer(None, r / "ft"), needs=NEEDS),
        Case("api: build_data(None)", call=lambda r: gs.build_data(None, preset="smoke"), needs=NEEDS),
        Case("api: build_data with regime=1", call=lambda r: gs.build_data(r / "d", preset="smoke", regime=1),
             needs=NEEDS),
        Case("api: export_tl into a user's file", call=lambda r: gs.export_tl(f"{run(r)}@last", r / "file.txt"),
             needs=NEEDS),
    ]


CASES = path_cases() + blocked_cases() + edited_cases() + mismatch_cases() + value_cases() + api_cases()


def test_corpus_is_large_and_named_uniquely():
    names = [c.name for c in CASES] + [c for c in CONCURRENT]
    assert len(names) >= 150 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_use_loses_nothing(case, pristine, tmp_path, monkeypatch):
    root = tmp_path / "case"
    root.mkdir()
    for item in case.needs:
        src = pristine / item
        (shutil.copytree(src, root / item, symlinks=True) if src.is_dir() else shutil.copy(src, root / item))
    for cfg in root.glob("*/config.yaml"):  # runs point at this case's datasets
        cfg.write_text(cfg.read_text().replace(str(pristine), str(root)))
    if case.setup is not None:
        case.setup(root)
    before = _hashes(root)
    if case.cwd is not None:
        monkeypatch.chdir(root / case.cwd)
    if case.call is not None:
        try:
            case.call(root)
        except GrokscopeError as exc:
            assert all("\n" not in p for p in exc.problems), exc.problems
        except BaseException as exc:  # noqa: BLE001 - anything else is a traceback for an API user
            pytest.fail(f"{type(exc).__name__}: {exc}")
    else:
        code, out, err = _run([str(a) for a in case.args(root)])
        assert "Traceback" not in out + err, err
        assert code in case.codes, (code, out[-400:], err)
        if code == 2:  # one line per problem (a hand-edited file may hold several)
            lines = [line for line in err.splitlines() if line.strip()]
            usage = "Usage:" in out + err
            assert usage or (lines and all(line.startswith("error: ") for line in lines)), err
            assert case.expect in err, (case.expect, err)
    after = _hashes(root)
    changed = [k for k in before if after.get(k) != before[k] and not any(fnmatch(k, p) for p in case.may_change)]
    assert not changed, changed
    for user_file in USER_FILES:
        if user_file in before:
            assert after.get(user_file) == before[user_file], user_file


# ------------------------------------------------------------------------------------------------ two processes
def _cli(args: list, unbuffered: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    # Ctrl-C as a terminal delivers it: a test runner started in the background inherits SIGINT ignored, and Python
    # then never turns it into KeyboardInterrupt, so the child gets the default disposition back.
    return subprocess.Popen([sys.executable, "-m", "grokscope.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


CONCURRENT = {
    "together: data build": lambda r: writers(r)["data build"](r / "same"),
    "together: data family": lambda r: ["data", "family", "--preset", "smoke", "--no-transfer", "--out",
                                        r / "same"],
    "together: data export": lambda r: writers(r)["data export"](r / "same"),
    "together: data transfer": lambda r: writers(r)["data transfer"](r / "same"),
    "together: train": lambda r: writers(r)["train"](r / "same"),
    "together: transfer": lambda r: writers(r)["transfer"](r / "same"),
    "together: analyze": lambda r: ["analyze", r / "run", "--steps", "last", "--probes", "iid", "--analyses",
                                    "lens,regime"],
    "together: compare": lambda r: writers(r)["compare"](r / "same.json"),
    "together: export tl": lambda r: writers(r)["export tl"](r / "same"),
    "together: report": lambda r: ["report", r / "study"],
    "together: data import": lambda r: ["data", "import", r / "orig", "--out", r / "same"],
}


@pytest.mark.parametrize("name", list(CONCURRENT))
def test_two_processes_started_together(name, pristine, tmp_path):
    """Both exit 0 or 2 without a traceback (the second one names the lock, or finds the first one's finished
    output), at least one succeeds, and what they leave is whole."""
    root = tmp_path / "case"
    root.mkdir()
    for item in (*NEEDS, "orig"):
        src = pristine / item
        (shutil.copytree(src, root / item) if src.is_dir() else shutil.copy(src, root / item))
    (root / "run" / "config.yaml").write_text((root / "run" / "config.yaml").read_text().replace(str(pristine),
                                                                                                str(root)))
    if name == "together: report":
        _fake_study(None)(root)
    before = {k: v for k, v in _hashes(root).items() if not k.startswith(("run/analysis", "study/"))}
    args = CONCURRENT[name](root)
    procs = [_cli(args), _cli(args)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert "Traceback" not in out + err, err
        assert code in (0, 2), (code, err)
        if code == 2:
            assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert any(code == 0 for code, _, _ in results) or name == "together: report", results
    after = _hashes(root)
    assert all(after.get(k) == v for k, v in before.items())
    leftovers = [p for p in root.rglob(".grokscope-tmp-*")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("verb", [["study", "--preset", "smoke"],
                                  ["sweep", "--preset", "smoke", "--grid", "train.lr=1e-3,2e-3"]])
def test_two_studies_started_together_then_ctrl_c(verb, tmp_path):
    """Two studies (or sweeps) into one folder: the second names the lock and exits 2 at once, touching nothing;
    Ctrl-C then stops the first with one line and exit 130, and the folder is left to resume."""
    out = tmp_path / "s"
    args = [*verb, "--out", out]
    procs = [_cli(args, unbuffered=True), _cli(args, unbuffered=True)]
    loser = _first_to_exit(procs, timeout=90)
    winner = next(p for p in procs if p is not loser)
    _, err = loser.communicate()
    assert loser.returncode == 2 and "in use" in err and "Traceback" not in err, err
    line = winner.stdout.readline()  # the first job has started: the study is past its imports
    assert line.startswith("["), line
    winner.send_signal(signal.SIGINT)
    _, err = winner.communicate(timeout=90)
    # Exit 130, as a shell reports it: the process exits 130, or (when the interpreter re-raises the signal on its
    # way out) ends by SIGINT, which a shell also shows as 130.
    assert winner.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted; re-run the same command to continue", err


def _first_to_exit(procs: list[subprocess.Popen], timeout: float) -> subprocess.Popen:
    wait_until(lambda: any(proc.poll() is not None for proc in procs), timeout, "one of the processes to exit")
    return next(proc for proc in procs if proc.poll() is not None)
