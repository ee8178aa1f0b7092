"""Units of training: encoding and masks, exact match per family, losses, batch order, optimiser groups, SignSGD,
Grokfast (including a non-finite gradient), EMA and the FLOP estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokscope.data.encoding import IGNORE, encode
from grokscope.data.vocab import Vocab
from grokscope.models import build_model, model_config
from grokscope.models.family import LossSpec
from grokscope.models.losses import log_stablemax, sequence_mean_loss
from grokscope.training.batches import BatchOrder
from grokscope.training.config import TrainConfig
from grokscope.training.optim import EMA, Grokfast, SignSGD, make_optimizers


class _DS:
    vocab = Vocab(10, 5)


def _model(family: str, **overrides):
    torch.manual_seed(0)
    return build_model(model_config(family, "smoke", d_vocab=_DS.vocab.d_vocab, overrides=overrides))


def test_encoding_and_masks():
    rows = np.array([[1, 2, -1, -1, 3], [1, 2, 4, 3, 5]])
    enc = encode(_DS, rows)
    v = _DS.vocab
    assert enc.inputs[0].tolist() == [2, 13, 0, 0, 0] and enc.inputs[1].tolist() == [2, 13, 15, 0, 0]
    assert enc.labels[0].tolist() == [2, 13, 4, v.end_id, IGNORE]
    assert enc.at.tolist() == [[1, 2], [2, 3]] and enc.targets.tolist() == [[4, v.end_id], [6, v.end_id]]
    assert enc.bridge.tolist() == [-1, 4] and enc.answer.tolist() == [4, 6]


def _onehot(pred, V=_DS.vocab.d_vocab):
    return torch.nn.functional.one_hot(torch.tensor(pred), V).float()


def test_trm_exact_match_hand_built():
    v = _DS.vocab
    E = v.end_id
    rows = np.array([[1, 2, 4, 3, 5]] * 5 + [[1, 2, -1, -1, 3]] * 2)
    enc = encode(_DS, rows)
    preds = [
        [2, 13, 15, 6, E],  # exact
        [2, 13, 15, 7, E],  # wrong tail
        [2, 13, 15, 6, 6],  # no </a>: the string continues -> wrong
        [2, 0, 13, 15, 6],  # pad dropped, then no </a> -> prompt+t exactly -> correct (the original string EM)
        [2, 13, 14, 6, E],  # wrong copied relation -> wrong (the prefix counts)
        [2, 13, 4, E, 9],  # atomic: junk after </a> is cut -> correct
        [2, 13, 4, 4, E],  # atomic: extra token before </a> -> wrong
    ]
    em = _model("trm").exact_match(enc, _onehot(preds), E)
    assert em.tolist() == [True, False, False, True, False, True, False]


def test_gpt_exact_match():
    v = _DS.vocab
    enc = encode(_DS, np.array([[1, 2, 4, 3, 5]] * 3))
    preds = [[6, v.end_id], [6, 6], [7, v.end_id]]
    assert _model("gpt").exact_match(enc, _onehot(preds), v.end_id).tolist() == [True, False, False]


def test_stablemax_matches_definition():
    x = torch.tensor([[-2.0, 0.0, 3.0]])
    s = torch.tensor([1 / 3, 1.0, 4.0])
    torch.testing.assert_close(log_stablemax(x), torch.log(s / s.sum()).unsqueeze(0))
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, IGNORE, IGNORE], [1, 2, 3, 4, 5]])
    loss = sequence_mean_loss(logits, labels, "ce")
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    expected = (per[0, :3].mean() + per[1].mean()) / 2  # averaged per sequence first
    assert math.isclose(float(loss), float(expected), rel_tol=1e-5)


@pytest.mark.parametrize("family", ["gpt", "trm"])
@torch.no_grad()
def test_loss_positions_select_the_supervised_slots(family):
    # (the trm without its q-halt term, which adds to every choice of positions)
    model = _model(family, **({"forward_dtype": "float32", "q_halt_weight": 0.0} if family == "trm" else {}))
    enc = encode(_DS, np.array([[1, 2, 4, 3, 5], [2, 1, 3, 4, 6]]))
    out = model.forward_batch(enc)
    logits = out[0] if isinstance(out, tuple) else out
    losses = {p: float(model.loss(enc, out, LossSpec("ce", p))) for p in model.loss_positions}
    if family == "gpt":  # logits at (t, </a>): "answer" is the first column only
        t_only = torch.nn.functional.cross_entropy(logits[:, 0], enc.targets[:, 0])
        assert losses["answer"] == pytest.approx(float(t_only), rel=1e-5)
        assert losses["default"] == losses["answer_end"] != losses["answer"]
        with pytest.raises(ValueError, match="not available"):
            model.loss(enc, out, LossSpec("ce", "all"))
    else:  # the answer slot is 3 for compositions
        t_only = torch.nn.functional.cross_entropy(logits[:, 3], enc.seq[:, 3])
        assert losses["answer"] == pytest.approx(float(t_only), rel=1e-5)
        assert losses["default"] == losses["all"] != losses["answer"]


def test_batch_order_resumes():
    a = BatchOrder(10, 4, seed=3, drop_last=False)
    seq = [a.next().tolist() for _ in range(7)]
    assert sorted(sum(seq[:3], [])) == list(range(10))  # an epoch covers every item once
    b = BatchOrder(10, 4, seed=3, drop_last=False)
    for _ in range(4):
        b.next()
    c = BatchOrder(10, 4, seed=3, drop_last=False, **b.state())
    assert [c.next().tolist() for _ in range(3)] == seq[4:]
    d = BatchOrder(10, 4, seed=3, drop_last=True)
    assert [len(d.next()) for _ in range(4)] == [4, 4, 4, 4] and d.steps_per_epoch == 2


def test_optimiser_groups_per_family():
    gpt = _model("gpt")
    opts = make_optimizers(gpt, TrainConfig(weight_decay=0.1))
    assert len(opts) == 1
    decayed, plain = opts[0].param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert sum(p.numel() for g in opts[0].param_groups for p in g["params"]) == gpt.num_params()
    trm = _model("trm")
    opts = make_optimizers(trm, TrainConfig(weight_decay=1.0, decay_all=True))
    assert len(opts) == 2 and isinstance(opts[1], SignSGD)
    assert opts[1].param_groups[0]["params"] == [trm.puzzle_emb]
    # the puzzle vector's lr and decay are the trm's own settings (He et al.: 1e-4 and 1.0)
    assert (opts[1].param_groups[0]["lr"], opts[1].param_groups[0]["weight_decay"]) == (1e-4, 1.0)
    own = make_optimizers(_model("trm", puzzle_lr=3e-4, puzzle_weight_decay=0.5), TrainConfig())[1]
    assert (own.param_groups[0]["lr"], own.param_groups[0]["weight_decay"]) == (3e-4, 0.5)
    assert all(p is not trm.puzzle_emb for p in opts[0].param_groups[0]["params"])
    assert len(opts[0].param_groups) == 1 and opts[0].param_groups[0]["weight_decay"] == 1.0  # decay_all


def test_signsgd_step():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    w.grad = torch.tensor([0.5, -0.1, 0.0])
    SignSGD([w], lr=0.1, weight_decay=1.0).step()
    torch.testing.assert_close(w.data, torch.tensor([1.0, -2.0, 3.0]) * 0.9 - 0.1 * torch.tensor([1.0, -1.0, 0.0]))


def test_grokfast_filter_and_non_finite_step():
    layer = torch.nn.Linear(2, 1, bias=False)
    gf = Grokfast(alpha=0.5, lamb=2.0)
    layer.weight.grad = torch.tensor([[1.0, 2.0]])
    assert bool(gf.apply(layer))
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[3.0, 6.0]]))  # ema = g; g += 2 * ema
    layer.weight.grad = torch.tensor([[3.0, 0.0]])
    gf.apply(layer)
    torch.testing.assert_close(gf.ema["weight"], torch.tensor([[2.0, 1.0]]))  # 0.5 * [1, 2] + 0.5 * [3, 0]
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[7.0, 2.0]]))
    before = gf.ema["weight"].clone()
    layer.weight.grad = torch.tensor([[float("inf"), 1.0]])  # an fp16 overflow step
    assert not bool(gf.apply(layer))
    torch.testing.assert_close(gf.ema["weight"], before)  # the average is untouched
    layer.weight.grad = torch.tensor([[1.0, 1.0]])
    gf.apply(layer)
    assert torch.isfinite(gf.ema["weight"]).all() and torch.isfinite(layer.weight.grad).all()


def test_ema_tracks_weights():
    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema = EMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(2.0)
    ema.update(layer)
    assert ema.state_dict_for(layer)["weight"].item() == pytest.approx(1.1)


def test_flops_per_step_counts_the_matmuls():
    from grokscope.models.gpt import GPT, GPTConfig

    # Counted by hand for d 4, one layer, MLP width 16, 5 tokens, 10 vocabulary rows, one example (MACs = multiply-
    # accumulates, 2 FLOPs each): Q, K, V and the output projection 4 x 4 x 4 = 64 MACs per token, the MLP 4 x 16 +
    # 16 x 4 = 128, so 192 x 5 tokens = 960; attention scores and their weighted sum 2 x 5 x 5 x 4 = 200; the head at
    # the two supervised positions 2 x 4 x 10 = 80. 1,240 MACs = 2,480 FLOPs forward, x 3 with the backward pass.
    tiny = GPT(GPTConfig(d_vocab=10, n_ctx=5, d_model=4, n_layers=1, n_heads=1, d_mlp=16))
    assert tiny.flops_per_step(1) == 7440
    assert tiny.flops_per_step(3) == 3 * 7440
    gpt = _model("gpt")
    trm = _model("trm")
    assert trm.flops_per_step(16) == 2 * trm.flops_per_step(8) > gpt.flops_per_step(8)
    paper = build_model(model_config("trm", "paper", d_vocab=2207))
    assert 1e13 < paper.flops_per_step(512) < 5e13  # about 2.3e13 FLOP per step at the paper's configuration


def test_resume_keeps_this_devices_fused_optimiser():
    """A checkpoint from an unfused optimiser (the CPU) resumed by a fused one (CUDA) stays fused: load_state_dict
    would put the saved fused=False back (shown here with CPU AdamW, which has a fused kernel too)."""
    from grokscope.training.optim import load_optimizer_tensors, optimizer_tensors

    model = torch.nn.Linear(4, 3)
    saved = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    saved.step()
    tensors, groups = optimizer_tensors(saved, "adamw")
    assert groups[0]["fused"] in (None, False)
    resumed = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    load_optimizer_tensors(resumed, "adamw", tensors, groups)
    assert resumed.param_groups[0]["fused"] is True and resumed.param_groups[0]["lr"] == 1e-3
    model(torch.randn(2, 4)).sum().backward()
    resumed.step()  # the fused kernel runs on the restored state
    assert int(resumed.state[model.weight]["step"]) == 2


def test_scalar_log_writes_every_number_of_an_evaluation(monkeypatch, tmp_path):
    """ScalarLog against a stand-in SummaryWriter (the real one is tested where tensorboard is installed): every finite
    number of a row, at its step; a resumed run purges what came after its checkpoint; nothing without tensorboard."""
    import sys
    import types

    from grokscope.training.scalars import ScalarLog

    calls = []

    class Writer:
        def __init__(self, folder, purge_step=None):
            calls.append(("open", folder, purge_step))

        def add_scalar(self, key, value, step):
            calls.append((key, value, step))

        def flush(self):
            calls.append(("flush",))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    log = ScalarLog(tmp_path / "tb", resumed_at=40)
    log.write({"step": 50, "train_loss": 1.5, "n/id_atomic": 20, "lr": float("nan"), "cut": True, "name": "x"})
    log.close()
    assert calls == [("open", str(tmp_path / "tb"), 41), ("train_loss", 1.5, 50), ("n/id_atomic", 20, 50),
                     ("flush",), ("close",)]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: import fails
    quiet = ScalarLog(tmp_path / "none", resumed_at=None)
    quiet.write({"step": 0, "train_loss": 1.0})
    quiet.close()
    assert quiet.writer is None and not (tmp_path / "none").exists()


@pytest.mark.parametrize("family", ["gpt", "trm"])
def test_a_stacks_gradient_optimiser_and_ema_steps_equal_one_by_one(family):
    """``train_step`` over a stack of three runs (one whose lr differs) takes every run's clipping, optimiser and EMA
    steps with the batched implementations; weights, moments, step counters and EMA equal stepping each run alone
    (a stack of one), bit for bit, here with the same gradients fed to both."""
    from grokscope.training.state import TrainState
    from grokscope.training.step import train_step

    cfgs = [TrainConfig(ema_decay=0.9, grad_clip=1.0, precision="fp32", lr=lr) for lr in (1e-3, 1e-3, 3e-3)]

    def runs():
        out = []
        for seed, cfg in enumerate(cfgs):
            torch.manual_seed(seed)
            out.append(TrainState(_model(family), cfg, 100, "cpu"))
        return out

    def given(grads, losses):  # a pass whose gradients and losses are given
        def forward_backward(states, batches):
            for state, k in zip(states, batches):
                for p, g in zip(state.model.parameters(), grads[k]):
                    p.grad = g.clone()
            return [losses[k] for k in batches]
        return forward_backward
    alone, together = runs(), runs()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [[torch.randn(p.shape, generator=gen) for p in s.model.parameters()] for s in alone]
        losses = torch.rand(len(cfgs), generator=gen)
        for k, state in enumerate(alone):
            train_step([state], [k], given(grads, losses))
        train_step(together, list(range(len(cfgs))), given(grads, losses))
        for state in alone + together:
            state.loop.step += 1
    for a, b in zip(alone, together):
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(x, y), name
        for oa, ob in zip(a.optimizers, b.optimizers):
            sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
            assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
        assert all(torch.equal(a.ema.shadow[k], b.ema.shadow[k]) for k in a.ema.shadow)
        assert a.take_train_loss() == b.take_train_loss()
    # the runs moved (a step that did nothing would pass the comparisons above)
    assert not torch.equal(next(alone[0].model.parameters()), next(runs()[0].model.parameters()))


def test_a_signsgd_group_must_carry_its_own_settings():
    """A family's SignSGD group without its own lr and decay is refused."""
    class NoOwnLr(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def param_groups(self, weight_decay, decay_all):
            return [{"params": [self.w], "optimizer": "signsgd"}]
    with pytest.raises(ValueError, match="own lr and weight_decay"):
        make_optimizers(NoOwnLr(), TrainConfig())
