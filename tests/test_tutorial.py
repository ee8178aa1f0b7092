"""The tutorial notebook (docs/tutorial.ipynb) runs top to bottom, and the README's "From Python" example runs
(both marked ``ci``: CI runs them after ``make test``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ci
def test_tutorial_notebook_runs(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # committed clean
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(str(o) for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "not testable" in outputs and "True" in outputs  # the findings table; TL agrees with our hook points


@pytest.mark.ci
def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## From Python.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(example.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})


def test_api_verbs_are_functions_after_the_subpackages_are_imported():
    # The verbs once shared their names with subpackages: importing one made `gs.train(...)` fail with "'module'
    # object is not callable". The subpackages now have their own names, and a dotted import works.
    import grokscope as gs
    import grokscope.training.loop as loop
    from grokscope import api
    from grokscope.reporting import build  # noqa: F401
    from grokscope.studies import plan  # noqa: F401
    import grokscope.sweeps  # noqa: F401
    import grokscope.finetuning  # noqa: F401

    for name in ("train", "study", "report", "transfer", "sweep", "open_run", "lens"):
        assert getattr(gs, name) is getattr(api, name), name
    assert callable(gs.train) and callable(loop.train)
    assert type(gs) is type(loop)  # a plain module: no class swap
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = gs.nonexistent


# The CLI verb -> the function of ``import grokscope as gs`` that does its work.
CLI_VERBS = {"train": "train", "stack": "train", "transfer": "transfer", "analyze": "analyze", "compare": "compare",
             "study": "study", "sweep": "sweep", "report": "report", "data build": "build_data",
             "data family": "build_family", "data transfer": "derive_transfer", "data show": "load_data",
             "data export": "export_data", "data import": "import_data", "export tl": "export_tl"}


def test_every_cli_verb_is_a_function_of_the_python_api():
    import typer

    import grokscope as gs
    from grokscope.cli import app

    def verbs(command, prefix=""):
        for name, sub in getattr(command, "commands", {}).items():
            yield from verbs(sub, f"{prefix}{name} ") if getattr(sub, "commands", None) else [prefix + name]
    assert sorted(verbs(typer.main.get_command(app))) == sorted(CLI_VERBS)
    assert all(callable(getattr(gs, name)) and name in gs.__all__ for name in CLI_VERBS.values())
