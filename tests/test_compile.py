"""torch.compile of the training step: on by default on CUDA, and on a CPU where the measured gain pays for the
compile within the run's budget (the trm from 5,000 steps); off with --set compile=false. The compiled step gives
the eager step's losses (marked slow: compiling takes about half a minute on a CPU)."""

from __future__ import annotations

import pytest

from grokscope import api, artifacts, runtime
from grokscope.training.config import TrainConfig
from grokscope.training.step import compiles


def test_the_compile_default_follows_device_family_and_budget(monkeypatch):
    default, eager, forced = TrainConfig(), TrainConfig(compile=False), TrainConfig(compile=True)
    monkeypatch.setattr(runtime, "cpu_compiler_available", lambda: True)
    assert compiles(default, "cuda", "gpt", 10)  # CUDA: always
    assert compiles(default, "cpu", "trm", 12_000)  # the micro trm's budget: it pays
    assert not compiles(default, "cpu", "trm", 60)  # a smoke budget: the compile would cost more than it saves
    assert not compiles(default, "cpu", "gpt", 12_000)  # the gpt gains 1.03x on a CPU: never by default
    assert not compiles(eager, "cpu", "trm", 12_000) and compiles(forced, "cpu", "gpt", 10)  # the setting wins
    monkeypatch.setattr(runtime, "cpu_compiler_available", lambda: False)
    assert not compiles(default, "cpu", "trm", 12_000)  # no C++ compiler for inductor: eager


@pytest.mark.slow
@pytest.mark.parametrize("family, sets, tolerance", [
    ("gpt", ["train.precision=fp32"], 1e-4),
    ("trm", [], 1e-3),  # bf16 forward: the compiled kernels may round differently (measured: equal to 4 decimals)
])
def test_compiled_and_eager_losses_agree_on_cpu(tmp_path, family, sets, tolerance):
    api.build_data(tmp_path / "d", preset="smoke")
    losses = {}
    for compiled in (False, True):
        out = tmp_path / f"c{compiled}"
        api.train(tmp_path / "d", out, family, "smoke", ["train.max_steps=40", "train.eval_every=20",
                                                          "train.threads=1", *sets,
                                                          f"train.compile={str(compiled).lower()}"], quiet=True)
        losses[compiled] = [r["train_loss"] for r in artifacts.read_metrics(out) if r["train_loss"] is not None]
    assert len(losses[True]) == len(losses[False]) == 2
    for a, b in zip(losses[False], losses[True]):
        assert abs(a - b) < tolerance * max(1.0, abs(a)), (a, b)
