"""Analyses: batched logit lens and causal tracing against slow per-example references on tiny trained models;
path comparison, regime classification, the analyze CLI; TransformerLens cross-check when installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from grokscope import runs
from grokscope.analysis.circuits import classify_regime, compare_paths
from grokscope.analysis.logit_lens import bridge_mask, found_rates, lens_inputs, lens_ranks, stage_argmax
from grokscope.analysis.patching import _prompts, _setup, causal_strength, counterfactual_tokens
from grokscope.data.store import load
from grokscope.train.batches import encode
from grokscope.train.evaluate import exact_match, forward_loss


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke gpt (300 steps) and a smoke trm (40 steps) trained on the smoke dataset."""
    from grokscope.cli import main

    root = tmp_path_factory.mktemp("analysis")
    main(["data", "build", "--preset", "smoke", "--out", str(root / "data")])
    for family, steps in (("gpt", 300), ("trm", 40)):
        try:
            main(["train", "--data", str(root / "data"), "--model", family, "--preset", "smoke", "--quiet",
                  "--set", f"max_steps={steps},eval_every=100", "--out", str(root / family)])
        except SystemExit as exc:
            assert not exc.code
    return root, load(root / "data")


def _model(trained, family):
    root, ds = trained
    return runs.load_model(root / family)[0], ds


def _probe_enc(ds, n=40):
    rows = np.concatenate([ds.probe("train_inferred")[:n], ds.probe("test_inferred_ood")])
    return rows, encode(ds, rows)


@pytest.mark.parametrize("family", ["gpt", "trm"])
def test_lens_matches_per_example_reference(trained, family):
    model, ds = _model(trained, family)
    rows, enc = _probe_enc(ds)
    ranks = lens_ranks(model, enc, chunk=7)  # odd chunk size: batching must not matter
    tokens = lens_inputs(model, enc)
    names = (["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
             if family == "gpt" else [f"stage.{s}" for s in model.cfg.stage_names()])
    for i in range(len(rows)):  # slow and obvious: one query, full sort per stage and position
        _, cache = model.run_with_cache(tokens[i:i + 1], names_filter=names)
        for s, name in enumerate(names):
            logits = model.unembed(cache[name])[0]
            for p in range(logits.shape[0]):
                order = torch.argsort(logits[p], descending=True, stable=True).tolist()
                for role, tok in (("bridge", enc.bridge[i]), ("target", enc.targets[i, 0])):
                    expected = order.index(int(tok))
                    # ties would make the sort position ambiguous; the batched rank counts strictly greater logits
                    assert ranks[role][s, i, p] == (logits[p] > logits[p, int(tok)]).sum() <= expected
    argmax = stage_argmax(model, tokens, chunk=5)
    rates = found_rates(model, argmax, enc.bridge, enc.targets[:, 0])
    mask = bridge_mask(model, *argmax.shape[::2])
    ref_b = np.mean([any(argmax[s, i, p] == enc.bridge[i] and mask[s, p] for s in range(argmax.shape[0])
                         for p in range(argmax.shape[2])) for i in range(len(rows))])
    assert rates["bridge_found"] == pytest.approx(ref_b)


@pytest.mark.parametrize("family", ["gpt", "trm"])
def test_causal_tracing_matches_per_example_reference(trained, family):
    model, ds = _model(trained, family)
    rows, enc = _probe_enc(ds, n=30)
    cf = counterfactual_tokens(ds, rows, seed=0)
    strength, counts, labels = causal_strength(model, enc, cf)
    names, _, offset = _setup(model)
    prompts = _prompts(model, enc)

    def correct(tokens, target):
        with torch.no_grad():
            if family == "gpt":
                return int(model(tokens)[0, 2].argmax()) == target
            return int(model(tokens)[0, 3].argmax()) == target

    for p in range(3):
        flips = {s: [] for s in range(len(names))}
        for i in range(len(rows)):
            t = int(enc.targets[i, 0])
            if cf[i, p] < 0 or not correct(prompts[i:i + 1], t):
                continue
            corrupt = prompts[i:i + 1].clone()
            corrupt[0, p] = int(cf[i, p])
            _, cache = model.run_with_cache(corrupt, names_filter=names)
            for s, name in enumerate(names):
                def patch(act, hook, donor=cache[name][0, offset + p], pos=offset + p):
                    act = act.clone()
                    act[0, pos] = donor
                    return act
                with model.hooks([(name, patch)]):
                    flips[s].append(not correct(prompts[i:i + 1], t))
        assert counts[p] == len(flips[0])
        for s in range(len(names)):
            if flips[s]:
                assert strength[s, p].item() == pytest.approx(np.mean(flips[s]), abs=1e-6)


def test_counterfactuals_follow_wang_rules(trained):
    _, ds = trained
    rows = ds.probe("train_inferred")[:50]
    cf = counterfactual_tokens(ds, rows)
    v = ds.vocab
    atomic = ds.arrays["atomic"]
    tail = {(h, r): t for h, r, _, _, t in atomic.tolist()}
    for (h, r1, r2, b, t), (ch, cr1, cr2) in zip(rows.tolist(), cf.tolist()):
        if cr2 >= 0:
            r2p = cr2 - 1 - v.num_entities
            assert r2p != r2 and tail.get((b, r2p)) not in (None, t)
        if cr1 >= 0:
            r1p = cr1 - 1 - v.num_entities
            bp = tail.get((h, r1p))
            assert r1p != r1 and bp is not None and tail.get((bp, r2)) != t
        if ch >= 0:
            hp = ch - 1
            assert hp != h and tail.get((tail.get((hp, r1)), r2)) != t


def test_trm_exact_match_matches_string_reference(trained):
    model, ds = _model(trained, "trm")
    rows, enc = _probe_enc(ds)
    _, logits, _ = forward_loss(model, enc, "stablemax")
    em = exact_match(model, enc, logits, ds.vocab.end_id)
    for i in range(len(rows)):  # the original: decode, drop pads, cut at </a>, compare strings (§5)
        out = ds.vocab.decode(logits[i].argmax(-1).tolist()).split("</a>")[0]
        gold = ds.vocab.decode(enc.seq[i].tolist()).split("</a>")[0]
        assert bool(em[i]) == (out == gold)


def test_compare_same_model_is_same_path(trained):
    model, ds = _model(trained, "gpt")
    rows, enc = _probe_enc(ds)
    cmp = compare_paths(model, model, enc, ds, rows)
    assert cmp.same_first_stage == 1.0 and cmp.verdict == "same path"
    assert cmp.bridge_profile_corr in (None, pytest.approx(1.0))


def test_regime_classification():
    def rows(train, ood, bridge):
        return [{"step": 100 * i, "train_acc": a, "test_inferred_ood": o, "bridge_found_ood": b}
                for i, (a, o, b) in enumerate(zip(train, ood, bridge))]
    sat = [0.5, 0.98, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99]
    assert classify_regime(rows(sat, [0, 0, 0, 0, 0.1, 0.3, 0.6, 0.95], [0, .2, .5, .9, .95, 1, 1, 1]))[
        "regime"] == "natural grokking"
    assert classify_regime(rows(sat, [0, 0.6, 0.95, 0.95, 1, 1, 1, 1], [0, .5, .95, 1, 1, 1, 1, 1]))[
        "regime"] == "no delay"
    r = classify_regime(rows(sat, [0, 0, 0, 0.2, 0.5, 0.95, 0.96, 0.97], [0, .1, .1, .2, .2, .2, .3, .2]))
    assert r["regime"] == "fake grokking" and not r["circuit"]
    assert classify_regime(rows(sat, [0] * 8, [0] * 8))["regime"] == "no generalisation"


def test_analyze_cli_writes_tables(cli, trained):
    root, _ = trained
    code, out, err = cli("analyze", root / "gpt", "--steps", "0,last", "--probes", "ood,train")
    assert code == 0, err
    lens = pd.read_parquet(root / "gpt" / "analysis" / "lens.parquet")
    trace = pd.read_parquet(root / "gpt" / "analysis" / "trace.parquet")
    assert set(lens.step) == {0, 300} and set(lens.probe_type) == {"test_inferred_ood", "train_inferred"}
    assert {"run", "step", "probe_type", "stage", "position", "metric", "value"} <= set(lens.columns)
    assert set(trace.position) == {"h", "r1", "r2"} and trace.value.between(0, 1).all()
    assert "regime (ood)" in out and "compare step 0 vs 300" in out
    # re-running one step replaces its rows, keeps the others
    assert cli("analyze", root / "gpt", "--steps", "last", "--probes", "ood", "--analyses", "lens")[0] == 0
    lens2 = pd.read_parquet(root / "gpt" / "analysis" / "lens.parquet")
    assert len(lens2) == len(lens)
    code, _, err = cli("analyze", root / "gpt", "--probes", "nonsense")
    assert code == 2 and "nonsense" in err
    code, out, err = cli("compare", f"{root / 'gpt'}@0", f"{root / 'gpt'}@300")
    assert code == 0 and "compositions" in out, err
    code, _, err = cli("compare", f"{root / 'gpt'}@0", f"{root / 'trm'}")
    assert code == 2 and "same family" in err


@pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None, reason="transformer-lens not installed")
def test_gpt_lens_agrees_with_transformer_lens(trained):
    from grokscope.models.export_tl import to_transformer_lens

    model, ds = _model(trained, "gpt")
    _, enc = _probe_enc(ds)
    tl = to_transformer_lens(model)
    tokens = lens_inputs(model, enc)
    _, cache = tl.run_with_cache(tokens)
    ranks = lens_ranks(model, enc)
    for layer in range(model.cfg.n_layers):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        logits = tl.unembed(tl.ln_final(resid))
        ours = model.unembed(model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post")[1][
            f"blocks.{layer}.hook_resid_post"])
        torch.testing.assert_close(logits, ours, atol=1e-4, rtol=1e-4)
        tl_rank = (logits > torch.gather(logits, -1, enc.bridge.view(-1, 1, 1).expand(-1, 3, 1))).sum(-1)
        assert torch.equal(tl_rank, ranks["bridge"][layer + 1])
