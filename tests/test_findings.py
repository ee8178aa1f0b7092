"""Verdict rules on hand-built numbers: every outcome of every finding and vote is reachable (supported, partly
supported, contradicted, undecided at this n, not testable), the negative controls can fail, and the measures behave:
intervals, sustained milestones, the path equivalence test and the transfer agreement. He et al.'s own numbers:
``tests/test_findings_paper.py``; worlds the paper did not observe: ``tests/test_findings_worlds.py``."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.metrics.intervals import Rate, curve_agreement, final_rate, wilson
from grokscope.metrics.milestones import classify_regime, milestones, sustained_step
from grokscope.metrics.paths import moved_path_control, path_verdict, stored_verdict
from grokscope.reporting.findings import (FAILED, HELD, NOT_TESTABLE, OPEN, FineTuneFacts, RunFacts, Vote,
                                          across_seeds, combine, finding_1, finding_2, finding_3, outcome)


def curve(train, iid=None, ood=None, bridge=None, metric="bridge_use", n=None):
    count = len(train)
    iid, ood, bridge = iid or [0.0] * count, ood or [0.0] * count, bridge or [0.0] * count
    extra = {} if n is None else {"n/test_inferred_iid": n, "n/test_inferred_ood": n, f"n/{metric}_ood": n}
    return [{"step": 100 * i, "train_acc": a, "test_inferred_iid": b, "test_inferred_ood": c, f"{metric}_ood": d,
             **extra} for i, (a, b, c, d) in enumerate(zip(train, iid, ood, bridge))]


SAT = [0.5] + [0.995] * 9  # saturated from step 100


def run(name, rows, cut_short=False, metric="bridge_use", **kw):
    return RunFacts(name, metric, rows, cut_short=cut_short, **kw)


# gpt-like: natural groks on ID long after saturation (t_sat 100, ID >= 0.5 at 500); both-hop full at once, with
# every correct OOD answer through the bridge.
NAT = run("nat", curve(SAT, iid=[0, 0, 0, 0.2, 0.4, 0.6, 0.9, 0.95, 0.96, 0.97], n=1000))
NO_DELAY_NAT = run("nat", curve(SAT, iid=[0, 0.6, 0.9, 0.95, 0.96, 0.97, 0.97, 0.97, 0.97, 0.97], n=1000))
BOTH = run("both", curve(SAT, ood=[0, 0.95, 0.97, 0.98, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99],
                         bridge=[0, 0.92, 0.95, 0.97, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99], n=1000),
           correct_with_bridge={900: Rate(0.99, 990)})
PROFILE, MAP = [0.04, 0.73, 0.9, 0.4, 0.2, 0.1], np.array([[1.0, 1.0, 1.0]] + [[0.5 - 0.1 * s, 0.9 - 0.15 * s,
                                                                               0.1 * s] for s in range(1, 6)])


def cmp(profile_b, map_b=MAP, profile_a=PROFILE, map_a=MAP, n=300):
    return {"profile_a": list(profile_a), "profile_b": list(profile_b), "causal_map_a": np.asarray(map_a).tolist(),
            "causal_map_b": None if map_b is None else np.asarray(map_b).tolist(), "n_queries": n,
            "causal_n_a": [n] * 3, "causal_n_b": [n] * 3}


SAME = cmp([x * 0.98 for x in PROFILE], MAP + 0.02)
DIFF = cmp(list(np.roll(PROFILE, 3)), np.roll(MAP, 1, axis=1))
CONTROL = cmp(PROFILE, None, [0.0] * 6, None)
AGREE = {"metric": "new_old", "distance": 0.01, "interval": [0.0, 0.03], "steps": 10, "margin": 0.1,
         "outcome": "below"}


@pytest.mark.parametrize("natural, comparisons, control, transfer, expected", [
    (NAT, {"both_full": SAME}, CONTROL, AGREE, "supported"),
    (NAT, {"both_full": DIFF}, CONTROL, {**AGREE, "outcome": "above"}, "partly supported"),  # (b) still holds
    (NO_DELAY_NAT, {"both_full": SAME}, CONTROL, AGREE, "not testable"),  # no delay: not grokking
    (NAT, {"both_full": SAME}, cmp(PROFILE), AGREE, "partly supported"),  # step-0 control "same": (a) not testable
    (NAT, {}, CONTROL, AGREE, "partly supported"),  # no comparison: (a) not testable
    (NAT, {"both_full": SAME}, CONTROL, {**AGREE, "outcome": "undecided"}, "undecided at this n"),
    (run("nat", NAT.rows, cut_short=True), {"both_full": SAME}, CONTROL, AGREE, "not testable"),
])
def test_finding_1_outcomes(natural, comparisons, control, transfer, expected):
    result = finding_1(natural, BOTH, comparisons, control, transfer=transfer)
    assert outcome(result["verdict"]) == expected, result
    if expected == "not testable":
        assert "(" in result["verdict"]  # the reason is stated


def test_finding_1_can_be_contradicted_by_its_votes():
    both = run("both", BOTH.rows, correct_with_bridge={900: Rate(0.1, 990)})
    r = finding_1(NAT, both, {"both_full": DIFF}, CONTROL, transfer={**AGREE, "outcome": "above"})
    assert r["verdict"] == "contradicted" and [v["outcome"] for v in r["votes"]] == [FAILED] * 3


def test_finding_1_partly_when_the_path_votes_disagree():
    first = run("first", curve(SAT, ood=[0, 0, 0, 0.2, 0.6, 0.8, 0.95, 0.96, 0.97, 0.97], n=1000))
    r = finding_1(NAT, BOTH, {"both_full": SAME, "first_full": DIFF}, CONTROL, transfer=AGREE, first_full=first)
    assert r["verdict"] == "partly supported", r


def test_finding_1_moved_path_control_must_come_out_different():
    flat = [0.9] * 6  # a flat path: moving it changes nothing, so the test cannot tell paths apart here
    r = finding_1(NAT, BOTH, {"both_full": cmp(flat, None, flat, None)}, CONTROL, transfer=AGREE)
    vote = r["votes"][0]
    assert vote["outcome"] == NOT_TESTABLE and "moved" in vote["why"] and "(a) ID path not testable" in r["verdict"]


def test_finding_1_within_run_comparison_is_a_description_not_a_vote():
    r = finding_1(NAT, BOTH, {"both_full": SAME}, CONTROL, within=DIFF, transfer=AGREE)
    assert r["verdict"] == "supported" and "description (not a vote)" in r["measured"] and len(r["votes"]) == 3


UP = [0, 0, 0, 0, 0.2, 0.6, 0.8, 0.95, 0.96, 0.97]


@pytest.mark.parametrize("second, expected", [
    (run("second", curve(SAT, ood=UP, bridge=[0, 0, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2], n=1000)), "supported"),
    (run("second", curve(SAT, ood=UP, bridge=[0.9] * 10, n=1000)), "partly supported"),  # late, but a bridge
    (run("second", curve(SAT, ood=UP, bridge=[0.48] * 10, n=40)), "undecided at this n"),
    (run("second", curve(SAT, ood=[0.1] * 10, n=1000)), "partly supported"),  # (i) not testable, (ii) held
    (run("second", curve(SAT, ood=UP), cut_short=True), "not testable"),
])
def test_finding_2_outcomes(second, expected):
    result = finding_2(second, BOTH)
    assert outcome(result["verdict"]) == expected, result


def test_finding_2_contradicted():
    """Second-hop full generalises at once (no grokking) and both-hop full grokked: neither half."""
    second = run("second", curve(SAT, ood=[0, 0.9] + [0.95] * 8, bridge=[0.9] * 10, n=1000))
    both_late = run("both", curve(SAT, ood=UP, bridge=[0.99] * 10, n=1000))
    assert finding_2(second, both_late)["verdict"] == "contradicted"


def test_finding_2_needs_its_positive_control():
    second = run("second", curve(SAT, ood=UP, n=1000))
    r = finding_2(second, None)
    assert r["verdict"].startswith("not testable") and "no both-hop-full run" in r["verdict"]
    weak = run("both", curve(SAT, ood=[0, 0.95] + [0.99] * 8, bridge=[0.6] * 10, n=1000))
    old = finding_2(second, weak)  # trained 9 x t_sat, over the 3x: the weak bridge counts as failed
    assert old["verdict"].startswith("contradicted ((i)") and "no positive control" in old["measured"]
    short = run("both", [{**r, "train_acc": 1.0 if r["step"] else 0.5, "n/train_acc": 1000} for r in weak.rows[:3]])
    assert short.t_sat == 100  # 1.0 on 1,000 queries clears 0.99 at once; at 2 x t_sat its bridge may still form
    assert "trained 2.0x t_sat" in finding_2(second, short)["measured"]
    assert finding_2(second, short)["verdict"].startswith("not testable")


def ft(regime, new_old, bridge=0.9, old_new=0.0, new_new=0.0, new=1.0, n=200, parent=BOTH, **kw):
    rates = {"atomic_new": Rate(new, 2000), "new_old": Rate(new_old, n), "bridge_new_old": Rate(bridge, n),
             "old_new": Rate(old_new, n), "new_new": Rate(new_new, n), "bridge_old_new": Rate(bridge, n),
             "bridge_new_new": Rate(bridge, n)}
    return FineTuneFacts(f"ft_{regime}", regime, rates, None if regime == "control" else "last",
                         None if regime == "control" else parent, **kw)


NO_CIRCUIT = run("second", curve(SAT, ood=UP, bridge=[0.1] * 10, n=1000))


def test_finding_3_outcomes():
    control = ft("control", 0.1, bridge=0.0)
    assert finding_3([ft("natural", 1.0), control])["verdict"] == "supported"
    assert finding_3([ft("natural", 0.1), control])["verdict"] == "partly supported"  # null transfer
    assert finding_3([ft("natural", 0.1, old_new=0.9), control])["verdict"].startswith("contradicted")
    assert outcome(finding_3([ft("natural", 1.0), ft("second_full", 1.0, parent=NO_CIRCUIT), control])["verdict"]) \
        == "partly supported"
    assert outcome(finding_3([ft("natural", 0.76, n=20), control])["verdict"]) == "undecided at this n"
    assert finding_3([control])["verdict"].startswith("not testable")
    assert finding_3([ft("natural", 1.0, cut_short=True), control])["verdict"].startswith("not testable (run cut")


def test_finding_3_missing_queries_make_a_vote_not_testable():
    f = ft("natural", 1.0)
    del f.rates["new_new"]
    r = finding_3([f, ft("control", 0.1, bridge=0.0)])
    assert r["verdict"] == "partly supported ((iii-b) old+new and new+new do not compose, from any parent not " \
                           "testable)" and "1 not measured" in r["measured"]


def test_chance_floor_at_or_above_a_threshold_cannot_pass():
    f = ft("natural", 1.0, floors={"bridge_new_old": 0.6})
    r = finding_3([f, ft("control", 0.1, bridge=0.0)])
    assert outcome(r["verdict"]) == "partly supported"
    row = next(c for c in r["checks"] if c["measure"] == "bridge_new_old" and c["subject"] == "ft_natural")
    assert "not testable" in row["chance floor (step 0)"] and row["outcome"] == "not measured"


def test_combine_comes_out_every_way():
    def votes(*outcomes):
        return [Vote(f"v{i}", o, "") for i, o in enumerate(outcomes)]
    assert combine(votes(HELD, HELD)) == "supported"
    assert combine(votes(FAILED, FAILED)) == "contradicted"
    assert combine(votes(HELD, FAILED)) == "partly supported"
    assert combine(votes(HELD, OPEN)) == "undecided at this n"
    assert combine(votes(FAILED, OPEN)) == "undecided at this n"
    assert combine(votes(HELD, FAILED, OPEN)) == "partly supported"
    assert combine(votes(HELD, NOT_TESTABLE)) == "partly supported (v1 not testable)"
    assert combine(votes(FAILED, NOT_TESTABLE)) == "contradicted (v1 not testable)"
    assert combine(votes(NOT_TESTABLE)).startswith("not testable (v0: ")
    assert combine([]) == "not testable (no vote)"


def test_across_seeds():
    a = {"finding": 1, "verdict": "supported", "decided_by": "d", "measured": "x", "checks": [], "rule": "",
         "paper": ""}
    b, u, o = {**a, "verdict": "contradicted"}, {**a, "verdict": "not testable (y)"}, {**a, "verdict": UNDECIDED_V}
    assert across_seeds({0: a})["verdict"] == "supported"
    assert across_seeds({0: a, 1: a})["verdict"] == "supported (all 2 seeds)"
    mixed = across_seeds({0: a, 1: b})
    assert outcome(mixed["verdict"]) == "partly supported" and "seed 1: contradicted" in mixed["verdict"]
    # a seed that could not test the finding is not a disagreement: the testable one decides, and it says so
    one = across_seeds({0: b, 1: u})
    assert outcome(one["verdict"]) == "contradicted" and "rests on one seed (seed 0)" in one["measured"]
    assert "not testable in seeds 1" in one["measured"]
    assert outcome(across_seeds({0: u, 1: u})["verdict"]) == "not testable"
    assert outcome(across_seeds({0: a, 1: o})["verdict"]) == "undecided at this n"


UNDECIDED_V = "undecided at this n (z)"


def test_across_seeds_reports_the_spread():
    check = {"finding": 2, "subject": "s", "measure": "m", "value [95% interval] (n)": "0.40 [0.30, 0.50] (n=72)"}
    a = {"finding": 2, "verdict": "supported", "decided_by": "d", "measured": "x", "checks": [check], "rule": "",
         "paper": ""}
    b = {**a, "checks": [{**check, "value [95% interval] (n)": "0.60 [0.49, 0.70] (n=72)"}]}
    r = across_seeds({0: a, 1: b})
    assert "s m: across seeds 0.40-0.60" in r["measured"] and "seed 1 0.60 [0.49, 0.70]" in r["measured"]


# ------------------------------------------------------------------------------------------------ measures
def test_wilson_interval_known_values():
    assert wilson(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(1.0, 0) == (0.0, 1.0)
    assert Rate(0.93, 162).against(0.9) == "undecided"  # [0.88, 0.96] straddles 0.9
    assert Rate(0.93, 5000).against(0.9) == "above" and Rate(0.8, 5000).against(0.9) == "below"


def test_final_rate_averages_the_last_evaluations():
    rows = [{"step": i, "m": v, "n/m": 50} for i, v in enumerate([0.0, 0.2, 0.4, 0.6, 0.8])]
    r = final_rate(rows, "m")
    assert r.value == pytest.approx(0.6) and r.n == 50 and r.evals == 3
    assert final_rate(rows, "m", k=1).value == 0.8 and final_rate(rows, "absent") is None
    assert final_rate([{"step": 0, "m": 0.5}], "m", n=7).n == 7  # rows without n/<metric>: the fallback


def test_sustained_step_needs_the_level_kept_or_its_interval_clear():
    lucky = [{"step": s, "m": v} for s, v in enumerate([0.1, 0.6, 0.2, 0.3, 0.55, 0.6, 0.7])]
    assert sustained_step(lucky, "m", 0.5) == 4  # the lone 0.6 at step 1 is not kept
    assert sustained_step(lucky[:6], "m", 0.5) is None  # a crossing in the last k-1 evaluations: not yet
    clear = [{"step": 0, "m": 0.1}, {"step": 1, "m": 0.7, "n/m": 500}, {"step": 2, "m": 0.2}]
    assert sustained_step(clear, "m", 0.5) == 1  # [0.66, 0.74] clears 0.5 on its own
    assert sustained_step(clear, "m", 0.5, n=None) == 1 and sustained_step(
        [{**r, "n/m": 20} if r["step"] == 1 else r for r in clear], "m", 0.5) is None  # [0.48, 0.85] does not


def test_path_equivalence_says_same_different_and_undecided():
    flat, peaked = [0.0, 0.02, 0.01, 0.0], [0.1, 0.6, 0.95, 0.2]
    assert path_verdict(flat, peaked, None, None)["verdict"] == "different path"  # step 0 vs a bridge path
    assert path_verdict(flat, flat, None, None)["verdict"] == "undetermined"
    same = stored_verdict(SAME)
    assert same["verdict"] == "same path" and same["profile"]["margin"] == pytest.approx(0.25)
    assert stored_verdict(DIFF)["verdict"] == "different path"
    # the same pair on 12 queries: the intervals straddle the margin
    assert stored_verdict({**SAME, "n_queries": 12, "causal_n_a": [12] * 3, "causal_n_b": [12] * 3})["verdict"] \
        == "undecided at this n"
    # saturated cells (>= 0.95 in both maps) are left out
    map_a = np.array([[1.0, 1.0, 1.0], [0.9, 0.1, 0.8], [0.1, 0.9, 0.2], [0.5, 0.5, 0.5]])
    result = path_verdict(peaked, peaked, map_a, np.roll(map_a, 1, axis=1))
    assert result["cells_compared"] == 9 and result["verdict"] == "different path"


def test_identical_step_profiles_with_query_noise_come_out_same():
    """The case the old correlation test got wrong one time in five: a model that resolves b early and keeps it,
    measured twice on 300 queries. Its moved copy must still come out different."""
    rng = np.random.default_rng(0)
    step = np.array([0.02] * 5 + [0.97] * 10)
    verdicts = []
    for _ in range(40):
        a, b = rng.binomial(300, step) / 300, rng.binomial(300, step) / 300
        c = {"profile_a": list(a), "profile_b": list(b), "n_queries": 300}
        verdicts.append((stored_verdict(c)["verdict"], moved_path_control(c)["verdict"]))
    assert sum(v == ("same path", "different path") for v in verdicts) >= 38


def test_per_query_records_are_resampled():
    rng = np.random.default_rng(1)
    hits_a = (rng.random((300, 6)) < np.array(PROFILE)).astype(float)
    hits_b = (rng.random((300, 6)) < np.array(PROFILE)).astype(float)
    c = {"profile_a": hits_a.mean(0).tolist(), "profile_b": hits_b.mean(0).tolist(), "hits_a": hits_a.tolist(),
         "hits_b": hits_b.tolist(), "n_queries": 300}
    result = stored_verdict(c)
    assert result["resampled"] == "per query" and result["verdict"] == "same path"
    assert moved_path_control(c)["verdict"] == "different path"


def test_moved_path_control():
    assert moved_path_control(SAME)["verdict"] == "different path"
    flat = {"profile_a": [0.9] * 6, "n_queries": 300}
    assert moved_path_control(flat)["verdict"] != "different path"  # a flat path cannot be moved


def test_curve_agreement():
    a = [{"step": 0, "m": 0.0}, {"step": 10, "m": 1.0}, {"step": 20, "m": 1.0}]
    b = [{"step": 0, "m": 0.2}, {"step": 10, "m": 0.6}, {"step": 30, "m": 0.0}]
    r = curve_agreement(a, b, "m", 0.1)
    assert r["distance"] == pytest.approx(0.3) and r["steps"] == 2 and r["outcome"] == "above"
    assert curve_agreement(a, [], "m", 0.1) is None
    noisy = curve_agreement([{"step": 0, "m": 0.5, "n/m": 8}], [{"step": 0, "m": 0.5, "n/m": 8}], "m", 0.1)
    assert noisy["distance"] == 0 and noisy["outcome"] == "undecided"  # 8 queries cannot show agreement


def test_regime_classification():
    sat = [0.5, 0.995, 0.995, 0.995, 0.995, 0.995, 0.995, 0.995, 0.995, 0.995]

    def label(ood, bridge):
        return classify_regime(curve(sat, ood=ood, bridge=bridge), "test_inferred_ood", "bridge_use_ood")
    assert label([0, 0, 0, 0, 0.1, 0.3, 0.6, 0.95, 0.96, 0.97], [0, .2, .5, .9, .95, 1, 1, 1, 1, 1])["regime"] == \
        "natural grokking"
    assert label([0, 0.6, 0.95, 0.95, 1, 1, 1, 1, 1, 1], [0, .5, .95, 1, 1, 1, 1, 1, 1, 1])["regime"] == "no delay"
    r = label([0, 0, 0, 0.2, 0.5, 0.95, 0.96, 0.97, 0.97, 0.97], [0, .1, .1, .2, .2, .2, .3, .2, .2, .2])
    assert r["regime"] == "fake grokking" and not r["circuit"] and r["t_high"] == 500
    assert label([0] * 10, [0] * 10)["regime"] == "no generalisation"


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


def test_every_threshold_names_its_source_in_the_methods_doc():
    """docs/methods.md, "Thresholds and their sources", has a row for every constant of metrics/thresholds.py."""
    from pathlib import Path

    from grokscope.metrics import thresholds as th

    doc = (Path(__file__).parents[1] / "docs" / "methods.md").read_text()
    table = doc[doc.index("## Thresholds and their sources"):]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = {name.strip("` ") for row in rows for name in row.split("|")[1].split(",")}
    constants = {k for k, v in vars(th).items() if k.isupper() and k not in ("BRIDGE_USE_VERSION", "SOURCE")}
    assert set(th.SOURCE) <= constants  # the report's short sources name real constants
    assert constants <= named, constants - named
    assert all(row.split("|")[3].strip() for row in rows)  # every row gives a source


def test_transfer_agreement_resamples_at_each_fine_tunes_n():
    from grokscope.reporting.findings import transfer_agreement

    rows = [{"step": s, "new_old": 0.5} for s in (10, 20, 30)]
    assert transfer_agreement(rows, rows)["outcome"] == "below"  # no n: the point (0 apart) decides
    for n_natural, n_both in ((8, None), (None, 8), (8, 8)):  # either side's n widens the interval past 0.1
        assert transfer_agreement(rows, rows, n_natural, n_both)["outcome"] == "undecided", (n_natural, n_both)


def test_across_seeds_names_the_seeds_it_decided_over():
    a = {"finding": 1, "verdict": "supported", "decided_by": "d", "measured": "x", "checks": [], "rule": "",
         "paper": ""}
    u = {**a, "verdict": "not testable (y)"}
    r = across_seeds({0: a, 1: a, 2: u, 3: u})
    assert r["details"][0] == "decided over seeds 0, 1; not testable in seeds 2, 3"
    assert across_seeds({0: u, 1: u})["details"][0] == "decided over seeds none; not testable in seeds 0, 1"


def test_seed_spread_skips_numbers_not_measured_everywhere():
    def check(measure, text):
        return {"finding": 2, "subject": "s", "measure": measure, "value [95% interval] (n)": text}
    a = {"finding": 2, "verdict": "supported", "decided_by": "d", "measured": "x", "rule": "", "paper": "",
         "checks": [check("lone", "0.10 [0.0, 0.2] (n=9)"), check("gone", "not measured"),
                    check("both", "0.40 [0.30, 0.50] (n=72)")]}
    b = {**a, "checks": [check("gone", "0.30 [0.2, 0.4] (n=9)"), check("both", "0.60 [0.49, 0.70] (n=72)")]}
    spread = [d for d in across_seeds({0: a, 1: b})["details"] if d.startswith("spread")]
    assert spread == ["spread: s both: across seeds 0.40-0.60 (sd 0.14); within seed seed 0 0.40 [0.30, 0.50] (n=72), "
                      "seed 1 0.60 [0.49, 0.70] (n=72)"]


def test_a_run_that_never_saturates_has_no_delay_to_judge():
    """Training accuracy 0.985 throughout: not "no delay" (which would pass both-hop full's precondition and fail
    second-hop full's), but not testable."""
    flat = [0.5] + [0.985] * 9
    second = run("second", curve(flat, ood=UP, n=1000))
    both = run("both", curve(flat, ood=[0, 0.95] + [0.99] * 8, bridge=[0.99] * 10, n=1000))
    r = finding_2(second, both)
    assert outcome(r["verdict"]) == "not testable" and r["measured"].count("never reached training accuracy 0.99") == 2
    r1 = finding_1(NAT, both, {"both_full": SAME}, CONTROL, transfer=AGREE)
    assert r1["verdict"].startswith("not testable") and "never reached training accuracy 0.99" in r1["verdict"]


def test_the_moved_path_does_not_wrap_around():
    """A rising profile, and the same 0.07 higher: its largest one-stage step is 0.1 (margin 0.05), not the 0.25 a
    wrap-around from the last stage to the first would make."""
    a = [0.55, 0.6, 0.65, 0.7, 0.8]
    result = path_verdict(a, [x + 0.07 for x in a], None, None)
    assert result["profile"]["margin"] == pytest.approx(0.05) and result["verdict"] == "different path"


def test_stored_comparisons_that_cannot_be_resampled():
    empty = {**SAME, "bridge_metric": "bridge_use", "hits_a": [], "hits_b": []}  # no patched query at all
    assert moved_path_control(empty)["verdict"] in ("different path", "undetermined", "undecided at this n")
    old = {**SAME, "bridge_metric": "bridge_use"}  # bridge use stored before per-query records were kept
    assert stored_verdict(old)["verdict"] == "undetermined" and "re-run" in stored_verdict(old)["why"]


def test_a_lag_in_transfer_is_not_diluted_by_a_long_plateau():
    """Both-hop full composes new+old 6 evaluations after natural; 100 evaluations at 1.0 follow. Over the whole run
    the mean |difference| would be 0.06 (agree); over the transient it is 0.5."""
    from grokscope.reporting.findings import transfer_agreement

    natural = [{"step": i, "new_old": 1.0 if i >= 6 else 0.0} for i in range(1, 120)]
    slow = [{"step": i, "new_old": 1.0 if i >= 12 else 0.0} for i in range(1, 120)]
    r = transfer_agreement(natural, slow)
    assert r["window_end"] == 24 and r["distance"] == pytest.approx(6 / 24) and r["outcome"] == "above"


def test_across_seeds_takes_its_number_from_a_seed_that_decided_it():
    a = {"finding": 1, "verdict": "contradicted", "decided_by": "seed-1 number", "measured": "x", "checks": [],
         "rule": "", "paper": ""}
    u = {**a, "verdict": "not testable (y)", "decided_by": "seed-0 reason"}
    assert across_seeds({0: u, 1: a})["decided_by"] == "seed 1: seed-1 number"
    s = {**a, "verdict": "supported", "decided_by": "z"}
    assert across_seeds({0: s, 1: a})["decided_by"].startswith("seeds disagree")


def test_finding_3_contradicted_without_a_circuit_parent():
    """Old+new composing from any parent contradicts limited transfer; it needs no circuit parent to say so."""
    control = ft("control", 0.1, bridge=0.0)
    r = finding_3([ft("second_full", 0.2, old_new=0.95, parent=NO_CIRCUIT), control])
    assert r["verdict"].startswith("contradicted") and r["decided_by"].startswith("(iii-b)")


def test_vote_b_reads_an_analysed_step_old_enough():
    young = run("both", BOTH.rows, correct_with_bridge={200: Rate(0.1, 990)})  # analysed at 2 x t_sat
    r = finding_1(NAT, young, {"both_full": SAME}, CONTROL, transfer=AGREE)
    assert r["votes"][1]["outcome"] == NOT_TESTABLE and "analysed at 2.0x t_sat" in r["votes"][1]["why"]


def test_run_facts_read_their_own_saturation_and_the_evaluations_at_a_level():
    rows = curve([0.5, 0.95, 0.95, 0.95, 0.95], ood=[0, 0, 0.5, 0.6, 0.2], bridge=[0, 0, 0.3, 0.1, 0.9], n=1000)
    own = run("r", rows, sat_threshold=0.9)
    assert own.t_sat == 100 and own.regime("test_inferred_ood")["t_sat"] == 100  # the label uses the run's own
    assert run("r", rows).regime("test_inferred_ood")["t_sat"] is None  # 0.95 is not the findings' 0.99
    assert own.bridge_while_up().value == pytest.approx(0.2)  # OOD exactly 0.5 counts as up (0.3 and 0.1)
    # the per-query share counts an analysed step when its latest evaluation (the step itself included) is up
    shares = {200: Rate(0.4, 50), 300: Rate(0.2, 50), 400: Rate(0.9, 50), 450: Rate(1.0, 50)}
    assert run("r", rows, correct_with_bridge=shares).correct_share_while_up().value == pytest.approx(0.3)
    missing = run("r", [{k: v for k, v in r.items() if r["step"] != 200 or k != "test_inferred_ood"}
                        for r in rows], correct_with_bridge={200: Rate(0.4, 50)})
    assert missing.correct_share_while_up() is None  # no OOD measured there: not counted as up


def test_mutation_survivors_of_the_third_pass():
    """Each line here kills a mutant the mutation run found alive (its rule, not its wording)."""
    from grokscope.reporting.findings import transfer_agreement

    # an analysed step before the run's first evaluation is skipped, not a crash
    late = run("r", [dict(r, step=r["step"] + 100) for r in curve(SAT, ood=UP, n=1000)],
               correct_with_bridge={50: Rate(0.1, 10)})
    assert late.correct_share_while_up() is None
    # both-hop full's comparison missing does not stop first-hop full's vote
    first = run("first", curve(SAT, ood=[0, 0, 0, 0.2, 0.6, 0.8, 0.95, 0.96, 0.97, 0.97], n=1000))
    r = finding_1(NAT, BOTH, {"first_full": SAME, "both_full": None}, CONTROL, transfer=AGREE, first_full=first)
    assert [v["vote"] for v in r["votes"][:2]] == ["(a) ID path, natural vs both_full",
                                                  "(a) ID path, natural vs first_full"]
    assert transfer_agreement([{"step": 1, "new_old": 1.0}], [{"step": 2, "new_old": 1.0}]) is None  # nothing shared
    # both-hop full aged exactly 3 x t_sat with a weak bridge: old enough, so (ii) failed
    aged = run("b", [{**r, "train_acc": 1.0 if r["step"] else 0.5, "n/train_acc": 1000, "bridge_use_ood": 0.6}
                     for r in BOTH.rows[:4]])
    assert aged.age == 3.0 and finding_2(None, aged)["votes"][1]["outcome"] == FAILED
    # the fine-tune whose parent run is missing says so; two untested fine-tunes are both named
    lost = ft("natural", 1.0, parent=None)
    r = finding_3([lost, ft("both_full", 1.0, new=0.5), ft("first_full", 1.0), ft("control", 0.1, bridge=0.0)])
    assert "ft_natural: not testable (parent run not found)" in r["measured"]
    assert r["verdict"].endswith("(not testable: ft_natural, ft_both_full)")
    # (iii-a) and (iii-b) both failed: the first screen shows (iii-b), which decided "contradicted"
    r = finding_3([ft("natural", 0.1, old_new=0.95), ft("control", 0.1, bridge=0.0)])
    assert r["verdict"].startswith("contradicted") and r["decided_by"].startswith("(iii-b)")


def test_mutation_survivors_of_the_third_pass_second_batch():
    # a crossing decided by the dataset's n (rows without n/<metric>): 0.7 on 1,000 queries clears 0.5 at once
    rows = [{"step": 100 * i, "test_inferred_ood": v} for i, v in enumerate([0.0, 0.7, 0.2, 0.3, 0.6, 0.6, 0.6])]
    assert run("r", rows, n={"test_inferred_ood": 1000}).reached("test_inferred_ood", 0.5) == 100
    assert run("r", rows).reached("test_inferred_ood", 0.5) == 400  # without n: kept for 3 evaluations
    # vote (b) at exactly 3 x t_sat is old enough to fail; the not-testable vote keeps its number in the checks
    at_3 = finding_1(NAT, run("both", BOTH.rows, correct_with_bridge={300: Rate(0.1, 990)}), {"both_full": SAME},
                     CONTROL, transfer=AGREE)
    assert at_3["votes"][1]["outcome"] == FAILED
    young = finding_1(NAT, run("both", BOTH.rows, correct_with_bridge={200: Rate(0.1, 990)}), {"both_full": SAME},
                      CONTROL, transfer=AGREE)
    assert any(c["measure"].startswith("share of correct OOD answers") for c in young["checks"])
    # an undecided transfer is an undecided vote
    r = finding_1(NAT, BOTH, {"both_full": SAME}, CONTROL, transfer={**AGREE, "outcome": "undecided"})
    assert r["votes"][2]["outcome"] == OPEN
    # the moved control resamples the map at its own counts: on 5 queries per position it cannot say "different"
    ramp = [[0.2 + 0.1 * s] * 3 for s in range(6)]  # each stage 0.1 above the last: margin 0.05, moved by 0.1
    flat_profile = {"profile_a": [0.9] * 6, "n_queries": 300, "causal_map_a": ramp, "causal_n_a": [5] * 3}
    assert moved_path_control(flat_profile)["verdict"] == "undecided at this n"
    assert moved_path_control({**flat_profile, "causal_n_a": [30000] * 3})["verdict"] == "different path"


# ------------------------------------------------------------------------------------------------ bridge decodable
def probed(run_facts, value, controls=(0.03, 0.03, 0.3), n=200):
    from dataclasses import replace

    from grokscope.reporting.findings import Decodable

    names = ("shuffled labels", "step-0 model", "query tokens")
    return replace(run_facts, decodable=Decodable(900, Rate(value, n), {k: Rate(c, n) for k, c in zip(names, controls)},
                                                  "H1_commit, slot 4"))


def test_a_parent_whose_head_misses_a_decodable_bridge_is_a_circuit_by_the_probe_and_says_so():
    from grokscope.reporting.findings import CIRCUIT, NOT_CIRCUIT, parent_kind

    assert parent_kind(ft("second_full", 0.2, parent=NO_CIRCUIT))[0] == NOT_CIRCUIT  # the head's measure alone
    kind, why = parent_kind(ft("second_full", 0.2, parent=probed(NO_CIRCUIT, 0.97)))
    assert kind == CIRCUIT and "a circuit by bridge decodable" in why and "does not see it" in why
    # a probe no better than the query's own tokens is no evidence of a code
    kind, why = parent_kind(ft("second_full", 0.2, parent=probed(NO_CIRCUIT, 0.97, controls=(0.03, 0.03, 0.95))))
    assert kind == NOT_CIRCUIT and "not above its controls" in why
    kind, why = parent_kind(ft("second_full", 0.2, parent=probed(NO_CIRCUIT, 0.2)))
    assert kind == NOT_CIRCUIT and "no circuit by bridge_use_ood and bridge decodable" in why
    kind, why = parent_kind(ft("both_full", 1.0, parent=probed(BOTH, 0.2)))
    assert kind == CIRCUIT and "a circuit by He et al.'s bridge_use_ood" in why


def test_the_two_bridge_measures_disagreeing_is_said_in_one_sentence_each_way():
    from grokscope.reporting.findings import bridge_disagreement

    low_head = bridge_disagreement(probed(NO_CIRCUIT, 0.97))
    assert low_head.startswith("The two bridge measures disagree on second") and "does not read" in low_head
    assert low_head.count(". ") == 0 and low_head.endswith(".")
    low_probe = bridge_disagreement(probed(BOTH, 0.2))
    assert "where a linear probe fitted on ID compositions does not" in low_probe
    assert bridge_disagreement(probed(BOTH, 0.98)) is None and bridge_disagreement(BOTH) is None
    r = finding_2(probed(NO_CIRCUIT, 0.97), BOTH)
    assert r["disagreements"] == [low_head] and low_head in r["details"]
    assert finding_2(NO_CIRCUIT, BOTH)["disagreements"] == []
    control = ft("control", 0.1, bridge=0.0)
    r3 = finding_3([ft("natural", 1.0), ft("second_full", 0.2, parent=probed(NO_CIRCUIT, 0.97)), control])
    assert r3["disagreements"] == [low_head] and r3["parents"]["ft_second_full"] == "circuit"


def test_the_report_reads_the_last_analysed_probe_step_up_to_a_checkpoint():
    from grokscope.reporting.build import decodable

    def entry(v):
        at = lambda x: {"value": x, "n": 72, "interval": [0, 1]}  # noqa: E731
        return {"chosen": {"stage": "H1_commit", "slot": 4},
                "sets": {"test_inferred_ood": {"probe": at(v), "shuffled labels": at(0.0), "query tokens": at(0.5)}}}

    probe = {"0": entry(0.1), "3000": entry(0.6), "9000": {**entry(0.95), "bridge_use_at_slot": {
        "test_inferred_ood": {"value": 0.8, "n": 64}}}}
    d = decodable(probe)
    assert d.use_at_slot == Rate(0.8, 64) and "bridge use patched at that slot 0.80" in d.text()
    assert decodable(probe, until=5000).use_at_slot is None
    assert d.step == 9000 and d.probe.value == 0.95 and d.probe.n == 72 and set(d.controls) == {"shuffled labels",
                                                                                                 "query tokens"}
    assert decodable(probe, until=5000).step == 3000 and decodable({}) is None
    assert "H1_commit, slot 4" in d.text()
