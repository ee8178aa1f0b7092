"""Shared fixtures: tiny datasets built once per session, a CLI runner that returns (code, stdout, stderr), and
tiny trained models (a smoke gpt and a smoke trm) shared by the analysis, transfer and interop tests; the
``--device`` and ``--quick`` options of the device checks (tests/test_gpu.py)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from grokscope.cli import main
from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS, REGIMES


def pytest_addoption(parser):
    """Options of the device checks (tests/test_gpu.py): ``pytest -m gpu tests/test_gpu.py --device cpu --quick``
    runs every CUDA check on the CPU at small sizes, so its code path is exercised on a machine without a GPU."""
    group = parser.getgroup("grokscope device checks")
    group.addoption("--device", default="cuda", choices=("cuda", "cpu"),
                    help="the device the gpu-marked tests run on (default cuda: skipped without CUDA)")
    group.addoption("--quick", action="store_true", default=False,
                    help="small step counts for the gpu-marked tests (a dry run of their code paths)")


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs the suite in one process per core) each process trains on one thread:
    two torch processes of two threads each on two cores slow each other several times over."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("GROKSCOPE_THREADS"):
        os.environ["GROKSCOPE_THREADS"] = "1"
        torch.set_num_threads(1)


# The parallel suite (pytest-xdist, --dist loadfile) hands out whole files in collection order: the longest go first,
# so that none starts last and holds the run's tail (longest first onto the first free worker; measured on 2 cores).
LONGEST_FIRST = ("test_study_workers.py", "test_study.py", "test_gpu.py", "test_wheel.py", "test_fuzz_paths.py",
                 "test_stack.py", "test_train.py", "test_tutorial.py", "test_bench_gpu.py", "test_fuzz_third.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


def small_study(**changes) -> dict:
    """The smoke study preset as a mapping, with ``changes`` to its top-level keys (a test's study cut to what it
    checks)."""
    import yaml
    from importlib import resources

    return {**yaml.safe_load((resources.files("grokscope") / "presets" / "smoke.yaml").read_text()), **changes}


def one_of_each_job(**changes) -> dict:
    """The smoke study cut to about one job of each kind: two regimes (so a comparison runs), the gpt and the trm,
    one fine-tune (the natural gpt's last checkpoint)."""
    raw = small_study(regimes=["natural", "both_full"], **changes)
    raw["transfer"] = {**raw["transfer"], "from": ["natural"], "checkpoints": ["last"], "control": False}
    return raw


def fake_train_job(out: Path, group: str | None = None):
    """A typed training job for ``out`` that no test trains (a spec of no settings), for the runner's bookkeeping."""
    from grokscope.studies.jobs import TrainJob
    from grokscope.training.runspec import RunSpec

    return TrainJob(model="gpt", spec=RunSpec(data="data", out=str(out), family="gpt", train={}, model={}),
                    preset="smoke", info={"stack_group": group} if group else {})


def fake_transfer_job(out: Path, parent: Path | None = None):
    """A typed fine-tuning job for ``out`` (from ``parent@last``), for the runner's bookkeeping."""
    from grokscope.studies.jobs import TransferJob

    return TransferJob(model="gpt", family="gpt", regime="natural", seed=0, parent=parent or out.parent / "parent",
                       checkpoint="last", out=out)


def run_cli(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture(scope="session")
def smoke_cfg():
    return DATA_PRESETS["smoke"]


@pytest.fixture(scope="session")
def smoke_dataset(smoke_cfg):
    return build_dataset(smoke_cfg)


@pytest.fixture(scope="session")
def smoke_both_full(smoke_cfg):
    return build_dataset(dataclasses.replace(smoke_cfg, **dataclasses.asdict(REGIMES["both_full"])))


@pytest.fixture
def cli(capsys):
    """Run the grokscope CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str):
        code = run_cli(*args)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """The smoke dataset as a folder."""
    out = tmp_path_factory.mktemp("data") / "smoke"
    assert run_cli("data", "build", "--preset", "smoke", "--out", out) == 0
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, smoke_data):
    """A smoke gpt (300 steps) and a smoke trm (40 steps) trained on the smoke dataset: (root, dataset)."""
    from grokscope.data.store import load

    root = tmp_path_factory.mktemp("trained")
    for family, steps in (("gpt", 300), ("trm", 40)):
        assert run_cli("train", "--data", smoke_data, "--model", family, "--preset", "smoke", "--quiet",
                       "--set", f"max_steps={steps},eval_every=100", "--out", root / family) == 0
    return root, load(smoke_data)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01) -> None:
    """Wait for ``condition`` (a file, a checkpoint, a process state) up to ``timeout`` seconds; fail naming ``what``
    when it never holds, so a test never goes on with a state it did not reach."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


@pytest.fixture(scope="session")
def atomic_only_gpt(tmp_path_factory, smoke_dataset):
    """(run folder, its last model, its step-0 model) of a smoke gpt trained on atomic facts only (the smoke graph
    with no training composition): it knows every first hop and never learned to compose. Controls that must fail
    the bridge measures (bridge use, bridge decodable) use it; trained once per session."""
    from grokscope import runs
    from grokscope.data.encoding import encode

    root = tmp_path_factory.mktemp("atomic_only")
    assert run_cli("data", "build", "--preset", "smoke", "--set", "phi=0", "--out", root / "data") == 0
    assert run_cli("train", "--data", root / "data", "--model", "gpt", "--preset", "smoke", "--quiet", "--out",
                   root / "run", "--set", "max_steps=400,eval_every=200,lr=1e-2,eval_bridge_use=0") == 0
    model, _ = runs.load_model(root / "run")
    enc = encode(smoke_dataset, smoke_dataset.probe("id_atomic"))
    with torch.no_grad():
        recall = (model.forward_batch(enc).argmax(-1)[:, 0] == enc.answer).float().mean().item()
    assert recall > 0.8, recall  # it knows the first hops (b at r1)
    return root / "run", model, runs.load_model(root / "run", 0)[0]
