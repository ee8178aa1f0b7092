"""The package installs from a wheel into a fresh virtual environment, without the source tree, plans the smoke study
and runs a study of every stage from there (marked ``ci``: CI runs it after ``make test``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import one_of_each_job

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.ci
def test_wheel_installs_and_runs_the_smoke_study(tmp_path):
    import torch

    _run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ROOT], timeout=600)
    wheel = next((tmp_path / "dist").glob("grokscope-*.whl"))
    from grokscope.version import __version__
    assert wheel.name.startswith(f"grokscope-{__version__}-")  # the package's one version (src/grokscope/version.py)
    names = zipfile.ZipFile(wheel).namelist()
    assert {"grokscope/presets/smoke.yaml", "grokscope/presets/micro.yaml"} <= set(names)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # the torch already installed here, pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
    version = torch.__version__.split("+")[0]
    (tmp_path / "pin.txt").write_text(f"torch=={version}\n")
    _run([*pip, "-c", tmp_path / "pin.txt", wheel], timeout=900)  # the wheel and its dependencies, torch pinned
    away = tmp_path / "elsewhere"  # no source tree on the path
    away.mkdir()
    # The packaged smoke preset is read and planned; a study cut to one job of each kind runs every stage (CI time).
    plan = _run([venv / "bin" / "grokscope", "study", "--preset", "smoke", "--plan"], cwd=away)
    assert "transfer ft_gpt_control" in plan.stdout
    (away / "one_of_each.yaml").write_text(yaml.safe_dump(one_of_each_job()))
    proc = _run([venv / "bin" / "grokscope", "study", "--preset", "one_of_each.yaml", "--out", away / "study"],
                cwd=away, timeout=900)
    assert (away / "study" / "report.html").exists() and "study done" in proc.stdout
    where = _run([venv / "bin" / "python", "-c", "import grokscope, sys; print(grokscope.__file__)"], cwd=away)
    assert str(venv) in where.stdout
