"""The verdict rules fed He et al.'s own numbers (the golden test), the same numbers with one claim broken, and every
threshold just above and just below (literal values: they pin the constants of ``metrics/thresholds.py``, which
mutation testing does not mutate).

Sources (He et al. 2026): Fig. 2 rows A-D and the both-hop-half run (anchor values at 50k ... 1.25M steps, merged
with every milestone the authors' plotting data gives: the first evaluation reaching training 0.9 / 0.99, bridge 0.5 /
0.9, OOD 0.5 / 0.9, the OOD maximum and the end of each run; OOD test n = 2,040, training probes n = 3,000; step 0 at
the chance floor the paper reports, bridge found 0.2-0.3%). Fig. 4 rows A-F (final values with their n, the steps
at which New Fact and new+old were reached, row A's first six evaluations, old+new's bridge as reported). He et al.
publish no per-stage bridge profile or causal map; where Finding 1 needs them, the stand-in below has the paper's
levels (bridge found 0.998 / 1.000) and one shape for both models, which is what "same path" claims.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from grokscope.metrics.intervals import Rate
from grokscope.metrics.milestones import GrokDefinition
from grokscope.reporting import reference as ref
from grokscope.reporting.findings import (FineTuneFacts, RunFacts, finding_1, finding_2, finding_3, outcome,
                                          transfer_agreement)

TRM = GrokDefinition("test_inferred_ood", 0.5)
FIG2 = ref.FIG2


def paper_rows(regime: str, bridge=None, ood=None, until: int | None = None) -> list[dict]:
    """The dense series of one Fig. 2 run (``reporting/reference.py``); ``bridge`` / ``ood`` replace the anchors."""
    return ref.fig2_rows(regime, bridge, ood, until)


# He et al. §3: both-hop full, "every correct prediction on OOD compositions is achieved through successful recovery
# of the bridge entity": of its 2,040 OOD answers (all correct at OOD 1.0), the share with the bridge is 1.
EVERY_CORRECT_HAS_THE_BRIDGE = {1_649_560: Rate(1.0, 2040)}


def paper_run(regime: str, bridge=None, ood=None, until: int | None = None, **kw) -> RunFacts:
    share = EVERY_CORRECT_HAS_THE_BRIDGE if regime == "both_full" else {}
    return RunFacts(regime, "bridge_found", paper_rows(regime, bridge, ood, until), TRM,
                    correct_with_bridge=kw.pop("correct_with_bridge", share), **kw)


# Stand-in path (15 recursion stages of the trm; causal map over h, r1, r2): the paper's levels, one shape, measured
# on 300 ID compositions (the analysis's sample).
PROFILE = [0.0, 0.0, 0.02, 0.1, 0.45, 0.93, 0.998, 0.99, 0.97, 0.9, 0.95, 0.99, 0.998, 0.99, 0.98]
MAP = np.array([[1.0, 1.0, 1.0]] + [[0.6 - 0.04 * s, 0.9 - 0.05 * s, 0.05 * s] for s in range(1, 15)])


def comparison(profile_a, profile_b, map_a=MAP, map_b=MAP, n=300) -> dict:
    return {"profile_a": list(profile_a), "profile_b": list(profile_b),
            "causal_map_a": None if map_a is None else np.asarray(map_a).tolist(),
            "causal_map_b": None if map_b is None else np.asarray(map_b).tolist(), "step_a": 0, "step_b": 1,
            "n_queries": n, "causal_n_a": [n] * 3, "causal_n_b": [n] * 3}


BOTH_PROFILE = [min(1.0, x + 0.01 * ((i % 3) - 1)) for i, x in enumerate(PROFILE)]  # level 1.000, same shape
CONTROL = comparison([0.0] * 15, PROFILE, None, MAP)  # step 0: no path (and no correct answer to trace)

def transfer_rows(regime: str) -> list[dict]:
    return ref.fig4_new_old_rows(regime)


PAPER_TRANSFER = transfer_agreement(transfer_rows("natural"), transfer_rows("both_full"))


def f1(natural=None, both=None, comparisons=None, control=CONTROL, transfer=PAPER_TRANSFER, **kw):
    return finding_1(natural or paper_run("natural"), both or paper_run("both_full"),
                     comparisons or {"both_full": comparison(PROFILE, BOTH_PROFILE, MAP, MAP + 0.01)}, control,
                     transfer=transfer, **kw)


FIG4 = ref.FIG4


def paper_finetunes(**changes) -> list[FineTuneFacts]:
    """Fig. 4's rows as fine-tunes from the last checkpoint of each Fig. 2 run; ``changes``: regime -> {measure:
    Rate} replacing the paper's value."""
    out = []
    for regime, (new, no, br, on, on_br, nn, nn_br, t_new, t_no) in FIG4.items():
        rates = {"atomic_new": Rate(*new), "new_old": Rate(*no), "bridge_new_old": Rate(br, no[1]),
                 "old_new": Rate(*on), "bridge_old_new": Rate(on_br, on[1]), "new_new": Rate(nn, 3000),
                 "bridge_new_new": Rate(nn_br, 3000)}
        rates.update(changes.get(regime, {}))
        parent = None if regime == "control" else paper_run(regime)
        out.append(FineTuneFacts(f"ft_{regime}", regime, rates, None if regime == "control" else "last", parent,
                                 steps={"new_fact": t_new, "new_old": t_no}))
    return out


# ------------------------------------------------------------------------------------------------ golden
def test_he_et_al_numbers_support_all_three_findings():
    r1 = f1()
    assert r1["verdict"] == "supported", r1
    assert [v["outcome"] for v in r1["votes"]] == ["held"] * 3
    r2 = finding_2(paper_run("second_full"), paper_run("both_full"))
    assert r2["verdict"] == "supported", r2
    r3 = finding_3(paper_finetunes())
    assert r3["verdict"] == "supported", r3
    # (iii-a) 3 circuit parents x 2 + 2 not-circuit x 1 + control x 2; (iii-b) 6 x 2; (iii-c) 3 x 2
    assert r3["expectations"]["held"] == r3["expectations"]["total"] == 10 + 12 + 6
    assert r3["parents"] == {"ft_natural": "circuit", "ft_both_full": "circuit", "ft_first_full": "circuit",
                             "ft_second_full": "not a circuit", "ft_both_half": "not a circuit",
                             "ft_control": "control"}


def test_the_paper_series_give_the_paper_milestones():
    """The dense series read by the sustained-crossing rule: the paper's saturation and OOD steps where the curve
    keeps them, later where a single evaluation falls back (both-hop full's training collapse at 150k; natural's
    OOD 0.429 at 400k after 0.5 at 395,920)."""
    assert paper_run("natural").t_sat == 106_050 and paper_run("second_full").t_sat == 80_025
    assert paper_run("first_full").t_sat == 94_770 and paper_run("both_half").t_sat == 136_496
    assert paper_run("both_full").t_sat == 200_000  # 59,984 is followed by 0.993 and the collapse to 0.904
    assert paper_run("natural").delay("test_inferred_ood") == (106_050, 500_000, True)
    assert paper_run("second_full").delay("test_inferred_ood") == (80_025, 291_000, True)
    assert paper_run("both_full").delay("test_inferred_ood") == (200_000, 37_490, False)
    ages = {r: round(paper_run(r).age, 1) for r in ("natural", "both_full", "first_full", "second_full", "both_half")}
    assert ages == {"natural": 12.7, "both_full": 8.2, "first_full": 16.9, "second_full": 20.0, "both_half": 11.6}
    assert paper_run("natural").floor("bridge_found_ood") == 0.003


def test_first_hop_full_is_compared_when_present():
    comparisons = {"both_full": comparison(PROFILE, BOTH_PROFILE), "first_full": comparison(PROFILE, BOTH_PROFILE)}
    first = paper_run("first_full", until=1_250_000)  # before its late decay to OOD 0.22
    r = f1(comparisons=comparisons, first_full=first)
    assert r["verdict"] == "supported" and "natural vs first_full: held" in r["measured"]
    moved = {**comparisons, "first_full": comparison(PROFILE, np.roll(PROFILE, 5), MAP, np.roll(MAP, 1, 1))}
    assert f1(comparisons=moved, first_full=first)["verdict"] == "partly supported"
    # before 700k first-hop full has not generalised: not compared, the other votes decide
    r = f1(comparisons=comparisons, first_full=paper_run("first_full", until=700_000))
    assert r["verdict"].startswith("partly supported ((a) ID path, natural vs first_full not testable)"), r


# ------------------------------------------------------------------------------------------------ broken claims
def test_broken_claims_are_not_supported():
    # Finding 1: both-hop full's bridge at 0.1: no path on one side -> (a) fails.
    low = [x * 0.1 for x in BOTH_PROFILE]
    assert outcome(f1(comparisons={"both_full": comparison(PROFILE, low)})["verdict"]) == "partly supported"
    # Finding 1: the natural TRM never rises on OOD (no grokking) -> not testable.
    assert "did not grok" in f1(natural=paper_run("natural", ood=[0.01] * 10))["verdict"]
    # Finding 1: both-hop full rising as late as natural: not the paper's non-grokked model.
    late = paper_run("both_full", ood=[0.0] * 6 + [0.01, 0.9, 0.95, 1.0])
    assert "non-grokked" in f1(both=late)["verdict"]
    # Finding 2: second-hop full's bridge 0.95 while OOD is up -> (i) fails, (ii) holds.
    _, _, ood = FIG2["second_full"]
    bridged = paper_run("second_full", bridge=[0.95 if o >= 0.5 else 0.02 for o in ood])
    bridged.rows = [{**r, "bridge_found_ood": 0.95} if (r.get("test_inferred_ood") or 0) >= 0.5 else r
                    for r in bridged.rows]
    assert outcome(finding_2(bridged, paper_run("both_full"))["verdict"]) == "partly supported"
    # Finding 3: natural new+old 0.3; control new+old 0.95; both-full's bridge 0.1.
    for changes, expected in (({"natural": {"new_old": Rate(0.3, 16)}}, "partly supported"),
                              ({"control": {"new_old": Rate(0.95, 16)}}, "undecided at this n"),
                              ({"control": {"new_old": Rate(0.95, 200)}}, "partly supported"),
                              ({"both_full": {"bridge_new_old": Rate(0.1, 26)}}, "partly supported")):
        r = finding_3(paper_finetunes(**changes))
        assert outcome(r["verdict"]) == expected, (changes, r["verdict"])
    # Every circuit parent's new+old fails, the rest as the paper: null transfer is partly supported, not
    # contradicted (limited, but not the paper's partial transfer); old+new composing contradicts it.
    every = {k: {"new_old": Rate(0.3, 40)} for k in ("natural", "both_full", "first_full")}
    assert finding_3(paper_finetunes(**every))["verdict"] == "partly supported"
    assert finding_3(paper_finetunes(natural={"old_new": Rate(1.0, 18)}))["verdict"].startswith("contradicted")


def test_new_new_and_old_new_failing_are_each_checked():
    r = finding_3(paper_finetunes(natural={"new_new": Rate(0.9, 3000)}))
    assert outcome(r["verdict"]) == "contradicted" and "ft_natural new_new" in r["expectations"]["failed"]
    r = finding_3(paper_finetunes(second_full={"old_new": Rate(0.9, 300)}))
    assert "ft_second_full old_new" in r["expectations"]["failed"]
    r = finding_3(paper_finetunes(control={"bridge_new_old": Rate(0.9, 300)}))
    assert "ft_control bridge_new_old" in r["expectations"]["failed"]
    r = finding_3(paper_finetunes(natural={"bridge_old_new": Rate(0.1, 18)}))
    assert outcome(r["verdict"]) == "partly supported" and "ft_natural bridge_old_new" in r["expectations"]["failed"]


def test_finding_3_needs_the_control_and_a_parent_that_learned():
    no_control = [f for f in paper_finetunes() if f.regime != "control"]
    assert finding_3(no_control)["verdict"].startswith("partly supported (every vote held, but no control")
    unlearned = paper_finetunes(control={"atomic_new": Rate(0.5, 2000)})
    assert "partly supported" in finding_3(unlearned)["verdict"]


def test_parent_readiness_is_measured():
    """A parent is judged by its own circuit and age, not by its regime's name."""
    young = paper_finetunes()
    for f in young:
        if f.parent is not None:
            f.parent = paper_run(f.regime, until=250_000)  # 1.2-2.6 x saturation (second-hop full: 3.1x)
    r = finding_3(young)
    assert r["verdict"].startswith("not testable") and "too young" in r["measured"]
    # a natural parent with no bridge at its last checkpoint is judged as He et al. judge second-hop full:
    # new+old 1.0 from it fails (iii-a), although it is the "natural" regime
    no_circuit = paper_finetunes()
    no_circuit[0].parent = paper_run("natural", bridge=[0.1] * 10)
    no_circuit[0].parent.rows = [{**r, "bridge_found_ood": 0.1} if "bridge_found_ood" in r and r["step"] else r
                                 for r in no_circuit[0].parent.rows]
    r = finding_3(no_circuit)
    assert r["parents"]["ft_natural"] == "not a circuit" and "ft_natural new_old" in r["expectations"]["failed"]
    # a second-hop-full parent whose bridge formed is a circuit parent: its new+old 0.36 then fails (iii-a)
    formed = paper_finetunes()
    formed[3].parent = paper_run("second_full", bridge=[1.0] * 10)
    formed[3].parent.rows = [{**r, "bridge_found_ood": 1.0} if "bridge_found_ood" in r and r["step"] else r
                             for r in formed[3].parent.rows]
    r = finding_3(formed)
    assert r["parents"]["ft_second_full"] == "circuit" and outcome(r["verdict"]) == "partly supported"


def test_saturated_parents_are_an_extension_not_a_vote():
    fts = paper_finetunes()
    sat = copy.deepcopy(fts[0])
    sat.name, sat.checkpoint, sat.rates["new_old"] = "ft_natural_sat", "sat", Rate(0.0, 16)
    r = finding_3(fts + [sat])
    assert r["verdict"] == "supported" and "extension (not voted), ft_natural_sat" in r["measured"]


def test_the_papers_categories_vote_at_the_papers_n():
    """n = 16 (the paper's smallest category) decides: 16 of 16 has the interval [0.81, 1.0], above 0.75."""
    assert Rate(1.0, 16).against(0.75) == "above"
    r = finding_3(paper_finetunes())
    row = next(c for c in r["checks"] if c["subject"] == "ft_natural" and c["measure"] == "new_old")
    assert "n=16" in row["value [95% interval] (n)"] and row["outcome"] == "held"


# ------------------------------------------------------------------------------------------------ boundaries
EPS = 1e-6


def one_category(regime: str, measure: str, value: float) -> list[FineTuneFacts]:
    """The paper's fine-tunes with one measure set to ``value`` with no n (the point value decides)."""
    return paper_finetunes(**{regime: {measure: Rate(value)}})


@pytest.mark.parametrize("regime, measure, threshold, above_holds", [
    ("natural", "new_old", 0.75, True),  # composes: at or above 0.75
    ("natural", "bridge_new_old", 0.5, True),  # bridge present: at or above 0.5
    ("natural", "bridge_old_new", 0.5, True),  # the bridge recovered despite the failure: at or above 0.5
    ("natural", "bridge_new_new", 0.5, True),
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


def test_parent_age_and_circuit_boundaries():
    def with_parent(age: float, bridge: float) -> str:
        fts = paper_finetunes()
        rows = [{"step": 0, "train_acc": 0.0, "bridge_found_ood": 0.0},
                {"step": 100, "train_acc": 0.995, "bridge_found_ood": 0.0},
                {"step": 200, "train_acc": 0.995, "bridge_found_ood": 0.0},
                {"step": 300, "train_acc": 0.995, "bridge_found_ood": 0.0}] + \
               [{"step": round(100 * age) - 2 + i, "train_acc": 1.0, "bridge_found_ood": bridge} for i in range(3)]
        fts[0].parent = RunFacts("p", "bridge_found", rows, TRM)
        return finding_3(fts)["parents"].get("ft_natural", "not judged")
    assert with_parent(3.0, 0.95) == "circuit" and with_parent(3.0 - 0.02, 0.95) == "not judged"
    assert with_parent(6.0, 0.9) == "circuit" and with_parent(6.0, 0.9 - EPS) == "not a circuit"


def without_n(run: RunFacts) -> RunFacts:
    return RunFacts(run.name, run.bridge_metric, [{k: v for k, v in r.items() if not k.startswith("n/")}
                                                  for r in run.rows], run.grokked,
                    correct_with_bridge=run.correct_with_bridge)


def test_finding_2_bridge_boundaries():
    def second(level):  # without n, so the point decides
        run = without_n(paper_run("second_full"))
        run.rows = [{**r, "bridge_found_ood": level} if (r.get("test_inferred_ood") or 0) >= 0.5 else r
                    for r in run.rows]
        return run
    both = paper_run("both_full")
    assert finding_2(second(0.5 - EPS), both)["verdict"] == "supported"
    assert finding_2(second(0.5), both)["verdict"] == "partly supported"

    def positive(level):
        run = without_n(paper_run("both_full"))
        run.rows = [{**r, "bridge_found_ood": level} if r["step"] else r for r in run.rows]
        return run
    assert finding_2(paper_run("second_full"), positive(0.9))["verdict"] == "supported"
    weak = finding_2(paper_run("second_full"), positive(0.9 - EPS))
    assert weak["verdict"].startswith("contradicted ((i)"), weak["verdict"]  # (ii) failed, (i) has no control


def test_finding_2_per_query_share_decides_the_bridge_half_when_measured():
    both = paper_run("both_full")
    low = paper_run("second_full", correct_with_bridge={1_600_500: Rate(0.2, 1975)})
    high = paper_run("second_full", correct_with_bridge={1_600_500: Rate(0.95, 1975)})
    assert finding_2(low, both)["verdict"] == "supported"
    assert finding_2(high, both)["verdict"] == "partly supported" and "per query" in finding_2(high, both)["measured"]


def test_finding_2_needs_ood_to_reach_0_5():
    run = paper_run("second_full")
    run.rows = [{**r, "test_inferred_ood": min(r["test_inferred_ood"], 0.5 - EPS)} if "test_inferred_ood" in r
                else r for r in run.rows]
    assert "(i) a grokked model without the circuit (second-hop full) not testable" in \
        finding_2(run, paper_run("both_full"))["verdict"]


def test_delay_factor_boundary():
    """Second-hop full's OOD kept >= 0.5 from exactly 2 x t_sat after saturation counts as late; one step less not."""
    def rows(t_gen):
        base = [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0, "bridge_found_ood": 0.0}] + \
               [{"step": 100 + i, "train_acc": 0.995, "test_inferred_ood": 0.0, "bridge_found_ood": 0.0}
                for i in range(3)] + \
               [{"step": t_gen + i, "train_acc": 0.99, "test_inferred_ood": 0.95, "bridge_found_ood": 0.1}
                for i in range(3)]
        return RunFacts("second", "bridge_found", base, TRM)
    both = paper_run("both_full")
    assert finding_2(rows(300), both)["verdict"] == "supported"
    assert finding_2(rows(299), both)["verdict"] == "partly supported"


def test_saturation_boundary():
    """t_sat is the first evaluation whose training accuracy >= 0.99 is kept for 3 evaluations."""
    def run(acc):
        rows = [{"step": 0, "train_acc": 0.1}] + [{"step": 100 + i, "train_acc": acc} for i in range(3)] + \
               [{"step": 250 + i, "train_acc": 1.0} for i in range(3)]
        return RunFacts("second", "bridge_found", rows, TRM)
    assert run(0.99).t_sat == 100 and run(0.99 - EPS).t_sat == 250


@pytest.mark.parametrize("metric, level, grokked", [
    ("test_inferred_ood", 0.5, GrokDefinition("test_inferred_ood", 0.5)),
    ("test_inferred_iid", 0.9, GrokDefinition()),
])
def test_grokked_level_boundary(metric, level, grokked):
    def natural(final):
        rows = [{"step": 0, "train_acc": 0.1, metric: 0.0}] + \
               [{"step": 100 + i, "train_acc": 0.995, metric: 0.0} for i in range(3)] + \
               [{"step": 400, "train_acc": 1.0, metric: 0.45}] + \
               [{"step": 500 + i, "train_acc": 1.0, metric: final} for i in range(3)]
        return RunFacts("nat", "bridge_found", rows, grokked)
    both = RunFacts("both", "bridge_found", [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0}] +
                    [{"step": 100 * i, "train_acc": 0.995, "test_inferred_ood": 1.0} for i in range(1, 5)], grokked)
    comparisons = {"both_full": comparison(PROFILE, BOTH_PROFILE, MAP, MAP + 0.01)}
    assert outcome(finding_1(natural(level), both, comparisons, CONTROL)["verdict"]) == "partly supported"
    assert "did not grok" in finding_1(natural(level - EPS), both, comparisons, CONTROL)["verdict"]


def test_grokked_level_is_decided_by_the_interval():
    def natural(final, n):
        rows = [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0}] + \
               [{"step": 100 + i, "train_acc": 0.995, "test_inferred_ood": 0.0} for i in range(3)] + \
               [{"step": 400 + i, "train_acc": 1.0, "test_inferred_ood": final, "n/test_inferred_ood": n}
                for i in range(3)]
        return RunFacts("nat", "bridge_found", rows, TRM)
    assert f1(natural=natural(0.6, 2000))["verdict"] == "supported"
    assert f1(natural=natural(0.6, 30))["verdict"].startswith("undecided at this n")


def test_equivalent_transfer_margin():
    """(c): the paper's two curves agree (mean |difference| 0.023 to twice their new+old step, 11,712); curves 0.1
    apart at every point do not."""
    assert PAPER_TRANSFER["outcome"] == "below" and PAPER_TRANSFER["distance"] < 0.03
    assert PAPER_TRANSFER["window_end"] == 2 * 5856 and PAPER_TRANSFER["steps"] == 8
    base = [{"step": r["step"], "new_old": r["new_old"]} for r in transfer_rows("natural")]  # no n: the point decides
    apart = [{"step": r["step"], "new_old": r["new_old"] + (0.1 + EPS if r["new_old"] < 0.5 else -(0.1 + EPS))}
             for r in base]
    far = transfer_agreement(base, apart)
    assert far["distance"] == pytest.approx(0.1 + EPS) and far["outcome"] == "above"
    near = [{"step": r["step"], "new_old": r["new_old"] + (0.1 - EPS if r["new_old"] < 0.5 else -(0.1 - EPS))}
            for r in base]
    assert transfer_agreement(base, near)["outcome"] == "below"
    assert outcome(f1(transfer=far)["verdict"]) == "partly supported"
