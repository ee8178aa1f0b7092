"""The verdict rules fed He et al.'s own numbers (the golden test), the same numbers with one claim broken, and every
threshold just above and just below (literal values: they pin the constants of ``metrics/thresholds.py``, which
mutation testing does not mutate).

Sources: He et al. Fig. 2 rows A-D (anchor values at 50k ... 1.25M steps, OOD test n = 2,040, training probes n =
3,000) and Fig. 4 rows A-F (final values with their n). He et al. publish no per-stage bridge profile or causal map;
where Finding 1 needs them, the stand-in below has the paper's levels (bridge found 0.998 / 1.000) and one shape
for both models, which is what "same path" claims.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from grokscope.metrics.intervals import Rate
from grokscope.metrics.milestones import GrokDefinition
from grokscope.reporting.findings import FineTuneFacts, RunFacts, finding_1, finding_2, finding_3, outcome

STEPS = [50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 750_000, 1_000_000, 1_250_000]
FIG2 = {  # He et al. Fig. 2: (training acc, bridge found, OOD target-found) at STEPS
    "natural": ([0.905, 0.988, 0.992, 0.997, 0.997, 0.998, 0.999, 1.000, 0.999, 1.000],           # row A
                [0.152, 0.091, 0.176, 0.325, 0.821, 0.989, 0.996, 0.998, 0.999, 0.998],
                [0.003, 0.002, 0.005, 0.002, 0.011, 0.429, 0.750, 0.735, 0.681, 0.704]),
    "both_full": ([0.988, 0.993, 0.904, 0.998, 0.999, 1.000, 1.000, 0.999, 0.997, 0.999],         # row B
                  [0.877, 0.860, 0.607, 0.946, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000],
                  [1.000, 1.000, 0.844, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000]),
    "first_full": ([0.971, 0.994, 0.999, 0.998, 1.000, 1.000, 1.000, 1.000, 0.999, 1.000],        # row C (released)
                   [0.156, 0.993, 0.999, 1.000, 1.000, 1.000, 1.000, 0.999, 0.996, 1.000],
                   [0.005, 0.005, 0.006, 0.006, 0.011, 0.018, 0.077, 0.463, 0.582, 0.970]),
    "second_full": ([0.976, 0.997, 0.996, 0.982, 0.998, 0.998, 0.997, 0.999, 0.998, 0.999],       # row D
                    [0.003, 0.017, 0.018, 0.014, 0.078, 0.063, 0.173, 0.581, 0.663, 0.312],
                    [0.008, 0.130, 0.231, 0.222, 0.561, 0.654, 0.792, 0.913, 0.951, 0.939]),
}
TRM = GrokDefinition("test_inferred_ood", 0.5)


def paper_run(regime: str, bridge=None, ood=None) -> RunFacts:
    train, br, oo = FIG2[regime]
    rows = [{"step": s, "train_acc": a, "bridge_found_ood": b, "test_inferred_ood": o, "n/train_acc": 3000,
             "n/bridge_found_ood": 2040, "n/test_inferred_ood": 2040}
            for s, a, b, o in zip(STEPS, train, bridge or br, ood or oo)]
    return RunFacts(regime, "bridge_found", rows, TRM)


# Stand-in path (15 recursion stages of the trm; causal map over h, r1, r2): the paper's levels, one shape.
PROFILE = [0.0, 0.0, 0.02, 0.1, 0.45, 0.93, 0.998, 0.99, 0.97, 0.9, 0.95, 0.99, 0.998, 0.99, 0.98]
MAP = np.array([[1.0, 1.0, 1.0]] + [[0.6 - 0.04 * s, 0.9 - 0.05 * s, 0.05 * s] for s in range(1, 15)])


def comparison(profile_a, profile_b, map_a=MAP, map_b=MAP) -> dict:
    return {"profile_a": list(profile_a), "profile_b": list(profile_b),
            "causal_map_a": None if map_a is None else np.asarray(map_a).tolist(),
            "causal_map_b": None if map_b is None else np.asarray(map_b).tolist(), "step_a": 0, "step_b": 1}


BOTH_PROFILE = [min(1.0, x + 0.01 * ((i % 3) - 1)) for i, x in enumerate(PROFILE)]  # level 1.000, same shape
CONTROL = comparison([0.0] * 15, PROFILE, None, MAP)  # step 0: no path (and no correct answer to trace)


def f1(natural=None, both=None, comparisons=None, control=CONTROL):
    return finding_1(natural or paper_run("natural"), both or paper_run("both_full"),
                     comparisons or {"both_full": comparison(PROFILE, BOTH_PROFILE, MAP, MAP + 0.01)}, control)


# He et al. Fig. 4: (New Fact acc, n), new+old (EM, n), new+old bridge found, old+new EM (n), new+new EM (n = 3,000)
FIG4 = {
    "natural": ((1.0, 2000), (1.000, 16), 1.000, (0.000, 18), 0.007),      # row A
    "both_full": ((1.0, 2000), (1.000, 26), 1.000, (0.020, 35), 0.036),    # row B (new+new: its max)
    "first_full": ((1.0, 2000), (1.000, 33), 1.000, (0.000, 31), 0.004),   # row C
    "second_full": ((1.0, 2000), (0.355, 33), 0.367, (0.000, 28), 0.002),  # row D
    "control": ((0.956, 2000), (0.312, 16), 0.000, (0.000, 18), 0.001),    # row E (New Fact: last-10 mean)
    "both_half": ((1.0, 2000), (0.350, 36), 0.983, (0.000, 29), 0.001),    # row F
}


def paper_finetunes(**changes) -> list[FineTuneFacts]:
    """Fig. 4's rows as fine-tunes; ``changes``: regime -> {measure: Rate} replacing the paper's value."""
    out = []
    for regime, (new, no, br, on, nn) in FIG4.items():
        rates = {"atomic_new": Rate(*new), "new_old": Rate(*no), "bridge_new_old": Rate(br, no[1]),
                 "old_new": Rate(*on), "bridge_old_new": Rate(1.0, on[1]), "new_new": Rate(nn, 3000)}
        rates.update(changes.get(regime, {}))
        out.append(FineTuneFacts(f"ft_{regime}", regime, rates, None if regime == "control" else "last"))
    return out


# ------------------------------------------------------------------------------------------------ golden
def test_he_et_al_numbers_support_all_three_findings():
    r1 = f1()
    assert r1["verdict"] == "supported", r1
    r2 = finding_2(paper_run("second_full"), paper_run("both_full"))
    assert r2["verdict"] == "supported", r2
    r3 = finding_3(paper_finetunes())
    assert r3["verdict"] == "supported", r3
    assert r3["expectations"]["held"] == r3["expectations"]["total"] == 22  # 3 x 4 + 2 x 3 + 4 (control)


def test_first_hop_full_is_compared_when_present():
    comparisons = {"both_full": comparison(PROFILE, BOTH_PROFILE), "first_full": comparison(PROFILE, BOTH_PROFILE)}
    r = finding_1(paper_run("natural"), paper_run("both_full"), comparisons, CONTROL,
                  first_full=paper_run("first_full"))
    assert r["verdict"] == "supported" and "final first_full" in r["measured"]
    moved = {**comparisons, "first_full": comparison(PROFILE, np.roll(PROFILE, 5), MAP, np.roll(MAP, 1, 1))}
    r = finding_1(paper_run("natural"), paper_run("both_full"), moved, CONTROL, first_full=paper_run("first_full"))
    assert r["verdict"] == "partly supported", r


# ------------------------------------------------------------------------------------------------ broken claims
def test_broken_claims_are_not_supported():
    # Finding 1: both-hop full's bridge at 0.1: no path on one side -> different.
    low = [x * 0.1 for x in BOTH_PROFILE]
    assert outcome(f1(comparisons={"both_full": comparison(PROFILE, low)})["verdict"]) == "contradicted"
    # Finding 1: the natural TRM never rises on OOD (no grokking) -> not testable.
    flat = paper_run("natural", ood=[0.01] * 10)
    assert "did not grok" in f1(natural=flat)["verdict"]
    # Finding 1: both-hop full rising as late as natural: not the paper's non-grokked model.
    late = paper_run("both_full", ood=FIG2["natural"][2])
    assert "non-grokked" in f1(both=late)["verdict"]
    # Finding 2: second-hop full's bridge 0.95 while OOD is up.
    _, _, ood = FIG2["second_full"]
    bridged = paper_run("second_full", bridge=[0.95 if o >= 0.5 else 0.02 for o in ood])
    assert outcome(finding_2(bridged, paper_run("both_full"))["verdict"]) == "partly supported"
    # Finding 2: ...and OOD up from saturation (no delay): contradicted.
    early = paper_run("second_full", bridge=[0.95] * 10, ood=[0.9] * 10)
    assert outcome(finding_2(early, paper_run("both_full"))["verdict"]) == "contradicted"
    # Finding 3: natural new+old 0.3; control new+old 0.95; both-full's bridge 0.1.
    for changes, expected in (({"natural": {"new_old": Rate(0.3, 16)}}, "partly supported"),
                              ({"control": {"new_old": Rate(0.95, 16)}}, "undecided at this n"),
                              ({"control": {"new_old": Rate(0.95, 200)}}, "partly supported"),
                              ({"both_full": {"bridge_new_old": Rate(0.1, 26)}}, "partly supported")):
        r = finding_3(paper_finetunes(**changes))
        assert outcome(r["verdict"]) == expected, (changes, r["verdict"])
    every = {k: {"new_old": Rate(0.3, 40)} for k in ("natural", "both_full", "first_full")}
    assert finding_3(paper_finetunes(**every))["verdict"] == "contradicted"


def test_new_new_and_old_new_failing_are_each_checked():
    r = finding_3(paper_finetunes(natural={"new_new": Rate(0.9, 3000)}))
    assert outcome(r["verdict"]) == "partly supported" and "ft_natural new_new" in r["expectations"]["failed"]
    r = finding_3(paper_finetunes(second_full={"old_new": Rate(0.9, 300)}))
    assert "ft_second_full old_new" in r["expectations"]["failed"]
    r = finding_3(paper_finetunes(control={"bridge_new_old": Rate(0.9, 300)}))
    assert "ft_control bridge_new_old" in r["expectations"]["failed"]


def test_finding_3_needs_the_control_and_a_parent_that_learned():
    no_control = [f for f in paper_finetunes() if f.regime != "control"]
    assert finding_3(no_control)["verdict"].startswith("partly supported (every expectation held, but no control")
    unlearned = paper_finetunes(control={"atomic_new": Rate(0.5, 2000)})
    assert "partly supported" in finding_3(unlearned)["verdict"]
    not_ready = paper_finetunes()
    for f in not_ready:
        f.parent_ready = "test_inferred_ood 0.04" if f.regime != "control" else None
    assert finding_3(not_ready)["verdict"].startswith("not testable")


def test_saturated_parents_are_an_extension_not_a_vote():
    fts = paper_finetunes()
    sat = copy.deepcopy(fts[0])
    sat.name, sat.checkpoint, sat.rates["new_old"] = "ft_natural_sat", "sat", Rate(0.0, 16)
    r = finding_3(fts + [sat])
    assert r["verdict"] == "supported" and "extension (not voted), ft_natural_sat" in r["measured"]


# ------------------------------------------------------------------------------------------------ boundaries
EPS = 1e-6


def one_category(regime: str, measure: str, value: float) -> list[FineTuneFacts]:
    """The paper's fine-tunes with one measure set to ``value`` with no n (the point value decides)."""
    return paper_finetunes(**{regime: {measure: Rate(value)}})


@pytest.mark.parametrize("regime, measure, threshold, above_holds", [
    ("natural", "new_old", 0.75, True),  # composes: at or above 0.75
    ("natural", "bridge_new_old", 0.5, True),  # bridge present: at or above 0.5
    ("second_full", "new_old", 0.75, False),  # does not compose: below 0.75
    ("control", "bridge_new_old", 0.5, False),  # control's bridge absent: below 0.5
    ("natural", "old_new", 0.75, False),
    ("natural", "new_new", 0.75, False),
])
def test_finding_3_boundaries(regime, measure, threshold, above_holds):
    at, below = finding_3(one_category(regime, measure, threshold)), finding_3(one_category(regime, measure,
                                                                                           threshold - EPS))
    assert (at["verdict"] == "supported") == above_holds
    assert (below["verdict"] == "supported") == (not above_holds)


def test_new_facts_learned_boundary():
    at = finding_3(one_category("natural", "atomic_new", 0.9))
    below = finding_3(one_category("natural", "atomic_new", 0.9 - EPS))
    assert at["verdict"] == "supported" and "ft_natural: not testable (new facts" in below["measured"]


def without_n(run: RunFacts) -> RunFacts:
    return RunFacts(run.name, run.bridge_metric, [{k: v for k, v in r.items() if not k.startswith("n/")}
                                                  for r in run.rows], run.grokked)


def test_finding_2_bridge_boundaries():
    _, _, ood = FIG2["second_full"]

    def second(level):  # without n, so the point decides
        return without_n(paper_run("second_full", bridge=[level if o >= 0.5 else 0.0 for o in ood]))
    both = paper_run("both_full")
    assert finding_2(second(0.5 - EPS), both)["verdict"] == "supported"
    assert finding_2(second(0.5), both)["verdict"] == "partly supported"

    def positive(level):
        return paper_run("both_full", bridge=[level] * 10)
    assert finding_2(paper_run("second_full"), without_n(positive(0.9)))["verdict"] == "supported"
    assert "positive control" in finding_2(paper_run("second_full"), without_n(positive(0.9 - EPS)))["verdict"]


def test_finding_2_needs_ood_to_reach_0_5():
    _, _, ood = FIG2["second_full"]
    capped = paper_run("second_full", ood=[min(o, 0.5 - EPS) for o in ood])
    assert "never reached OOD >= 0.5" in finding_2(capped, paper_run("both_full"))["verdict"]
    at = paper_run("second_full", ood=[min(o, 0.5) for o in ood])
    assert not finding_2(at, paper_run("both_full"))["verdict"].startswith("not testable")


def test_delay_factor_boundary():
    """Second-hop full's OOD first >= 0.5 at exactly 2 x t_sat after saturation counts as late; one step less not."""
    def rows(t_gen):
        base = [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0, "bridge_found_ood": 0.0},
                {"step": 100, "train_acc": 0.98, "test_inferred_ood": 0.0, "bridge_found_ood": 0.0},
                {"step": t_gen, "train_acc": 0.99, "test_inferred_ood": 0.95, "bridge_found_ood": 0.1}]
        return RunFacts("second", "bridge_found", base, TRM)
    both = paper_run("both_full")
    assert finding_2(rows(300), both)["verdict"] == "supported"
    assert finding_2(rows(299), both)["verdict"] == "partly supported"


def test_saturation_boundary():
    """t_sat is the first evaluation with training accuracy >= 0.97."""
    def run(acc):
        rows = [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0, "bridge_found_ood": 0.0},
                {"step": 100, "train_acc": acc, "test_inferred_ood": 0.0, "bridge_found_ood": 0.0},
                {"step": 250, "train_acc": 0.99, "test_inferred_ood": 0.95, "bridge_found_ood": 0.1}]
        return RunFacts("second", "bridge_found", rows, TRM)
    both = paper_run("both_full")
    # saturated at 100: 250 - 100 < 200 -> no delay; saturated at 250 -> 0 < 500 -> no delay either; at 0.97 vs
    # just under, t_sat moves from 100 to 250, which the regime label reports
    assert run(0.97).t_sat == 100 and run(0.97 - EPS).t_sat == 250
    assert finding_2(run(0.97), both)["verdict"] == "partly supported"


@pytest.mark.parametrize("metric, level, grokked", [
    ("test_inferred_ood", 0.5, GrokDefinition("test_inferred_ood", 0.5)),
    ("test_inferred_iid", 0.9, GrokDefinition()),
])
def test_grokked_level_boundary(metric, level, grokked):
    def natural(final):
        rows = [{"step": 0, "train_acc": 0.1, metric: 0.0}, {"step": 100, "train_acc": 0.99, metric: 0.0},
                {"step": 400, "train_acc": 1.0, metric: 0.45}] + \
               [{"step": 500 + i, "train_acc": 1.0, metric: final} for i in range(3)]
        return RunFacts("nat", "bridge_found", rows, grokked)
    both = RunFacts("both", "bridge_found", [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0}] +
                    [{"step": 100 * i, "train_acc": 0.99, "test_inferred_ood": 1.0} for i in range(1, 5)], grokked)
    comparisons = {"both_full": comparison(PROFILE, BOTH_PROFILE, MAP, MAP + 0.01)}
    assert finding_1(natural(level), both, comparisons, CONTROL)["verdict"] == "supported"
    assert "did not grok" in finding_1(natural(level - EPS), both, comparisons, CONTROL)["verdict"]


def test_grokked_level_is_decided_by_the_interval():
    def natural(final, n):
        rows = [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0}, {"step": 100, "train_acc": 0.99,
                                                                          "test_inferred_ood": 0.0}] + \
               [{"step": 400 + i, "train_acc": 1.0, "test_inferred_ood": final, "n/test_inferred_ood": n}
                for i in range(3)]
        return RunFacts("nat", "bridge_found", rows, TRM)
    both = paper_run("both_full")
    comparisons = {"both_full": comparison(PROFILE, BOTH_PROFILE, MAP, MAP + 0.01)}
    assert finding_1(natural(0.6, 2000), both, comparisons, CONTROL)["verdict"] == "supported"
    assert finding_1(natural(0.6, 30), both, comparisons, CONTROL)["verdict"].startswith("undecided at this n")
