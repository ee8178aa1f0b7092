"""The findings' whole output (verdict, reasons, every gated number with its interval, the expectations that held)
for representative inputs, against a reviewed snapshot: a change to a rule or to what the report says about it
shows up here as a diff to review. Regenerate after a deliberate change with
``GROKSCOPE_UPDATE_SNAPSHOTS=1 pytest tests/test_findings_snapshot.py`` and read the diff before committing.

Also checks that every result is well formed: its finding number, rule and paper text, and check rows that name
their finding, subject, measure and threshold.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import test_findings as unit
import test_findings_paper as paper
from grokscope.metrics.intervals import Rate
from grokscope.reporting import findings as fx

SNAPSHOT = Path(__file__).parent / "data" / "findings_snapshot.json"


def undecided_natural() -> fx.RunFacts:
    """A trm whose final OOD 0.6 at n = 30 straddles its grokked level 0.5."""
    rows = [{"step": 0, "train_acc": 0.1, "test_inferred_ood": 0.0},
            {"step": 100, "train_acc": 0.99, "test_inferred_ood": 0.0}]
    rows += [{"step": 400 + i, "train_acc": 1.0, "test_inferred_ood": 0.6, "n/test_inferred_ood": 30} for i in range(3)]
    return fx.RunFacts("nat", "bridge_found", rows, paper.TRM)


def cases() -> dict[str, tuple[int, dict]]:
    moved_first = {"both_full": paper.comparison(paper.PROFILE, paper.BOTH_PROFILE),
                   "first_full": paper.comparison(paper.PROFILE, np.roll(paper.PROFILE, 5), paper.MAP,
                                                  np.roll(paper.MAP, 1, 1))}
    _, _, ood = paper.FIG2["second_full"]
    late_bridge = paper.paper_run("second_full", bridge=[0.95 if o >= 0.5 else 0.02 for o in ood])
    out = {
        "1 paper": (1, paper.f1()),
        "1 paper + first_full moved": (1, fx.finding_1(paper.paper_run("natural"), paper.paper_run("both_full"),
                                                       moved_first, paper.CONTROL,
                                                       within=paper.comparison(paper.PROFILE, paper.BOTH_PROFILE),
                                                       transfer=paper.PAPER_TRANSFER,
                                                       first_full=paper.paper_run("first_full"))),
        "1 first_full not grokked": (1, fx.finding_1(paper.paper_run("natural"), paper.paper_run("both_full"),
                                                     moved_first, paper.CONTROL,
                                                     first_full=paper.paper_run("first_full", ood=[0.01] * 10))),
        "1 first_full comparison missing": (1, fx.finding_1(paper.paper_run("natural"), paper.paper_run("both_full"),
                                                            {"both_full": moved_first["both_full"]}, paper.CONTROL,
                                                            first_full=paper.paper_run("first_full"))),
        "1 natural flat": (1, paper.f1(natural=paper.paper_run("natural", ood=[0.01] * 10))),
        "1 both late": (1, paper.f1(both=paper.paper_run("both_full", ood=[0.0] * 6 + [0.01, 0.9, 0.95, 1.0]))),
        "1 no both": (1, fx.finding_1(paper.paper_run("natural"), None, {}, None)),
        "1 cut short": (1, unit.finding_1(unit.run("nat", unit.NAT.rows, cut_short=True), unit.BOTH,
                                          {"both_full": unit.SAME}, unit.CONTROL)),
        "1 control same": (1, unit.finding_1(unit.NAT, unit.BOTH, {"both_full": unit.SAME}, unit.cmp(unit.PROFILE))),
        "1 control missing": (1, unit.finding_1(unit.NAT, unit.BOTH, {"both_full": unit.SAME}, None)),
        "1 both_full without a path": (1, unit.finding_1(unit.NAT, unit.BOTH, {"both_full": unit.cmp([0.1] * 6)},
                                                         unit.CONTROL)),
        "1 undecided": (1, fx.finding_1(undecided_natural(), paper.paper_run("both_full"),
                                        {"both_full": paper.comparison(paper.PROFILE, paper.BOTH_PROFILE)},
                                        paper.CONTROL)),
        "2 paper": (2, fx.finding_2(paper.paper_run("second_full", correct_with_bridge={1_600_500: Rate(0.4, 500)}),
                                    paper.paper_run("both_full"))),
        "2 bridge while up": (2, fx.finding_2(late_bridge, paper.paper_run("both_full"))),
        "2 no second": (2, fx.finding_2(None, None)),
        "2 cut short": (2, fx.finding_2(unit.run("s", unit.curve(unit.SAT), cut_short=True), unit.BOTH)),
        "2 never up": (2, fx.finding_2(unit.run("s", unit.curve(unit.SAT, ood=[0.1] * 10, n=1000)), unit.BOTH)),
        "2 no both": (2, fx.finding_2(unit.run("s", unit.curve(unit.SAT, ood=unit.UP, n=1000)), None)),
        "2 weak positive": (2, fx.finding_2(unit.run("s", unit.curve(unit.SAT, ood=unit.UP, n=1000)),
                                            unit.run("b", unit.curve(unit.SAT, ood=[0, 0.95] + [0.99] * 8,
                                                                     bridge=[0.6] * 10, n=1000)))),
        "2 undecided": (2, fx.finding_2(unit.run("s", unit.curve(unit.SAT, ood=unit.UP, bridge=[0.48] * 10, n=40)),
                                        unit.BOTH)),
        "2 unmeasured bridge": (2, fx.finding_2(unit.RunFacts("s", "bridge_use", [
            {k: v for k, v in r.items() if k != "bridge_use_ood"} for r in unit.curve(unit.SAT, ood=unit.UP)]),
            unit.BOTH)),
        "3 paper": (3, fx.finding_3(paper.paper_finetunes())),
        "3 natural fails": (3, fx.finding_3(paper.paper_finetunes(natural={"new_old": Rate(0.3, 16)}))),
        "3 control undecided": (3, fx.finding_3(paper.paper_finetunes(control={"new_old": Rate(0.95, 16)}))),
        "3 contradicted": (3, fx.finding_3(paper.paper_finetunes(
            **{k: {"new_old": Rate(0.3, 40)} for k in ("natural", "both_full", "first_full")}))),
        "3 no control": (3, fx.finding_3([f for f in paper.paper_finetunes() if f.regime != "control"])),
        "3 unlearned": (3, fx.finding_3(paper.paper_finetunes(control={"atomic_new": Rate(0.5, 2000)}))),
        "3 cut short": (3, fx.finding_3([unit.ft("natural", 1.0, cut_short=True)])),
        "3 none": (3, fx.finding_3([])),
        "3 missing + floor": (3, fx.finding_3([unit.ft("natural", 1.0, floors={"bridge_new_old": 0.6}),
                                               unit.ft("control", 0.1, bridge=0.0)])),
    }
    nat_no_delay = unit.NO_DELAY_NAT
    out["1 natural without delay"] = (1, unit.finding_1(nat_no_delay, unit.BOTH, {"both_full": unit.SAME},
                                                        unit.CONTROL))
    first_early = unit.run("first", unit.curve(unit.SAT, ood=[0, 0.95] + [0.99] * 8, n=1000))
    out["1 first_full without delay"] = (1, unit.finding_1(unit.NAT, unit.BOTH, {"both_full": unit.SAME,
                                                                                  "first_full": unit.SAME},
                                                           unit.CONTROL, first_full=first_early))
    old_format = {"verdict": "undetermined"}  # a comparison stored before profiles were kept: not a vote
    out["1 old-format first_full comparison"] = (1, unit.finding_1(
        unit.NAT, unit.BOTH, {"both_full": unit.SAME, "first_full": old_format},
        {"verdict": "different path", "level_a": 0.0, "level_b": 0.9}, first_full=unit.run("first", unit.curve(
            unit.SAT, ood=[0, 0, 0, 0.2, 0.6, 0.8, 0.95, 0.96, 0.97, 0.97], n=1000))))
    out["1 both_full cut short"] = (1, unit.finding_1(unit.NAT, unit.run("both", unit.BOTH.rows, cut_short=True),
                                                      {"both_full": unit.SAME}, unit.CONTROL))
    flat = unit.cmp([0.9] * 6, None, [0.9] * 6, unit.MAP)
    out["1 no comparison decided"] = (1, unit.finding_1(unit.NAT, unit.BOTH, {"both_full": flat}, unit.CONTROL))
    out["2 early, bridge low"] = (2, fx.finding_2(unit.run("s", unit.curve(unit.SAT, ood=[0, 0.9] + [0.95] * 8,
                                                                           n=1000)), unit.BOTH))
    own_sat = unit.RunFacts("s", "bridge_use", unit.curve(unit.SAT, ood=unit.UP, bridge=[0.95] * 10, n=1000),
                            sat_threshold=0.99)
    out["2 own saturation threshold"] = (2, fx.finding_2(own_sat, unit.BOTH))
    out["3 measured parents"] = (3, fx.finding_3(paper.paper_finetunes(second_full={"new_old": Rate(1.0, 33)})))
    out["1 seeds, one untestable"] = (1, fx.across_seeds({0: paper.f1(), 1: fx.finding_1(
        paper.paper_run("natural", ood=[0.01] * 10), paper.paper_run("both_full"), {}, None)}))
    fallback = unit.RunFacts("s", "bridge_use", unit.curve(unit.SAT, ood=unit.UP), n={"bridge_use_ood": 300,
                                                                                        "test_inferred_ood": 300})
    out["2 n from the dataset"] = (2, fx.finding_2(fallback, unit.BOTH))
    up = unit.run("s", unit.curve(unit.SAT, ood=unit.UP, n=1000))
    out["2 no second, both-hop full held"] = (2, fx.finding_2(None, unit.BOTH))
    out["2 both-hop full never generalises"] = (2, fx.finding_2(up, unit.run("b", unit.curve(unit.SAT, n=1000))))
    young = unit.run("b", [{**r, "train_acc": 1.0 if r["step"] else 0.5, "n/train_acc": 1000,
                            "bridge_use_ood": 0.6} for r in unit.BOTH.rows[:3]])
    out["2 both-hop full too young"] = (2, fx.finding_2(up, young))
    out["2 both-hop full grokked"] = (2, fx.finding_2(up, unit.run("b", unit.curve(unit.SAT, ood=unit.UP,
                                                                                 bridge=[0.99] * 10, n=1000))))
    flat = [0.5] + [0.985] * 9
    out["2 never saturates"] = (2, fx.finding_2(unit.run("s", unit.curve(flat, ood=unit.UP, n=1000)),
                                                unit.run("b", unit.curve(flat, ood=[0, 0.95] + [0.99] * 8,
                                                                         bridge=[0.99] * 10, n=1000))))
    iid = [r["test_inferred_iid"] for r in unit.NAT.rows]
    nat_n = unit.RunFacts("nat", "bridge_use", unit.curve(unit.SAT, iid=iid), n={"test_inferred_iid": 162})
    out["1 n from the dataset"] = (1, unit.finding_1(nat_n, unit.BOTH, {"both_full": unit.SAME}, unit.CONTROL))
    mixed = paper.paper_finetunes(natural={"new_new": Rate(0.9, 3000)}, both_full={"old_new": Rate(0.74, 35)},
                                  first_full={"old_new": Rate(0.76, 31)})
    del mixed[0].rates["old_new"]
    for f in mixed:
        f.extension = "new_old powered EM 0.50 [0.40, 0.60] (n=100)"
    out["3 failed, undecided and missing"] = (3, fx.finding_3(mixed))
    two_open = paper.paper_finetunes(both_full={"old_new": Rate(0.74, 35)}, first_full={"old_new": Rate(0.76, 31)})
    out["3 two undecided"] = (3, fx.finding_3(two_open))
    out["3 control only"] = (3, fx.finding_3([f for f in paper.paper_finetunes() if f.regime == "control"]))
    ready = paper.paper_finetunes()
    ready[0].parent = paper.paper_run("natural", until=300_000)
    sat = paper.paper_finetunes()[1]
    sat.name, sat.checkpoint = "ft_both_full_sat", "sat"
    out["3 parent not ready + extension"] = (3, fx.finding_3(ready + [sat]))
    a, b = fx.finding_3(paper.paper_finetunes()), fx.finding_3([])
    out["seeds agree"] = (3, fx.across_seeds({0: a, 1: a}))
    out["seeds disagree"] = (3, fx.across_seeds({0: a, 2: b}))
    return out


def well_formed(n: int, result: dict) -> None:
    assert result["finding"] == n and result["paper"] == fx.PAPER[n]
    assert result["rule"] == {1: fx.RULE_1, 2: fx.RULE_2, 3: fx.RULE_3}[n]
    assert fx.outcome(result["verdict"]) in fx.OUTCOMES and isinstance(result["measured"], str)
    for row in result["checks"]:
        assert row["finding"] == n and row["subject"] and row["measure"]
        assert re.fullmatch(r"(above|below) [0-9.]+", row["needs"]), row
        assert row["outcome"] in (fx.HELD, fx.FAILED, fx.OPEN, fx.UNMEASURED)


def test_findings_match_the_reviewed_snapshot():
    every = cases()
    for n, result in every.values():
        well_formed(n, result)
    got = {name: result for name, (_, result) in every.items()}
    text = json.dumps(got, indent=1, sort_keys=True, default=str)
    if os.environ.get("GROKSCOPE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    got = json.loads(text)
    for name in expected:
        assert got.get(name) == expected[name], name
    assert set(got) == set(expected)


def test_run_facts_edges():
    empty = fx.RunFacts("x", "bridge_use", [])
    assert empty.floor("m") is None and empty.final("m") is None and empty.t_sat is None
    later = fx.RunFacts("x", "bridge_use", [{"step": 5, "m": 0.3}])
    assert later.floor("m") is None  # a run whose first row is not step 0 has no measured floor


def test_a_floor_equal_to_its_threshold_cannot_pass():
    at = fx.Check(3, "s", "m", Rate(0.9, 1000), 0.5, "above", floor=0.5)
    under = fx.Check(3, "s", "m", Rate(0.9, 1000), 0.5, "above", floor=0.5 - 1e-6)
    assert at.outcome == fx.UNMEASURED and "not testable" in at.row()["chance floor (step 0)"]
    assert under.outcome == fx.HELD and "not testable" not in under.row()["chance floor (step 0)"]


def test_pick_category_prefers_faithful_when_powered_is_absent_or_faithful_is_large():
    small, big = {"n": 5, "exact_match": 1.0}, {"n": 500, "exact_match": 0.2}
    assert fx.pick_category({"new_old": small, "new_old_powered": big}, "new_old") == (big, "powered")
    assert fx.pick_category({"new_old": {**small, "n": 16}, "new_old_powered": big}, "new_old")[1] == "faithful"
    assert fx.pick_category({"new_old": {**small, "n": 15}, "new_old_powered": big}, "new_old")[1] == "powered"
    assert fx.pick_category({"new_old": small}, "new_old") == (small, "faithful")
    assert fx.pick_category({}, "new_old") == ({}, "faithful")


@pytest.mark.parametrize("name", ["2 paper", "3 paper"])
def test_paper_measured_text_names_the_numbers(name):
    _, result = cases()[name]
    assert "n=" in result["measured"] and "[" in result["measured"]
