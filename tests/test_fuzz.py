"""A fuzzing suite over every CLI verb: a table of bad or odd inputs (usage mistakes, bad values, damaged files,
occupied or read-only write targets). Each case must exit with code 2 and print either exactly one ``error:`` line
(for bad input) or typer's usage message (for usage mistakes), never a traceback, and must leave every file that
existed before unchanged (hashes before and after)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pytest

from grokscope.cli import main

RANDOM = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))
PRISTINE_SETS = "max_steps=20,eval_every=10,eval_bridge_use=16"  # the pristine run's settings


@dataclass
class Case:
    name: str
    args: Callable[[Path], list]  # the command line, given the case folder
    needs: tuple[str, ...] = ()  # pristine items copied into the case folder first
    damage: Callable[[Path], None] | None = None  # what to break before running
    usage: bool = False  # a usage mistake: typer's usage message instead of an error line
    expect: str = ""  # a substring of the message
    allowed_new: tuple[str, ...] = field(default_factory=lambda: (".lock",))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A dataset, its transfer set, a trained smoke gpt run and a minimal study folder, built once."""
    root = tmp_path_factory.mktemp("pristine")
    for args in (["data", "build", "--preset", "smoke", "--out", root / "ds"],
                 ["data", "build", "--preset", "smoke", "--transfer", "--out", root / "ds_t"],
                 ["train", "--data", root / "ds", "--preset", "smoke", "--quiet", "--out", root / "run",
                  "--set", PRISTINE_SETS],
                 ["data", "export", root / "ds", "--out", root / "orig"]):
        assert _run([str(a) for a in args])[0] == 0, args
    (root / "study").mkdir()
    (root / "study" / "study.json").write_text(json.dumps({"schema": 1, "jobs": {}, "spec": {}}))
    (root / "notes").mkdir()
    (root / "notes" / "notes.txt").write_text("a user's own file")
    (root / "file.txt").write_text("a plain file")
    return root


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # an escaped exception is what a user sees as a traceback
            code, err = -1, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
    return code, out.getvalue(), err.getvalue()


def _hashes(root: Path) -> dict[str, str]:
    """Every file's hash; a folder lock (``.lock``, metadata of whoever last held it) is not data."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------------------------ damage helpers
def write(rel: str, content) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
    return damage


def edit_json(rel: str, fn) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))
    return damage


def remove(rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return damage


def npz_edit(fn) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / "ds" / "arrays.npz"
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        fn(arrays)
        np.savez(path, **arrays)
    return damage


def _del(d, key):
    d.pop(key)
    return d


def _set(d, key, value):
    d[key] = value
    return d


def last_ckpt(root: Path) -> Path:
    return sorted((root / "run" / "checkpoints").iterdir())[-1]


# ------------------------------------------------------------------------------------------------ the corpus
def ds(r):
    return str(r / "ds")


def usage_cases() -> list[Case]:
    c = []
    for name, argv in [("no arguments", []), ("unknown command", ["frobnicate"]), ("data without verb", ["data"]),
                       ("export without verb", ["export"]), ("unknown data verb", ["data", "explode"]),
                       ("unknown option", ["train", "--foo"]), ("option without value", ["train", "--data"]),
                       ("missing --out", ["data", "build"]), ("missing --data", ["train", "--out", "x"]),
                       ("non-integer seed", ["data", "build", "--seed", "abc", "--out", "x"]),
                       ("negative seed", ["data", "build", "--seed", "-3", "--out", "x"]),
                       ("missing run argument", ["analyze"]), ("missing compare argument", ["compare", "a"]),
                       ("missing --from", ["transfer", "--out", "x"]), ("missing --grid", ["sweep"]),
                       ("extra argument", ["report", "a", "b"]), ("bad flag value", ["export", "tl", "r", "--chek"]),
                       ("help flag typo", ["--hepl"])]:
        c.append(Case(f"usage: {name}", lambda r, a=argv: a, usage=True))
    return c


def data_cases() -> list[Case]:
    c = []
    build = ["data", "build", "--preset", "smoke"]
    for key, value, expect in [("num_entities", "1000000000", "over the limit"),
                               ("num_relations", "1000000000", "over the limit"),
                               ("phi", "nan", "finite"), ("phi", "inf", "finite"), ("phi", "-1", "phi"),
                               ("phi", "99", "infeasible"), ("seed", "-1", "seed"), ("ood_ratio", "1.5", "ood_ratio"),
                               ("out_degree", "0", "out_degree"), ("out_degree", "30", "exceeds"),
                               ("num_entities", "abc", "integer"), ("num_entities", "2.5", "integer"),
                               ("colour", "red", "colour"), ("data.colour", "red", "colour"),
                               ("train.lr", "1", "train"), ("probe_cap", "-5", "probe_cap"),
                               ("aug_seed", "-2", "aug_seed"), ("h1k", "-1", "h1k"), ("id_test_prob", "nan", "finite")]:
        c.append(Case(f"data build --set {key}={value}", lambda r, k=key, v=value: [*build, "--set", f"{k}={v}",
                                                                                    "--out", r / "x"], expect=expect))
    c += [
        Case("data build bad --set item", lambda r: [*build, "--set", "phi", "--out", r / "x"], expect="key=value"),
        Case("data build unknown preset", lambda r: ["data", "build", "--preset", "huge", "--out", r / "x"],
             expect="unknown preset"),
        Case("data build unknown regime", lambda r: [*build, "--regime", "sideways", "--out", r / "x"],
             expect="unknown regime"),
        Case("data build bad --aug key", lambda r: [*build, "--aug", "h3ratio=1", "--out", r / "x"], expect="h3ratio"),
        Case("data build --aug nan", lambda r: [*build, "--aug", "h1ratio=nan", "--out", r / "x"], expect="finite"),
        Case("data build transfer infeasible", lambda r: [*build, "--transfer", "--set", "num_relations=5",
                                                          "--out", r / "x"], expect="unused"),
        Case("data build --out is a file", lambda r: [*build, "--out", r / "file.txt"], expect="is a file"),
        Case("data build --out below a file", lambda r: [*build, "--out", r / "file.txt" / "x"], expect="is a file"),
        Case("data build --out existing dataset", lambda r: [*build, "--out", r / "ds"], needs=("ds",),
             expect="--force"),
        Case("data build --force on a user's folder", lambda r: [*build, "--out", r / "notes", "--force"],
             expect="will not replace"),
        Case("data build --force on a run folder", lambda r: [*build, "--out", r / "run", "--force"], needs=("run",),
             expect="will not replace"),
        Case("data build read-only place", lambda r: [*build, "--out", "/proc/grokscope-fuzz"], expect="writable"),
        Case("data family unknown key", lambda r: ["data", "family", "--preset", "smoke", "--set", "x=1", "--out",
                                                   r / "f"], expect="'x'"),
        Case("data family infeasible transfer", lambda r: ["data", "family", "--preset", "micro", "--transfer",
                                                           "--out", r / "f"], expect="num_relations"),
        Case("data family on a user's folder", lambda r: ["data", "family", "--preset", "smoke", "--out",
                                                          r / "notes"], expect="notes"),
        Case("data export unknown format", lambda r: ["data", "export", ds(r), "--format", "foo", "--out", r / "e"],
             needs=("ds",), expect="format"),
        Case("data export over earlier export", lambda r: ["data", "export", ds(r), "--out", r / "orig"],
             needs=("ds", "orig"), expect="--force"),
        Case("data export of a transfer set", lambda r: ["data", "export", r / "ds_t", "--out", r / "e"],
             needs=("ds_t",), expect="transfer"),
        Case("data transfer of a transfer set", lambda r: ["data", "transfer", r / "ds_t", "--out", r / "e"],
             needs=("ds_t",), expect="already a transfer"),
        Case("data transfer bad key", lambda r: ["data", "transfer", ds(r), "--set", "bogus=1", "--out", r / "e"],
             needs=("ds",), expect="bogus"),
        Case("data import missing folder", lambda r: ["data", "import", r / "nope", "--out", r / "i"],
             expect="no such folder"),
        Case("data import empty folder", lambda r: ["data", "import", r / "notes", "--out", r / "i"],
             expect="lacks"),
        Case("data import vocab not a list", lambda r: ["data", "import", r / "orig", "--out", r / "i"],
             needs=("orig",), damage=write("orig/vocab.json", '{"a": 1}'), expect="vocab.json"),
        Case("data import vocab random bytes", lambda r: ["data", "import", r / "orig", "--out", r / "i"],
             needs=("orig",), damage=write("orig/vocab.json", RANDOM), expect="orig"),
        Case("data import train truncated", lambda r: ["data", "import", r / "orig", "--out", r / "i"],
             needs=("orig",), damage=truncate("orig/train.json"), expect="orig"),
        Case("data import train holds a dict", lambda r: ["data", "import", r / "orig", "--out", r / "i"],
             needs=("orig",), damage=write("orig/train.json", '{"x": 1}'), expect="train.json"),
        Case("data import items not dicts", lambda r: ["data", "import", r / "orig", "--out", r / "i"],
             needs=("orig",), damage=write("orig/test.json", '[1, 2]'), expect="test.json"),
        Case("data import unknown token", lambda r: ["data", "import", r / "orig", "--out", r / "i"],
             needs=("orig",), damage=write("orig/valid.json", json.dumps(
                 [{"input_text": "<e_0><r_999>", "target_text": "<e_0><r_999><e_1></a>"}])), expect="valid.json"),
        Case("data show missing folder", lambda r: ["data", "show", r / "nope"], expect="no such dataset"),
        Case("data show a user's folder", lambda r: ["data", "show", r / "notes"], expect="not a grokscope dataset"),
    ]
    return c


def damaged_dataset_cases() -> list[Case]:
    """Every reader of a dataset folder against every way its three files can be damaged."""
    damages = {
        "dataset.json holds a list": write("ds/dataset.json", "[1, 2]"),
        "dataset.json empty": write("ds/dataset.json", ""),
        "dataset.json truncated": truncate("ds/dataset.json"),
        "dataset.json random bytes": write("ds/dataset.json", RANDOM),
        "dataset.json without fingerprint": edit_json("ds/dataset.json", lambda d: _del(d, "fingerprint")),
        "dataset.json wrong schema": edit_json("ds/dataset.json", lambda d: _set(d, "schema_version", 99)),
        "vocab.json holds a list": write("ds/vocab.json", "[]"),
        "vocab.json missing a key": edit_json("ds/vocab.json", lambda d: _del(d, "num_entities")),
        "vocab.json missing a token": edit_json("ds/vocab.json", lambda d: _set(d, "tokens", d["tokens"][:-1])),
        "vocab.json random bytes": write("ds/vocab.json", RANDOM),
        "vocab.json missing": remove("ds/vocab.json"),
        "arrays.npz truncated": truncate("ds/arrays.npz"),
        "arrays.npz empty": write("ds/arrays.npz", b""),
        "arrays.npz random bytes": write("ds/arrays.npz", RANDOM),
        "arrays.npz missing an array": npz_edit(lambda a: a.pop("train_inferred")),
        "arrays.npz id out of range": npz_edit(lambda a: a["train_inferred"].__setitem__((0, 4), 10_000)),
        "arrays.npz edited (fingerprint)": npz_edit(lambda a: a["train_inferred"].__setitem__((0, 4), 1)),
    }
    readers = {
        "data show": lambda r: ["data", "show", ds(r)],
        "data export": lambda r: ["data", "export", ds(r), "--out", r / "e"],
        "data transfer": lambda r: ["data", "transfer", ds(r), "--out", r / "e"],
        "train": lambda r: ["train", "--data", ds(r), "--preset", "smoke", "--out", r / "new_run"],
    }
    return [Case(f"{verb}: {what}", args, needs=("ds",), damage=damage, expect="ds")
            for what, damage in damages.items() for verb, args in readers.items()]


def run_cases() -> list[Case]:
    def run(r):
        return str(r / "run")
    train = ["train", "--preset", "smoke", "--quiet"]
    c = []
    for key, value, expect in [("lr", "nan", "finite"), ("lr", "-1", "lr"), ("lr", "inf", "finite"),
                               ("precision", "fp8", "precision"), ("loss", "hinge", "loss"),
                               ("loss_positions", "middle", "loss_positions"), ("threads", "-1", "threads"),
                               ("stop_when", "accuracy>=0.9", "stop_when"), ("stop_when", "nonsense", "stop_when"),
                               ("batch_size", "0", "batch_size"), ("beta1", "1.5", "beta1"),
                               ("model.d_model", "-4", "d_model"), ("model.n_heads", "3", "n_heads"),
                               ("model.d_vocab", "10", "d_vocab"), ("model.colour", "1", "colour"),
                               ("seed", "-1", "seed"), ("milestone_thresholds", "a,b", "milestone"),
                               ("max_steps", "1.5", "integer"), ("compile", "maybe", "boolean")]:
        c.append(Case(f"train --set {key}={value}", lambda r, k=key, v=value: [
            *train, "--data", ds(r), "--set", f"{k}={v}", "--out", r / "new_run"], needs=("ds",), expect=expect))
    c += [
        Case("train unknown family", lambda r: [*train, "--data", ds(r), "--model", "rnn", "--out", r / "n"],
             needs=("ds",), expect="unknown model family"),
        Case("train unknown preset", lambda r: [*train, "--data", ds(r), "--preset", "huge", "--out", r / "n"],
             needs=("ds",), expect="unknown train preset"),
        Case("train --device mps without one", lambda r: [*train, "--data", ds(r), "--device", "mps", "--out",
                                                          r / "n"], needs=("ds",), expect="mps"),
        Case("train --device tpu", lambda r: [*train, "--data", ds(r), "--device", "tpu", "--out", r / "n"],
             needs=("ds",), expect="unknown device"),
        Case("train missing data folder", lambda r: [*train, "--data", r / "nope", "--out", r / "n"],
             expect="no such dataset"),
        Case("train over an existing run", lambda r: [*train, "--data", ds(r), "--out", run(r)], needs=("ds", "run"),
             expect="--resume"),
        Case("train into a user's folder", lambda r: [*train, "--data", ds(r), "--out", r / "notes"], needs=("ds",),
             expect="not a run"),
        Case("train --out is a file", lambda r: [*train, "--data", ds(r), "--out", r / "file.txt"], needs=("ds",),
             expect="file"),
        Case("train --resume with nothing", lambda r: [*train, "--data", ds(r), "--resume", "--out", r / "n"],
             needs=("ds",), expect="nothing to resume"),
        Case("resume with another family", lambda r: [*train, "--data", ds(r), "--model", "trm", "--resume",
                                                      "--out", run(r)], needs=("ds", "run"), expect="model.family"),
        Case("resume with another width", lambda r: [*train, "--data", ds(r), "--set", "model.d_model=64",
                                                     "--resume", "--out", run(r)], needs=("ds", "run"),
             expect="model.d_model"),
        Case("resume with another width, forced", lambda r: [
            *train, "--data", ds(r), "--set", "model.d_model=64,max_steps=30", "--resume", "--force-config",
            "--out", run(r)], needs=("ds", "run"), expect="cannot be loaded"),
        Case("resume with config.yaml a list", lambda r: [*train, "--data", ds(r), "--resume", "--out", run(r)],
             needs=("ds", "run"), damage=write("run/config.yaml", "- 1\n- 2\n"), expect="config.yaml"),
        Case("resume with config.yaml random", lambda r: [*train, "--data", ds(r), "--resume", "--out", run(r)],
             needs=("ds", "run"), damage=write("run/config.yaml", RANDOM), expect="config.yaml"),
        Case("resume with config.yaml bad YAML", lambda r: [*train, "--data", ds(r), "--resume", "--out", run(r)],
             needs=("ds", "run"), damage=write("run/config.yaml", "data: {path: [\n"), expect="YAML"),
        Case("resume with config.yaml without model", lambda r: [*train, "--data", ds(r), "--resume", "--out",
                                                                 run(r)],
             needs=("ds", "run"), damage=write("run/config.yaml", "data: {path: x, fingerprint: y}\ntrain: {}\n"),
             expect="model"),
        Case("resume with every checkpoint damaged", lambda r: [*train, "--data", ds(r), "--resume", "--out",
                                                                run(r), "--set", PRISTINE_SETS],
             needs=("ds", "run"), damage=lambda r: [truncate(str(p.relative_to(r) / "state.safetensors"))(r)
                                                    for p in (r / "run" / "checkpoints").iterdir()],
             expect="no readable checkpoint"),
        Case("resume with another dataset", lambda r: [*train, "--data", r / "ds_t", "--resume", "--out", run(r)],
             needs=("ds_t", "run"), expect="trained on dataset"),
    ]
    for what, damage in {"model.safetensors truncated": lambda r: truncate(
            str(last_ckpt(r).relative_to(r) / "model.safetensors"))(r),
            "meta.json random": lambda r: write(str(last_ckpt(r).relative_to(r) / "meta.json"), RANDOM)(r),
            "config.yaml random": write("run/config.yaml", RANDOM),
            "config.yaml unknown model key": lambda r: (r / "run" / "config.yaml").write_text(
                (r / "run" / "config.yaml").read_text().replace("d_model:", "d_modle:")),
            "dataset moved": remove("ds")}.items():
        expect_what = "ds" if what == "dataset moved" else "run"
        for verb, args, expect in (
                ("analyze", lambda r: ["analyze", run(r), "--steps", "last"], expect_what),
                ("export tl", lambda r: ["export", "tl", run(r), "--out", r / "tl"], expect_what),
                ("transfer", lambda r: ["transfer", "--from", run(r), "--out", r / "ft"], expect_what)):
            if what == "dataset moved" and verb == "export tl":
                continue
            c.append(Case(f"{verb}: {what}", args, needs=("ds", "run"), damage=damage, expect=expect))
    c += [
        Case("analyze missing run", lambda r: ["analyze", r / "nope"], expect="no such run"),
        Case("analyze a user's folder", lambda r: ["analyze", r / "notes"], expect="not a grokscope run"),
        Case("analyze empty selection", lambda r: ["analyze", run(r), "--analyses", ""], needs=("ds", "run"),
             expect="choose one or more"),
        Case("analyze unknown analysis", lambda r: ["analyze", run(r), "--analyses", "magic"], needs=("ds", "run"),
             expect="magic"),
        Case("analyze unknown probe", lambda r: ["analyze", run(r), "--probes", "nonsense"], needs=("ds", "run"),
             expect="nonsense"),
        Case("analyze missing step", lambda r: ["analyze", run(r), "--steps", "7"], needs=("ds", "run"),
             expect="no checkpoint at step 7"),
        Case("analyze unreached grokked", lambda r: ["analyze", run(r), "--steps", "grokked"], needs=("ds", "run"),
             expect="selects no checkpoint"),
        Case("analyze bad step word", lambda r: ["analyze", run(r), "--steps", "first"], needs=("ds", "run"),
             expect="first"),
        Case("analyze with the wrong dataset", lambda r: ["analyze", run(r), "--data", r / "ds_t"],
             needs=("ds", "ds_t", "run"), expect="not the one"),
        Case("export tl of a step that is not there", lambda r: ["export", "tl", f"{run(r)}@7"], needs=("ds", "run"),
             expect="no checkpoint at step 7"),
        Case("export tl over an earlier export", lambda r: ["export", "tl", run(r), "--out", r / "notes"],
             needs=("ds", "run"), expect="--force"),
        Case("compare missing run", lambda r: ["compare", f"{run(r)}@0", f"{r / 'nope'}@0"], needs=("ds", "run"),
             expect="nope"),
        Case("compare output below a file", lambda r: ["compare", f"{run(r)}@0", f"{run(r)}@20", "--out",
                                                       r / "file.txt" / "c.json"], needs=("ds", "run"),
             expect="is a file"),
        Case("transfer unknown preset", lambda r: ["transfer", "--from", run(r), "--preset", "huge", "--out",
                                                   r / "ft"], needs=("ds", "run"), expect="unknown transfer preset"),
        Case("transfer --set lr=nan", lambda r: ["transfer", "--from", run(r), "--set", "lr=nan", "--out", r / "ft"],
             needs=("ds", "run"), expect="finite"),
        Case("transfer --set model key", lambda r: ["transfer", "--from", run(r), "--set", "model.d_model=8",
                                                    "--out", r / "ft"], needs=("ds", "run"), expect="d_model"),
        Case("transfer with a pre-training set", lambda r: ["transfer", "--from", run(r), "--data", ds(r), "--out",
                                                            r / "ft"], needs=("ds", "run"),
             expect="not a transfer dataset"),
        Case("transfer from a bad step", lambda r: ["transfer", "--from", f"{run(r)}@x", "--out", r / "ft"],
             needs=("ds", "run"), expect="not a number"),
        Case("transfer from a step never reached", lambda r: ["transfer", "--from", f"{run(r)}@sat", "--out",
                                                              r / "ft"], needs=("ds", "run"),
             expect="never reached"),
        Case("transfer into a user's folder", lambda r: ["transfer", "--from", run(r), "--out", r / "notes"],
             needs=("ds", "run"), expect="not a run"),
        Case("transfer --resume with nothing", lambda r: ["transfer", "--from", run(r), "--resume", "--out",
                                                          r / "ft"], needs=("ds", "run"), expect="nothing to resume"),
    ]
    return c


def smoke_text() -> str:
    from importlib import resources

    return resources.files("grokscope").joinpath("presets", "smoke.yaml").read_text()


def study_cases() -> list[Case]:
    def study(text_fn, expect):
        def args(r):
            (r / "spec.yaml").write_text(text_fn(smoke_text()))
            return ["study", "--preset", r / "spec.yaml", "--out", r / "s"]
        return args, expect

    edits = {
        "YAML syntax error": (lambda t: t + "\nmodels: [\n", "YAML"),
        "YAML holds a list": (lambda t: "- 1\n- 2\n", "holds a list"),
        "unknown top-level key": (lambda t: t + "\ncolour: red\n", "colour"),
        "nested typo": (lambda t: t.replace("set: {max_steps: 60, eval_every: 20}", "sett: {max_steps: 60}"), "sett"),
        "unknown family": (lambda t: t.replace("family: gpt", "family: rnn"), "rnn"),
        "unknown train preset": (lambda t: t.replace("preset: smoke\n    set: {max_steps: 60",
                                                     "preset: huge\n    set: {max_steps: 60"), "huge"),
        "unknown regime": (lambda t: t.replace("regimes: [natural]     #", "regimes: [sideways]     #"), "sideways"),
        "checkpoint typo": (lambda t: t.replace("[sat, last]", "[sat, lats]"), "lats"),
        "model set typo": (lambda t: t.replace("max_steps: 60,", "max_stepz: 60,"), "max_stepz"),
        "model set nan": (lambda t: t.replace("max_steps: 60,", "lr: .nan,"), "finite"),
        "transfer set typo": (lambda t: "set: {max_step: 20}".join(t.rsplit("set: {max_steps: 20, eval_every: 10}",
                                                                            1)), "max_step"),
        "transfer from an untrained regime": (lambda t: t.replace("from: [natural, both_full, second_full]",
                                                                  "from: [first_full]"), "first_full"),
        "transfer of an unknown model": (lambda t: t.replace("model: gpt ", "model: bert "), "bert"),
        "duplicate model names": (lambda t: t.replace("name: trm", "name: gpt"), "unique"),
        "unknown probe": (lambda t: t.replace("probes: ood,iid,train", "probes: ood,magic"), "magic"),
        "bad data key": (lambda t: t.replace("set: {}", "set: {phy: 3}", 1), "phy"),
        "negative seed list": (lambda t: t + "\nseeds: [-1]\n", "seeds"),
    }
    c = [Case(f"study: {name}", study(fn, expect)[0], expect=expect, allowed_new=(".lock", "spec.yaml"))
         for name, (fn, expect) in edits.items()]
    c += [
        Case("study unknown preset", lambda r: ["study", "--preset", "galactic", "--out", r / "s"],
             expect="unknown study preset"),
        Case("study missing YAML file", lambda r: ["study", "--preset", r / "nope.yaml", "--out", r / "s"],
             expect="no such study file"),
        Case("study --set typo", lambda r: ["study", "--preset", "smoke", "--set", "transfer.nonexistent=1",
                                            "--out", r / "s"], expect="nonexistent"),
        Case("study --set unknown section", lambda r: ["study", "--preset", "smoke", "--set", "lr=1", "--out",
                                                       r / "s"], expect="lr"),
        Case("study --set nan", lambda r: ["study", "--preset", "smoke", "--set", "train.lr=nan", "--out", r / "s"],
             expect="finite"),
        Case("study into a user's folder", lambda r: ["study", "--preset", "smoke", "--out", r / "notes"],
             expect="not a study folder"),
        Case("study --fresh on a user's folder", lambda r: ["study", "--preset", "smoke", "--fresh", "--out",
                                                            r / "notes"], expect="not a study folder"),
        Case("study --out is a file", lambda r: ["study", "--preset", "smoke", "--out", r / "file.txt"],
             expect="file"),
        Case("study unknown executor", lambda r: ["study", "--preset", "smoke", "--executor", "mpi", "--out",
                                                  r / "s2"], expect="unknown executor"),
        Case("study damaged manifest", lambda r: ["study", "--preset", "smoke", "--out", r / "study"],
             needs=("study",), damage=write("study/study.json", RANDOM), expect="study.json"),
        Case("report of a user's folder", lambda r: ["report", r / "notes"], expect="not a study folder"),
        Case("report damaged manifest", lambda r: ["report", r / "study"], needs=("study",),
             damage=write("study/study.json", "[1]"), expect="study.json"),
        Case("report without a spec", lambda r: ["report", r / "study"], needs=("study",), expect="spec"),
        Case("sweep bad grid item", lambda r: ["sweep", "--preset", "smoke", "--grid", "lr=1,2", "--out", r / "w"],
             expect="data.KEY"),
        Case("sweep unknown key", lambda r: ["sweep", "--preset", "smoke", "--grid", "train.lrr=1", "--out", r / "w"],
             expect="lrr"),
        Case("sweep nan value", lambda r: ["sweep", "--preset", "smoke", "--grid", "train.lr=1e-3,nan", "--out",
                                           r / "w"], expect="finite"),
        Case("sweep unknown model", lambda r: ["sweep", "--preset", "smoke", "--model", "bert", "--grid",
                                               "train.lr=1", "--out", r / "w"], expect="bert"),
        Case("sweep into a user's folder", lambda r: ["sweep", "--preset", "smoke", "--grid", "train.lr=1e-3",
                                                      "--out", r / "notes"], expect="not a sweep folder"),
    ]
    return c


CASES = usage_cases() + data_cases() + damaged_dataset_cases() + run_cases() + study_cases()


def test_corpus_is_large_and_named_uniquely():
    names = [c.name for c in CASES]
    assert len(names) >= 150 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(case, pristine, tmp_path):
    root = tmp_path / "case"
    root.mkdir()
    for item in ("notes", "file.txt", *case.needs):
        src = pristine / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    if case.needs and "ds" in case.needs and "run" in case.needs:  # the run must point at this case's dataset
        cfg = root / "run" / "config.yaml"
        cfg.write_text(cfg.read_text().replace(str(pristine / "ds"), str(root / "ds")))
    if case.damage is not None:
        case.damage(root)
    before = _hashes(root)
    code, out, err = _run([str(a) for a in case.args(root)])
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out[-500:], err)
    if case.usage:
        assert "Usage:" in out + err or "Error" in err, err
    else:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert case.expect in lines[0], (case.expect, lines[0])
    after = _hashes(root)
    changed = [k for k in before if after.get(k) != before[k]]
    new = [k for k in after if k not in before and Path(k).name not in case.allowed_new]
    assert not changed and not new, (changed, new)
    assert os.listdir(root)
