"""Batched evaluation at a cadence: exact match and loss per probe set, training accuracy (as He et al.'s Fig. 2
plots it: the mean over the three training probe types), and the in-loop circuit measures: He et al.'s bridge-found
/ target-found rates from the logit lens, and bridge use from the interchange intervention at r1
(``docs/methods.md``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from grokscope.data.counterfactuals import FORWARD, bridge_patches
from grokscope.data.encoding import Encoded, encode
from grokscope.data.store import COLUMNS, Dataset, is_composition
from grokscope.models.family import LossSpec
from grokscope.models.readout import bridge_use_rates, found_rates, interchange, stage_argmax

TRAIN_ACC_TYPES = ("id_atomic", "ood_atomic", "train_inferred")
LENS_SETS = {"ood": "test_inferred_ood", "iid": "test_inferred_iid"}  # metric suffix -> probe set


@dataclass
class BridgeUseSet:
    """The bridge-use patches of a probe set (``data/counterfactuals.bridge_patches``): the r1 state of each
    ``source`` prompt goes into its ``target`` prompt, which should then answer ``expect`` (token ids)."""

    source: torch.Tensor  # [n, T] in the model's prompt layout
    target: torch.Tensor  # [n, T]
    expect: torch.Tensor  # [n]

    def __len__(self) -> int:
        return len(self.expect)

    def to(self, device) -> "BridgeUseSet":
        return BridgeUseSet(self.source.to(device), self.target.to(device), self.expect.to(device))


@dataclass
class RetainedSet:
    """A mixed category (one new, one old hop) and the old hop of each of its queries as an atomic fact: the
    category is also scored on the queries whose old hop the model still answers (``<name>_retained``)."""

    compositions: Encoded
    old_hops: Encoded

    def to(self, device) -> "RetainedSet":
        return RetainedSet(self.compositions.to(device), self.old_hops.to(device))


@dataclass
class EvalSets:
    probes: dict[str, Encoded]  # exact match + loss per name
    lens: dict[str, str]  # metric suffix -> probe name: bridge_found_<suffix>, target_found_<suffix>, bridge@...
    bridge_use: dict[str, BridgeUseSet]  # metric suffix -> set: bridge_use_<suffix>, bridge_use@<stage>_<suffix>
    retained: dict[str, RetainedSet] = field(default_factory=dict)  # probe name -> its old hops

    def to(self, device) -> "EvalSets":
        return EvalSets({k: v.to(device) for k, v in self.probes.items()}, dict(self.lens),
                        {k: v.to(device) for k, v in self.bridge_use.items()},
                        {k: v.to(device) for k, v in self.retained.items()})


def bridge_use_set(ds: Dataset, model, rows: np.ndarray, cap: int) -> BridgeUseSet:
    """The first ``cap`` compositions of ``rows`` (probe sets are already random samples) that have a patch."""
    rows = rows[is_composition(rows)][:cap]
    patches = bridge_patches(ds, rows)
    keep = patches["direction"] >= 0
    rows, other = rows[keep], patches["other"][keep]
    query, partner = model.prompt(encode(ds, rows)), model.prompt(encode(ds, other))
    forward = torch.from_numpy(patches["direction"][keep] == FORWARD).view(-1, 1)
    expect = torch.from_numpy(ds.vocab.entity_id(patches["expect"][keep]))
    return BridgeUseSet(torch.where(forward, partner, query), torch.where(forward, query, partner), expect)


def old_hop_rows(rows: np.ndarray, category: int) -> np.ndarray:
    """The old hop of each mixed composition as an atomic row: (b, r2, t) for new+old (category 1), (h, r1, b) for
    old+new (category 2)."""
    out = np.full((len(rows), len(COLUMNS)), -1, dtype=rows.dtype)
    h, r, t = (3, 2, 4) if category == 1 else (0, 1, 3)
    out[:, 0], out[:, 1], out[:, 4] = rows[:, h], rows[:, r], rows[:, t]
    return out


def eval_sets(ds: Dataset, model, probes: dict[str, np.ndarray], lens: dict[str, str], bridge_use_cap: int,
              mixed: dict[str, int] | None = None) -> EvalSets:
    """Encoded probe sets; lens rates and bridge use on the sets ``lens`` names (bridge use capped per set);
    ``mixed`` (probe name -> category code) marks the mixed categories also scored on retained old hops."""
    sets = {name: encode(ds, rows) for name, rows in probes.items()}
    use = {}
    if bridge_use_cap > 0 and ds.task == "composition":  # a comparison has no bridge entity to swap
        for suffix, name in lens.items():
            if len(probes.get(name, ())) and is_composition(probes[name]).any():
                use[suffix] = bridge_use_set(ds, model, probes[name], bridge_use_cap)
    retained = {name: RetainedSet(sets[name], encode(ds, old_hop_rows(probes[name], code)))
                for name, code in (mixed or {}).items() if len(probes.get(name, ()))}
    return EvalSets(sets, dict(lens), use, retained)


def correct_each(model, enc: Encoded, loss_spec: LossSpec, end_id: int, batch_size: int) -> torch.Tensor:
    """[n] exact match of every item."""
    parts = []
    for i in range(0, len(enc), batch_size):
        batch = enc.take(torch.arange(i, min(i + batch_size, len(enc)), device=enc.device))
        parts.append(model.exact_match(batch, model.forward_batch(batch), end_id, loss_spec.positions))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=enc.device)


def retained_rates(model, name: str, ret: RetainedSet, loss_spec: LossSpec, end_id: int, batch_size: int
                   ) -> dict[str, float]:
    """``retention_<name>``: share of the old hops still answered; ``<name>_retained``: exact match of the
    compositions whose old hop is (a fine-tune that forgot the old fact fails the composition for that reason, not
    for lack of a circuit); each with its n."""
    kept = correct_each(model, ret.old_hops, loss_spec, end_id, batch_size)
    out = {f"retention_{name}": float(kept.float().mean()), f"n/retention_{name}": len(kept),
           f"n/{name}_retained": int(kept.sum())}
    if kept.any():
        right = correct_each(model, ret.compositions.take(torch.nonzero(kept).flatten()), loss_spec, end_id,
                             batch_size)
        out[f"{name}_retained"] = float(right.float().mean())
    return out


@torch.no_grad()
def evaluate(model, sets: EvalSets, loss_spec: LossSpec, end_id: int, batch_size: int) -> dict[str, float]:
    """Exact match (on the tokens ``loss_spec`` trains) and loss per probe set; training accuracy; lens rates and
    bridge use."""
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for name, enc in sets.probes.items():
        if len(enc) == 0:
            continue
        correct = torch.zeros((), dtype=torch.long, device=enc.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=enc.device)
        for i in range(0, len(enc), batch_size):
            batch = enc.take(torch.arange(i, min(i + batch_size, len(enc)), device=enc.device))
            output = model.forward_batch(batch)
            loss_sum += model.loss(batch, output, loss_spec).double() * len(batch)
            correct += model.exact_match(batch, output, end_id, loss_spec.positions).sum()
        out[name] = int(correct) / len(enc)
        out[f"loss/{name}"] = float(loss_sum) / len(enc)
        out[f"n/{name}"] = len(enc)  # the denominator, so every rate can carry an interval
    present = [t for t in TRAIN_ACC_TYPES if t in out]
    if present:
        out["train_acc"] = sum(out[t] for t in present) / len(present)
    for suffix, name in sets.lens.items():
        enc = sets.probes.get(name)
        if enc is None or len(enc) == 0:
            continue
        compositions = enc.take(torch.nonzero(enc.bridge >= 0).flatten())
        if len(compositions) == 0:
            continue
        argmax = stage_argmax(model, model.prompt(compositions), chunk=batch_size)
        for key, value in found_rates(model, argmax, compositions.bridge, compositions.answer).items():
            out[f"{key}_{suffix}"] = value
        out[f"n/bridge_found_{suffix}"] = len(compositions)
    for suffix, use in sets.bridge_use.items():
        if len(use):
            patched = interchange(model, use.source, use.target, chunk=batch_size)
            for key, value in bridge_use_rates(model, patched, use.expect).items():
                out[f"{key}_{suffix}"] = value
            out[f"n/bridge_use_{suffix}"] = len(use)
    for name, ret in sets.retained.items():
        out.update(retained_rates(model, name, ret, loss_spec, end_id, batch_size))
    model.train(was_training)
    return out
