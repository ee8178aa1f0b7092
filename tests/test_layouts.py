"""Study and sweep folders written by earlier grokscope versions continue under today's code (the stored layouts in
tests/data/layouts, one per layout this repository has written): copied to a new folder, nothing re-runs and no
finished job counts as changed; a changed setting still does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from grokscope import api
from grokscope.errors import GrokscopeError

LAYOUTS = Path(__file__).parent / "data" / "layouts"
STUDY = str(LAYOUTS / "study.yaml")


def _copy(kind: str, layout: str, tmp_path: Path) -> Path:
    out = tmp_path / "moved" / layout
    shutil.copytree(LAYOUTS / kind / layout, out)
    return out


def _changed_preset(tmp_path: Path) -> Path:
    """The same study with the gpt's learning rate changed: a setting of finished jobs."""
    raw = yaml.safe_load(Path(STUDY).read_text())
    raw["models"][0]["set"]["lr"] = 0.5
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("layout", sorted(p.name for p in (LAYOUTS / "study").iterdir()))
def test_an_older_study_continues_with_nothing_run_again(layout, tmp_path, monkeypatch):
    from grokscope.reporting import build

    # The stored folders hold no run data: the report is not what this checks.
    monkeypatch.setattr(build, "build_report", lambda root, *a: Path(root) / "report.html")
    out, ran = _copy("study", layout, tmp_path), []
    api.study(preset=STUDY, out=out, runner=lambda call: ran.append(call) or 0, log=lambda _msg: None)
    assert ran == []
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["root"] == str(out.resolve()) and len(manifest["jobs"]) == 11
    assert {e["status"] for e in manifest["jobs"].values()} == {"done"}
    assert all(e["record"]["path"].startswith(str(out.resolve())) for e in manifest["jobs"].values())
    with pytest.raises(GrokscopeError, match="finished jobs would change.*lr"):
        api.study(preset=_changed_preset(tmp_path), out=out, runner=lambda call: ran.append(call) or 0,
                  log=lambda _msg: None)
    assert ran == []


@pytest.mark.parametrize("layout", sorted(p.name for p in (LAYOUTS / "sweep").iterdir()))
def test_an_older_sweep_continues_with_nothing_run_again(layout, tmp_path, monkeypatch):
    from grokscope import sweeps

    monkeypatch.setattr(sweeps, "write_table", lambda out, *a: Path(out) / "sweep.csv")
    out, ran = _copy("sweep", layout, tmp_path), []
    grid = ["train.lr=1e-3,2e-3"]
    api.sweep(grid=grid, preset=STUDY, out=out, runner=lambda call: ran.append(call) or 0, log=lambda _msg: None)
    assert ran == []
    state = json.loads((out / "sweep.json").read_text())
    assert state["root"] == str(out.resolve()) and all(o.startswith(str(out.resolve())) for o in state["outputs"])
    # A changed recipe (as an upgrade may change it) of finished points is refused where the sweep recorded its points'
    # settings; one recorded before that (command lines only) is compared by its spec alone.
    from grokscope.training import config as train_config

    recipe = {**train_config.TRAIN_PRESETS[("gpt", "smoke")], "weight_decay": 0.3}
    monkeypatch.setitem(train_config.TRAIN_PRESETS, ("gpt", "smoke"), recipe)
    if "resolved" in json.loads((LAYOUTS / "sweep" / layout / "sweep.json").read_text()):
        with pytest.raises(GrokscopeError, match="finished points would change.*weight_decay"):
            api.sweep(grid=grid, preset=STUDY, out=out, runner=lambda call: ran.append(call) or 0,
                      log=lambda _msg: None)
    assert ran == []


def test_an_unfinished_sweep_point_whose_settings_changed_starts_over(tmp_path, monkeypatch):
    """The study's stale rule, in a sweep: an interrupted point whose resolved settings changed (here its family's
    training recipe, as a grokscope upgrade may change it) starts over; it once met "config changed" and failed the
    sweep. A finished point with changed settings is still refused."""
    from grokscope.training import config as train_config

    out, grid = tmp_path / "sw", ["train.lr=1e-3,2e-3"]
    api.sweep(grid=grid, preset=STUDY, out=out, log=lambda _msg: None)
    points = sorted((out / "runs").iterdir())
    recipe = {**train_config.TRAIN_PRESETS[("gpt", "smoke")], "weight_decay": 0.3}
    monkeypatch.setitem(train_config.TRAIN_PRESETS, ("gpt", "smoke"), recipe)
    with pytest.raises(GrokscopeError, match="finished points would change.*weight_decay"):
        api.sweep(grid=grid, preset=STUDY, out=out, log=lambda _msg: None)
    for run in points:  # each point as a kill after its last checkpoint leaves it
        (run / "summary.json").unlink()
    api.sweep(grid=grid, preset=STUDY, out=out, log=lambda _msg: None)
    for run in points:
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["weight_decay"] == 0.3
        assert json.loads((run / "summary.json").read_text())["final_step"] == 20
        rows = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(row)["step"] for row in rows] == [0, 10, 20]  # started over: one run from step 0


def test_an_interrupted_sweep_continues_from_another_spelling_of_its_folder(tmp_path, monkeypatch):
    """A sweep written with a relative --out, interrupted, moved and continued by an absolute path: its points continue
    from their checkpoints (their recorded paths differ only in spelling; read as a change, they were cleared)."""
    monkeypatch.chdir(tmp_path)
    grid = ["train.lr=1e-3,2e-3"]
    api.sweep(grid=grid, preset=STUDY, out="sw", log=lambda _msg: None)
    before = {}
    for run in sorted((tmp_path / "sw" / "runs").iterdir()):
        (run / "summary.json").unlink()  # as a kill after its last checkpoint leaves it
        before[run.name] = (run / "metrics.jsonl").read_text()
    shutil.move(tmp_path / "sw", tmp_path / "moved")
    api.sweep(grid=grid, preset=STUDY, out=tmp_path / "moved", log=lambda _msg: None)
    for name, metrics in before.items():
        run = tmp_path / "moved" / "runs" / name
        assert (run / "summary.json").exists()
        assert (run / "metrics.jsonl").read_text().startswith(metrics)  # continued: its rows kept, not rewritten
