"""He et al.'s three findings, decided from a study's measurements with stated rules (``docs/methods.md``).

Every finding can come out each way: "supported", "partly supported", "contradicted" or "not testable" (with the
reason: a precondition not met, a run cut short by the time cap, or a control that failed). The rules use the
thresholds of ``metrics/thresholds.py`` and print them; the paper's reference numbers are shown beside, never used.
Inputs are plain numbers and dicts, so every outcome is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import classify_regime, first_step

OUTCOMES = ("supported", "partly supported", "contradicted", "not testable")
CUT_SHORT = "not testable (run cut short by the time cap)"

PAPER = {
    1: "He et al. §3, Fig. 2A/B and Fig. 4 rows A/B: natural and both-hop-full TRMs both end with bridge found "
       "0.998 / 1.000 and have identical fine-tuning curves",
    2: "He et al. §4, Fig. 2D: second-hop full reaches OOD 0.968 while bridge found averaged 0.04 before 300k steps "
       "and 0.18 over 300-700k (fake grokking); both-hop full: bridge 1.000",
    3: "He et al. §5, Fig. 3/4: natural: new+old EM 1.000 (n=16), old+new EM 0.000 (n=18) with bridge 1.000, "
       "new+new EM 0.007; control: new+old 0.31 with bridge 0.000",
}


@dataclass
class RunFacts:
    """What a verdict needs to know about one pre-training run."""

    name: str
    bridge_metric: str  # bridge_use | bridge_found
    final: dict  # final metrics row
    rows: list[dict]  # every metrics row
    cut_short: bool = False
    sat_threshold: float = th.SATURATION  # the run's own (summary["thresholds"]["sat"])

    @property
    def t_sat(self) -> int | None:
        return first_step(self.rows, "train_acc", self.sat_threshold)

    @property
    def t_grokked(self) -> int | None:
        return first_step(self.rows, "test_inferred_iid", th.GROKKED)


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _from_votes(votes: list[bool]) -> str:
    if not votes:
        return "not testable"
    return "supported" if all(votes) else "contradicted" if not any(votes) else "partly supported"


def _result(n: int, verdict: str, measured: str, rule: str) -> dict:
    return {"finding": n, "verdict": verdict, "measured": measured, "rule": rule, "paper": PAPER[n]}


# ------------------------------------------------------------------------------------------------ Finding 1
RULE_1 = (f"path comparisons (bridge profile and unsaturated causal-map r >= {th.SAME_PATH_R}; a path needs a bridge "
          f"measure >= {th.PATH_MIN_LEVEL}) of (a) the natural run at saturation vs its first grokked checkpoint "
          f"(ID >= {th.GROKKED}) and (b) the final natural (ID >= {th.GROKKED}) vs both-hop-full (OOD >= "
          f"{th.GROKKED}) checkpoints, plus (c) their fine-tuning curves (mean |difference| <= {th.CURVE_SIMILAR}); "
          f"valid only if step 0 vs last comes out 'different' and at least one path comparison decides (curves alone "
          f"do not). All same: supported; all different: contradicted")


def finding_1(natural: RunFacts | None, both_full: RunFacts | None, within: dict | None, control: dict | None,
              across: dict | None, curve_distance: float | None) -> dict:
    """``within``: compare.json's sat_vs_grokked of the natural run; ``control``: its step0_vs_last; ``across``: the
    natural-last vs both-full-last comparison; ``curve_distance``: of their fine-tunes (None if absent)."""
    if natural is None:
        return _result(1, "not testable (no natural run)", "", RULE_1)
    if natural.cut_short or (both_full is not None and both_full.cut_short):
        return _result(1, CUT_SHORT, "", RULE_1)
    parts, votes, path_votes = [], [], 0
    if control is None or control.get("verdict") != "different path":
        seen = "missing" if control is None else f"'{control.get('verdict')}' ({control.get('why', '')})"
        return _result(1, "not testable (the negative control failed: step 0 vs last came out "
                          f"{seen}, so the path statistic cannot tell paths apart here)",
                       f"step 0 vs last: {seen}", RULE_1)
    parts.append(f"control step 0 vs last: different path (bridge level {_fmt(control.get('level_a'))} vs "
                 f"{_fmt(control.get('level_b'))})")
    if within is not None and natural.t_sat is not None and natural.t_grokked is not None:
        parts.append(f"(a) natural step {within.get('step_a')} (saturated) vs {within.get('step_b')} (grokked): "
                     f"{within['verdict']} (profile r {_fmt(within.get('profile_corr'))}, causal-map r "
                     f"{_fmt(within.get('causal_map_corr'))}, bridge level {_fmt(within.get('level_a'))} -> "
                     f"{_fmt(within.get('level_b'))})")
        if within["verdict"] != "undetermined":
            votes.append(within["verdict"] == "same path")
            path_votes += 1
    else:
        parts.append(f"(a) not testable: the natural run has no grokked checkpoint (t_sat {natural.t_sat}, first "
                     f"ID >= {th.GROKKED}: {natural.t_grokked})")
    nat_id = natural.final.get("test_inferred_iid")
    bf_ood = both_full.final.get("test_inferred_ood") if both_full else None
    if both_full is not None and across is not None and (nat_id or 0) >= th.GROKKED and (bf_ood or 0) >= th.GROKKED:
        parts.append(f"(b) final natural vs both-hop full: {across['verdict']} (profile r "
                     f"{_fmt(across.get('profile_corr'))}, causal-map r {_fmt(across.get('causal_map_corr'))})")
        if across["verdict"] != "undetermined":
            votes.append(across["verdict"] == "same path")
            path_votes += 1
        if curve_distance is not None:
            parts.append(f"(c) fine-tuning curves: mean |difference| {_fmt(curve_distance)}")
            votes.append(curve_distance <= th.CURVE_SIMILAR)
    else:
        parts.append(f"(b, c) not testable: final natural ID {_fmt(nat_id)}, both-hop full OOD {_fmt(bf_ood)} "
                     f"(both must be >= {th.GROKKED})")
    if not path_votes:
        verdict = ("not testable (no path comparison decided: no grokked checkpoints to compare, or every comparison "
                   "'undetermined'; fine-tuning curves alone do not decide)")
        return _result(1, verdict, "; ".join(parts), RULE_1)
    return _result(1, _from_votes(votes), "; ".join(parts), RULE_1)


# ------------------------------------------------------------------------------------------------ Finding 2
RULE_2 = (f"second-hop full: mean bridge measure over the evaluations with OOD >= {th.HIGH}: < {th.BRIDGE_FAKE} "
          f"supported (fake grokking), >= {th.BRIDGE_CIRCUIT} contradicted (a circuit), in between partly supported; "
          f"needs OOD >= {th.HIGH} at some evaluation, and the positive control: the both-hop-full run must reach OOD "
          f">= {th.HIGH} with a mean bridge measure >= {th.BRIDGE_CIRCUIT} there (the measure must see a real circuit)")


def finding_2(second: RunFacts | None, both: RunFacts | None) -> dict:
    if second is None:
        return _result(2, "not testable (no second-hop-full run)", "", RULE_2)
    if second.cut_short:
        return _result(2, CUT_SHORT, "", RULE_2)
    metric = f"{second.bridge_metric}_ood"
    reg = classify_regime(second.rows, "test_inferred_ood", metric)
    measured = (f"second_full: final OOD {_fmt(second.final.get('test_inferred_ood'))}, {metric} "
                f"{_fmt(second.final.get(metric))}; first OOD >= {th.HIGH} at step {reg['t_high']}, mean {metric} "
                f"there {_fmt(reg['bridge_when_high'])}; regime '{reg['regime']}'")
    positive = classify_regime(both.rows, "test_inferred_ood", metric) if both is not None else None
    if positive is not None:
        measured += (f"; positive control both_full: final OOD {_fmt(both.final.get('test_inferred_ood'))}, first OOD "
                     f">= {th.HIGH} at step {positive['t_high']}, mean {metric} there "
                     f"{_fmt(positive['bridge_when_high'])}")
    if reg["t_high"] is None:
        return _result(2, f"not testable (second_full never reached OOD >= {th.HIGH})", measured, RULE_2)
    b = reg["bridge_when_high"]
    if b is None:
        return _result(2, f"not testable ({metric} was not measured)", measured, RULE_2)
    if positive is None:
        return _result(2, "not testable (no both-hop-full run: the bridge measure has no positive control)", measured,
                       RULE_2)
    if positive["t_high"] is None or not positive["circuit"]:
        return _result(2, f"not testable (the positive control failed: both_full did not reach OOD >= {th.HIGH} with "
                          f"{metric} >= {th.BRIDGE_CIRCUIT}, so a low bridge measure would not mean fake grokking)",
                       measured, RULE_2)
    verdict = "supported" if b < th.BRIDGE_FAKE else "contradicted" if b >= th.BRIDGE_CIRCUIT else "partly supported"
    return _result(2, verdict, measured, RULE_2)


# ------------------------------------------------------------------------------------------------ Finding 3
RULE_3 = (f"fine-tunes from grokked checkpoints (ID >= {th.GROKKED}) that learned the new facts (>= "
          f"{th.NEW_FACTS_LEARNED}): new+old EM >= {th.NEW_OLD_COMPOSES} is necessary for supported, and with "
          f"old+new EM <= {th.OLD_NEW_EM_MAX} (bridge >= {th.OLD_NEW_BRIDGE_MIN}), new+new EM <= {th.NEW_NEW_EM_MAX} "
          f"and the control (which must itself learn the new facts) failing new+old it is supported; new+old < "
          f"{th.NEW_OLD_FAILS}: contradicted; otherwise "
          f"partly supported. Faithful categories are used when n >= {th.FAITHFUL_MIN_N}, else the powered ones")


def pick_category(final: dict, category: str) -> tuple[dict, str]:
    """The faithful category when it has enough queries, else its powered variant (stated)."""
    v = final.get(category) or {}
    if (v.get("n") or 0) >= th.FAITHFUL_MIN_N or f"{category}_powered" not in final:
        return v, "faithful"
    return final[f"{category}_powered"], "powered"


@dataclass
class FineTuneFacts:
    name: str
    final: dict  # summary["transfer"]["final"]: category -> {exact_match, bridge_found, bridge_use, n}
    bridge_metric: str
    parent_grokked: bool
    cut_short: bool = False


def finding_3(finetunes: list[FineTuneFacts], control: FineTuneFacts | None) -> dict:
    usable = [f for f in finetunes if f.parent_grokked]
    if not usable:
        return _result(3, f"not testable (no fine-tune from a grokked checkpoint: ID >= {th.GROKKED})", "", RULE_3)
    if any(f.cut_short for f in usable) or (control is not None and control.cut_short):
        return _result(3, CUT_SHORT, "", RULE_3)
    control_new_old, control_learned = None, False
    if control is not None:
        control_new_old = _measured(pick_category(control.final, "new_old")[0])
        control_learned = ((control.final.get("atomic_new") or {}).get("exact_match") or 0.0) >= th.NEW_FACTS_LEARNED
    # A control that never learned the new facts fails new+old trivially: that says nothing about composition.
    control_fails = control_learned and control_new_old is not None and control_new_old < th.NEW_OLD_COMPOSES
    parts, votes = [], []
    for f in usable:
        new_fact = (f.final.get("atomic_new") or {}).get("exact_match") or 0.0
        if new_fact < th.NEW_FACTS_LEARNED:
            parts.append(f"{f.name}: new facts not learned (New Fact acc {_fmt(new_fact)}), not testable")
            continue
        no, kind_no = pick_category(f.final, "new_old")
        on, kind_on = pick_category(f.final, "old_new")
        nn = f.final.get("new_new") or {}
        bridge = f.bridge_metric
        em_no, em_on, em_nn = _measured(no), _measured(on), _measured(nn)
        if em_no is None:
            parts.append(f"{f.name}: no new+old queries were measured (n={no.get('n')}), not testable")
            continue
        # A category that was not measured cannot pass its check (None fails every comparison below).
        checks = [em_on is not None and em_on <= th.OLD_NEW_EM_MAX and (on.get(bridge) or 0.0) >= th.OLD_NEW_BRIDGE_MIN,
                  em_nn is not None and em_nn <= th.NEW_NEW_EM_MAX, control_fails]
        verdict = ("contradicted" if em_no < th.NEW_OLD_FAILS else
                   "supported" if em_no >= th.NEW_OLD_COMPOSES and all(checks) else "partly supported")
        votes.append(verdict)
        parts.append(f"{f.name}: New Fact {_fmt(new_fact)}; new+old EM {_fmt(em_no)} ({kind_no}, n={no.get('n')}); "
                     f"old+new EM {_fmt(em_on)} with {bridge} {_fmt(on.get(bridge))} ({kind_on}, n={on.get('n')}); "
                     f"new+new EM {_fmt(em_nn)}, {bridge} {_fmt(nn.get(bridge))} -> {verdict}")
    parts.append("control: " + ("none" if control is None else _control_note(control_new_old, control_learned)))
    if not votes:
        return _result(3, "not testable (the fine-tunes did not learn the new facts)", "; ".join(parts), RULE_3)
    verdict = votes[0] if len(set(votes)) == 1 else "partly supported"
    return _result(3, verdict, "; ".join(parts), RULE_3)


def _measured(category: dict) -> float | None:
    """A category's exact match, or None when it was not measured (absent, or no queries)."""
    if not category or not category.get("n") or category.get("exact_match") is None:
        return None
    return category["exact_match"]


def _control_note(new_old: float | None, learned: bool) -> str:
    if not learned:
        return f"did not learn the new facts (new+old EM {_fmt(new_old)}), so it cannot serve as a control"
    if new_old is None:
        return "new+old not measured"
    return f"new+old EM {_fmt(new_old)} ({'fails' if new_old < th.NEW_OLD_COMPOSES else 'composes'})"


def curve_distance(a_rows: list[dict], b_rows: list[dict],
                   metrics: tuple[str, ...] = ("atomic_new", "new_old_powered", "old_new_powered", "new_new")) -> \
        float | None:
    """Mean absolute difference of two fine-tunes' category curves at their shared evaluation steps."""
    b_by_step = {r["step"]: r for r in b_rows}
    diffs = [abs(r[m] - b_by_step[r["step"]][m]) for r in a_rows if r["step"] in b_by_step for m in metrics
             if r.get(m) is not None and b_by_step[r["step"]].get(m) is not None]
    return sum(diffs) / len(diffs) if diffs else None


def outcome(verdict: str) -> str:
    """The outcome of a verdict string without its reason: one of OUTCOMES."""
    return next(o for o in OUTCOMES if verdict.startswith(o))
