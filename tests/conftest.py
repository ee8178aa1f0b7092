"""Shared fixtures: tiny datasets built once per session, and a CLI runner that returns (code, stdout, stderr)."""

from __future__ import annotations

import dataclasses

import pytest

from grokscope.cli import main
from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS, REGIMES


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
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
