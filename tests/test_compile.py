"""torch.compile of the training step (on by default on CUDA, off with --set compile=false) gives the losses of the
eager step (marked slow: compiling takes about a minute on a CPU)."""

from __future__ import annotations

import pytest

from grokscope import api, artifacts


@pytest.mark.slow
def test_compiled_and_eager_losses_agree_on_cpu(tmp_path):
    api.build_data(tmp_path / "d", preset="smoke")
    losses = {}
    for compiled in (False, True):
        out = tmp_path / f"c{compiled}"
        api.train(tmp_path / "d", out, "gpt", "smoke", ["train.max_steps=40", "train.eval_every=20",
                                                         "train.precision=fp32", "train.threads=1",
                                                         f"train.compile={str(compiled).lower()}"], quiet=True)
        losses[compiled] = [r["train_loss"] for r in artifacts.read_metrics(out) if r["train_loss"] is not None]
    assert len(losses[True]) == len(losses[False]) == 2
    for a, b in zip(losses[False], losses[True]):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))
