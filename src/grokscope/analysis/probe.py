"""Bridge decodable: is the bridge entity b linearly readable from a model's states, where He et al.'s top-1 lens may
not see it? (``docs/methods.md``, "Bridge decodable").

A ridge probe (closed form, standardised features) maps the state at one stage x token slot to a one-hot b. It is
fitted on trained ID compositions and scored on held-out ID compositions, OOD compositions and, for a fine-tune, the
new-fact categories. The slot is chosen on held-out ID (the best stage x slot there, among the cells the family's
"bridge found" counts: the gpt's r2 position, every slot of the trm), never on the sets it reports, so the OOD
number is not the best of many tries. Three controls must score low, and are reported beside it:

- the same probe fitted on shuffled labels (a probe that memorises the fit set);
- the same probe on the step-0 model's states (a code the architecture has before training);
- a probe on the query's own tokens, one-hot (h, r1, r2): what the inputs alone give away.

What it shows: a code for b exists at that state. What it does not: that the second hop reads it; bridge use (the
interchange intervention) is the causal test. For a family whose state is carried (the trm), bridge use is also
measured with the patch at the probe's chosen slot instead of r1 (``bridge_use_at``), since its code for b may sit
at the answer slot.
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.data.encoding import encode
from grokscope.data.store import Dataset, is_composition
from grokscope.metrics.intervals import Rate
from grokscope.models.readout import interchange
from grokscope.training.evaluate import bridge_use_set

RIDGE = 1.0  # the probe's L2 penalty on standardised features (toolkit choice: a few hundred features, >= 1k rows)
FIT_ROWS = 5000  # trained ID compositions the probe is fitted on (the analysis samples up to this many)
B = 3  # column of the bridge entity in a composition row (h, r1, r2, b, t)


@torch.no_grad()
def slot_states(model, rows: np.ndarray, ds: Dataset, chunk: int = 1024) -> np.ndarray:
    """[S, queries, T, D] float32: every readout stage's state at every token slot of the compositions ``rows``."""
    enc = encode(ds, rows).to(model.device)
    tokens = model.prompt(enc)
    names = [hook for _, hook in model.readout_stages()]
    T, offset = tokens.shape[1], model.token_offset
    parts = []
    for i in range(0, len(tokens), chunk):
        _, cache = model.run_with_cache(tokens[i:i + chunk], names_filter=names)
        parts.append(torch.stack([cache[n][:, offset:offset + T].float() for n in names]).cpu())
    return torch.cat(parts, dim=1).numpy()


class Ridge:
    """Standardised ridge regression to one-hot labels, predicting the label with the largest score."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: int, penalty: float = RIDGE):
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        z = self._design(x)
        target = np.zeros((len(y), classes), np.float64)
        target[np.arange(len(y)), y] = 1.0
        gram = z.T @ z + penalty * np.eye(z.shape[1])
        gram[-1, -1] -= penalty  # the intercept is not penalised
        self.w = np.linalg.solve(gram, z.T @ target)

    def _design(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.std
        return np.hstack([z, np.ones((len(z), 1))])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self._design(x) @ self.w).argmax(1)


def one_hot_tokens(rows: np.ndarray, ds: Dataset) -> np.ndarray:
    """The query's own tokens as features: one-hot h, r1 and r2."""
    n_e, n_r = ds.vocab.num_entities, ds.vocab.num_relations
    out = np.zeros((len(rows), n_e + 2 * n_r), np.float32)
    out[np.arange(len(rows)), rows[:, 0]] = 1
    out[np.arange(len(rows)), n_e + rows[:, 1]] = 1
    out[np.arange(len(rows)), n_e + n_r + rows[:, 2]] = 1
    return out


def fit_rows(ds: Dataset, limit: int = FIT_ROWS, seed: int = 0) -> np.ndarray:
    """Trained ID compositions (the natural ones: no OOD hop), at most ``limit``, seeded."""
    rows = ds.arrays["train_inferred"]
    source = ds.arrays.get("train_inferred.source")
    if source is not None:
        rows = rows[source == 0]
    rows = rows[is_composition(rows)]
    if len(rows) > limit:
        rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))]
    return rows


USE_CAP = 256  # queries per set for bridge use at the probe's slot (as the in-loop bridge use)


def bridge_use_at(model, ds: Dataset, rows: np.ndarray, slot: int, cap: int = USE_CAP) -> dict | None:
    """Bridge use with the patch at token ``slot`` (the donors and expected answers of ``data/counterfactuals``):
    the share of patched queries that answer as the moved b says, at the best stage; None without patches."""
    use = bridge_use_set(ds, model, rows, cap).to(model.device)
    if not len(use):
        return None
    patched = interchange(model, use.source, use.target, position=slot)
    per_stage = (patched == use.expect.view(1, -1)).float().mean(1)
    rate = Rate(float(per_stage.max()), len(use))
    return {"value": rate.value, "n": rate.n, "interval": list(rate.interval)}


def bridge_decodable(model, ds: Dataset, sets: dict[str, np.ndarray], fit: np.ndarray | None = None,
                     step0_model=None, seed: int = 0) -> dict:
    """The probe on every stage x slot of ``model``: per set (``sets``: name -> composition rows; one named
    ``test_inferred_iid`` chooses the slot), the accuracy at the chosen slot with its n, the accuracy matrix, and the
    three controls at the chosen slot on every set."""
    fit = fit_rows(ds, seed=seed) if fit is None else fit
    classes = ds.vocab.num_entities
    stages = [label for label, _ in model.readout_stages()]
    x_fit = slot_states(model, fit, ds)
    S, _, T, _ = x_fit.shape
    states = {name: slot_states(model, rows, ds) for name, rows in sets.items() if len(rows)}
    probes = [[Ridge(x_fit[s, :, p], fit[:, B], classes) for p in range(T)] for s in range(S)]
    matrix = {name: [[float((probes[s][p].predict(x[s, :, p]) == sets[name][:, B]).mean()) for p in range(T)]
                     for s in range(S)] for name, x in states.items()}
    # Only the cells the family's bridge found counts (the gpt: the r2 position; at r1 a decoder has seen exactly the
    # atomic query (h, r1), so b is there whenever it knows the first hop, composition or not).
    counted = model.bridge_found_mask(S, T).cpu().numpy().astype(bool)
    chooser = np.where(counted, np.asarray(matrix.get("test_inferred_iid") or next(iter(matrix.values()))), -1.0)
    s_best, p_best = (int(i) for i in np.unravel_index(int(np.argmax(chooser)), (S, T)))

    def at(correct: np.ndarray) -> dict:
        rate = Rate(float(correct.mean()), int(len(correct)))
        return {"value": rate.value, "n": rate.n, "interval": list(rate.interval)}

    shuffled = Ridge(x_fit[s_best, :, p_best], np.random.default_rng(seed).permutation(fit[:, B]), classes)
    tokens = Ridge(one_hot_tokens(fit, ds), fit[:, B], classes)
    out = {"stages": stages, "slots": T, "fit_n": int(len(fit)), "chosen": {"stage": stages[s_best], "slot": p_best},
           "counted": counted.tolist(), "sets": {}, "matrix": matrix}
    zero = None
    if step0_model is not None:
        zero_fit = slot_states(step0_model, fit, ds)[s_best, :, p_best]
        zero = Ridge(zero_fit, fit[:, B], classes)
    for name, x in states.items():
        y = sets[name][:, B]
        entry = {"probe": at(probes[s_best][p_best].predict(x[s_best, :, p_best]) == y),
                 "shuffled labels": at(shuffled.predict(x[s_best, :, p_best]) == y),
                 "query tokens": at(tokens.predict(one_hot_tokens(sets[name], ds)) == y)}
        if zero is not None:
            entry["step-0 model"] = at(zero.predict(slot_states(step0_model, sets[name], ds)[s_best, :, p_best]) == y)
        out["sets"][name] = entry
        if getattr(model, "carried_patch", False):  # not a control: the causal test at the probe's slot
            out.setdefault("bridge_use_at_slot", {})[name] = bridge_use_at(model, ds, sets[name], p_best)
    return out
