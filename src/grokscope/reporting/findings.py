"""He et al.'s three findings, tested as the paper states them, from a study's measurements (``docs/methods.md``,
"Findings and their verdicts").

Every verdict is "supported", "partly supported", "contradicted", "undecided at this n" (an interval straddles a
threshold that decides it) or "not testable" (with the reason). Every number a rule reads is a ``Rate`` with its
95% interval and n, compared with its threshold by the interval (``metrics/intervals.py``); each gate is a
``Check`` that the report lists with the number, its interval, n, the chance floor (the measure at step 0) and the
threshold. Inputs are plain numbers, so the rules are tested on He et al.'s own figures (``tests/test_findings*.py``).

- Finding 1 (He et al. §3): the grokked natural model and the both-hop-full model, which generalises without a
  delay, use the same path (and the first-hop-full model, when the study has one). Votes are path comparisons with
  a permutation null; the saturated-vs-grokked comparison of one run is described, not voted on.
- Finding 2 (He et al. §4): second-hop full's OOD accuracy rises late, while its bridge measure stays low on the
  evaluations where OOD is up; both-hop full is the positive control (its bridge is high there).
- Finding 3 (He et al. §5): per-regime expectations: circuit parents compose new+old with the bridge found;
  second-hop full, both-hop half and the from-scratch control do not; old+new and new+new fail everywhere; the
  control's bridge stays low.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import ABOVE, BELOW, Rate, final_rate, mean_rate, rate_at
from grokscope.metrics.milestones import GrokDefinition, RegimeThresholds, classify_regime, first_step, is_delayed
from grokscope.metrics.paths import moved_path_control, path_verdict

UNDECIDED = "undecided at this n"
OUTCOMES = ("supported", "partly supported", "contradicted", UNDECIDED, "not testable")
CUT_SHORT = "not testable (run cut short by the time cap)"
HELD, FAILED, OPEN, UNMEASURED = "held", "failed", "undecided", "not measured"

PAPER = {
    1: "He et al. §3, Fig. 2A/B and Fig. 4 rows A/B: natural (grokked on OOD, 0.70) and both-hop-full (OOD 1.0 at "
       "saturation, no delay) TRMs both end with bridge found 0.998 / 1.000 and have identical fine-tuning curves",
    2: "He et al. §4, Fig. 2D: second-hop full's OOD rises after saturation (0.56 at 300k, 0.97 max) while bridge "
       "found averages 0.18 over 300-700k and 0.40-0.48 after; both-hop full: bridge 1.000",
    3: "He et al. §5, Fig. 3/4: natural, both-hop full, first-hop full: new+old EM 1.000 (n=16/26/33) with bridge "
       "1.000; second-hop full 0.36 (n=33), both-hop half 0.35 (n=36), control 0.31 (n=16) with bridge 0.000; "
       "old+new <= 0.11 and new+new <= 0.04 everywhere",
}


# ------------------------------------------------------------------------------------------------ gates
@dataclass
class Check:
    """One gated number: ``expect`` "above" or "below" ``threshold``, decided by the interval of ``rate``."""

    finding: int
    subject: str  # the run or fine-tune
    measure: str
    rate: Rate | None
    threshold: float
    expect: str  # ABOVE | BELOW
    floor: float | None = None  # the measure's chance floor: its value at step 0

    @property
    def outcome(self) -> str:
        if self.rate is None:
            return UNMEASURED
        if self.expect == ABOVE and self.floor is not None and self.floor >= self.threshold:
            return UNMEASURED  # a threshold at or under chance cannot be passed meaningfully
        side = self.rate.against(self.threshold)
        return HELD if side == self.expect else OPEN if side not in (ABOVE, BELOW) else FAILED

    def row(self) -> dict:
        floor_note = "" if self.floor is None else f"{self.floor:.2f}"
        if self.rate is not None and self.expect == ABOVE and self.floor is not None and self.floor >= self.threshold:
            floor_note += " (at or above the threshold: not testable)"
        return {"finding": self.finding, "subject": self.subject, "measure": self.measure,
                "value [95% interval] (n)": "not measured" if self.rate is None else self.rate.text(),
                "chance floor (step 0)": floor_note or "-", "needs": f"{self.expect} {self.threshold}",
                "outcome": self.outcome}

    def text(self) -> str:
        value = "not measured" if self.rate is None else self.rate.text()
        floor = "" if self.floor is None else f", floor {self.floor:.2f}"
        return f"{self.subject} {self.measure} {value}{floor} (needs {self.expect} {self.threshold}): {self.outcome}"


def _result(n: int, verdict: str, measured: list[str], rule: str, checks: list[Check] | None = None,
            **extra) -> dict:
    return {"finding": n, "verdict": verdict, "measured": "; ".join(measured), "rule": rule, "paper": PAPER[n],
            "checks": [c.row() for c in checks or []], **extra}


def _votes(votes: list[bool]) -> str:
    return "supported" if all(votes) else "contradicted" if not any(votes) else "partly supported"


def outcome(verdict: str) -> str:
    """The outcome of a verdict string without its reason: one of OUTCOMES."""
    return next(o for o in OUTCOMES if verdict.startswith(o))


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class RunFacts:
    """What a verdict needs to know about one pre-training run: its curves and the family's definitions."""

    name: str
    bridge_metric: str  # bridge_use | bridge_found
    rows: list[dict]  # every metrics row, in order
    grokked: GrokDefinition = field(default_factory=GrokDefinition)
    cut_short: bool = False
    sat_threshold: float = th.SATURATION  # the run's own (summary["thresholds"]["sat"])
    n: dict = field(default_factory=dict)  # metric -> n, for rows written before they carried n/<metric>

    @property
    def t_sat(self) -> int | None:
        return first_step(self.rows, "train_acc", self.sat_threshold)

    def final(self, metric: str) -> Rate | None:
        return final_rate(self.rows, metric, n=self.n.get(metric))

    def floor(self, metric: str) -> float | None:
        first = self.rows[0] if self.rows else {}
        return first.get(metric) if first.get("step") == 0 else None

    def delay(self, metric: str) -> tuple[int | None, int | None, bool]:
        """(t_sat, first ``metric`` >= GENERALISED, whether that came late by the delay rule)."""
        t_gen = first_step(self.rows, metric, th.GENERALISED)
        return self.t_sat, t_gen, is_delayed(self.t_sat, t_gen)

    def regime(self, metric: str) -> dict:
        return classify_regime(self.rows, metric, f"{self.bridge_metric}_ood", RegimeThresholds(sat=self.sat_threshold))

    def check(self, finding: int, metric: str, threshold: float, expect: str = ABOVE) -> Check:
        return Check(finding, self.name, metric, self.final(metric), threshold, expect, self.floor(metric))

    def bridge_while_up(self, metric: str = "test_inferred_ood", level: float = th.GENERALISED) -> Rate | None:
        """The bridge measure on OOD averaged over the evaluations whose ``metric`` is at least ``level``."""
        key = f"{self.bridge_metric}_ood"
        rates = [rate_at(r, key, self.n.get(key)) for r in self.rows if (r.get(metric) or 0) >= level]
        return mean_rate([r for r in rates if r is not None])


# ------------------------------------------------------------------------------------------------ Finding 1
RULE_1 = (f"preconditions: the natural run groks by its family's definition (gpt: ID >= {th.GROKKED}; trm: OOD >= "
          f"{th.GROKKED_TRM_OOD}; final = mean of the last 3 evaluations, its 95% interval above the level) after a "
          f"delay (first >= {th.GENERALISED} at least {th.DELAY_FACTOR} x t_sat after saturation), and the both-hop-"
          f"full run generalises on OOD to the same level without a delay. Votes: the final natural checkpoint "
          f"against the final both-hop-full one (and first-hop full when present, once it reached the level): same "
          f"path when the bridge-profile and unsaturated causal-map r are each >= {th.SAME_PATH_R} and their "
          f"permutation p < {th.PATH_ALPHA}. Valid only if two negative controls come out 'different': step 0 vs "
          f"last, and the last checkpoint vs its own path moved by one stage and one position (exercises the "
          f"correlation, not the level gate). All same: supported; all different: contradicted; else partly. The "
          f"saturated-vs-grokked comparison of one run is shown as a description, not a vote")


def redecide(comparison: dict | None) -> dict | None:
    """A stored comparison re-decided with the current statistic (its profiles and maps are kept in the file)."""
    if not comparison or "profile_a" not in comparison:
        return comparison
    return {**comparison, **path_verdict(comparison["profile_a"], comparison["profile_b"],
                                         comparison.get("causal_map_a"), comparison.get("causal_map_b"))}


def _cmp_text(label: str, c: dict) -> str:
    def num(x, d=2):
        return "n/a" if x is None else f"{x:.{d}f}"
    return (f"{label}: {c['verdict']} (profile r {num(c.get('profile_corr'))}, causal-map r "
            f"{num(c.get('causal_map_corr'))} over {c.get('cells_compared', 0)} cells, permutation p "
            f"{num(c.get('p_value'), 3)}, bridge level {num(c.get('level_a'))} vs {num(c.get('level_b'))}; "
            f"{c.get('why', '')})")


def _generalised(run: RunFacts, finding: int, metric: str, level: float, need_delay: bool) -> tuple[str | None, list]:
    """(None, checks) when ``run`` reached ``level`` on ``metric`` (decisively) with (or without) a delay, else (why
    not, checks)."""
    check = run.check(finding, metric, level)
    t_sat, t_gen, delayed = run.delay(metric)
    delay = (f"{run.name} on {metric}: t_sat {_step(t_sat)}, first >= {th.GENERALISED} at {_step(t_gen)}: "
             f"{'a' if delayed else 'no'} delay, needs {'a' if need_delay else 'no'} delay")
    if check.outcome == OPEN:
        return f"{UNDECIDED} ({check.text()}; {delay})", [check]
    if check.outcome != HELD:
        return f"not testable ({check.text()}; {delay})", [check]
    if need_delay != delayed:
        return f"not testable ({delay})", [check]
    return None, [check]


def _step(step: int | None) -> str:
    return "never" if step is None else str(step)


def finding_1(natural: RunFacts | None, both_full: RunFacts | None, comparisons: dict[str, dict],
              control: dict | None, within: dict | None = None, curve_distance: float | None = None,
              first_full: RunFacts | None = None) -> dict:
    """``comparisons``: regime ("both_full", "first_full") -> the natural-last vs that-regime-last comparison (with
    profiles and maps); ``control``: the natural run's step 0 vs last; ``within``: its saturated vs grokked."""
    if natural is None or both_full is None:
        return _result(1, "not testable (needs a natural and a both-hop-full run)", [], RULE_1)
    if natural.cut_short or both_full.cut_short or (first_full is not None and first_full.cut_short):
        return _result(1, CUT_SHORT, [], RULE_1)
    g = natural.grokked
    # What the comparisons show is reported whatever the preconditions say (as a description when they fail).
    described = [_cmp_text(f"final natural vs final {r}", redecide(c)) for r, c in comparisons.items() if c]
    why, checks = _generalised(natural, 1, g.metric, g.threshold, need_delay=True)
    if why is not None:
        return _result(1, why.replace("not testable (", "not testable (the natural run did not grok: "),
                       [why, *(f"description: {d}" for d in described)], RULE_1, checks)
    why, more = _generalised(both_full, 1, "test_inferred_ood", g.threshold, need_delay=False)
    checks += more
    if why is not None:
        return _result(1, why.replace("not testable (", "not testable (both-hop full is not the paper's "
                                                         "non-grokked model: "),
                       [why, *(f"description: {d}" for d in described)], RULE_1, checks)
    parts = []
    # Negative controls: the statistic must be able to say "different" here.
    control = redecide(control)
    moved = None
    last = (comparisons.get("both_full") or {})
    if last.get("profile_a") is not None:
        moved = moved_path_control(last["profile_a"], last.get("causal_map_a"))
    for label, c in (("control step 0 vs last", control), ("control last vs its path moved", moved)):
        if c is None or c.get("verdict") != "different path":
            seen = "missing" if c is None else _cmp_text(label, c)
            return _result(1, f"not testable (a negative control did not come out 'different': {seen})",
                           [seen], RULE_1, checks)
        parts.append(_cmp_text(label, c))
    votes = []
    for regime, run in (("both_full", both_full), ("first_full", first_full)):
        if run is None:
            continue
        if regime == "first_full":
            why, more = _generalised(run, 1, "test_inferred_ood", g.threshold, need_delay=True)
            checks += more
            if why is not None:
                parts.append(f"natural vs first_full not compared: {why}")
                continue
        c = redecide(comparisons.get(regime))
        if c is None:
            parts.append(f"natural vs {regime}: comparison missing")
            continue
        parts.append(_cmp_text(f"vote: final natural vs final {regime}", c))
        if c["verdict"] != "undetermined":
            votes.append(c["verdict"] == "same path")
    within = redecide(within)
    if within:
        parts.append(_cmp_text(f"description (not a vote): natural step {within.get('step_a')} (saturated) vs "
                               f"{within.get('step_b')} (grokked), when the path forms", within))
    if curve_distance is not None:
        parts.append(f"description: fine-tuning curves natural vs both_full, mean |difference| {curve_distance:.2f}")
    if not votes:  # e.g. a flat natural profile decided by its map, against a run with no map to compare
        return _result(1, "not testable (no path comparison decided)", parts, RULE_1, checks)
    return _result(1, _votes(votes), parts, RULE_1, checks)


# ------------------------------------------------------------------------------------------------ Finding 2
RULE_2 = (f"second-hop full: (i) OOD rises late: first OOD >= {th.GENERALISED} at least {th.DELAY_FACTOR} x t_sat "
          f"after saturation; (ii) the bridge measure on OOD, averaged over the evaluations with OOD >= "
          f"{th.GENERALISED}, has its 95% interval below {th.BRIDGE_FAKE}. Both: supported; neither: contradicted; "
          f"one: partly supported; (ii) straddling {th.BRIDGE_FAKE}: undecided. Needs OOD >= {th.GENERALISED} at some "
          f"evaluation, and the positive control: both-hop full's bridge measure over its evaluations with OOD >= "
          f"{th.GENERALISED} lies above {th.BRIDGE_CIRCUIT} (the measure must see a real circuit)")


def finding_2(second: RunFacts | None, both: RunFacts | None, correct_with_bridge: Rate | None = None) -> dict:
    """``correct_with_bridge``: from the per-query records, the share of second-hop full's correct OOD answers whose
    query had the bridge (descriptive; He et al. §3 say every correct answer of a circuit model has it)."""
    if second is None:
        return _result(2, "not testable (no second-hop-full run)", [], RULE_2)
    if second.cut_short or (both is not None and both.cut_short):
        return _result(2, CUT_SHORT, [], RULE_2)
    metric = f"{second.bridge_metric}_ood"
    label = second.regime("test_inferred_ood")
    t_sat, t_gen, delayed = second.delay("test_inferred_ood")
    floor = second.floor(metric)
    low = Check(2, second.name, f"{metric} while OOD >= {th.GENERALISED}", second.bridge_while_up(), th.BRIDGE_FAKE,
                BELOW, floor)
    checks = [low]
    parts = [f"second_full: t_sat {_step(t_sat)}, first OOD >= {th.GENERALISED} at {_step(t_gen)} (regime label "
             f"'{label['regime']}'); {low.text()}"]
    if correct_with_bridge is not None:
        parts.append(f"share of correct OOD answers with the bridge (per-query records): {correct_with_bridge.text()}")
    if both is not None:
        positive = Check(2, both.name, f"{metric} while OOD >= {th.GENERALISED}", both.bridge_while_up(),
                         th.BRIDGE_CIRCUIT, ABOVE, both.floor(metric))
        checks.append(positive)
        parts.append(f"positive control: {positive.text()}")
    if t_gen is None:
        return _result(2, f"not testable (second_full never reached OOD >= {th.GENERALISED})", parts, RULE_2, checks)
    if low.rate is None:
        return _result(2, f"not testable ({metric} was not measured)", parts, RULE_2, checks)
    if both is None:
        return _result(2, "not testable (no both-hop-full run: the bridge measure has no positive control)", parts,
                       RULE_2, checks)
    if positive.outcome != HELD:
        return _result(2, f"not testable (the positive control {positive.outcome}: {positive.text()})", parts,
                       RULE_2, checks)
    if low.outcome == OPEN:
        return _result(2, f"{UNDECIDED} ({low.text()})", parts, RULE_2, checks)
    parts.append(f"(i) OOD rises late: {'held' if delayed else 'failed'}; (ii) bridge low while OOD is up: "
                 f"{low.outcome}")
    return _result(2, _votes([delayed, low.outcome == HELD]), parts, RULE_2, checks)


# ------------------------------------------------------------------------------------------------ Finding 3
CIRCUIT_PARENTS = ("natural", "both_full", "first_full")
NON_COMPOSING = ("second_full", "both_half")
CATEGORIES = ("new_old", "old_new", "new_new")

RULE_3 = (f"fine-tunes from the last checkpoint of each regime (the saturated ones are an extension, not voted on), "
          f"each testable once it learned the new facts (New Fact interval above {th.NEW_FACTS_LEARNED}) and its "
          f"parent reached its target (natural: grokked; augmented: OOD at the family's grokked level). Expectations: "
          f"circuit parents (natural, both-hop full, first-hop full) compose new+old (EM interval above "
          f"{th.COMPOSES}) with the bridge found there (above {th.BRIDGE_PRESENT}); second-hop full, both-hop half "
          f"and the from-scratch control do not compose new+old (below {th.COMPOSES}); old+new and new+new do not "
          f"compose in any regime; the control's new+old bridge stays below {th.BRIDGE_PRESENT}. All held: "
          f"supported (needs a circuit parent and the control); every circuit parent's new+old failed: "
          f"contradicted; some failed: partly supported; none failed but some straddle: undecided. Faithful "
          f"categories when n >= {th.FAITHFUL_MIN_N}, else the powered ones")


@dataclass
class FineTuneFacts:
    """One fine-tune: its regime ("control" for the from-scratch control), starting checkpoint and final rates."""

    name: str
    regime: str  # natural, both_full, ..., or "control"
    rates: dict[str, Rate]  # atomic_new, new_old, old_new, new_new, bridge_new_old, ... (the category chosen)
    checkpoint: str = "last"  # last | sat | None for the control
    parent_ready: str | None = None  # None when the parent reached its target, else why not
    cut_short: bool = False
    kinds: dict = field(default_factory=dict)  # category -> "faithful" | "powered"
    floors: dict = field(default_factory=dict)  # measure -> chance floor (the control's step 0)


def expectations(f: FineTuneFacts) -> list[Check]:
    """The regime expectations of one fine-tune, as checks."""
    def check(measure, threshold, expect):
        return Check(3, f.name, measure, f.rates.get(measure), threshold, expect, f.floors.get(measure))
    if f.regime in CIRCUIT_PARENTS:
        first = [check("new_old", th.COMPOSES, ABOVE), check("bridge_new_old", th.BRIDGE_PRESENT, ABOVE)]
    else:
        first = [check("new_old", th.COMPOSES, BELOW)]
        if f.regime == "control":
            first.append(check("bridge_new_old", th.BRIDGE_PRESENT, BELOW))
    return first + [check("old_new", th.COMPOSES, BELOW), check("new_new", th.COMPOSES, BELOW)]


def _describe(f: FineTuneFacts) -> str:
    """A fine-tune's rates, for one that does not vote (an extension, or a precondition not met)."""
    names = ("atomic_new", *CATEGORIES, *(f"bridge_{c}" for c in CATEGORIES))
    return "; ".join(f"{m} {f.rates[m].text()}" for m in names if f.rates.get(m) is not None)


def finding_3(finetunes: list[FineTuneFacts]) -> dict:
    voting = [f for f in finetunes if f.checkpoint in ("last", None)]
    if any(f.cut_short for f in voting):
        return _result(3, CUT_SHORT, [], RULE_3)
    parts, checks, core, tested = [], [], [], set()
    for f in voting:
        learned = Check(3, f.name, "atomic_new", f.rates.get("atomic_new"), th.NEW_FACTS_LEARNED, ABOVE)
        checks.append(learned)
        kinds = ", ".join(f"{k} {v}" for k, v in f.kinds.items())
        if f.parent_ready is not None:
            parts.append(f"{f.name}: not testable (parent did not reach its target: {f.parent_ready}); measured: "
                         f"{_describe(f)}")
            continue
        if learned.outcome != HELD:
            parts.append(f"{f.name}: not testable (new facts: {learned.text()}); measured: {_describe(f)}")
            continue
        mine = expectations(f)
        checks += mine
        tested.add(f.regime)
        if f.regime in CIRCUIT_PARENTS:
            core.append(mine[0].outcome)
        held = sum(c.outcome == HELD for c in mine)
        parts.append(f"{f.name} ({kinds or 'categories as measured'}): {held} of {len(mine)} held: "
                     + "; ".join(c.text() for c in mine))
    for f in finetunes:
        if f.checkpoint not in ("last", None):
            parts.append(f"extension (not voted), {f.name}: {_describe(f)}")
    gated = [c for c in checks if c.measure != "atomic_new"]
    tally = Counter(c.outcome for c in gated)
    summary = (f"{tally[HELD]} of {len(gated)} regime expectations held"
               + "".join(f", {tally[o]} {o}" for o in (FAILED, OPEN, UNMEASURED) if tally[o]))
    failed = [f"{c.subject} {c.measure}" for c in gated if c.outcome == FAILED]
    open_ = [f"{c.subject} {c.measure}" for c in gated if c.outcome == OPEN]
    parts.insert(0, summary + (f"; failed: {', '.join(failed)}" if failed else "")
                 + (f"; undecided: {', '.join(open_)}" if open_ else ""))
    extra = {"expectations": {"held": tally[HELD], "total": len(gated), "failed": failed, "undecided": open_}}
    if not core:
        return _result(3, "not testable (no fine-tune from a circuit parent that learned the new facts)", parts,
                       RULE_3, checks, **extra)
    if all(o == FAILED for o in core):
        return _result(3, "contradicted", parts, RULE_3, checks, **extra)
    if failed or tally[UNMEASURED]:
        return _result(3, "partly supported", parts, RULE_3, checks, **extra)
    if open_:
        return _result(3, f"{UNDECIDED} ({', '.join(open_)})", parts, RULE_3, checks, **extra)
    if "control" not in tested:
        return _result(3, "partly supported (every expectation held, but no control was tested)", parts, RULE_3,
                       checks, **extra)
    return _result(3, "supported", parts, RULE_3, checks, **extra)


def pick_category(final: dict, category: str) -> tuple[dict, str]:
    """The faithful category when it has enough queries, else its powered variant (stated)."""
    v = final.get(category) or {}
    if (v.get("n") or 0) >= th.FAITHFUL_MIN_N or f"{category}_powered" not in final:
        return v, "faithful"
    return final[f"{category}_powered"], "powered"


def curve_distance(a_rows: list[dict], b_rows: list[dict],
                   metrics: tuple[str, ...] = ("atomic_new", "new_old_powered", "old_new_powered", "new_new")) -> \
        float | None:
    """Mean absolute difference of two fine-tunes' category curves at their shared evaluation steps."""
    b_by_step = {r["step"]: r for r in b_rows}
    diffs = [abs(r[m] - b_by_step[r["step"]][m]) for r in a_rows if r["step"] in b_by_step for m in metrics
             if r.get(m) is not None and b_by_step[r["step"]].get(m) is not None]
    return sum(diffs) / len(diffs) if diffs else None


# ------------------------------------------------------------------------------------------------ seeds
def across_seeds(per_seed: dict[int, dict]) -> dict:
    """One finding decided per seed -> the overall verdict with its spread: the seeds' common outcome when they
    agree, else "partly supported (seeds disagree: ...)"."""
    seeds = sorted(per_seed)
    if len(seeds) == 1:
        return per_seed[seeds[0]]
    outcomes = {s: outcome(per_seed[s]["verdict"]) for s in seeds}
    spread = ", ".join(f"seed {s}: {o}" for s, o in outcomes.items())
    first = per_seed[seeds[0]]
    if len(set(outcomes.values())) == 1:
        verdict = f"{outcomes[seeds[0]]} (all {len(seeds)} seeds)"
    else:
        verdict = f"partly supported (seeds disagree: {spread})"
    measured = " | ".join(f"seed {s}: {per_seed[s]['verdict']}; {per_seed[s]['measured']}" for s in seeds)
    checks = [{**c, "subject": f"seed {s}: {c['subject']}"} for s in seeds for c in per_seed[s]["checks"]]
    return {**first, "verdict": verdict, "measured": measured, "checks": checks, "per_seed": outcomes}
