"""Export to TransformerLens: layout always; live logits equality whenever transformer-lens is installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS
from grokscope.models import build_model, model_config
from grokscope.models.export_tl import tl_config, tl_state_dict, to_transformer_lens
from grokscope.data.encoding import encode

HAS_TL = importlib.util.find_spec("transformer_lens") is not None


def _perturbed(overrides):
    torch.manual_seed(0)
    model = build_model(model_config("gpt", "smoke", d_vocab=77, overrides=overrides)).eval()
    with torch.no_grad():  # move LayerNorm gains/biases off (1, 0) so a wrong mapping would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_tl_layout_shapes():
    model = _perturbed({"n_layers": 4, "n_unique_blocks": 2})
    sd = tl_state_dict(model)
    assert sd["blocks.3.attn.W_Q"].shape == (2, 32, 16) and sd["blocks.3.attn.W_O"].shape == (2, 16, 32)
    torch.testing.assert_close(sd["blocks.1.mlp.W_in"], sd["blocks.3.mlp.W_in"])  # unrolled shared block
    assert tl_config(model)["n_layers"] == 4


@pytest.mark.skipif(not HAS_TL, reason="transformer-lens not installed (extra 'interp')")
@pytest.mark.parametrize("overrides", [{}, {"n_layers": 4, "n_unique_blocks": 2}])
def test_transformer_lens_logits_match_on_probes(overrides):
    model = _perturbed(overrides)
    ds = build_dataset(DATA_PRESETS["smoke"])
    tl = to_transformer_lens(model)
    for t in ds.probe_types:
        seq = encode(ds, ds.probe(t)).seq
        with torch.no_grad():
            diff = (model(seq) - tl(seq)).abs().max().item()
        assert diff < 1e-4, (t, diff)


def test_export_cli(cli, tmp_path):
    data = tmp_path / "d"
    assert cli("data", "build", "--preset", "smoke", "--out", data)[0] == 0
    assert cli("train", "--data", data, "--preset", "smoke", "--quiet", "--set", "max_steps=10",
               "--out", tmp_path / "r")[0] == 0
    code, out, err = cli("export", "tl", f"{tmp_path / 'r'}@10", "--out", tmp_path / "tl")
    assert code == 0, err
    assert (tmp_path / "tl" / "tl_model.safetensors").exists()
    if HAS_TL:
        assert "agree to" in out
    code, _, err = cli("export", "tl", f"{tmp_path / 'r'}@7")
    assert code == 2 and "no checkpoint at step 7" in err
    before = (tmp_path / "tl" / "tl_model.safetensors").read_bytes()
    code, _, err = cli("export", "tl", f"{tmp_path / 'r'}@0", "--out", tmp_path / "tl")  # would overwrite
    assert code == 2 and "--force" in err
    assert (tmp_path / "tl" / "tl_model.safetensors").read_bytes() == before
    assert cli("export", "tl", f"{tmp_path / 'r'}@0", "--out", tmp_path / "tl", "--force")[0] == 0
