"""Causal tracing by activation patching (Wang et al.), batched, for any model family.

Context: a clean prompt (h, r1, r2) whose answer t the model gets right, and a counterfactual prompt that differs
in one token (h', r1' or r2') and does *not* lead to t. Intuition: if copying the counterfactual's state at
(stage, position) into the clean run destroys the correct prediction, that state carries information the answer
depends on. Causal strength at (stage, position) = the share of clean-correct examples whose top-1 answer flips.

The states are the family's ``patch_stages``: for the gpt the embeddings and the outputs of blocks 1..L-1 (the
model is causal, so a counterfactual prompt with one token replaced gives exactly Wang et al.'s truncated-prompt
states at the replaced position); for the trm the recursion stages after init, with the carried patch bridge use
uses (the position's state replaced at that stage and every later one: the trm re-injects its clean input at every
update, so a one-stage patch is overwritten by the next). Counterfactuals follow Wang et al.'s rules
(``data/counterfactuals.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from grokscope.data.counterfactuals import counterfactual_tokens
from grokscope.data.encoding import Encoded
from grokscope.data.store import Dataset
from grokscope.metrics.records import TIDY_COLUMNS
from grokscope.models.readout import patched_stages, replace_at

POSITIONS = ("h", "r1", "r2")


def causal_strength(model, enc: Encoded, counterfactual: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(strength [n_states, 3], examples per position [3], state labels).

    Only examples the clean model answers correctly and that have a counterfactual for the position count."""
    flips, labels = causal_flips(model, enc, counterfactual)
    strength = torch.stack([f.float().mean(0) if len(f) else torch.zeros(len(labels)) for f in flips], dim=1)
    return strength, torch.tensor([len(f) for f in flips], dtype=torch.long), labels


@torch.no_grad()
def causal_flips(model, enc: Encoded, counterfactual: np.ndarray) -> tuple[list[torch.Tensor], list]:
    """Per position (h, r1, r2): [kept examples, n_states] booleans, whether the example's correct answer flipped when
    that state was patched (the per-query records behind causal strength, which the path test resamples)."""
    stages = model.patch_stages()
    names, labels = [hook for _, hook in stages], [label for label, _ in stages]
    device = model.device
    clean = model.prompt(enc).to(device)
    target = enc.answer.to(device)
    clean_ok = model.answer_logits(clean).argmax(-1) == target
    flips = []
    for p in range(3):
        cf_tok = torch.from_numpy(counterfactual[:, p]).to(device)
        keep = clean_ok & (cf_tok >= 0)
        flipped = torch.zeros(int(keep.sum()), len(names), dtype=torch.bool)
        flips.append(flipped)
        if not len(flipped):
            continue
        prompt, corrupt = clean[keep], clean[keep].clone()
        corrupt[:, p] = cf_tok[keep]
        _, cf_cache = model.run_with_cache(corrupt, names_filter=names)
        patch = replace_at(model.token_offset + p, cf_cache)
        for s in range(len(names)):
            with model.hooks([(name, patch) for name in patched_stages(model, names, s)]):
                flipped[:, s] = (model.answer_logits(prompt).argmax(-1) != target[keep]).cpu()
    return flips, labels


def trace_table(model, enc: Encoded, ds: Dataset, rows: np.ndarray, probe_type: str, run: str = "",
                step: int = 0, seed: int = 0) -> pd.DataFrame:
    """Tidy causal-tracing table: (stage, position) -> causal_strength, with n per position."""
    strength, counts, labels = causal_strength(model, enc, counterfactual_tokens(ds, rows, seed=seed))
    records = [(run, step, probe_type, labels[s], s, POSITIONS[p], "causal_strength", float(strength[s, p]),
                int(counts[p])) for s in range(len(labels)) for p in range(3)]
    return pd.DataFrame.from_records(records, columns=TIDY_COLUMNS)
