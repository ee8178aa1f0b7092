"""Batched evaluation on every probe type: exact match (PAPER_SPEC §5), loss, and the in-loop circuit measures
(bridge-found / target-found rates from the batched logit lens)."""

from __future__ import annotations

import torch

from grokscope.analysis.logit_lens import found_rates, lens_inputs, stage_argmax
from grokscope.train.batches import Encoded
from grokscope.train.losses import sequence_mean_loss, token_losses

TRAIN_ACC_TYPES = ("id_atomic", "ood_atomic", "train_inferred")  # He Fig. 2 training accuracy (§5)


def forward_loss(model, enc: Encoded, loss_kind: str, return_q: bool = False):
    """Family-specific forward + loss on a batch. Returns (loss, logits, q_halt or None)."""
    if model.family == "gpt":
        logits = model(enc.seq, at=enc.at)  # [B, 2, V]: the predictions of t and </a>
        return token_losses(logits, enc.targets, loss_kind).mean(), logits, None
    logits, q = model(enc.inputs, return_q=True)
    return sequence_mean_loss(logits, enc.labels, loss_kind), logits, q


def exact_match(model, enc: Encoded, logits: torch.Tensor, end_id: int, pad_id: int = 0) -> torch.Tensor:
    """[B] bool. gpt: greedy t then ``</a>`` (teacher forcing on t is exact: the second prediction only matters when
    t is right). trm: argmax per position, pads dropped, cut at the first ``</a>``, compared with the gold
    prompt + t (so the copied prefix counts, §5)."""
    pred = logits.argmax(-1)
    if model.family == "gpt":
        return (pred == enc.targets).all(-1)
    B, T = pred.shape
    nonpad = pred != pad_id
    order = torch.sort((~nonpad).int(), dim=1, stable=True).indices
    compact = torch.gather(pred, 1, order)
    n_tokens = nonpad.sum(1)
    pos = torch.arange(T, device=pred.device)
    is_end = (compact == end_id) & (pos < n_tokens[:, None])
    cut = torch.where(is_end.any(1), is_end.int().argmax(1), n_tokens)
    gold_len = enc.prompt_len + 1
    same = (compact == enc.seq) | (pos >= gold_len[:, None])
    return (cut == gold_len) & same.all(1)


@torch.no_grad()
def evaluate(model, probes: dict[str, Encoded], loss_kind: str, end_id: int, batch_size: int,
             lens_types: dict[str, str] | None = None, device: str = "cpu") -> dict[str, float]:
    """Exact match and loss per probe type; training accuracy; lens rates for ``lens_types`` {metric suffix: type}."""
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for name, enc in probes.items():
        if len(enc) == 0:
            continue
        correct, loss_sum = 0, 0.0
        for i in range(0, len(enc), batch_size):
            batch = enc.take(torch.arange(i, min(i + batch_size, len(enc)))).to(device)
            loss, logits, _ = forward_loss(model, batch, loss_kind)
            correct += int(exact_match(model, batch, logits, end_id).sum())
            loss_sum += float(loss) * len(batch)
        out[name] = correct / len(enc)
        out[f"loss/{name}"] = loss_sum / len(enc)
    present = [t for t in TRAIN_ACC_TYPES if t in out]
    if present:
        out["train_acc"] = sum(out[t] for t in present) / len(present)
    for suffix, probe_type in (lens_types or {}).items():
        enc = probes.get(probe_type)
        if enc is None or len(enc) == 0:
            continue
        enc = enc.to(device)
        argmax = stage_argmax(model, lens_inputs(model, enc), chunk=batch_size)
        rates = found_rates(model, argmax, enc.bridge, enc.targets[:, 0])
        out[f"bridge_found_{suffix}"] = rates["bridge_found"]
        out[f"target_found_{suffix}"] = rates["target_found"]
        for key, value in rates.items():
            if key.startswith("bridge@"):
                out[f"{key}_{suffix}"] = value
    model.train(was_training)
    return out
