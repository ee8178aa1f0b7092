"""Verdict rules: every outcome of every finding is reachable (supported, partly supported, contradicted, not
testable), from hand-built numbers; regime labels on constructed curves; a run cut short is never judged."""

from __future__ import annotations

import pytest

from grokscope.metrics.milestones import classify_regime, milestones
from grokscope.report.findings import (FineTuneFacts, RunFacts, curve_distance, finding_1, finding_2, finding_3,
                                       outcome)


def curve(train, iid=None, ood=None, bridge=None, metric="bridge_use"):
    n = len(train)
    iid, ood, bridge = iid or [0.0] * n, ood or [0.0] * n, bridge or [0.0] * n
    return [{"step": 100 * i, "train_acc": a, "test_inferred_iid": b, "test_inferred_ood": c, f"{metric}_ood": d}
            for i, (a, b, c, d) in enumerate(zip(train, iid, ood, bridge))]


SAT = [0.5, 0.98, 0.99, 0.99, 0.99, 0.99]


def run(name, rows, cut_short=False, metric="bridge_use"):
    return RunFacts(name, metric, rows[-1], rows, cut_short)


GROKKED_NAT = run("nat", curve(SAT, iid=[0, 0.2, 0.5, 0.8, 0.95, 0.97]))
UNGROKKED_NAT = run("nat", curve(SAT, iid=[0, 0.2, 0.3, 0.4, 0.5, 0.6]))
BOTH = run("both", curve(SAT, ood=[0, 0.5, 0.95, 0.97, 0.98, 0.99], bridge=[0, 0.4, 0.92, 0.95, 0.97, 0.99]))
BOTH_NO_BRIDGE = run("both", curve(SAT, ood=[0, 0.5, 0.95, 0.97, 0.98, 0.99]))  # the positive control fails
SAME = {"verdict": "same path", "step_a": 100, "step_b": 400, "profile_corr": 0.95, "causal_map_corr": 0.9}
DIFF = {**SAME, "verdict": "different path", "profile_corr": 0.1}
CONTROL_OK = {"verdict": "different path", "level_a": 0.0, "level_b": 0.9}
CONTROL_BAD = {"verdict": "undetermined", "why": "neither checkpoint has a bridge path"}
UNDETERMINED = {**SAME, "verdict": "undetermined"}


@pytest.mark.parametrize("args, expected", [
    ((GROKKED_NAT, BOTH, SAME, CONTROL_OK, SAME, 0.05), "supported"),
    ((GROKKED_NAT, BOTH, SAME, CONTROL_OK, DIFF, 0.05), "partly supported"),
    ((GROKKED_NAT, BOTH, DIFF, CONTROL_OK, DIFF, 0.4), "contradicted"),
    ((UNGROKKED_NAT, BOTH, None, CONTROL_OK, SAME, 0.0), "not testable"),  # no grokked checkpoint at all
    ((GROKKED_NAT, BOTH, SAME, CONTROL_BAD, SAME, 0.0), "not testable"),  # the negative control failed
    ((run("nat", GROKKED_NAT.rows, cut_short=True), BOTH, SAME, CONTROL_OK, SAME, 0.0), "not testable"),
    ((GROKKED_NAT, None, SAME, CONTROL_OK, None, None), "supported"),  # within-run comparison alone
    ((GROKKED_NAT, BOTH, UNDETERMINED, CONTROL_OK, UNDETERMINED, 0.05), "not testable"),  # curves alone
])
def test_finding_1_outcomes(args, expected):
    result = finding_1(*args)
    assert outcome(result["verdict"]) == expected, result
    if expected == "not testable":
        assert "(" in result["verdict"]  # the reason is stated


def test_finding_1_reasons():
    assert "cut short" in finding_1(run("nat", GROKKED_NAT.rows, cut_short=True), BOTH, SAME, CONTROL_OK, SAME,
                                     0.0)["verdict"]
    assert "negative control" in finding_1(GROKKED_NAT, BOTH, SAME, CONTROL_BAD, SAME, 0.0)["verdict"]
    assert "curves alone" in finding_1(GROKKED_NAT, BOTH, UNDETERMINED, CONTROL_OK, UNDETERMINED, 0.0)["verdict"]


@pytest.mark.parametrize("second, expected", [
    (run("sf", curve(SAT, ood=[0, 0.1, 0.3, 0.6, 0.92, 0.95], bridge=[0, 0, 0.1, 0.1, 0.2, 0.3])), "supported"),
    (run("sf", curve(SAT, ood=[0, 0.1, 0.3, 0.6, 0.92, 0.95], bridge=[0, 0, 0.1, 0.3, 0.6, 0.7])),
     "partly supported"),
    (run("sf", curve(SAT, ood=[0, 0.1, 0.3, 0.6, 0.92, 0.95], bridge=[0, 0.5, 0.9, 0.95, 0.97, 0.99])),
     "contradicted"),
    (run("sf", curve(SAT, ood=[0, 0.1, 0.1, 0.1, 0.1, 0.1])), "not testable"),  # never OOD >= 0.9
    (run("sf", curve(SAT, ood=[0, 0.1, 0.3, 0.6, 0.92, 0.95]), cut_short=True), "not testable"),
    (None, "not testable"),
])
def test_finding_2_outcomes(second, expected):
    assert outcome(finding_2(second, BOTH)["verdict"]) == expected


FAKE = run("sf", curve(SAT, ood=[0, 0.1, 0.3, 0.6, 0.92, 0.95], bridge=[0, 0, 0.1, 0.1, 0.2, 0.3]))


@pytest.mark.parametrize("both, reason", [
    (BOTH_NO_BRIDGE, "positive control failed"),  # the measure never sees the both-full circuit
    (run("both", curve(SAT, ood=[0, 0.1, 0.2, 0.3, 0.4, 0.5], bridge=[0.9] * 6)), "positive control failed"),
    (None, "no both-hop-full run"),
])
def test_finding_2_needs_its_positive_control(both, reason):
    verdict = finding_2(FAKE, both)["verdict"]
    assert outcome(verdict) == "not testable" and reason in verdict


def cat(em, bridge=None, n=30):
    return {"exact_match": em, "bridge_use": bridge, "bridge_found": bridge, "n": n}


def ft(new_old, old_new=0.0, old_new_bridge=0.9, new_new=0.0, new_fact=1.0, grokked=True, cut_short=False):
    final = {"atomic_new": cat(new_fact), "new_old": cat(new_old, 0.9), "old_new": cat(old_new, old_new_bridge),
             "new_new": cat(new_new, 0.9)}
    return FineTuneFacts("ft", final, "bridge_use", grokked, cut_short)


CONTROL_FAILS, CONTROL_COMPOSES = ft(0.2, grokked=False), ft(0.95, grokked=False)


@pytest.mark.parametrize("finetunes, control, expected", [
    ([ft(1.0)], CONTROL_FAILS, "supported"),
    ([ft(1.0)], CONTROL_COMPOSES, "partly supported"),  # the control must fail new+old
    ([ft(1.0)], None, "partly supported"),
    ([ft(1.0, old_new=0.5)], CONTROL_FAILS, "partly supported"),
    ([ft(1.0, old_new_bridge=0.1)], CONTROL_FAILS, "partly supported"),  # old+new fails, but not via the bridge
    ([ft(0.7)], CONTROL_FAILS, "partly supported"),
    ([ft(0.07)], CONTROL_FAILS, "contradicted"),  # learned the new facts, new+old fails: the micro gpt's result
    ([ft(1.0), ft(0.07)], CONTROL_FAILS, "partly supported"),
    ([ft(1.0, grokked=False)], CONTROL_FAILS, "not testable"),  # no grokked parent
    ([ft(1.0, new_fact=0.3)], CONTROL_FAILS, "not testable"),  # new facts not learned
    ([ft(1.0, cut_short=True)], CONTROL_FAILS, "not testable"),
    ([], None, "not testable"),
    ([ft(1.0)], ft(0.2, new_fact=0.3, grokked=False), "partly supported"),  # a control that learned nothing
    ([ft(1.0, old_new=None)], CONTROL_FAILS, "partly supported"),  # old+new not measured cannot pass
    ([ft(None)], CONTROL_FAILS, "not testable"),  # new+old not measured
])
def test_finding_3_outcomes(finetunes, control, expected):
    assert outcome(finding_3(finetunes, control)["verdict"]) == expected


def test_finding_3_missing_queries_are_not_zero():
    f = ft(0.0)
    f.final["new_old"]["n"] = 0  # no faithful new+old queries and no powered set: not measured, not "fails"
    assert outcome(finding_3([f], CONTROL_FAILS)["verdict"]) == "not testable"
    note = finding_3([ft(1.0)], ft(0.2, new_fact=0.3, grokked=False))["measured"]
    assert "did not learn the new facts" in note


def test_finding_3_uses_powered_categories_when_faithful_n_is_small():
    f = ft(0.0)
    f.final["new_old"]["n"] = 5
    f.final["new_old_powered"] = cat(1.0, 0.9, n=500)
    f.final["old_new_powered"] = cat(0.0, 0.9, n=500)
    f.final["old_new"]["n"] = 5
    result = finding_3([f], CONTROL_FAILS)
    assert result["verdict"] == "supported" and "powered, n=500" in result["measured"]


def test_curve_distance():
    a = [{"step": 0, "atomic_new": 0.0, "new_old_powered": 0.0}, {"step": 10, "atomic_new": 1.0,
                                                                 "new_old_powered": 0.5}]
    b = [{"step": 0, "atomic_new": 0.2, "new_old_powered": 0.0}, {"step": 10, "atomic_new": 1.0,
                                                                 "new_old_powered": 0.1}]
    assert curve_distance(a, b) == pytest.approx((0.2 + 0 + 0 + 0.4) / 4)
    assert curve_distance(a, []) is None


def test_regime_classification():
    sat = [0.5, 0.98, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99]

    def label(ood, bridge):
        return classify_regime(curve(sat, ood=ood, bridge=bridge), "test_inferred_ood", "bridge_use_ood")
    assert label([0, 0, 0, 0, 0.1, 0.3, 0.6, 0.95], [0, .2, .5, .9, .95, 1, 1, 1])["regime"] == "natural grokking"
    assert label([0, 0.6, 0.95, 0.95, 1, 1, 1, 1], [0, .5, .95, 1, 1, 1, 1, 1])["regime"] == "no delay"
    r = label([0, 0, 0, 0.2, 0.5, 0.95, 0.96, 0.97], [0, .1, .1, .2, .2, .2, .3, .2])
    assert r["regime"] == "fake grokking" and not r["circuit"] and r["t_high"] == 500
    assert label([0] * 8, [0] * 8)["regime"] == "no generalisation"


def test_milestones():
    rows = [{"step": 0, "train_acc": 0.1, "test_inferred_iid": 0.0},
            {"step": 10, "train_acc": 0.98, "test_inferred_iid": 0.6, "bridge_use_ood": 0.95},
            {"step": 20, "train_acc": 0.99, "test_inferred_iid": 0.91}]
    ms = milestones(rows, 0.97, [0.5, 0.9], "bridge_use")
    assert ms["t_sat"] == 10 and ms["t_id50"] == 10 and ms["t_id90"] == 20
    assert ms["t_ood50"] is None and ms["t_bridge90"] == 10
