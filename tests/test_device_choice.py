"""The device choices a reading of the CUDA paths found wrong, shown where a CPU can show them: analyses and
comparisons honour --device (auto picks the accelerator, an absent one is one line), a resumed optimiser keeps
this device's implementation (tests/test_train_units.py), and the CUDA-only settings are decided up front."""

from __future__ import annotations

import pytest
import torch

from grokscope import runtime


@pytest.mark.parametrize("device, message", [("cuda", "no CUDA device"), ("gpu", "unknown device")])
def test_analyze_and_compare_refuse_an_absent_device_in_one_line(cli, trained, device, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, _ = trained
    for args in (["analyze", root / "gpt", "--analyses", "regime"], ["compare", f"{root / 'gpt'}@0",
                                                                       f"{root / 'gpt'}@last"]):
        code, _, err = cli(*args, "--device", device)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_auto_is_the_default_and_picks_what_the_machine_has(monkeypatch, cli, trained):
    """A study passes no --device to its analyses: the default must be auto, so they run on the GPU when there is
    one (here: the choice is recorded by a stand-in for the analysis)."""
    import grokscope.analysis.run_analysis as ra

    seen = {}

    def fake(run, steps, probes, analyses, data, device):
        seen["device"] = device
        return {}
    monkeypatch.setattr(ra, "analyze", fake)
    root, _ = trained
    assert cli("analyze", root / "gpt")[0] == 0
    assert seen["device"] == runtime.pick_device("auto")
    monkeypatch.setattr(runtime, "pick_device", lambda d: "cuda" if d == "auto" else d)
    assert cli("analyze", root / "gpt")[0] == 0 and seen["device"] == "cuda"
