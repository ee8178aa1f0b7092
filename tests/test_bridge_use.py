"""Bridge use (the interchange intervention at r1) has controls that must fail it and a model that must pass it:

- a hand-built model that composes by table lookup through the r1 state scores about 1;
- a hand-built model that answers from (h, r1, r2) directly, bypassing the r1 state, scores about 0;
- a gpt trained on atomic facts only (it can recall b at r1, but never learned to compose) scores below 0.1.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from grokscope.analysis.queries import query_records
from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS
from grokscope.data.counterfactuals import bridge_donors, id_tail_table
from grokscope.data.encoding import encode
from grokscope.metrics.records import aggregate
from grokscope.models.family import ModelFamily
from grokscope.models.hooks import HookPoint
from grokscope.models.readout import bridge_use_rates, interchange


class TableModel(ModelFamily):
    """States are one-hot vectors over the vocabulary: L0 = the tokens; L1 puts b = tail(h, r1) at the r1 position;
    L2 puts tail(state at r1, r2) at the r2 position. ``bypass`` answers tail(tail(h, r1), r2) from the raw tokens
    instead, ignoring every state."""

    family = "table"

    def __init__(self, ds, bypass: bool = False):
        super().__init__()
        self.vocab, self.bypass = ds.vocab, bypass
        self.register_buffer("tail", torch.from_numpy(id_tail_table(ds)))
        self.stage = torch.nn.ModuleDict({"L0": HookPoint(), "L1": HookPoint(), "L2": HookPoint()})
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.setup_hooks()

    def lookup(self, entity_ids, relation_ids):
        e = (entity_ids - 1).clamp(0, self.vocab.num_entities - 1)
        r = (relation_ids - 1 - self.vocab.num_entities).clamp(0, self.vocab.num_relations - 1)
        t = self.tail[e, r]
        return torch.where(t >= 0, t + 1, 0)  # entity token id, or pad when (e, r) has no fact

    def forward(self, tokens):
        V = self.vocab.d_vocab
        x = self.stage["L0"](F.one_hot(tokens, V).float())
        x = x.clone()
        x[:, 1] = F.one_hot(self.lookup(x[:, 0].argmax(-1), x[:, 1].argmax(-1)), V).float()
        x = self.stage["L1"](x)
        x = x.clone()
        if self.bypass:
            answer = self.lookup(self.lookup(tokens[:, 0], tokens[:, 1]), tokens[:, 2])
        else:
            answer = self.lookup(x[:, 1].argmax(-1), x[:, 2].argmax(-1))
        x[:, 2] = F.one_hot(answer, V).float()
        return self.stage["L2"](x)

    def prompt(self, batch):
        return batch.seq[:, :3]

    def readout_stages(self):
        return [(name, f"stage.{name}") for name in ("L0", "L1", "L2")]

    def patch_stages(self):
        return self.readout_stages()[:2]

    def unembed(self, state):
        return state

    def answer_logits(self, tokens):
        return self(tokens)[:, 2]


@pytest.fixture(scope="module")
def micro():
    return build_dataset(dataclasses.replace(DATA_PRESETS["micro"], out_degree=19))


def _use(model, ds, rows):
    donor = torch.from_numpy(bridge_donors(ds, rows))
    keep = donor[:, 0] >= 0
    clean = model.prompt(encode(ds, rows))[keep]
    return bridge_use_rates(model, interchange(model, clean, donor[keep]), donor[keep, 2]), int(keep.sum())


def test_donors_follow_the_rule(micro):
    rows = micro.probe("train_inferred")[:200]
    donor = bridge_donors(micro, rows)
    tail = id_tail_table(micro)
    v = micro.vocab
    assert (donor[:, 0] >= 0).mean() > 0.95
    for (_, _, r2, b, t), (h2, r1b, t2) in zip(rows.tolist(), donor.tolist()):
        if h2 < 0:
            continue
        b2 = tail[h2 - 1, r1b - 1 - v.num_entities]
        assert b2 != b and tail[b2, r2] == t2 - 1 != t


def test_table_lookup_through_r1_scores_one_and_bypass_scores_zero(micro):
    rows = micro.probe("train_inferred")[:300]
    composer, bypass = TableModel(micro), TableModel(micro, bypass=True)
    assert (composer.answer_logits(composer.prompt(encode(micro, rows))).argmax(-1) == encode(micro, rows).answer).all()
    rates, n = _use(composer, micro, rows)
    assert n >= 250 and rates["bridge_use@L1"] == 1.0 and rates["bridge_use"] == 1.0
    assert rates["bridge_use@L0"] < 0.1  # replacing the r1 token makes another query, not the donor's
    rates, _ = _use(bypass, micro, rows)
    assert rates["bridge_use"] == 0.0
    frame, schema = query_records(composer, micro, rows)  # the per-query records agree with the kernel
    assert aggregate(frame, schema)["bridge_use@L1"] == 1.0 and frame["correct"].all()


def test_gpt_trained_on_atomic_facts_only_scores_low(cli, tmp_path, smoke_dataset):
    from grokscope import runs

    data = tmp_path / "atomic_only"  # the smoke graph without any training composition
    assert cli("data", "build", "--preset", "smoke", "--set", "phi=0", "--out", data)[0] == 0
    code, out, err = cli("train", "--data", data, "--model", "gpt", "--preset", "smoke", "--quiet", "--out",
                         tmp_path / "run", "--set", "max_steps=400,eval_every=200,lr=1e-2,eval_bridge_use=0")
    assert code == 0, err
    model, _ = runs.load_model(tmp_path / "run")
    enc = encode(smoke_dataset, smoke_dataset.probe("id_atomic"))
    with torch.no_grad():
        recall = (model.forward_batch(enc).argmax(-1)[:, 0] == enc.answer).float().mean().item()
    assert recall > 0.8, recall  # it knows the first hops (b at r1) ...
    rows = smoke_dataset.probe("train_inferred")  # compositions of facts it knows atomically
    rates, n = _use(model, smoke_dataset, rows)
    assert n >= 150 and rates["bridge_use"] < 0.1, rates  # ... but does not compose through r1


def test_share_of_correct_answers_with_the_bridge(micro):
    """He et al. §3's per-query statement: every correct answer of a composing model has its bridge; a model that
    answers correctly without routing through r1 has none."""
    rows = micro.probe("train_inferred")[:300]
    for model, expected in ((TableModel(micro), 1.0), (TableModel(micro, bypass=True), 0.0)):
        frame, schema = query_records(model, micro, rows)
        agg = aggregate(frame, schema)
        assert agg["n_correct"] == len(rows) and agg["bridge_given_correct"] == expected
