"""Bridge decodable (``analysis/probe.py``): a linear probe for b must read it where a composer puts it, and must
not where nothing composes: a memoriser, a gpt trained on atomic facts only, and the step-0 model; its own controls
(shuffled labels, the query's tokens) score low everywhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from grokscope.analysis.probe import Ridge, bridge_decodable
from grokscope.data.build import build_dataset
from grokscope.data.config import DATA_PRESETS
from test_bridge_use import TableModel


@pytest.fixture(scope="module")
def micro():
    return build_dataset(dataclasses.replace(DATA_PRESETS["micro"], out_degree=19))


def values(result: dict, name: str) -> dict:
    return {control: entry["value"] for control, entry in result["sets"][name].items()}


def test_ridge_reads_a_linear_code_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    code = np.eye(10)[y] @ rng.normal(size=(10, 32)) + 0.1 * rng.normal(size=(600, 32))
    probe = Ridge(code[:400], y[:400], 10)
    assert (probe.predict(code[400:]) == y[400:]).mean() > 0.95
    noise = Ridge(rng.normal(size=(400, 32)), y[:400], 10)
    assert (noise.predict(rng.normal(size=(200, 32))) == y[400:]).mean() < 0.25


def test_composer_is_decodable_and_a_memoriser_is_not(micro):
    """A hand-built composer puts b at r1 after its first layer: the probe reads it on ID and OOD compositions."""
    sets = {k: micro.probe(k) for k in ("test_inferred_iid", "test_inferred_ood")}
    composer = bridge_decodable(TableModel(micro), micro, sets)
    assert composer["chosen"] == {"stage": "L1", "slot": 1}  # b at r1 after the first hop
    ood = values(composer, "test_inferred_ood")
    assert ood["probe"] >= 0.95 and ood["shuffled labels"] <= 0.1 and ood["query tokens"] <= 0.2, ood
    assert composer["sets"]["test_inferred_ood"]["probe"]["n"] == len(sets["test_inferred_ood"])
    memoriser = values(bridge_decodable(TableModel(micro, "memoriser"), micro, sets), "test_inferred_ood")
    assert memoriser["probe"] <= 0.1, memoriser


def test_atomic_only_gpt_and_the_step_0_model_are_not_decodable(atomic_only_gpt, smoke_dataset):
    _, model, step0 = atomic_only_gpt  # it knows every first hop ...
    # ... and the compositions of those facts (none of which it trained on) split into a fit half and a test half
    rows = smoke_dataset.arrays["train_inferred"]
    fit, held = rows[: len(rows) // 2], rows[len(rows) // 2:]
    result = bridge_decodable(model, smoke_dataset, {"test_inferred_iid": held}, fit=fit, step0_model=step0)
    assert result["chosen"]["slot"] == 2 and len(held) >= 200  # the gpt counts only the r2 position
    seen = values(result, "test_inferred_iid")
    assert seen["probe"] <= 0.25 and seen["step-0 model"] <= 0.25, seen


def test_a_carried_model_is_also_patched_where_the_probe_finds_b(micro):
    """A model that keeps b at the h position (not r1) and carries its state (as the trm does): bridge use at r1
    misses it, bridge use at the probe's slot finds it; a memoriser scores low there too."""
    from grokscope.analysis.probe import bridge_use_at

    class Carried(TableModel):
        carried_patch = True

    sets = {k: micro.probe(k) for k in ("test_inferred_iid", "test_inferred_ood")}
    rerouted = bridge_decodable(Carried(micro, "rerouted"), micro, sets)
    assert rerouted["chosen"]["slot"] == 0
    at_slot = rerouted["bridge_use_at_slot"]["test_inferred_ood"]
    assert at_slot["value"] >= 0.9 and at_slot["n"] >= 30, at_slot
    assert bridge_use_at(Carried(micro, "rerouted"), micro, sets["test_inferred_ood"], 1)["value"] <= 0.1  # r1
    memoriser = bridge_decodable(Carried(micro, "memoriser"), micro, sets)
    assert memoriser["bridge_use_at_slot"]["test_inferred_ood"]["value"] <= 0.1
    assert "bridge_use_at_slot" not in bridge_decodable(TableModel(micro), micro, sets)  # not carried: r1 only
