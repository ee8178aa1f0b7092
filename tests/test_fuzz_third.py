"""The third hostile corpus: values checked before any work starts (study files, sweep grids, the Python API) and
hostile files (duplicated keys, deep nesting, pipes and folders where a file should be). Every case asserts the exit
code (or the error), the message and that nothing was written."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from importlib import resources

import pytest
import yaml

import grokscope as gs
from grokscope.errors import GrokscopeError

SMOKE = yaml.safe_load((resources.files("grokscope") / "presets" / "smoke.yaml").read_text())


def _transfer(raw: dict) -> list[dict]:
    t = raw.get("transfer")
    return t if isinstance(t, list) else [t]


def edited(change):
    raw = copy.deepcopy(SMOKE)
    change(raw)
    return raw


STUDY_FILES = {  # name -> (the study, a substring of the one-line error)
    "repeated seeds": (edited(lambda r: r.update(seeds=[0, 0])), "study.seeds: 0 given twice"),
    "seed as a word": (edited(lambda r: r.update(seeds=["zero"])), "study.seeds"),
    "seed as a flag": (edited(lambda r: r.update(seeds=[True])), "study.seeds"),
    "repeated regimes": (edited(lambda r: r.update(regimes=["natural", "natural"])),
                         "study.regimes: 'natural' given twice"),
    "a model with no regimes": (edited(lambda r: r["models"][0].update(regimes=[])), "regimes is empty"),
    "a model's regime twice": (edited(lambda r: r["models"][0].update(regimes=["natural", "natural"])),
                               "regimes: 'natural' given twice"),
    "a parent regime twice": (edited(lambda r: [t.update({"from": ["natural", "natural"]}) for t in _transfer(r)]),
                              "from: 'natural' given twice"),
    "a checkpoint twice": (edited(lambda r: [t.update(checkpoints=["last", "last"]) for t in _transfer(r)]),
                           "checkpoints: 'last' given twice"),
    "a checkpoint with a space": (edited(lambda r: [t.update(checkpoints=["last "]) for t in _transfer(r)]),
                                  "'last ': not a checkpoint"),
    "no checkpoints": (edited(lambda r: [t.update(checkpoints=[]) for t in _transfer(r)]), "checkpoints: empty"),
    "an analysed step twice": (edited(lambda r: r.update(analysis={"steps": "last,last"})),
                               "study.analysis.steps: 'last' given twice"),
    "a probe set twice": (edited(lambda r: r.update(analysis={"probes": "iid,iid"})),
                          "study.analysis.probes: 'iid' given twice"),
    "no workers": (edited(lambda r: r.update(workers=0)), "study.workers"),
    "workers as a flag": (edited(lambda r: r.update(workers=True)), "study.workers"),
    "a bad draw": (edited(lambda r: [t.update(draw="biased") for t in _transfer(r)]), "draw 'biased'"),
}


@pytest.mark.parametrize("case", sorted(STUDY_FILES))
def test_a_bad_study_file_is_refused_before_any_job(cli, tmp_path, case):
    raw, message = STUDY_FILES[case]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    for extra in (["--plan"], []):
        code, _, err = cli("study", "--preset", tmp_path / "s.yaml", "--out", tmp_path / "out", *extra)
        assert code == 2 and message in err and "Traceback" not in err, (case, err)
        assert not (tmp_path / "out").exists()


def test_a_key_written_twice_in_a_study_file_is_refused_by_line(cli, tmp_path):
    text = (resources.files("grokscope") / "presets" / "smoke.yaml").read_text()
    (tmp_path / "s.yaml").write_text(text + "\nname: other\n")
    code, _, err = cli("study", "--preset", tmp_path / "s.yaml", "--out", tmp_path / "out")
    assert code == 2 and "key 'name' written twice" in err and "line" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["pipe", "folder", "deep"])
def test_a_study_file_that_is_not_a_plain_readable_file_is_refused(cli, tmp_path, what):
    path = tmp_path / "s.yaml"
    if what == "pipe":
        os.mkfifo(path)  # reading it would block forever
    elif what == "folder":
        path.mkdir()
    else:
        path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = cli("study", "--preset", path, "--out", tmp_path / "out", "--plan")
    message = "nested too deeply" if what == "deep" else "not a regular file"
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("grid, message", [
    (["train.lr=1e-3,2e-3", "train.lr=3e-3"], "--grid train.lr given twice"),
    (["train.lr=1e-3,,2e-3"], "has an empty value"),
    (["train.lr=1e-3,1e-3"], "'1e-3' given twice"),
    (["train.lr=1e-3,"], "has an empty value"),
])
def test_a_bad_sweep_grid_is_refused_before_sweep_json(cli, tmp_path, grid, message):
    args = [a for g in grid for a in ("--grid", g)]
    code, _, err = cli("sweep", "--preset", "smoke", *args, "--out", tmp_path / "sw")
    assert code == 2 and message in err and "Traceback" not in err and not (tmp_path / "sw").exists()


# ------------------------------------------------------------------------------------------------ the Python API
@pytest.mark.parametrize("call, message", [
    (lambda d: gs.build_data(d / "x", preset="smoke", force="no"), "force must be True or False"),
    (lambda d: gs.build_data(d / "x", preset="smoke", transfer="false"), "transfer must be True or False"),
    (lambda d: gs.build_data(d / "x", preset="smoke", seed=1.5), "seed must be a whole number"),
    (lambda d: gs.build_data(d / "x", preset="smoke", seed=True), "seed must be a whole number"),
    (lambda d: gs.build_data(d / "x", preset=None), "preset is required"),
    (lambda d: gs.build_data(42, preset="smoke"), "must be a path"),
    (lambda d: gs.train(d / "data", d / "x", model="gpt", preset="smoke", resume="no"),
     "resume must be True or False"),
    (lambda d: gs.train(d / "data", d / "x", model="gpt", preset="smoke", quiet="yes"),
     "quiet must be True or False"),
    (lambda d: gs.transfer(str(d / "run"), d / "x", control="no"), "control must be True or False"),
    (lambda d: gs.transfer(str(d / "run"), d / "x", new_fact_multiple=math.inf), "must be a finite number"),
    (lambda d: gs.transfer(str(d / "run"), d / "x", flat_evals=2.5), "flat_evals must be a whole number"),
    (lambda d: gs.study(preset="smoke", out=d / "x", fresh="no"), "fresh must be True or False"),
])
def test_the_api_refuses_what_the_cli_refuses(tmp_path, call, message):
    with pytest.raises(GrokscopeError, match=message.replace("(", r"\(")):
        call(tmp_path)
    assert not (tmp_path / "x").exists()


def test_the_api_expands_a_home_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    gs.build_data("~/data", preset="smoke")
    assert (tmp_path / "data" / "dataset.json").exists() and not os.path.exists("~")


@pytest.mark.parametrize("step", [20.5, math.inf, True, None])
def test_a_run_loads_no_model_from_a_step_that_is_not_a_step(trained, step):
    root, _ = trained
    run = gs.open_run(root / "gpt")
    with pytest.raises(GrokscopeError, match="step must be a step number"):
        run.model(step)


# ------------------------------------------------------------------------------------------------ hostile files
def test_a_run_whose_config_is_a_pipe_is_refused_not_waited_on(cli, trained, tmp_path):
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "gpt", run)
    (run / "config.yaml").unlink()
    os.mkfifo(run / "config.yaml")
    code, _, err = cli("analyze", run, "--analyses", "regime")
    assert code == 2 and "not a regular file" in err and "Traceback" not in err


def test_a_summary_nested_thousands_deep_is_one_line(trained, tmp_path):
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "gpt", run)
    (run / "summary.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(GrokscopeError, match="nested too deeply"):
        _ = gs.open_run(run).summary


def test_a_probe_set_named_twice_is_measured_once(cli, trained, tmp_path):
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "gpt", run)
    code, _, err = cli("analyze", run, "--analyses", "lens", "--steps", "last", "--probes", "iid,iid")
    assert code == 0, err
    import pandas as pd

    lens = pd.read_parquet(run / "analysis" / "lens.parquet")
    assert not lens.duplicated(["step", "probe_type", "stage", "position", "metric"]).any()
    assert json.loads((run / "analysis" / "summary.json").read_text())["probe_types"] == ["test_inferred_iid"]


# ------------------------------------------------------------------------------------------------ odd targets
@pytest.mark.parametrize("target", [".", "..", "./"])
def test_out_naming_the_current_folder_is_refused_and_an_input_dot_is_read(cli, tmp_path, monkeypatch, target):
    """A command writes its folder whole and swaps it in: `--out .` would pull the shell's folder from under it."""
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "here")
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", target)
    assert code == 2 and "name the folder to write" in err and "Traceback" not in err
    assert os.listdir(tmp_path / "here") == ["notes.txt"] and os.getcwd() == str(tmp_path / "here")
    assert cli("data", "build", "--preset", "smoke", "--out", tmp_path / "here" / "d")[0] == 0
    monkeypatch.chdir(tmp_path / "here" / "d")
    code, out, err = cli("data", "show", ".")
    assert code == 0, err


def test_a_symlink_loop_as_a_target_is_one_line(cli, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, _, err = cli("data", "build", "--preset", "smoke", "--out", tmp_path / "a")
    assert code == 2 and "cannot be resolved" in err and "Traceback" not in err


def test_a_stacked_file_that_is_damaged_is_one_line(cli, tmp_path):
    """(Once a quoted command with an unbalanced quote; `stack` now reads run specs and job files.)"""
    (tmp_path / "spec.json").write_text('{"data": "d", "out": "x')
    code, _, err = cli("stack", tmp_path / "spec.json")
    assert code == 2 and "spec.json" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ full disks
def _limited(args: list[str], limit_bytes: int):
    """The CLI in a process that may write no file larger than ``limit_bytes`` (a full disk, as the OS reports it)."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    exe = str(Path(sys.executable).parent / "grokscope")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, preexec_fn=limit, timeout=300)


def test_weights_that_cannot_be_written_end_training_in_one_line_and_the_run_resumes(smoke_data, tmp_path):
    args = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out", tmp_path / "r",
            "--set", "max_steps=30", "--set", "eval_every=10", "--set", "threads=1"]
    done = _limited(args, 200 * 1024)  # step 0's weights fit (with the trm's too); the next ones do not
    assert done.returncode == 2 and "cannot write the weights" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 or "error:" in done.stderr.strip().splitlines()[-1]
    from grokscope import runs

    kept = runs.list_checkpoints(tmp_path / "r")
    assert kept and not list((tmp_path / "r" / "checkpoints").glob(".tmp-*"))
    runs.load_checkpoint(tmp_path / "r", kept[-1])  # what was saved before is whole
    again = _limited([*args, "--resume"], 2 ** 40)
    assert again.returncode == 0, again.stderr[-2000:]
    assert runs.list_checkpoints(tmp_path / "r")[-1] == 30


def test_an_export_that_cannot_be_written_is_one_line_and_keeps_the_last_export(trained, tmp_path):
    root, _ = trained
    run = tmp_path / "gpt"
    shutil.copytree(root / "gpt", run)
    done = _limited(["export", "tl", f"{run}@last", "--out", tmp_path / "tl", "--no-check"], 1024)
    assert done.returncode == 2 and "cannot write the weights" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "tl").exists()


# ------------------------------------------------------------------------------------------------ hand-edited rows
def test_damaged_metrics_rows_are_counted_and_warned_about_wherever_they_are_read(trained, tmp_path, capsys):
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "gpt", run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:15]  # cut short
    lines.insert(2, '{"step": ' + "[" * 50_000 + "]" * 50_000 + "}")  # nested thousands deep
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    metrics = gs.open_run(run).metrics
    err = capsys.readouterr().err
    assert "2 damaged row(s) skipped (line 2, 3)" in err and f"the other {len(lines) - 2} kept" in err
    assert len(metrics) == len(lines) - 2


def test_checkpoint_and_dataset_folders_get_the_mode_mkdir_would_give(trained, smoke_data):
    root, _ = trained
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o777 & ~umask
    from pathlib import Path

    checkpoints = list((root / "gpt" / "checkpoints").iterdir())
    assert checkpoints and all(p.stat().st_mode & 0o777 == expected for p in checkpoints)
    assert Path(smoke_data).stat().st_mode & 0o777 == expected


# ------------------------------------------------------------------------------------------ reports that look complete
def test_a_report_of_an_unfinished_study_says_so_and_lists_each_missing_job():
    from grokscope.reporting.build import _meta, _skipped_rows

    manifest = {"jobs": {"train a": {"status": "done"}, "analyze a": {"status": "running"},
                         "transfer ft": {"status": "interrupted"}, "compare a b": {},
                         "transfer ft_sat": {"status": "skipped", "note": "the parent never reached saturation"}}}
    rows = {r["job"]: r["why"] for r in _skipped_rows(manifest)}
    assert set(rows) == {"analyze a", "transfer ft", "compare a b", "transfer ft_sat"}
    assert rows["analyze a"].startswith("interrupted while running") and rows["compare a b"].startswith("not run")
    meta = " ".join(_meta({"tier": "smoke", "name": "smoke", "models": []}, {}, manifest))
    assert "This study has not finished: 3 job(s)" in meta
    finished = {"jobs": {"train a": {"status": "done"}, "transfer ft_sat": {"status": "skipped", "note": "x"}}}
    meta = " ".join(_meta({"tier": "smoke", "name": "smoke", "models": []}, {}, finished))
    assert "has not finished" not in meta and "1 job(s) not run" in meta


def test_plan_of_a_model_too_large_for_this_machine_does_not_build_it(cli, tmp_path):
    """`train` refuses such a model up front; `--plan` used to build it to time it (12.9 billion parameters)."""
    code, out, err = cli("sweep", "--preset", "smoke", "--model", "gpt", "--grid", "model.d_model=65536",
                         "--grid", "model.n_layers=4", "--plan", "--out", tmp_path / "sw")
    assert code == 0, err  # 206 billion parameters: 3 TiB of training state
    assert "not timed: its training state needs about" in out and "1 job(s) not timed" in out
    assert not (tmp_path / "sw").exists()


# ------------------------------------------------------------------------------------------------ groups of folders
def test_a_family_rebuild_that_fails_on_a_later_regime_leaves_the_old_family_whole(cli, tmp_path, monkeypatch):
    import grokscope.data.build as build

    assert cli("data", "family", "--preset", "smoke", "--out", tmp_path / "fam", "--no-transfer")[0] == 0
    before = {p.name: json.loads((p / "dataset.json").read_text())["fingerprint"] for p in (tmp_path / "fam").iterdir()
              if (p / "dataset.json").exists()}
    real, calls = build.build_dataset, {"n": 0}

    def failing(cfg):
        calls["n"] += 1
        if calls["n"] == 3:  # the third regime of the new family cannot be built
            raise GrokscopeError("simulated failure on the third regime")
        return real(cfg)

    monkeypatch.setattr(build, "build_dataset", failing)
    code, _, err = cli("data", "family", "--preset", "smoke", "--out", tmp_path / "fam", "--no-transfer", "--force",
                       "--seed", "7")
    assert code == 2 and "simulated failure" in err
    after = {p.name: json.loads((p / "dataset.json").read_text())["fingerprint"] for p in (tmp_path / "fam").iterdir()
             if (p / "dataset.json").exists()}
    assert after == before  # no regime on the new seed


def _run_tree(run):
    """A run folder as the tool writes it, with a user's file in two of its subfolders."""
    own = ["config.yaml", "metrics.jsonl", "summary.json", "checkpoints/step_00000010/model.safetensors",
           "checkpoints/step_00000010/state.safetensors", "checkpoints/step_00000010/meta.json",
           "tensorboard/events.out.tfevents.1.host.2.0", "analysis/lens.parquet", "analysis/summary.json",
           "analysis/queries/schema.json", "analysis/queries/step_00000010.test_inferred_ood.parquet",
           "checkpoints/.grokscope-tmp-step_00000020/model.safetensors"]
    users = ["analysis/my_notes.md", "checkpoints/step_00000010/why_this_step.txt"]
    for name in own + users:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    return own, users


@pytest.mark.parametrize("how", ["a resume that starts over (runs.clear_run)", "study --fresh (artifacts.remove_own)"])
def test_a_users_file_inside_a_runs_subfolders_survives_clearing_the_run(tmp_path, capsys, how):
    """What the tool owns is decided file by file at every depth: clearing a run removes the files it wrote (and
    the folders they leave empty), keeps a user's files in its subfolders, and names each one kept."""
    from grokscope import artifacts, runs

    run = tmp_path / "study" / "runs" / "gpt_natural"
    own, users = _run_tree(run)
    if how.startswith("a resume"):
        runs.clear_run(run, keep=("data",))
    else:
        artifacts.remove_own(tmp_path / "study", [run])
    assert all((run / name).read_text() == "x" for name in users)
    assert not any((run / name).exists() for name in own)
    assert not (run / "tensorboard").exists() and not (run / "analysis" / "queries").exists()
    err = capsys.readouterr().err
    assert all(f"kept {run / name}" in err for name in users)


def _one_line_refusal(done) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error:")


@pytest.mark.parametrize("command", ["data build", "data export", "analyze", "compare --out"])
def test_tables_and_datasets_that_cannot_be_written_are_one_line_and_keep_what_was_there(command, trained,
                                                                                          smoke_data, tmp_path):
    """A full disk (here a file-size limit) while writing a dataset, an export, analysis tables or a comparison: one
    line, exit 2, and what was there before is as it was (an earlier output, or nothing)."""
    root, _ = trained
    run = tmp_path / "gpt"
    shutil.copytree(root / "gpt", run)
    if command == "data build":
        target = tmp_path / "d"
        done = _limited(["data", "build", "--preset", "smoke", "--out", target], 4096)
        _one_line_refusal(done)
        assert not target.exists()
    elif command == "data export":
        target = tmp_path / "original"
        done = _limited(["data", "export", smoke_data, "--out", target], 4096)
        _one_line_refusal(done)
        assert not target.exists()
    elif command == "analyze":
        assert gs.analyze(run, steps="last", probes="iid", analyses="lens")  # an earlier, complete analysis
        before = {p.name: p.read_bytes() for p in (run / "analysis").iterdir() if p.is_file()}
        done = _limited(["analyze", run, "--steps", "last", "--probes", "ood", "--analyses", "lens,trace"], 2048)
        _one_line_refusal(done)
        after = {p.name: p.read_bytes() for p in (run / "analysis").iterdir() if p.is_file()}
        assert after == before  # the earlier tables and summary, untouched
    else:
        target = tmp_path / "cmp.json"
        target.write_text(json.dumps({"kind": "grokscope compare", "a": "x", "b": "y", "verdict": "earlier"}))
        done = _limited(["compare", run, root / "trm", "--out", target], 64)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert json.loads(target.read_text())["verdict"] == "earlier"


# ------------------------------------------------------------------------------------------------ every API argument
def _api_argument_cases():
    """(verb, parameter, a value of the wrong type) for every simply typed parameter of every verb of ``gs``: a flag
    given as a word, a count as a fraction, a number as text, a text or a path as a number."""
    import inspect
    import types
    import typing
    from pathlib import Path

    wrong = {bool: "no", int: 2.5, float: "1e-3", str: 3, Path: 3, list: "train.lr=1e-3"}
    cases = []
    for verb in gs.__all__:
        func = getattr(gs, verb)
        if not inspect.isfunction(func) or verb in ("open_run", "open_study", "lens", "trace", "bridge_use",
                                                     "to_transformer_lens"):
            continue
        for name, hint in typing.get_type_hints(inspect.unwrap(func)).items():
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            options = [o for o in (typing.get_args(hint) if union else (hint,)) if o is not type(None)]
            if name == "return" or len(options) != 1:
                continue
            kind = list if typing.get_origin(options[0]) is list else options[0]
            if kind in wrong:
                cases.append(pytest.param(verb, name, wrong[kind], id=f"{verb}-{name}"))
    return cases


def _valid_arguments(verb: str, root) -> dict:
    """Values that pass the checks for the parameters a verb requires (the case then spoils one)."""
    import inspect
    import typing
    from pathlib import Path

    func = inspect.unwrap(getattr(gs, verb))
    hints = typing.get_type_hints(func)
    out = {}
    for name, param in inspect.signature(func).parameters.items():
        if param.default is inspect.Parameter.empty:
            hint = hints.get(name)
            out[name] = root / name if Path in (typing.get_args(hint) or (hint,)) else \
                ["train.lr=1e-3"] if name == "grid" else [{"verb": "train", "kwargs": {}}] if name == "calls" else \
                f"{root / name}@last" if name in ("parent", "ref") else "x"
    return out


@pytest.mark.parametrize("verb, name, value", _api_argument_cases())
def test_every_api_argument_of_the_wrong_type_is_refused_by_name_before_any_work(verb, name, value, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(GrokscopeError) as caught:
        getattr(gs, verb)(**{**_valid_arguments(verb, tmp_path), name: value})
    assert f"{verb}(): {name}" in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(tmp_path.rglob("*")) == before  # refused before anything was written
