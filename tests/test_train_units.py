"""Units of the trainer: exact match per family, stablemax loss, loss masking, batch order."""

from __future__ import annotations

import math

import numpy as np
import torch

from grokscope.data.vocab import Vocab
from grokscope.train.batches import IGNORE, BatchOrder, encode
from grokscope.train.evaluate import exact_match
from grokscope.train.losses import log_stablemax, sequence_mean_loss


class _DS:
    vocab = Vocab(10, 5)


class _Fam:
    def __init__(self, family):
        self.family = family


def test_encoding_and_masks():
    rows = np.array([[1, 2, -1, -1, 3], [1, 2, 4, 3, 5]])
    enc = encode(_DS, rows)
    v = _DS.vocab
    assert enc.inputs[0].tolist() == [2, 13, 0, 0, 0] and enc.inputs[1].tolist() == [2, 13, 15, 0, 0]
    assert enc.labels[0].tolist() == [2, 13, 4, v.end_id, IGNORE]
    assert enc.at.tolist() == [[1, 2], [2, 3]] and enc.targets.tolist() == [[4, v.end_id], [6, v.end_id]]
    assert enc.bridge.tolist() == [-1, 4]


def _onehot(pred, V=23):
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
        [2, 0, 13, 15, 6],  # pad dropped, then no </a> -> prompt+t exactly -> correct (original string EM)
        [2, 13, 14, 6, E],  # wrong copied relation -> wrong (the prefix counts, §5)
        [2, 13, 4, E, 9],  # atomic: junk after </a> is cut (Appendix A.3) -> correct
        [2, 13, 4, 4, E],  # atomic: extra token before </a> -> wrong
    ]
    em = exact_match(_Fam("trm"), enc, _onehot(preds), E)
    assert em.tolist() == [True, False, False, True, False, True, False]


def test_gpt_exact_match():
    v = _DS.vocab
    enc = encode(_DS, np.array([[1, 2, 4, 3, 5]] * 3))
    preds = [[6, v.end_id], [6, 6], [7, v.end_id]]
    assert exact_match(_Fam("gpt"), enc, _onehot(preds), v.end_id).tolist() == [True, False, False]


def test_stablemax_matches_definition():
    x = torch.tensor([[-2.0, 0.0, 3.0]])
    s = torch.tensor([1 / 3, 1.0, 4.0])
    torch.testing.assert_close(log_stablemax(x), torch.log(s / s.sum()).unsqueeze(0))
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, IGNORE, IGNORE], [1, 2, 3, 4, 5]])
    loss = sequence_mean_loss(logits, labels, "ce")
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    expected = ((per[0, :3].mean() + per[1].mean()) / 2)  # averaged per sequence first (§4.2)
    assert math.isclose(float(loss), float(expected), rel_tol=1e-5)


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
