"""Causal tracing by activation patching (Wang et al. §6.3; PAPER_SPEC §6.3 points 3-5), batched.

Context: a clean prompt (h, r1, r2) whose answer t the model gets right, and a counterfactual prompt that differs
in one token (h', r1' or r2') and does *not* lead to t. Intuition: if copying the counterfactual's residual stream
at (layer l, position p) into the clean run destroys the correct prediction, that state carries information the
answer depends on. Causal strength at (l, p) = the fraction of clean-correct examples whose top-1 answer flips.

gpt: states are the embeddings (layer 0) and the outputs of blocks 1..L-1 (the final block's output is the
prediction itself); the model is causal, so a counterfactual prompt with one token replaced gives exactly Wang's
truncated-prompt states at the replaced position. trm: states are the recursion stages (z_L or z_H, as the lens),
and the counterfactual replaces one input token (the model is bidirectional).
Counterfactuals follow Wang's rules, drawn per example with a generator seeded by the example index (A.14).
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.data.store import Dataset
from grokscope.train.batches import Encoded

POSITIONS = ("h", "r1", "r2")


def counterfactual_tokens(ds: Dataset, rows: np.ndarray, seed: int = 0, tries: int = 50) -> np.ndarray:
    """[n, 3] token id replacing h / r1 / r2 of each composition (-1 where no valid counterfactual exists).

    h': an entity with ID facts such that (h', r1, r2) has no answer or another one; r1': another ID relation of h
    whose bridge b' gives no or another answer via r2; r2': another ID relation of b whose tail is not t."""
    atomic = ds.arrays["atomic"]
    is_id = ~ds.arrays["atomic.is_ood"].astype(bool)
    if "atomic.is_new" in ds.arrays:
        is_id &= ~ds.arrays["atomic.is_new"].astype(bool)
    n_ent, n_rel = ds.vocab.num_entities, ds.vocab.num_relations
    tail = np.full((n_ent, n_rel), -1, dtype=np.int64)
    tail[atomic[is_id, 0], atomic[is_id, 1]] = atomic[is_id, 4]
    heads = np.unique(atomic[is_id, 0])
    out = np.full((len(rows), 3), -1, dtype=np.int64)

    def answer(h, r1, r2):
        b = tail[h, r1]
        return -1 if b < 0 else tail[b, r2]

    for i, (h, r1, r2, b, t) in enumerate(rows.tolist()):
        rng = np.random.default_rng([seed, i])
        for _ in range(tries):
            h2 = int(rng.choice(heads))
            if h2 != h and answer(h2, r1, r2) != t:
                out[i, 0] = ds.vocab.entity_id(h2)
                break
        rels = [r for r in np.flatnonzero(tail[h] >= 0) if r != r1 and answer(h, r, r2) != t]
        if rels:
            out[i, 1] = ds.vocab.relation_id(int(rng.choice(rels)))
        rels = [r for r in np.flatnonzero(tail[b] >= 0) if r != r2 and tail[b, r] != t]
        if rels:
            out[i, 2] = ds.vocab.relation_id(int(rng.choice(rels)))
    return out


def _setup(model):
    """(prompt builder, state hook names, state labels, token offset, answer position) per family."""
    if model.family == "gpt":
        L = model.cfg.n_layers
        names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(L - 1)]
        return names, [f"L{l}" for l in range(L)], 0
    stages = [s for s in model.cfg.stage_names() if s != "init"]  # init is a constant: patching it is a no-op
    return [f"stage.{s}" for s in stages], stages, model.cfg.puzzle_emb_len


def _prompts(model, enc: Encoded) -> torch.Tensor:
    return enc.seq[:, :3].clone() if model.family == "gpt" else enc.inputs.clone()


@torch.no_grad()
def _answer_correct(model, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if model.family == "gpt":
        at = torch.full((len(tokens), 1), 2, dtype=torch.long)
        return model(tokens, at=at)[:, 0].argmax(-1) == target
    return model(tokens)[:, 3].argmax(-1) == target  # the answer slot of [h, r1, r2, t, </a>]


@torch.no_grad()
def causal_strength(model, enc: Encoded, counterfactual: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Returns (strength [n_states, 3], n examples per position [3], state labels).

    Only examples the clean model answers correctly and that have a counterfactual for the position count."""
    names, labels, offset = _setup(model)
    clean = _prompts(model, enc)
    target = enc.targets[:, 0]
    clean_ok = _answer_correct(model, clean, target)
    strength = torch.zeros(len(names), 3)
    counts = torch.zeros(3, dtype=torch.long)
    for p in range(3):
        cf_tok = torch.from_numpy(counterfactual[:, p])
        keep = clean_ok & (cf_tok >= 0)
        counts[p] = int(keep.sum())
        if counts[p] == 0:
            continue
        prompt, corrupt = clean[keep], clean[keep].clone()
        corrupt[:, p] = cf_tok[keep]
        _, cf_cache = model.run_with_cache(corrupt, names_filter=names)
        for s, name in enumerate(names):
            donor = cf_cache[name][:, offset + p]

            def patch(act, hook, donor=donor, pos=offset + p):
                act = act.clone()
                act[:, pos] = donor
                return act

            with model.hooks([(name, patch)]):
                ok = _answer_correct(model, prompt, target[keep])
            strength[s, p] = 1 - ok.float().mean()
    return strength, counts, labels


def trace_table(model, enc: Encoded, ds: Dataset, rows: np.ndarray, probe_type: str, run: str = "",
                step: int = 0, seed: int = 0):
    """Tidy causal-tracing table: (stage, position) -> causal_strength, with n per position."""
    import pandas as pd

    cf = counterfactual_tokens(ds, rows, seed=seed)
    strength, counts, labels = causal_strength(model, enc, cf)
    records = [(run, step, probe_type, labels[s], s, POSITIONS[p], "causal_strength", float(strength[s, p]),
                int(counts[p])) for s in range(len(labels)) for p in range(3)]
    return pd.DataFrame.from_records(records, columns=["run", "step", "probe_type", "stage", "stage_index",
                                                       "position", "metric", "value", "n"])
