"""Verdict rules on hand-built numbers: every outcome of every finding is reachable (supported, partly supported,
contradicted, undecided at this n, not testable), the negative controls can fail, intervals and the path statistic
behave, and a run cut short is never judged. He et al.'s own numbers: ``tests/test_findings_paper.py``."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.metrics.intervals import Rate, final_rate, wilson
from grokscope.metrics.milestones import classify_regime, milestones
from grokscope.metrics.paths import moved_path_control, path_verdict
from grokscope.reporting.findings import (FineTuneFacts, RunFacts, across_seeds, curve_distance, finding_1, finding_2,
                                       finding_3, outcome)


def curve(train, iid=None, ood=None, bridge=None, metric="bridge_use", n=None):
    count = len(train)
    iid, ood, bridge = iid or [0.0] * count, ood or [0.0] * count, bridge or [0.0] * count
    extra = {} if n is None else {"n/test_inferred_iid": n, "n/test_inferred_ood": n, f"n/{metric}_ood": n}
    return [{"step": 100 * i, "train_acc": a, "test_inferred_iid": b, "test_inferred_ood": c, f"{metric}_ood": d,
             **extra} for i, (a, b, c, d) in enumerate(zip(train, iid, ood, bridge))]


SAT = [0.5, 0.98, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99]


def run(name, rows, cut_short=False, metric="bridge_use"):
    return RunFacts(name, metric, rows, cut_short=cut_short)


# gpt-like: natural groks on ID long after saturation (t_sat 100, ID >= 0.5 at 500); both-hop full at once.
NAT = run("nat", curve(SAT, iid=[0, 0, 0, 0.2, 0.4, 0.6, 0.9, 0.95, 0.96, 0.97], n=1000))
NO_DELAY_NAT = run("nat", curve(SAT, iid=[0, 0.6, 0.9, 0.95, 0.96, 0.97, 0.97, 0.97, 0.97, 0.97], n=1000))
BOTH = run("both", curve(SAT, ood=[0, 0.95, 0.97, 0.98, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99],
                         bridge=[0, 0.92, 0.95, 0.97, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99], n=1000))
PROFILE, MAP = [0.04, 0.73, 0.9, 0.4, 0.2, 0.1], np.array([[1.0, 1.0, 1.0]] + [[0.5 - 0.1 * s, 0.9 - 0.15 * s,
                                                                               0.1 * s] for s in range(1, 6)])


def cmp(profile_b, map_b=MAP, profile_a=PROFILE, map_a=MAP):
    return {"profile_a": list(profile_a), "profile_b": list(profile_b), "causal_map_a": np.asarray(map_a).tolist(),
            "causal_map_b": None if map_b is None else np.asarray(map_b).tolist()}


SAME = cmp([x * 0.98 for x in PROFILE], MAP + 0.02)
DIFF = cmp(list(np.roll(PROFILE, 3)), np.roll(MAP, 1, axis=1))
CONTROL = cmp(PROFILE, None, [0.0] * 6, None)


@pytest.mark.parametrize("natural, comparisons, control, expected", [
    (NAT, {"both_full": SAME}, CONTROL, "supported"),
    (NAT, {"both_full": DIFF}, CONTROL, "contradicted"),
    (NO_DELAY_NAT, {"both_full": SAME}, CONTROL, "not testable"),  # no delay: not grokking
    (NAT, {"both_full": SAME}, cmp(PROFILE), "not testable"),  # the step-0 control came out "same"
    (NAT, {}, CONTROL, "not testable"),  # no comparison: the moved-path control is missing too
    (run("nat", NAT.rows, cut_short=True), {"both_full": SAME}, CONTROL, "not testable"),
])
def test_finding_1_outcomes(natural, comparisons, control, expected):
    result = finding_1(natural, BOTH, comparisons, control)
    assert outcome(result["verdict"]) == expected, result
    if expected == "not testable":
        assert "(" in result["verdict"]  # the reason is stated


def test_finding_1_partly_when_the_votes_disagree():
    first = run("first", curve(SAT, ood=[0, 0, 0, 0.2, 0.6, 0.8, 0.95, 0.96, 0.97, 0.97], n=1000))
    r = finding_1(NAT, BOTH, {"both_full": SAME, "first_full": DIFF}, CONTROL, first_full=first)
    assert r["verdict"] == "partly supported", r


def test_finding_1_moved_path_control_must_come_out_different():
    flat = [0.9] * 6  # a flat path: moving it changes nothing, so the statistic cannot tell paths apart here
    r = finding_1(NAT, BOTH, {"both_full": cmp(flat, None, flat, None)}, CONTROL)
    assert r["verdict"].startswith("not testable (a negative control") and "moved" in r["verdict"]


def test_finding_1_within_run_comparison_is_a_description_not_a_vote():
    r = finding_1(NAT, BOTH, {"both_full": SAME}, CONTROL, within=DIFF, curve_distance=0.4)
    assert r["verdict"] == "supported" and "description (not a vote)" in r["measured"]
    assert "mean |difference| 0.40" in r["measured"]


UP = [0, 0, 0, 0, 0.2, 0.6, 0.8, 0.95, 0.96, 0.97]


@pytest.mark.parametrize("second, expected", [
    (run("second", curve(SAT, ood=UP, bridge=[0, 0, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2], n=1000)), "supported"),
    (run("second", curve(SAT, ood=UP, bridge=[0.9] * 10, n=1000)), "partly supported"),  # late, but a bridge
    (run("second", curve(SAT, ood=[0, 0.9] + [0.95] * 8, bridge=[0.9] * 10, n=1000)), "contradicted"),
    (run("second", curve(SAT, ood=UP, bridge=[0.48] * 10, n=40)), "undecided at this n"),
    (run("second", curve(SAT, ood=[0.1] * 10, n=1000)), "not testable"),
    (run("second", curve(SAT, ood=UP), cut_short=True), "not testable"),
])
def test_finding_2_outcomes(second, expected):
    result = finding_2(second, BOTH)
    assert outcome(result["verdict"]) == expected, result


def test_finding_2_needs_its_positive_control():
    second = run("second", curve(SAT, ood=UP, n=1000))
    assert "no both-hop-full run" in finding_2(second, None)["verdict"]
    weak = run("both", curve(SAT, ood=[0, 0.95] + [0.99] * 8, bridge=[0.6] * 10, n=1000))
    assert "positive control" in finding_2(second, weak)["verdict"]


def test_finding_2_shows_the_per_query_share():
    second = run("second", curve(SAT, ood=UP, n=1000))
    r = finding_2(second, BOTH, Rate(0.2, 500))
    assert "correct OOD answers with the bridge" in r["measured"] and "n=500" in r["measured"]


def ft(regime, new_old, bridge=0.9, old_new=0.0, new_new=0.0, new=1.0, n=200, **kw):
    rates = {"atomic_new": Rate(new, 2000), "new_old": Rate(new_old, n), "bridge_new_old": Rate(bridge, n),
             "old_new": Rate(old_new, n), "new_new": Rate(new_new, n)}
    return FineTuneFacts(f"ft_{regime}", regime, rates, None if regime == "control" else "last", **kw)


def test_finding_3_outcomes():
    control = ft("control", 0.1, bridge=0.0)
    assert finding_3([ft("natural", 1.0), control])["verdict"] == "supported"
    assert finding_3([ft("natural", 0.1), control])["verdict"] == "contradicted"
    assert outcome(finding_3([ft("natural", 1.0), ft("second_full", 1.0), control])["verdict"]) == "partly supported"
    assert outcome(finding_3([ft("natural", 0.76, n=20), control])["verdict"]) == "undecided at this n"
    assert finding_3([control])["verdict"].startswith("not testable")
    assert finding_3([ft("natural", 1.0, cut_short=True), control])["verdict"].startswith("not testable (run cut")


def test_finding_3_missing_queries_are_not_held():
    f = ft("natural", 1.0)
    del f.rates["new_new"]
    r = finding_3([f, ft("control", 0.1, bridge=0.0)])
    assert r["verdict"] == "partly supported" and "1 not measured" in r["measured"]


def test_chance_floor_at_or_above_a_threshold_cannot_pass():
    f = ft("natural", 1.0, floors={"bridge_new_old": 0.6})
    r = finding_3([f, ft("control", 0.1, bridge=0.0)])
    assert r["verdict"] == "partly supported"
    row = next(c for c in r["checks"] if c["measure"] == "bridge_new_old" and c["subject"] == "ft_natural")
    assert "not testable" in row["chance floor (step 0)"] and row["outcome"] == "not measured"


def test_across_seeds():
    a = {"finding": 1, "verdict": "supported", "measured": "x", "checks": [], "rule": "", "paper": ""}
    b = {**a, "verdict": "contradicted"}
    assert across_seeds({0: a})["verdict"] == "supported"
    assert across_seeds({0: a, 1: a})["verdict"] == "supported (all 2 seeds)"
    mixed = across_seeds({0: a, 1: b})
    assert outcome(mixed["verdict"]) == "partly supported" and "seed 1: contradicted" in mixed["verdict"]


# ------------------------------------------------------------------------------------------------ measures
def test_wilson_interval_known_values():
    assert wilson(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(1.0, 0) == (0.0, 1.0)
    assert Rate(0.93, 162).against(0.9) == "undecided"  # the example: [0.88, 0.96] straddles 0.9
    assert Rate(0.93, 5000).against(0.9) == "above" and Rate(0.8, 5000).against(0.9) == "below"


def test_final_rate_averages_the_last_evaluations():
    rows = [{"step": i, "m": v, "n/m": 50} for i, v in enumerate([0.0, 0.2, 0.4, 0.6, 0.8])]
    r = final_rate(rows, "m")
    assert r.value == pytest.approx(0.6) and r.n == 50 and r.evals == 3
    assert final_rate(rows, "m", k=1).value == 0.8 and final_rate(rows, "absent") is None
    assert final_rate([{"step": 0, "m": 0.5}], "m", n=7).n == 7  # rows without n/<metric>: the fallback


def test_path_verdict_needs_more_than_chance():
    flat, peaked = [0.0, 0.02, 0.01, 0.0], [0.1, 0.6, 0.95, 0.2]
    assert path_verdict(flat, peaked, None, None)["verdict"] == "different path"  # step 0 vs a bridge path
    assert path_verdict(flat, flat, None, None)["verdict"] == "undetermined"
    # 3 points alone: r 0.99, but 1 in 6 orders does as well -> not more similar than chance
    three = path_verdict([0.1, 0.6, 0.95], [0.05, 0.5, 0.9], None, None)
    assert three["profile_corr"] > 0.9 and three["p_value"] >= 0.05 and three["verdict"] == "different path"
    # with a causal map the same profiles are decided
    same = path_verdict(PROFILE, SAME["profile_b"], MAP, MAP + 0.02)
    assert same["verdict"] == "same path" and same["p_value"] < 0.05
    # saturated cells (>= 0.95 in both maps) are left out: two maps that agree only there are not "same"
    map_a = np.array([[1.0, 1.0, 1.0], [0.9, 0.1, 0.8], [0.1, 0.9, 0.2]])
    map_b = np.array([[1.0, 1.0, 1.0], [0.1, 0.9, 0.2], [0.9, 0.1, 0.8]])
    result = path_verdict(peaked, [0.05, 0.5, 0.9, 0.3], map_a, map_b)
    assert result["cells_compared"] == 6 and result["causal_map_corr"] < 0 and result["verdict"] == "different path"


def test_permutation_null_calls_random_pairs_same_rarely():
    rng = np.random.default_rng(0)
    same = 0
    for _ in range(100):
        a, b = rng.uniform(0.5, 1.0, 6), rng.uniform(0.5, 1.0, 6)
        ma, mb = rng.uniform(0, 0.9, (6, 3)), rng.uniform(0, 0.9, (6, 3))
        same += path_verdict(list(a), list(b), ma, mb)["verdict"] == "same path"
    assert same <= 5


def test_moved_path_control():
    assert moved_path_control(PROFILE, MAP)["verdict"] == "different path"
    assert moved_path_control([0.9] * 6, None)["verdict"] != "different path"  # a flat path cannot be moved


def test_curve_distance():
    a = [{"step": 0, "atomic_new": 0.0, "new_old_powered": 0.0}, {"step": 10, "atomic_new": 1.0,
                                                                 "new_old_powered": 0.5}]
    b = [{"step": 0, "atomic_new": 0.2, "new_old_powered": 0.0}, {"step": 10, "atomic_new": 1.0,
                                                                 "new_old_powered": 0.1}]
    assert curve_distance(a, b) == pytest.approx((0.2 + 0 + 0 + 0.4) / 4)
    assert curve_distance(a, []) is None
    one_sided = [{"step": 0, "atomic_new": None, "new_old_powered": 0.5}]
    assert curve_distance(one_sided, [{"step": 0, "atomic_new": 0.3, "new_old_powered": 0.1}]) == pytest.approx(0.4)


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


def test_grokked_definition_of_a_run_recorded_before_families_declared_it():
    from grokscope.metrics.milestones import GrokDefinition

    assert GrokDefinition.of({}, "trm") == GrokDefinition("test_inferred_ood", 0.5)
    assert GrokDefinition.of({}, "gpt") == GrokDefinition.of({}, None) == GrokDefinition("test_inferred_iid", 0.9)
    recorded = {"grokked": {"metric": "test_inferred_ood", "threshold": 0.7}}
    assert GrokDefinition.of(recorded, "gpt") == GrokDefinition("test_inferred_ood", 0.7)  # the record wins
