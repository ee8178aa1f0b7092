"""Batched evaluation at a cadence: exact match and loss per probe set, training accuracy (as He et al.'s Fig. 2
plots it: the mean over the three training probe types), and the in-loop circuit measures: He et al.'s bridge-found
/ target-found rates from the logit lens, and bridge use from the interchange intervention at r1
(``docs/methods.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grokscope.data.counterfactuals import bridge_donors
from grokscope.data.encoding import Encoded, encode
from grokscope.data.store import Dataset
from grokscope.models.family import LossSpec
from grokscope.models.readout import bridge_use_rates, found_rates, interchange, stage_argmax

TRAIN_ACC_TYPES = ("id_atomic", "ood_atomic", "train_inferred")
LENS_SETS = {"ood": "test_inferred_ood", "iid": "test_inferred_iid"}  # metric suffix -> probe set


@dataclass
class BridgeUseSet:
    """Composition prompts and their interchange donors (h', r1', t'), as token ids."""

    clean: torch.Tensor  # [n, T] in the model's prompt layout
    donor: torch.Tensor  # [n, 3]

    def to(self, device) -> "BridgeUseSet":
        return BridgeUseSet(self.clean.to(device), self.donor.to(device))


@dataclass
class EvalSets:
    probes: dict[str, Encoded]  # exact match + loss per name
    lens: dict[str, str]  # metric suffix -> probe name: bridge_found_<suffix>, target_found_<suffix>, bridge@...
    bridge_use: dict[str, BridgeUseSet]  # metric suffix -> set: bridge_use_<suffix>, bridge_use@<stage>_<suffix>

    def to(self, device) -> "EvalSets":
        return EvalSets({k: v.to(device) for k, v in self.probes.items()}, dict(self.lens),
                        {k: v.to(device) for k, v in self.bridge_use.items()})


def bridge_use_set(ds: Dataset, model, rows: np.ndarray, cap: int) -> BridgeUseSet:
    """The first ``cap`` compositions of ``rows`` (probe sets are already random samples) that have a donor."""
    rows = rows[rows[:, 2] >= 0][:cap]
    donor = torch.from_numpy(bridge_donors(ds, rows))
    keep = donor[:, 0] >= 0
    return BridgeUseSet(model.prompt(encode(ds, rows))[keep], donor[keep])


def eval_sets(ds: Dataset, model, probes: dict[str, np.ndarray], lens: dict[str, str], bridge_use_cap: int) -> EvalSets:
    """Encoded probe sets; lens rates and bridge use on the sets ``lens`` names (bridge use capped per set)."""
    sets = {name: encode(ds, rows) for name, rows in probes.items()}
    use = {}
    if bridge_use_cap > 0:
        for suffix, name in lens.items():
            if len(probes.get(name, ())) and (probes[name][:, 2] >= 0).any():
                use[suffix] = bridge_use_set(ds, model, probes[name], bridge_use_cap)
    return EvalSets(sets, dict(lens), use)


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
        if len(use.clean):
            patched = interchange(model, use.clean, use.donor, chunk=batch_size)
            for key, value in bridge_use_rates(model, patched, use.donor[:, 2]).items():
                out[f"{key}_{suffix}"] = value
            out[f"n/bridge_use_{suffix}"] = len(use.clean)
    model.train(was_training)
    return out
