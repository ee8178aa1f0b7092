"""The model-family interface is all generic code needs: a toy third family (a 2-layer MLP over the three prompt
tokens), defined and registered here touching nothing outside ``models/``, trains, evaluates, and runs the lens,
causal tracing and bridge use through the same CLI as the gpt and the trm."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import ClassVar

import pandas as pd
import pytest
import torch
from torch import nn

from grokscope.models.family import LossSpec, ModelFamily
from grokscope.models.hooks import HookPoint
from grokscope.models.losses import token_losses
from grokscope.models.registry import FAMILIES, register_family


@dataclass
class MLPConfig:
    d_vocab: int = 100
    seq_len: int = 5
    d_model: int = 32
    SIZED_FROM_DATA: ClassVar[tuple[str, ...]] = ("d_vocab", "seq_len")

    @property
    def context_length(self) -> int:
        return self.seq_len

    def for_dataset(self, d_vocab: int, seq_len: int) -> "MLPConfig":
        return replace(self, d_vocab=d_vocab, seq_len=seq_len)

    def for_precision(self, precision: str) -> "MLPConfig":
        return self

    def problems(self) -> list[str]:
        return [] if self.d_model > 0 else ["d_model must be positive"]

    def draws_random(self) -> bool:
        return False


class MLP(ModelFamily):
    """Embeddings of (h, r1, r2) -> two residual layers that mix all positions -> tied unembedding; the answer is
    read at the last prompt position."""

    family = "mlp"

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg, D = cfg, cfg.d_model
        self.embed = nn.Embedding(cfg.d_vocab, D)
        self.pos = nn.Parameter(0.02 * torch.randn(3, D))
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(3 * D, 4 * D), nn.GELU(), nn.Linear(4 * D, 3 * D))
                                    for _ in range(2))
        self.stage = nn.ModuleDict({f"L{i}": HookPoint() for i in range(3)})
        self.setup_hooks()

    def forward(self, tokens):
        x = self.stage["L0"](self.embed(tokens) + self.pos)  # [B, 3, D]
        for i, layer in enumerate(self.layers):
            x = self.stage[f"L{i + 1}"](x + layer(x.flatten(1)).view_as(x))
        return self.unembed(x)  # [B, 3, V]

    def forward_batch(self, batch):
        return self(self.prompt(batch))[:, 2]

    def loss(self, batch, output, spec: LossSpec):
        return token_losses(output[:, None], batch.answer[:, None], spec.kind).mean()

    def exact_match(self, batch, output, end_id, positions="default"):
        return output.argmax(-1) == batch.answer

    def flops_per_step(self, batch_size):
        D = self.cfg.d_model
        return 3.0 * batch_size * 2 * (2 * 2 * 3 * D * 4 * D + 3 * D * self.cfg.d_vocab)

    def prompt(self, batch):
        return batch.inputs[:, :3]  # (h, r, pad) for atomic facts, (h, r1, r2) for compositions

    def readout_stages(self):
        return [(name, f"stage.{name}") for name in ("L0", "L1", "L2")]

    def unembed(self, state):
        return state @ self.embed.weight.T

    def answer_logits(self, tokens):
        return self(tokens)[:, 2]


@pytest.fixture
def mlp_family():
    register_family("mlp", MLPConfig, {"smoke": dict(d_model=32), "micro": dict(d_model=64)}, MLP)
    yield
    FAMILIES.pop("mlp")


def test_toy_family_runs_through_every_stage(mlp_family, cli, smoke_data, tmp_path):
    run = tmp_path / "mlp"
    code, out, err = cli("train", "--data", smoke_data, "--model", "mlp", "--preset", "smoke", "--quiet",
                         "--set", "max_steps=200,eval_every=100,lr=3e-3", "--out", run)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_step"] == 200 and summary["final"]["train_acc"] > 0.05
    for key in ("bridge_use_ood", "bridge_use_iid", "bridge_found_ood", "bridge_use@L1_ood", "target_found_iid"):
        assert key in summary["final"], key
    assert summary["flops_per_step"] > 0 and summary["bridge_metric"] == "bridge_use"
    code, out, err = cli("analyze", run, "--steps", "0,last", "--probes", "ood,train")
    assert code == 0, err
    lens = pd.read_parquet(run / "analysis" / "lens.parquet")
    trace = pd.read_parquet(run / "analysis" / "trace.parquet")
    use = pd.read_parquet(run / "analysis" / "bridge_use.parquet")
    assert set(lens.stage) == {"L0", "L1", "L2", "any"} and set(trace.stage) == {"L0", "L1", "L2"}
    assert set(use.stage) == {"L0", "L1", "L2", "max"} and use.value.between(0, 1).all()
    assert "compare step0_vs_last" in out
    code, _, err = cli("transfer", "--from", run, "--out", tmp_path / "ft", "--quiet", "--set",
                       "max_steps=10,eval_every=10")
    assert code == 0, err
    transfer = json.loads((tmp_path / "ft" / "summary.json").read_text())["transfer"]
    assert transfer["final"]["new_old_powered"]["bridge_use"] is not None
