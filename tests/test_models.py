"""Models: shapes, structure, paper parameter counts, hook semantics, quirk flags, the precision rule."""

from __future__ import annotations

import math

import pytest
import torch

from grokscope.models import build_model, model_config
from grokscope.models.trm import swiglu_width

V = 77


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    return build_model(model_config("gpt", "smoke", d_vocab=V)).eval()


@pytest.fixture
def trm():
    torch.manual_seed(0)
    return build_model(model_config("trm", "smoke", d_vocab=V, overrides={"forward_dtype": "float32"})).eval()


def tokens(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V - 1, (n, 5), generator=g)


def test_trm_paper_parameter_count():
    model = build_model(model_config("trm", "paper", d_vocab=2207))
    assert model.num_params() == 44_560_898  # He et al.'s TRM: 44.56M
    assert swiglu_width(1536, 4) == 4096 and swiglu_width(21, 4) == 256
    assert model.cfg.n_stages == 15
    assert model.embed_tokens.shape == (2206, 1536)  # the original's vocabulary offset: ids 1..2206, 2206 rows


def test_gpt_named_configs_and_sharing():
    wang = model_config("gpt", "wang", d_vocab=2207)
    assert (wang.n_layers, wang.d_model, wang.n_heads, wang.dropout) == (8, 768, 12, 0.1)
    shared = build_model(model_config("gpt", "smoke", d_vocab=V, overrides={"n_layers": 4, "n_unique_blocks": 2}))
    full = build_model(model_config("gpt", "smoke", d_vocab=V, overrides={"n_layers": 4}))
    assert len(shared.unique_blocks) == 2 and len(shared.blocks) == 4
    assert shared.block_of_layer(3) is shared.unique_blocks[1]
    per_block = sum(p.numel() for p in full.unique_blocks[0].parameters())
    assert full.num_params() - shared.num_params() == 2 * per_block
    assert "blocks.3.hook_resid_post" in shared.hook_names


def test_gpt_init_scales():
    model = build_model(model_config("gpt", "micro", d_vocab=2207))
    std = model.unique_blocks[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(2 * 4)) < 0.002
    assert abs(model.unique_blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert model.W_U.data_ptr() == model.W_E.data_ptr()  # tied head


def test_gpt_logits_at_positions_and_causality(gpt):
    x = tokens()
    full = gpt(x)
    at = torch.tensor([[2, 3]] * len(x))
    torch.testing.assert_close(gpt(x, at=at), full[:, 2:4])
    y = x.clone()
    y[:, 4] = (y[:, 4] + 1) % (V - 1)
    torch.testing.assert_close(gpt(y)[:, :4], full[:, :4])  # causal: later tokens do not change earlier logits


def test_gpt_explicit_pattern_matches_sdpa(gpt):
    x = tokens()
    base = gpt(x)
    _, cache = gpt.run_with_cache(x, names_filter=lambda n: n.endswith("hook_pattern"))
    assert cache["blocks.0.attn.hook_pattern"].shape == (6, 2, 5, 5)
    with gpt.hooks([("blocks.0.attn.hook_pattern", lambda p, hook: None)]):
        torch.testing.assert_close(gpt(x), base, atol=1e-5, rtol=1e-5)
    assert torch.allclose(cache["blocks.1.attn.hook_pattern"].sum(-1), torch.ones(6, 2, 5))


@pytest.mark.parametrize("family", ["gpt", "trm"])
def test_patching_hook_changes_output_and_is_removed(family, gpt, trm):
    model = gpt if family == "gpt" else trm
    name = "blocks.0.hook_resid_post" if family == "gpt" else "stage.H0_L0"
    x = tokens()
    base = model(x)
    with model.hooks([(name, lambda act, hook: torch.zeros_like(act))]):
        patched = model(x)
    assert not torch.allclose(patched, base)
    assert all(not hp.has_hooks for hp in model.hook_dict.values())
    torch.testing.assert_close(model(x), base)
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([(name, lambda act, hook: None)]):
            raise RuntimeError("boom")
    assert all(not hp.has_hooks for hp in model.hook_dict.values())


def test_run_with_cache_only_requested(gpt, trm):
    x = tokens()
    _, cache = gpt.run_with_cache(x, names_filter=["blocks.1.hook_resid_post", "hook_embed"])
    assert set(cache) == {"blocks.1.hook_resid_post", "hook_embed"}
    assert cache["blocks.1.hook_resid_post"].shape == (6, 5, 32)
    _, cache = trm.run_with_cache(x, names_filter=lambda n: n.startswith("stage."))
    assert list(cache) == [f"stage.{s}" for s in trm.cfg.stage_names()]
    assert cache["stage.H1_commit"].shape == (6, trm.cfg.n_positions, 32)
    with pytest.raises(KeyError, match="no hook point"):
        gpt.run_with_cache(x, names_filter="blocks.9.hook_resid_post")


def test_gpt_residual_hooks_chain(gpt):
    x = tokens()
    logits, cache = gpt.run_with_cache(x, names_filter=lambda n: "resid" in n or n.startswith("ln_final"))
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    torch.testing.assert_close(gpt.unembed(cache["blocks.1.hook_resid_post"]), logits)


def test_trm_last_stage_is_output_and_truncated_bptt(trm):
    x = tokens()
    trm.train()
    logits, cache = trm.run_with_cache(x, names_filter=lambda n: n.startswith("stage."), detach=False)
    torch.testing.assert_close(trm.unembed(cache["stage.H1_commit"]), logits)
    assert not cache["stage.H0_commit"].requires_grad  # first H-cycle runs without gradient
    assert cache["stage.H1_commit"].requires_grad
    logits.sum().backward()
    assert trm.embed_tokens.grad is not None and trm.puzzle_emb.grad is not None


def test_trm_quirk_flags_change_function():
    torch.manual_seed(0)
    a = build_model(model_config("trm", "smoke", d_vocab=V, overrides={"forward_dtype": "float32"}))
    b = build_model(model_config("trm", "smoke", d_vocab=V, overrides={
        "forward_dtype": "float32", "quirk_token_norm_over_positions": False}))
    b.load_state_dict(a.state_dict())
    x = tokens()
    assert not torch.allclose(a(x), b(x))
    c = build_model(model_config("trm", "smoke", d_vocab=V, overrides={"quirk_vocab_offset": False}))
    assert c.embed_tokens.shape[0] == V and a.embed_tokens.shape[0] == V - 1


def test_trm_q_head_init_and_bf16(trm):
    logits, q = trm(tokens(), return_q=True)
    torch.testing.assert_close(q, torch.full_like(q, -5.0))
    bf = build_model(model_config("trm", "smoke", d_vocab=V))
    bf.load_state_dict(trm.state_dict())
    out = bf(tokens())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out.argmax(-1) == logits.argmax(-1)).float().mean() > 0.5  # bf16 stays close to fp32


def test_trm_forward_dtype_follows_the_train_precision():
    cfg = model_config("trm", "smoke", d_vocab=V)
    assert cfg.forward_dtype is None and build_model(cfg).dtype == torch.bfloat16
    assert cfg.for_precision("fp32").forward_dtype == "float32"
    assert cfg.for_precision("bf16").forward_dtype == "bfloat16"
    explicit = model_config("trm", "smoke", d_vocab=V, overrides={"forward_dtype": "float32"})
    assert explicit.for_precision("bf16").forward_dtype == "float32"  # an explicit choice wins


def test_model_config_errors():
    from grokscope.errors import GrokscopeError

    with pytest.raises(GrokscopeError) as err:
        model_config("gpt", "smoke", d_vocab=V, overrides={"n_heads": 3, "n_unique_blocks": 5, "colour": 1})
    assert any("colour" in p for p in err.value.problems)
    with pytest.raises(GrokscopeError) as err:
        model_config("gpt", "smoke", d_vocab=V, overrides={"n_heads": 3, "n_unique_blocks": 5})
    assert len(err.value.problems) == 2
    with pytest.raises(GrokscopeError, match="unknown model family"):
        model_config("rnn", "smoke", d_vocab=V)


def test_exact_match_scores_the_tokens_the_run_was_trained_on(smoke_dataset):
    """A run trained on t alone (loss_positions=answer) never learns </a> or the copied prompt: it is scored on t, so
    its exact match is not 0 by construction; the default scoring still needs the whole answer."""
    from grokscope.data.encoding import encode

    ds = smoke_dataset
    batch = encode(ds, ds.probe("train_inferred")[:8])
    end, V = ds.vocab.end_id, ds.vocab.d_vocab
    gpt = build_model(model_config("gpt", "smoke", d_vocab=V)).eval()
    logits = torch.nn.functional.one_hot(batch.targets, V).float()  # [B, 2, V]: t and </a> right
    logits[:, 1] = torch.nn.functional.one_hot(torch.full_like(batch.targets[:, 1], 1), V).float()  # </a> wrong
    assert not gpt.exact_match(batch, logits, end).any()
    assert gpt.exact_match(batch, logits, end, "answer").all()
    assert not gpt.exact_match(batch, logits, end, "answer_end").any()

    trm = build_model(model_config("trm", "smoke", d_vocab=V)).eval()
    seq = torch.nn.functional.one_hot(batch.seq, V).float()  # [B, 5, V]: the whole string right
    assert trm.exact_match(batch, (seq, None), end).all()
    wrong_prompt = seq.clone()
    wrong_prompt[:, 0] = torch.nn.functional.one_hot(torch.where(batch.seq[:, 0] == 1, 2, 1), V).float()
    assert not trm.exact_match(batch, (wrong_prompt, None), end).any()  # the copied prompt counts by default
    assert trm.exact_match(batch, (wrong_prompt, None), end, "answer_end").all()
    wrong_end = seq.clone()
    wrong_end[torch.arange(len(batch)), batch.prompt_len + 1] = torch.nn.functional.one_hot(
        torch.ones(len(batch), dtype=torch.long), V).float()
    assert trm.exact_match(batch, (wrong_end, None), end, "answer").all()
    assert not trm.exact_match(batch, (wrong_end, None), end, "answer_end").any()
