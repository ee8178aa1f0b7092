"""Bridge use v2 (``data/counterfactuals.bridge_patches``, ``models/readout.interchange``) has controls that must
fail it and models that must pass it, in both directions (forward for ID queries, reverse for OOD and new hops):

- a hand-built composer whose r1 state holds b and whose answer reads it scores 1 on ID and OOD queries;
- a hand-built keyed memoriser, whose r1 state carries only (h, r1) and which answers from a table of trained
  compositions, scores 0 in both directions (it would pass if patches were allowed to reach trained compositions);
- a hand-built composer that routes b through the h position scores 0 at r1 and 1 at the position it routes through;
- a hand-built recurrent composer that re-derives its r1 slot from the clean input at every update (as the trm
  re-injects its input) scores 1 with the carried patch the trm family uses, and 0 with a one-stage patch;
- a model that answers from the raw tokens (bypassing every state) scores 0; a gpt trained on atomic facts only
  (it can recall b at r1, but never learned to compose) scores below 0.1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokscope.analysis.queries import query_records
from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS, REGIMES
from grokscope.data.counterfactuals import FORWARD, REVERSE, bridge_patches, id_tail_table, trained_compositions
from grokscope.data.encoding import encode
from grokscope.data.transfer import build_transfer
from grokscope.metrics.records import aggregate
from grokscope.models.family import ModelFamily
from grokscope.models.hooks import HookPoint
from grokscope.models.readout import R1, bridge_use_rates, interchange
from grokscope.training.evaluate import bridge_use_set


def all_tails(ds) -> np.ndarray:
    """[N, R] tail of every atomic fact a model of ``ds`` is trained on (ID, OOD and new), -1 elsewhere."""
    atomic = ds.arrays["atomic"]
    tail = np.full((ds.vocab.num_entities, ds.vocab.num_relations), -1, dtype=np.int64)
    tail[atomic[:, 0], atomic[:, 1]] = atomic[:, 4]
    return tail


class TableModel(ModelFamily):
    """States are vectors over the vocabulary at the three prompt positions; L0 = the one-hot tokens.

    ``mode``: "composer": L1 puts b = tail(h, r1) at r1; L2 puts tail(state at r1, r2) at r2. "rerouted": L1 puts b
    at the h position instead, and L2 reads it there. "memoriser": L1 puts h + r1 (two hot entries) at r1; L2 looks
    (h, r1, r2) up in a table of trained compositions (pad when absent). "bypass": answers tail(tail(h, r1), r2)
    from the raw tokens, ignoring every state. Facts come from every atomic fact the model is trained on."""

    family = "table"

    def __init__(self, ds, mode: str = "composer"):
        super().__init__()
        self.vocab, self.mode = ds.vocab, mode
        self.register_buffer("tail", torch.from_numpy(all_tails(ds)))
        N, R = ds.vocab.num_entities, ds.vocab.num_relations
        memory = torch.full((N, R, R), -1, dtype=torch.long)
        tail = all_tails(ds)
        for h, r1, r2 in trained_compositions(ds):  # a fine-tune's parent's too
            if tail[h, r1] >= 0 and tail[tail[h, r1], r2] >= 0:
                memory[h, r1, r2] = tail[tail[h, r1], r2]
        self.register_buffer("memory", memory)
        self.stage = torch.nn.ModuleDict({"L0": HookPoint(), "L1": HookPoint(), "L2": HookPoint()})
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.setup_hooks()

    def entity(self, ids):
        return (ids - 1).clamp(0, self.vocab.num_entities - 1)

    def relation(self, ids):
        return (ids - 1 - self.vocab.num_entities).clamp(0, self.vocab.num_relations - 1)

    def lookup(self, entity_ids, relation_ids):
        t = self.tail[self.entity(entity_ids), self.relation(relation_ids)]
        return torch.where(t >= 0, t + 1, 0)  # entity token id, or pad when (e, r) has no fact

    def forward(self, tokens):
        V, N = self.vocab.d_vocab, self.vocab.num_entities
        x = self.stage["L0"](F.one_hot(tokens, V).float()).clone()
        if self.mode == "memoriser":
            x[:, 1] = x[:, 0] + x[:, 1]  # the key (h, r1), not b
        elif self.mode == "rerouted":
            x[:, 0] = F.one_hot(self.lookup(x[:, 0].argmax(-1), x[:, 1].argmax(-1)), V).float()
        else:
            x[:, 1] = F.one_hot(self.lookup(x[:, 0].argmax(-1), x[:, 1].argmax(-1)), V).float()
        x = self.stage["L1"](x).clone()
        r2 = x[:, 2].argmax(-1)
        if self.mode == "bypass":
            answer = self.lookup(self.lookup(tokens[:, 0], tokens[:, 1]), tokens[:, 2])
        elif self.mode == "memoriser":
            h, r1 = x[:, 1, 1:1 + N].argmax(-1) + 1, x[:, 1, 1 + N:].argmax(-1) + 1 + N
            t = self.memory[self.entity(h), self.relation(r1), self.relation(r2)]
            answer = torch.where(t >= 0, t + 1, 0)
        elif self.mode == "rerouted":
            answer = self.lookup(x[:, 0].argmax(-1), r2)
        else:
            answer = self.lookup(x[:, 1].argmax(-1), r2)
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


class RecurrentComposer(TableModel):
    """A trm-like composer: ``updates`` synchronous updates, each re-deriving b at r1 from the clean input tokens and
    putting tail(previous state at r1, r2) at r2; a hook after every update. A patch of r1 at one update is undone by
    the next one, so only the carried patch (``carried_patch``) measures that the answer reads b from r1."""

    carried_patch = True

    def __init__(self, ds, updates: int = 4):
        self.updates = updates
        super().__init__(ds)
        self.stage = torch.nn.ModuleDict({f"U{i}": HookPoint() for i in range(updates)})
        self.setup_hooks()

    def forward(self, tokens):
        V = self.vocab.d_vocab
        x = F.one_hot(tokens, V).float()
        z = torch.zeros_like(x)
        for i in range(self.updates):
            new = z.clone()
            new[:, 1] = F.one_hot(self.lookup(tokens[:, 0], tokens[:, 1]), V).float()  # from the clean input
            new[:, 2] = F.one_hot(self.lookup(z[:, 1].argmax(-1), tokens[:, 2]), V).float()
            z = self.stage[f"U{i}"](new)
        return z

    def readout_stages(self):
        return [(f"U{i}", f"stage.U{i}") for i in range(self.updates)]

    def patch_stages(self):
        return self.readout_stages()


@pytest.fixture(scope="module")
def micro():
    return build_dataset(dataclasses.replace(DATA_PRESETS["micro"], out_degree=19))


@pytest.fixture(scope="module")
def micro_transfer(micro):
    return build_transfer(micro, dataclasses.replace(DATA_PRESETS["micro"], out_degree=19))


def _use(model, ds, rows, position=R1):
    """Bridge use through the path in-training evaluation takes (``bridge_use_set``), and the patches' count."""
    use = bridge_use_set(ds, model, rows, cap=len(rows))
    return bridge_use_rates(model, interchange(model, use.source, use.target, position=position), use.expect), len(use)


def test_patches_follow_the_rule(micro):
    """Forward for ID queries, reverse for OOD ones; never towards a trained composition a memoriser could use."""
    tail, trained = id_tail_table(micro), trained_compositions(micro)
    for name, direction in (("train_inferred", FORWARD), ("test_inferred_iid", FORWARD),
                            ("test_inferred_ood", REVERSE)):
        rows = micro.probe(name)[:200]
        p = bridge_patches(micro, rows)
        assert (p["direction"] == direction).mean() > 0.95, name
        for (h, r1, r2, b, t), other, expect, d in zip(rows.tolist(), p["other"].tolist(), p["expect"].tolist(),
                                                      p["direction"].tolist()):
            if d < 0:
                continue
            h2, r1b, r2b, b2, t2 = other
            assert tail[h2, r1b] == b2 != b and tail[b2, r2b] == t2  # the other query is a real ID composition
            if d == FORWARD:
                assert r2b == r2 and t2 == expect != t and (h2, r1b, r2) not in trained
            else:
                assert tail[b, r2b] == expect != t2 and (h, r1, r2b) not in trained


@pytest.mark.parametrize("probe", ["test_inferred_iid", "test_inferred_ood"])
def test_composer_scores_one_memoriser_and_bypass_zero(micro, probe):
    rows = micro.probe(probe)
    composer = TableModel(micro)
    assert (composer.answer_logits(composer.prompt(encode(micro, rows))).argmax(-1) == encode(micro, rows).answer).all()
    rates, n = _use(composer, micro, rows)
    assert n >= 0.95 * len(rows) and rates["bridge_use@L1"] == 1.0 and rates["bridge_use"] == 1.0
    assert rates["bridge_use@L0"] < 0.1  # replacing the r1 token makes another query, not the other one
    for mode in ("memoriser", "bypass"):
        rates, _ = _use(TableModel(micro, mode), micro, rows)
        assert rates["bridge_use"] < 0.02, (mode, rates)


def test_memoriser_answers_what_it_was_trained_on_and_passes_without_the_guard(micro):
    """The memoriser is a real control: it answers its training compositions, and the v1 donors (trained compositions
    allowed) would have let it pass."""
    rows = micro.probe("train_inferred")[:300]
    memoriser = TableModel(micro, "memoriser")
    enc = encode(micro, rows)
    assert (memoriser.answer_logits(memoriser.prompt(enc)).argmax(-1) == enc.answer).all()
    rates, _ = _use(memoriser, micro, rows)
    assert rates["bridge_use@L1"] == 0.0 and rates["bridge_use"] < 0.02  # at L0 a swapped r1 token may hit by chance
    p = bridge_patches(micro, rows, trained=set())  # no guard: donors may be trained compositions
    forward = torch.from_numpy(p["direction"] == FORWARD).view(-1, 1)
    query, donor = memoriser.prompt(enc), memoriser.prompt(encode(micro, p["other"]))
    patched = interchange(memoriser, torch.where(forward, donor, query), torch.where(forward, query, donor))
    expect = torch.from_numpy(micro.vocab.entity_id(p["expect"]))
    assert bridge_use_rates(memoriser, patched, expect)["bridge_use"] > 0.4


def test_rerouted_composer_scores_zero_at_r1_and_one_where_it_routes(micro):
    rows = micro.probe("test_inferred_iid")
    model = TableModel(micro, "rerouted")
    enc = encode(micro, rows)
    assert (model.answer_logits(model.prompt(enc)).argmax(-1) == enc.answer).all()
    at_r1, _ = _use(model, micro, rows)
    at_h, _ = _use(model, micro, rows, position=0)
    assert at_r1["bridge_use@L1"] == 0.0 and at_r1["bridge_use"] < 0.05  # L0: a swapped r1 token, chance hits
    assert at_h["bridge_use@L1"] == 1.0


def test_recurrent_composer_needs_the_carried_patch(micro):
    rows = micro.probe("test_inferred_ood")
    model = RecurrentComposer(micro)
    enc = encode(micro, rows)
    assert (model.answer_logits(model.prompt(enc)).argmax(-1) == enc.answer).all()
    carried, n = _use(model, micro, rows)
    assert n >= 0.95 * len(rows)
    assert [carried[f"bridge_use@U{i}"] for i in range(3)] == [1.0, 1.0, 1.0]  # every update before the last
    assert carried["bridge_use@U3"] == 0.0  # the last update's r1 slot reaches no answer any more
    model.carried_patch = False
    once, _ = _use(model, micro, rows)
    assert once["bridge_use@U0"] == 0.0 and once["bridge_use@U1"] == 0.0  # undone by the next re-derivation
    assert TableModel.carried_patch is False and RecurrentComposer.carried_patch is True


def test_the_trm_family_carries_its_patch_and_skips_stages_that_cannot_reach_the_answer():
    from grokscope.models.registry import build_model, config_from_dict

    model = build_model(config_from_dict("trm", {"d_vocab": 40, "d_model": 16, "H_cycles": 2, "L_cycles": 2,
                                                 "puzzle_emb_len": 2, "forward_dtype": "float32"}, "test"))
    labels = [label for label, _ in model.patch_stages()]
    assert model.carried_patch and labels[0] == "H0_L0" and labels[-1] == "H1_L1" and "H1_commit" not in labels
    torch.manual_seed(0)
    tokens = torch.randint(1, 39, (64, 5))
    tokens[:, 3:] = 0
    clean = model.answer_logits(tokens).argmax(-1).view(1, -1)
    assert (interchange(model, tokens, tokens) == clean).all()  # patching a prompt with itself changes nothing
    other = tokens.roll(1, 0)
    moved = interchange(model, other, tokens)
    assert (moved[0] != clean[0]).any()  # the carried patch reaches the answer slot from the first stage on


@pytest.mark.parametrize("category", ["new_old_powered", "old_new_powered", "new_new"])
def test_new_fact_categories_are_reverse_patched(micro_transfer, category):
    """New+old, old+new and new+new compositions are measured by the reverse patch; a composer that knows the new
    facts scores 1, the memoriser 0."""
    from grokscope.finetuning import category_rows

    rows = category_rows(micro_transfer)[category][:200]
    p = bridge_patches(micro_transfer, rows)
    assert (p["direction"] == REVERSE).mean() > 0.9
    composer, n = _use(TableModel(micro_transfer), micro_transfer, rows)
    memoriser, _ = _use(TableModel(micro_transfer, "memoriser"), micro_transfer, rows)
    assert n >= 0.9 * len(rows) and composer["bridge_use"] == 1.0 and memoriser["bridge_use@L1"] == 0.0
    if category == "old_new_powered":  # an old first hop: without the guard the memoriser looks its answer up
        model = TableModel(micro_transfer, "memoriser")
        p = bridge_patches(micro_transfer, rows, trained=set())
        keep = p["direction"] >= 0
        query = model.prompt(encode(micro_transfer, rows[keep]))
        recipient = model.prompt(encode(micro_transfer, p["other"][keep]))
        expect = torch.from_numpy(micro_transfer.vocab.entity_id(p["expect"][keep]))
        assert bridge_use_rates(model, interchange(model, query, recipient), expect)["bridge_use"] > 0.4


def test_augmented_regimes_keep_a_reverse_patch_for_their_ood_queries(micro):
    """Both-hop augmentation trains (h, r1) of OOD facts with every ID relation of b: the reverse patch then reads
    the query's own second hop, and still no trained composition."""
    both_full = build_dataset(dataclasses.replace(DATA_PRESETS["micro"], out_degree=19,
                                                  **dataclasses.asdict(REGIMES["both_full"])))
    rows = both_full.probe("test_inferred_ood")
    p = bridge_patches(both_full, rows)
    assert (p["direction"] == REVERSE).mean() > 0.95
    rates, n = _use(TableModel(both_full), both_full, rows)
    memoriser, _ = _use(TableModel(both_full, "memoriser"), both_full, rows)
    assert rates["bridge_use"] == 1.0 and memoriser["bridge_use@L1"] == 0.0


def test_gpt_trained_on_atomic_facts_only_scores_low(atomic_only_gpt, smoke_dataset):
    _, model, _ = atomic_only_gpt  # it knows every first hop (b at r1) ...
    rows = smoke_dataset.probe("train_inferred")  # compositions of facts it knows atomically
    rates, n = _use(model, smoke_dataset, rows)
    assert n >= 150 and rates["bridge_use"] < 0.1, rates  # ... but does not compose through r1


def test_share_of_correct_answers_with_the_bridge(micro):
    """He et al. §3's per-query statement: every correct answer of a composing model has its bridge; a model that
    answers correctly without routing through r1 has none."""
    rows = micro.probe("train_inferred")[:300]
    for model, expected in ((TableModel(micro), 1.0), (TableModel(micro, "bypass"), 0.0)):
        frame, schema = query_records(model, micro, rows)
        agg = aggregate(frame, schema)
        assert agg["n_correct"] == len(rows) and agg["bridge_given_correct"] == expected


def test_causal_tracing_of_a_recurrent_composer_needs_the_carried_patch(micro):
    """Wang et al.'s causal map for a trm-like model: replacing r1 by a counterfactual's r1 state at an early update
    flips the answer only when the patch is carried (the next update re-derives r1 from the clean input)."""
    from grokscope.analysis.patching import causal_strength
    from grokscope.data.counterfactuals import counterfactual_tokens

    rows = micro.probe("test_inferred_iid")
    model = RecurrentComposer(micro)
    cf = counterfactual_tokens(micro, rows, seed=0)
    carried, counts, labels = causal_strength(model, encode(micro, rows), cf)
    assert counts[1] > 20 and labels == ["U0", "U1", "U2", "U3"]
    assert carried[0, 1] > 0.9 and carried[2, 1] > 0.9  # r1 replaced from U0 (or U2) on: the answer follows it
    model.carried_patch = False
    once, _, _ = causal_strength(model, encode(micro, rows), cf)
    assert once[0, 1] == 0.0 and once[1, 1] == 0.0  # undone by the next re-derivation: a blind map
