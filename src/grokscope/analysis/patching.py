"""Causal tracing by activation patching (Wang et al.), batched, for any model family.

Context: a clean prompt (h, r1, r2) whose answer t the model gets right, and a counterfactual prompt that differs
in one token (h', r1' or r2') and does *not* lead to t. Intuition: if copying the counterfactual's state at
(stage, position) into the clean run destroys the correct prediction, that state carries information the answer
depends on. Causal strength at (stage, position) = the share of clean-correct examples whose top-1 answer flips.

The states are the family's ``patch_stages``: for the gpt the embeddings and the outputs of blocks 1..L-1 (the
model is causal, so a counterfactual prompt with one token replaced gives exactly Wang et al.'s truncated-prompt
states at the replaced position); for the trm the recursion stages after init. Counterfactuals follow Wang et al.'s
rules (``data/counterfactuals.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from grokscope.data.counterfactuals import counterfactual_tokens
from grokscope.data.encoding import Encoded
from grokscope.data.store import Dataset
from grokscope.metrics.records import TIDY_COLUMNS
from grokscope.models.readout import replace_at

POSITIONS = ("h", "r1", "r2")


@torch.no_grad()
def causal_strength(model, enc: Encoded, counterfactual: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(strength [n_states, 3], examples per position [3], state labels).

    Only examples the clean model answers correctly and that have a counterfactual for the position count."""
    stages = model.patch_stages()
    names, labels = [hook for _, hook in stages], [label for label, _ in stages]
    device = model.device
    clean = model.prompt(enc).to(device)
    target = enc.answer.to(device)
    clean_ok = model.answer_logits(clean).argmax(-1) == target
    strength = torch.zeros(len(names), 3)
    counts = torch.zeros(3, dtype=torch.long)
    for p in range(3):
        cf_tok = torch.from_numpy(counterfactual[:, p]).to(device)
        keep = clean_ok & (cf_tok >= 0)
        counts[p] = int(keep.sum())
        if counts[p] == 0:
            continue
        prompt, corrupt = clean[keep], clean[keep].clone()
        corrupt[:, p] = cf_tok[keep]
        _, cf_cache = model.run_with_cache(corrupt, names_filter=names)
        patch = replace_at(model.token_offset + p, cf_cache)
        for s, name in enumerate(names):
            with model.hooks([(name, patch)]):
                ok = model.answer_logits(prompt).argmax(-1) == target[keep]
            strength[s, p] = 1 - ok.float().mean().cpu()
    return strength, counts, labels


def trace_table(model, enc: Encoded, ds: Dataset, rows: np.ndarray, probe_type: str, run: str = "",
                step: int = 0, seed: int = 0) -> pd.DataFrame:
    """Tidy causal-tracing table: (stage, position) -> causal_strength, with n per position."""
    strength, counts, labels = causal_strength(model, enc, counterfactual_tokens(ds, rows, seed=seed))
    records = [(run, step, probe_type, labels[s], s, POSITIONS[p], "causal_strength", float(strength[s, p]),
                int(counts[p])) for s in range(len(labels)) for p in range(3)]
    return pd.DataFrame.from_records(records, columns=TIDY_COLUMNS)
