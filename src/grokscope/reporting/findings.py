"""He et al.'s three findings, tested as the paper argues them, from a study's measurements (``docs/methods.md``,
"Findings and their verdicts").

Every verdict is "supported", "partly supported", "contradicted", "undecided at this n" (an interval straddles a
threshold that decides it) or "not testable" (with the reason). A finding is a few **votes**, each one piece of the
paper's evidence for it; each vote reads gated numbers (``Check``: a ``Rate`` with its 95% interval and n against a
threshold, beside its chance floor) and comes out held, failed, undecided or not testable. Inputs are plain numbers,
so the rules are tested on He et al.'s own figures and on alternative worlds (``tests/test_findings*.py``).

- Finding 1 (He et al. §3), "a stable Generalization Circuit without grokking": (a) the grokked natural model and the
  both-hop-full model (and first-hop full) use the same ID path, by an equivalence test with a stated margin;
  (b) both-hop full's correct OOD answers come with the bridge; (c) the two models' fine-tunes compose new+old alike.
- Finding 2 (He et al. §4): (i) a grokked model without the circuit: second-hop full's OOD rises late while its
  bridge stays low; (ii) a circuit without grokking: both-hop full's final bridge is at the circuit level, with no
  delay. (ii) is also (i)'s positive control: a bridge measure that sees no circuit there cannot call one absent.
- Finding 3 (He et al. §5), "limited transferability", on parents whose circuit is *measured* (final OOD bridge at
  the circuit level by He et al.'s measure or by bridge decodable, the one that decided named; trained long enough
  for it to form): (iii-a) new+old composes from circuit parents and only
  from them; (iii-b) old+new and new+new fail from every parent; (iii-c) the circuit parents recover the bridge on
  those queries. Contradicted when (iii-b) fails.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import ABOVE, BELOW, Rate, curve_agreement, final_rate, mean_rate, rate_at
from grokscope.metrics.milestones import GrokDefinition, RegimeThresholds, classify_regime, first_step, \
    is_delayed, sustained_step
from grokscope.metrics.paths import DIFFERENT, SAME, UNDECIDED as PATH_UNDECIDED, moved_path_control, stored_verdict

UNDECIDED = "undecided at this n"
NOT_TESTABLE = "not testable"
OUTCOMES = ("supported", "partly supported", "contradicted", UNDECIDED, NOT_TESTABLE)
CUT_SHORT = "not testable (run cut short by the time cap)"
HELD, FAILED, OPEN, UNMEASURED = "held", "failed", "undecided", "not measured"

CLAIM = {  # each finding in one sentence, in the paper's words
    1: "Grokked and non-grokked models share the circuit: \"the final model trained with fewer steps follows the "
       "same reasoning path as naturally grokked models\" (He et al. §3)",
    2: "\"A Generalization Circuit may not necessarily be obtained through grokking\", and grokking can be fake "
       "(He et al. §4)",
    3: "Limited transferability: new facts compose as the first hop, not as the second (He et al. §5)",
}
PAPER = {
    1: "He et al. §3, Fig. 2A/B and Fig. 4 rows A/B: natural (grokked on OOD, 0.70) and both-hop-full (OOD 1.0 at "
       "saturation, no delay) TRMs both end with bridge found 0.998 / 1.000; 'every correct prediction on OOD "
       "compositions is achieved through successful recovery of the bridge entity'; 'equivalent transfer "
       "performance' (new+old 1.000 from 5,856 steps in both)",
    2: "He et al. §4, Fig. 2B/D: second-hop full's OOD rises after saturation (0.56 at 300k, 0.97 max) while bridge "
       "found averages 0.18 over 300-700k and 0.40-0.48 after; both-hop full: bridge 1.000 from about 300k, OOD 1.0 "
       "from 45k, no delay",
    3: "He et al. §5, Fig. 3/4: natural, both-hop full, first-hop full: new+old EM 1.000 (n=16/26/33) with bridge "
       "1.000; second-hop full 0.36 (n=33), both-hop half 0.35 (n=36), control 0.31 (n=16) with bridge 0.000; "
       "old+new <= 0.11 and new+new <= 0.04 everywhere, 'despite correctly recovering the bridge' (1.000)",
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
    source: str = ""  # where the threshold comes from (th.SOURCE)

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
        ci = None if self.rate is None else self.rate.interval
        return {"finding": self.finding, "subject": self.subject, "measure": self.measure,
                "value": "-" if self.rate is None else f"{self.rate.value:.2f}",
                "95% interval": "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]",
                "n": "-" if self.rate is None or not self.rate.n else self.rate.n,
                "value [95% interval] (n)": "not measured" if self.rate is None else self.rate.text(),
                "chance floor (step 0)": floor_note or "-", "needs": f"{self.expect} {self.threshold}",
                "outcome": self.outcome, "threshold source": self.source or "-"}

    def text(self) -> str:
        return f"{self.headline()}: {self.outcome}"

    def headline(self) -> str:
        """The number, its interval and n, and what it needs, in one line."""
        value = "not measured" if self.rate is None else self.rate.text()
        floor = "" if self.floor is None else f", floor {self.floor:.2f}"
        return f"{self.subject} {self.measure} {value}{floor} (needs {self.expect} {self.threshold})"


@dataclass
class Vote:
    """One piece of the paper's evidence for a finding: held, failed, undecided or not testable, and why."""

    name: str  # "(a) ID path, natural vs both_full"
    outcome: str  # HELD | FAILED | OPEN | NOT_TESTABLE
    why: str
    checks: list[Check] = field(default_factory=list)
    headline: str = ""  # the number that decided it, in one line (default: its deciding check's)

    def text(self) -> str:
        return f"vote {self.name}: {self.outcome} ({self.why})"

    def deciding(self) -> str:
        """The number behind the outcome: the first check with the vote's outcome, else the headline given."""
        want = {HELD: HELD, FAILED: FAILED, OPEN: OPEN}.get(self.outcome, UNMEASURED)
        check = next((c for c in self.checks if c.outcome == want), None)
        return check.headline() if check is not None else self.headline or self.why

    def row(self) -> dict:
        return {"vote": self.name, "outcome": self.outcome, "why": self.why, "number": self.deciding()}


def from_checks(name: str, checks: list[Check], why: str = "") -> Vote:
    """A vote that holds when every check held: failed when one failed, else undecided when one straddles, else not
    testable when one was not measured."""
    outcomes = {c.outcome for c in checks}
    outcome = FAILED if FAILED in outcomes else OPEN if OPEN in outcomes else \
        NOT_TESTABLE if UNMEASURED in outcomes or not checks else HELD
    text = "; ".join(c.text() for c in checks) or "nothing to check"
    return Vote(name, outcome, f"{why}: {text}" if why else text, checks)


def combine(votes: list[Vote]) -> str:
    """A finding's verdict from its votes: all held: supported; all failed: contradicted; held and failed: partly
    supported; an undecided vote with none held and failed both: undecided at this n. Votes that are not testable are
    named; a verdict resting on only some of the votes is at most "partly supported"."""
    testable = [v for v in votes if v.outcome != NOT_TESTABLE]
    skipped = [v.name for v in votes if v.outcome == NOT_TESTABLE]
    if not testable:
        return f"{NOT_TESTABLE} ({'; '.join(f'{v.name}: {v.why}' for v in votes) or 'no vote'})"
    outcomes = {v.outcome for v in testable}
    if outcomes == {HELD}:
        base = "partly supported" if skipped else "supported"
    elif outcomes == {FAILED}:
        base = "contradicted"
    elif {HELD, FAILED} <= outcomes:
        base = "partly supported"
    else:
        base = UNDECIDED
    return base + (f" ({', '.join(skipped)} not testable)" if skipped else "")


def _result(n: int, verdict: str, measured: list[str], rule: str, checks: list[Check] | None = None,
            votes: list[Vote] | None = None, lead: Vote | None = None, **extra) -> dict:
    """One finding's result; ``lead``: the vote that decided it, when the rule names one (else ``_decided_by``)."""
    pre = list(checks or [])
    checks = pre + [c for v in votes or [] for c in v.checks if c not in pre]
    decided = f"{lead.name}: {lead.deciding()}" if lead is not None else _decided_by(verdict, votes or [], pre)
    return {"finding": n, "claim": CLAIM[n], "verdict": verdict,
            "decided_by": clip_words(decided, DECIDED_BY_WORDS), "measured": "; ".join(measured),
            "details": list(measured), "rule": rule, "paper": PAPER[n],
            "checks": [c.row() for c in checks], "votes": [v.row() for v in votes or []], **extra}


DECIDED_BY_WORDS = 30  # the first screen's "decided by" cell; the whole text is in the finding's card


def clip_words(text: str, limit: int) -> str:
    """``text`` cut to its first ``limit`` words (marked with "...")."""
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit]) + " ..."


def _decided_by(verdict: str, votes: list[Vote], preconditions: list[Check]) -> str:
    """The one number a reader needs first: the deciding number of the first vote whose outcome gave the verdict
    (a failed vote for contradicted or partly supported, else a held one; an undecided one for undecided),
    else the precondition that did not hold, else the verdict's reason."""
    wanted = {"supported": (HELD,), "contradicted": (FAILED,), "partly supported": (FAILED, HELD),
              UNDECIDED: (OPEN,)}.get(outcome(verdict), ())
    vote = next((v for want in wanted for v in votes if v.outcome == want), None)
    if vote is not None:
        return f"{vote.name}: {vote.deciding()}"
    check = next((c for c in preconditions if c.outcome != HELD), None)
    if check is not None:
        return check.headline()
    return verdict[verdict.find("(") + 1:-1] if verdict.endswith(")") else verdict


def outcome(verdict: str) -> str:
    """The outcome of a verdict string without its reason: one of OUTCOMES."""
    return next(o for o in OUTCOMES if verdict.startswith(o))


def reason(verdict: str) -> str:
    """A verdict's parenthesis (what was not testable, or why), without the outcome; "" when it has none."""
    rest = verdict[len(outcome(verdict)):].strip()
    return rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest


# ------------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Decodable:
    """Bridge decodable on OOD compositions at one analysed step (``analysis/probe.py``): a linear probe for b at the
    stage x slot chosen on held-out ID, and its three controls on the same queries. It shows that a code for b exists
    there, not that the second hop reads it."""

    step: int
    probe: Rate
    controls: dict[str, Rate]  # shuffled labels, step-0 model, query tokens
    where: str  # "stage, slot k"
    use_at_slot: Rate | None = None  # the trm: bridge use with the patch at that slot (the causal test there)

    def beats_controls(self) -> bool:
        """The probe's interval lies above every control's: a code the inputs, the architecture or memorised labels
        do not explain."""
        lo = (self.probe.interval or (self.probe.value,))[0]
        return all(lo > (c.interval or (c.value, c.value))[1] for c in self.controls.values())

    def side(self, level: float = th.BRIDGE_CIRCUIT) -> str:
        """ABOVE / BELOW / UNDECIDED against ``level``; a probe that does not beat its controls counts as BELOW."""
        return self.probe.against(level) if self.beats_controls() else BELOW

    def text(self) -> str:
        controls = ", ".join(f"{k} {c.value:.2f}" for k, c in self.controls.items())
        use = "" if self.use_at_slot is None else f"; bridge use patched at that slot {self.use_at_slot.text()}"
        return (f"bridge decodable {self.probe.text()} at step {self.step:,} ({self.where}; controls: {controls}"
                f"{'' if self.beats_controls() else '; not above its controls'}{use})")


@dataclass
class RunFacts:
    """What a verdict needs to know about one pre-training run: its curves, the family's definitions and, where the
    run was analysed, the per-query share of its correct OOD answers that had the bridge (step -> Rate)."""

    name: str
    bridge_metric: str  # bridge_use | bridge_found
    rows: list[dict]  # every metrics row, in order
    grokked: GrokDefinition = field(default_factory=GrokDefinition)
    cut_short: bool = False
    sat_threshold: float = th.SATURATION
    n: dict = field(default_factory=dict)  # metric -> n, for rows written before they carried n/<metric>
    correct_with_bridge: dict[int, Rate] = field(default_factory=dict)
    decodable: Decodable | None = None  # at the last analysed step (None where the probe was not run)

    @property
    def bridge_key(self) -> str:
        return f"{self.bridge_metric}_ood"

    def reached(self, metric: str, level: float) -> int | None:
        """The first step at which ``metric`` reached ``level`` and kept it (``sustained_step``)."""
        return sustained_step(self.rows, metric, level, n=self.n.get(metric))

    @property
    def t_sat(self) -> int | None:
        return self.reached("train_acc", self.sat_threshold)

    @property
    def last_step(self) -> int | None:
        return self.rows[-1]["step"] if self.rows else None

    @property
    def age(self) -> float | None:
        """How long the run trained, in units of its saturation step."""
        t_sat, last = self.t_sat, self.last_step
        return None if not t_sat or last is None else last / t_sat

    def final(self, metric: str) -> Rate | None:
        return final_rate(self.rows, metric, n=self.n.get(metric))

    def floor(self, metric: str) -> float | None:
        first = self.rows[0] if self.rows else {}
        return first.get(metric) if first.get("step") == 0 else None

    def delay(self, metric: str) -> tuple[int | None, int | None, bool | None]:
        """(t_sat, the step ``metric`` reached GENERALISED and kept it, whether that came late by the delay rule;
        None when the run never saturated: without t_sat there is no delay to measure)."""
        t_gen = self.reached(metric, th.GENERALISED)
        return self.t_sat, t_gen, None if self.t_sat is None else is_delayed(self.t_sat, t_gen)

    def regime(self, metric: str) -> dict:
        return classify_regime(self.rows, metric, self.bridge_key, RegimeThresholds(sat=self.sat_threshold))

    def check(self, finding: int, metric: str, threshold: float, expect: str = ABOVE, label: str | None = None,
              source: str = "") -> Check:
        return Check(finding, self.name, label or metric, self.final(metric), threshold, expect, self.floor(metric),
                     source)

    def bridge_while_up(self, metric: str = "test_inferred_ood", level: float = th.GENERALISED) -> Rate | None:
        """The bridge measure on OOD averaged over the evaluations whose ``metric`` is at least ``level``."""
        rates = [rate_at(r, self.bridge_key, self.n.get(self.bridge_key)) for r in self.rows
                 if (r.get(metric) or 0) >= level]
        return mean_rate([r for r in rates if r is not None])

    def correct_share_while_up(self, level: float = th.GENERALISED) -> Rate | None:
        """The per-query share of correct OOD answers with the bridge, averaged over the analysed steps whose latest
        evaluation had OOD >= ``level`` (None when no analysed step qualifies)."""
        up = []
        for step, rate in sorted(self.correct_with_bridge.items()):
            row = next((r for r in reversed(self.rows) if r["step"] <= step), None)
            if row is not None and (row.get("test_inferred_ood") or 0) >= level:
                up.append(rate)
        return mean_rate(up)

    def correct_share_last(self) -> Rate | None:
        return self.correct_with_bridge[max(self.correct_with_bridge)] if self.correct_with_bridge else None


def _step(step: int | None) -> str:
    return "never" if step is None else str(step)


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def bridge_disagreement(run: RunFacts | None) -> str | None:
    """One sentence where He et al.'s bridge measure and bridge decodable disagree on a run's final bridge (one above
    the circuit level, the other below it); None where they agree or one was not measured."""
    if run is None or run.decodable is None or (bridge := run.final(run.bridge_key)) is None:
        return None
    paper, probe = bridge.against(th.BRIDGE_CIRCUIT), run.decodable.side()
    if {paper, probe} != {ABOVE, BELOW}:
        return None
    why = ("a code for b exists in a form the head's top-1 does not read" if probe == ABOVE else
           "the head's top-1 finds b where a linear probe fitted on ID compositions does not")
    return (f"The two bridge measures disagree on {run.name}: He et al.'s {run.bridge_key} (final) {bridge.text()}, "
            f"but {run.decodable.text()}: {why}.")


def _generalised(run: RunFacts, finding: int, metric: str, level: float, need_delay: bool) -> tuple[str | None, list]:
    """(None, checks) when ``run`` reached ``level`` on ``metric`` (decisively) with (or without) a delay, else (why
    not, checks)."""
    check = run.check(finding, metric, level, source=th.SOURCE["GROKKED"])
    t_sat, t_gen, delayed = run.delay(metric)
    delay = (f"{run.name} on {metric}: t_sat {_step(t_sat)}, >= {th.GENERALISED} (kept) at {_step(t_gen)}: "
             f"{'a' if delayed else 'no'} delay, needs {'a' if need_delay else 'no'} delay")
    if check.outcome == OPEN:
        return f"{UNDECIDED} ({check.text()}; {delay})", [check]
    if check.outcome != HELD:
        return f"{NOT_TESTABLE} ({check.text()}; {delay})", [check]
    if delayed is None:
        return f"{NOT_TESTABLE} ({run.name} never reached training accuracy {th.SATURATION} and kept it)", [check]
    if need_delay != delayed:
        return f"{NOT_TESTABLE} ({delay})", [check]
    return None, [check]


# ------------------------------------------------------------------------------------------------ Finding 1
RULE_1 = (f"Preconditions: the natural run groks by its family's definition (gpt: ID >= {th.GROKKED}; trm: OOD >= "
          f"{th.GROKKED_TRM_OOD}; final = mean of the last 3 evaluations, its 95% interval above the level) after a "
          f"delay (>= {th.GENERALISED}, kept for {th.SUSTAIN_EVALS} evaluations or its interval above it, at least "
          f"{th.DELAY_FACTOR} x t_sat after saturation, t_sat = training accuracy >= {th.SATURATION} kept), and "
          f"both-hop full generalises on OOD to the same level without a delay. Votes: (a) ID path: the final "
          f"natural checkpoint against the final both-hop-full one (and first-hop full once it reached the level): "
          f"same when every stage of the bridge profile and every unsaturated cell of the causal map differ by less "
          f"than the margin ({th.SAME_PATH_MARGIN} x the difference a one-stage move of the path makes, at most "
          f"{th.SAME_PATH_MAX_MARGIN}), by 90% bootstrap intervals over the queries; valid only if step 0 vs last "
          f"and the last checkpoint vs its own path moved both come out 'different'. (b) Both-hop full's correct "
          f"OOD answers have the bridge: the per-query share above {th.BRIDGE_CIRCUIT}. (c) Equivalent transfer: the "
          f"natural and both-hop-full fine-tunes' new+old curves differ by a mean |difference| whose 90% interval "
          f"is below {th.CURVE_SIMILAR}. All held: supported; all failed: contradicted; else partly supported or "
          f"undecided. The saturated-vs-grokked comparison of one run is a description, not a vote")


def redecide(comparison: dict | None) -> dict | None:
    """A stored comparison re-decided with the current test (its profiles, maps and counts are kept in the file)."""
    if not comparison or "profile_a" not in comparison:
        return comparison
    return {**comparison, **stored_verdict(comparison)}


def _cmp_text(label: str, c: dict) -> str:
    def num(x, d=2):
        return "n/a" if x is None else f"{x:.{d}f}"
    return (f"{label}: {c['verdict']} (bridge level {num(c.get('level_a'))} vs {num(c.get('level_b'))}; "
            f"{c.get('why', '')})")


PATH_VOTE = {SAME: HELD, DIFFERENT: FAILED, PATH_UNDECIDED: OPEN}


def _path_votes(comparisons: dict[str, dict], control: dict | None, first_full: RunFacts | None,
                level: float) -> tuple[list[Vote], list[str], list[Check]]:
    """Vote (a) per compared regime, after the two negative controls."""
    parts, checks = [], []
    # side a of every comparison is the natural run's last checkpoint: any of them gives its moved copy
    last = next((c for c in comparisons.values() if c and c.get("profile_a") is not None), None)
    moved = moved_path_control(last) if last is not None else None
    for label, c in (("control step 0 vs last", redecide(control)), ("control last vs its path moved", moved)):
        if c is None or c.get("verdict") != DIFFERENT:
            seen = "missing" if c is None else _cmp_text(label, c)
            why = f"a negative control did not come out 'different': {seen}"
            return [Vote("(a) ID path", NOT_TESTABLE, why)], [seen], checks
        parts.append(_cmp_text(label, c))
    votes = []
    for regime in ("both_full", "first_full"):
        name = f"(a) ID path, natural vs {regime}"
        if regime == "first_full":
            if first_full is None:
                continue
            why, more = _generalised(first_full, 1, "test_inferred_ood", level, need_delay=True)
            checks += more
            if why is not None:
                votes.append(Vote(name, NOT_TESTABLE, f"first-hop full not compared: {why}"))
                continue
        c = redecide(comparisons.get(regime))
        if c is None:
            votes.append(Vote(name, NOT_TESTABLE, "comparison missing"))
            continue
        votes.append(Vote(name, PATH_VOTE.get(c["verdict"], NOT_TESTABLE), _cmp_text("final vs final", c),
                          headline=c.get("why", "")))
    return votes, parts, checks


def _correct_share_vote(both: RunFacts) -> Vote:
    """(b) He et al. §3: 'every correct prediction on OOD compositions is achieved through successful recovery of
    the bridge entity' (both-hop full), from the per-query records of its last analysed checkpoint."""
    share = both.correct_share_last()
    if share is None:
        return Vote("(b) both-hop full's correct OOD answers have the bridge", NOT_TESTABLE,
                    "no per-query records on OOD (run `grokscope analyze`)")
    step = max(both.correct_with_bridge)
    check = Check(1, both.name, f"share of correct OOD answers with the bridge (step {step})", share,
                  th.BRIDGE_CIRCUIT, ABOVE, both.floor(both.bridge_key), th.SOURCE["BRIDGE_CIRCUIT"])
    vote = from_checks("(b) both-hop full's correct OOD answers have the bridge", [check])
    age = step / both.t_sat  # both-hop full passed the no-delay precondition, so it saturated
    if vote.outcome == FAILED and age < th.BRIDGE_FORMS_BY:
        return Vote(vote.name, NOT_TESTABLE, f"analysed at {_x(age)} t_sat, under the {th.BRIDGE_FORMS_BY:g}x by "
                                             f"which He et al.'s bridges formed: {check.text()}", [check])
    return vote


def _transfer_vote(transfer: dict | None) -> Vote:
    name = "(c) equivalent transfer (natural vs both-hop full, new+old)"
    if transfer is None:
        return Vote(name, NOT_TESTABLE, "no fine-tunes of both parents with shared evaluations")
    lo, hi = transfer["interval"]
    window = "" if transfer.get("window_end") is None else f" to step {transfer['window_end']}"
    text = (f"mean |difference| of the {transfer['metric']} curves {transfer['distance']:.3f} [90%: {lo:.3f}, "
            f"{hi:.3f}] over {transfer['steps']} evaluations{window}, margin {transfer['margin']}")
    return Vote(name, {BELOW: HELD, ABOVE: FAILED}.get(transfer["outcome"], OPEN), text)


def transfer_agreement(natural_rows: list[dict], both_rows: list[dict], n_natural: int | None = None,
                       n_both: int | None = None) -> dict | None:
    """Vote (c)'s statistic: the two fine-tunes' new+old exact match (the paper's category) curves compared over the
    transient: the shared evaluations up to twice the later step at which one reached NEW_OLD_COMPOSES (every shared
    evaluation when neither did), so that a long plateau at 1.0 cannot dilute a lag between them."""
    reached = [t for t in (first_step(r, "new_old", th.NEW_OLD_COMPOSES) for r in (natural_rows, both_rows))
               if t is not None]
    end = 2 * max(reached) if reached else None
    if end is not None:
        natural_rows, both_rows = ([r for r in rows if r["step"] <= end] for rows in (natural_rows, both_rows))
    result = curve_agreement(natural_rows, both_rows, "new_old", th.CURVE_SIMILAR, n_natural, n_both)
    return None if result is None else {**result, "window_end": end}


def finding_1(natural: RunFacts | None, both_full: RunFacts | None, comparisons: dict[str, dict],
              control: dict | None, within: dict | None = None, transfer: dict | None = None,
              first_full: RunFacts | None = None) -> dict:
    """``comparisons``: regime ("both_full", "first_full") -> the natural-last vs that-regime-last comparison (with
    profiles, maps and counts); ``control``: the natural run's step 0 vs last; ``within``: its saturated vs grokked;
    ``transfer``: ``transfer_agreement`` of the two fine-tunes."""
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
    votes, parts, more = _path_votes(comparisons, control, first_full, g.threshold)
    checks += more
    votes += [_correct_share_vote(both_full), _transfer_vote(transfer)]
    parts += [v.text() for v in votes]
    within = redecide(within)
    if within:
        parts.append(_cmp_text(f"description (not a vote): natural step {within.get('step_a')} (saturated) vs "
                               f"{within.get('step_b')} (grokked), when the path forms", within))
    return _result(1, combine(votes), parts, RULE_1, checks, votes)


# ------------------------------------------------------------------------------------------------ Finding 2
RULE_2 = (f"(i) A grokked model without the circuit: second-hop full's OOD reaches {th.GENERALISED} (kept for "
          f"{th.SUSTAIN_EVALS} evaluations or its interval above it) at least {th.DELAY_FACTOR} x t_sat after "
          f"saturation, while its bridge is low where OOD is up: the per-query share of correct OOD answers with "
          f"the bridge (analysed checkpoints with OOD >= {th.GENERALISED}), else the bridge measure averaged over the "
          f"evaluations with OOD >= {th.GENERALISED}, has its 95% interval below {th.BRIDGE_FAKE}. (ii) A circuit "
          f"without grokking: both-hop full reaches OOD {th.GENERALISED} with no delay and its final bridge (mean of "
          f"the last 3 evaluations) lies above {th.BRIDGE_CIRCUIT}; a bridge below it counts only once the run "
          f"trained {th.BRIDGE_FORMS_BY:g} x t_sat (He et al. Fig. 2: every bridge that formed was >= 0.9 by 2.9 x "
          f"its saturation). (ii) is (i)'s positive control: without it the bridge half of (i) is not testable. Both "
          f"held: supported; both failed: contradicted; one each: partly supported")


def _circuit_without_grokking(both: RunFacts | None) -> Vote:
    name = "(ii) a circuit without grokking (both-hop full)"
    if both is None:
        return Vote(name, NOT_TESTABLE, "no both-hop-full run")
    t_sat, t_gen, delayed = both.delay("test_inferred_ood")
    timing = f"t_sat {_step(t_sat)}, OOD >= {th.GENERALISED} (kept) at {_step(t_gen)}, trained {_x(both.age)} t_sat"
    if t_sat is None:
        return Vote(name, NOT_TESTABLE, f"never reached training accuracy {th.SATURATION} and kept it ({timing})")
    if t_gen is None:
        return Vote(name, NOT_TESTABLE, f"OOD never reached {th.GENERALISED} ({timing})")
    if delayed:
        return Vote(name, FAILED, f"its OOD came late: it grokked ({timing})", headline=f"OOD came late: {timing}")
    final = both.check(2, both.bridge_key, th.BRIDGE_CIRCUIT, label=f"{both.bridge_key} (final)",
                       source=th.SOURCE["BRIDGE_CIRCUIT"])
    vote = from_checks(name, [final], timing)
    if vote.outcome == FAILED and both.age < th.BRIDGE_FORMS_BY:  # t_sat is known here, so is the age
        return Vote(name, NOT_TESTABLE, f"trained {_x(both.age)} t_sat, under the {th.BRIDGE_FORMS_BY:g}x by which "
                                        f"He et al.'s bridge formed: {final.text()}", [final])
    return vote


def _grokked_without_circuit(second: RunFacts | None, positive: Vote) -> Vote:
    name = "(i) a grokked model without the circuit (second-hop full)"
    if second is None:
        return Vote(name, NOT_TESTABLE, "no second-hop-full run")
    t_sat, t_gen, delayed = second.delay("test_inferred_ood")
    label = second.regime("test_inferred_ood")["regime"]
    timing = f"t_sat {_step(t_sat)}, OOD >= {th.GENERALISED} (kept) at {_step(t_gen)} (regime label '{label}')"
    if t_sat is None:
        return Vote(name, NOT_TESTABLE, f"never reached training accuracy {th.SATURATION} and kept it ({timing})")
    if t_gen is None:
        return Vote(name, NOT_TESTABLE, f"second_full never reached OOD >= {th.GENERALISED} ({timing})")
    share = second.correct_share_while_up()
    measure, rate = ("share of correct OOD answers with the bridge (per query, while OOD is up)", share) \
        if share is not None else (f"{second.bridge_key} while OOD >= {th.GENERALISED}", second.bridge_while_up())
    low = Check(2, second.name, measure, rate, th.BRIDGE_FAKE, BELOW, second.floor(second.bridge_key),
                th.SOURCE["BRIDGE_FAKE"])
    if not delayed:
        return Vote(name, FAILED, f"OOD rose without a delay ({timing}); {low.text()}", [low],
                    headline=f"OOD rose without a delay: {timing}")
    if positive.outcome != HELD:
        return Vote(name, NOT_TESTABLE, f"OOD rose late ({timing}), but the bridge measure has no positive control "
                                        f"(vote (ii) {positive.outcome}); {low.text()}", [low])
    return from_checks(name, [low], f"OOD rose late ({timing})")


def finding_2(second: RunFacts | None, both: RunFacts | None) -> dict:
    if second is None and both is None:
        return _result(2, "not testable (no second-hop-full and no both-hop-full run)", [], RULE_2)
    if any(r is not None and r.cut_short for r in (second, both)):
        return _result(2, CUT_SHORT, [], RULE_2)
    positive = _circuit_without_grokking(both)
    votes = [_grokked_without_circuit(second, positive), positive]
    parts = [v.text() for v in votes]
    if second is not None and second.correct_share_last() is not None:
        parts.append(f"second_full's share of correct OOD answers with the bridge at its last analysed checkpoint: "
                     f"{second.correct_share_last().text()}")
    # The votes use He et al.'s measure; bridge decodable is shown beside it, and a disagreement said in a sentence.
    parts += [r.decodable.text() for r in (second, both) if r is not None and r.decodable is not None]
    disagree = [d for r in (second, both) if (d := bridge_disagreement(r))]
    return _result(2, combine(votes), parts + disagree, RULE_2, votes=votes, disagreements=disagree)


# ------------------------------------------------------------------------------------------------ Finding 3
CATEGORIES = ("new_old", "old_new", "new_new")
# A fine-tune's recall of the old atomic facts by how its data replays them (data/transfer.RETENTION_SETS).
RETENTION_KINDS = ("atomic_kept", "atomic_hop_replayed", "atomic_not_replayed")
CIRCUIT, NOT_CIRCUIT, CONTROL = "circuit", "not a circuit", "control"

RULE_3 = (f"Fine-tunes from the last checkpoint of each parent (saturated parents and the powered categories are "
          f"extensions, not voted), each judged once it learned the new facts (New Fact interval above "
          f"{th.NEW_FACTS_LEARNED}) on He et al.'s categories (the old hop in the fine-tuning data), exact match and "
          f"bridge on the same queries. A parent is measured: a circuit parent when its final OOD bridge lies above "
          f"{th.BRIDGE_CIRCUIT}, not a circuit (judged as He et al. judge second-hop full) when below; either only "
          f"once it trained {th.PARENT_MIN_AGE:g} x its saturation step (He et al.'s parents: 8.2-20x), else not "
          f"testable. Votes: (iii-a) new+old composes (EM above {th.COMPOSES}, bridge above {th.BRIDGE_PRESENT}) "
          f"from circuit parents and does not (EM below {th.COMPOSES}) from the others and the from-scratch control "
          f"(whose bridge stays below {th.BRIDGE_PRESENT}); (iii-b) old+new and new+new stay below {th.COMPOSES} "
          f"from every parent; (iii-c) circuit parents recover the bridge there (above {th.BRIDGE_PRESENT}). "
          f"(iii-b) failed: contradicted (transfer is not limited); all held: supported (needs the control); "
          f"otherwise partly supported or undecided")


@dataclass
class FineTuneFacts:
    """One fine-tune: its regime ("control" for the from-scratch control), its parent's run up to the checkpoint it
    started from, and its final rates on He et al.'s categories (EM and bridge on the same queries)."""

    name: str
    regime: str  # natural, both_full, ..., or "control"
    rates: dict[str, Rate]  # atomic_new, new_old, old_new, new_new, bridge_new_old, ... (He et al.'s categories)
    checkpoint: str | None = "last"  # last | sat | None for the control
    parent: RunFacts | None = None  # the parent's rows up to the starting checkpoint (None for the control)
    cut_short: bool = False
    floors: dict = field(default_factory=dict)  # measure -> chance floor (the control's step 0)
    steps: dict = field(default_factory=dict)  # "new_fact" / "new_old": fine-tuning steps to those milestones
    extension: str = ""  # what else was measured (the powered categories, retention), shown beside the votes


def parent_kind(f: FineTuneFacts) -> tuple[str, str]:
    """(CIRCUIT | NOT_CIRCUIT | CONTROL | NOT_TESTABLE | OPEN, why): the parent's circuit, measured."""
    if f.regime == "control":
        return CONTROL, "trained from scratch"
    p = f.parent
    if p is None:
        return NOT_TESTABLE, "parent run not found"
    bridge = p.final(p.bridge_key)
    if bridge is None:
        return NOT_TESTABLE, f"the parent's {p.bridge_key} was not measured"
    text = f"parent {p.name}: final {p.bridge_key} {bridge.text()}"
    if p.t_sat is None:
        return NOT_TESTABLE, f"{text}; it never reached training accuracy {th.SATURATION} and kept it, so its age " \
                             f"cannot be measured"
    text += f", trained {_x(p.age)} its saturation step {_step(p.t_sat)}"
    if p.age < th.PARENT_MIN_AGE:
        return NOT_TESTABLE, f"{text}: too young to judge its circuit (needs {th.PARENT_MIN_AGE:g}x)"
    # Either bridge measure above the circuit level makes a circuit parent (docs/methods.md, "Bridge decodable"); the
    # text names the measure that decided it.
    side = bridge.against(th.BRIDGE_CIRCUIT)
    probe = p.decodable.side() if p.decodable is not None else None
    if p.decodable is not None:
        text += f"; {p.decodable.text()}"
    if side == ABOVE:
        return CIRCUIT, f"{text}: a circuit by He et al.'s {p.bridge_key}"
    if probe == ABOVE:
        return CIRCUIT, f"{text}: a circuit by bridge decodable (He et al.'s {p.bridge_key} does not see it)"
    if side == BELOW and probe in (None, BELOW):
        measures = f"{p.bridge_key}{'' if probe is None else ' and bridge decodable'}"
        return NOT_CIRCUIT, f"{text}: no circuit by {measures} (He et al.'s second-hop full: fake-grokked)"
    return OPEN, f"{text}: its bridge straddles {th.BRIDGE_CIRCUIT}"


def _describe(f: FineTuneFacts) -> str:
    """A fine-tune's rates, for one that does not vote (an extension, or a precondition not met)."""
    names = ("atomic_new", *CATEGORIES, *(f"bridge_{c}" for c in CATEGORIES))
    return "; ".join(f"{m} {f.rates[m].text()}" for m in names if f.rates.get(m) is not None)


def _speed(f: FineTuneFacts) -> str:
    new, new_old = f.steps.get("new_fact"), f.steps.get("new_old")
    if new is None:
        return "New Fact never reached 0.99"
    ratio = f" = {new_old / new:.1f}x" if new_old is not None and new else ""
    return (f"New Fact >= {th.NEW_FACT_MILESTONE} at step {new}, new+old >= {th.NEW_OLD_COMPOSES} at "
            f"{_step(new_old)}{ratio} (He et al.: 2,928 and 5,856 = 2.0x)")


def finding_3(finetunes: list[FineTuneFacts]) -> dict:
    voting = [f for f in finetunes if f.checkpoint in ("last", None)]
    if any(f.cut_short for f in voting):
        return _result(3, CUT_SHORT, [], RULE_3)
    parts, learned_checks, untested = [], [], []
    a_checks, b_checks, c_checks, kinds = [], [], [], {}

    def check(f, measure, threshold, expect):
        source = th.SOURCE["COMPOSES" if threshold == th.COMPOSES else "BRIDGE_PRESENT"]
        return Check(3, f.name, measure, f.rates.get(measure), threshold, expect, f.floors.get(measure), source)
    for f in voting:
        kind, why = parent_kind(f)
        learned = Check(3, f.name, "atomic_new", f.rates.get("atomic_new"), th.NEW_FACTS_LEARNED, ABOVE,
                        source=th.SOURCE["NEW_FACTS_LEARNED"])
        learned_checks.append(learned)
        if kind in (NOT_TESTABLE, OPEN) or learned.outcome != HELD:
            reason = why if kind in (NOT_TESTABLE, OPEN) else f"new facts: {learned.text()}"
            parts.append(f"{f.name}: not testable ({reason}); measured: {_describe(f)}")
            untested.append(f.name)
            continue
        kinds[f.name] = kind
        parts.append(f"{f.name}: {kind} ({why}); {_speed(f)}")
        if kind == CIRCUIT:
            a_checks += [check(f, "new_old", th.COMPOSES, ABOVE), check(f, "bridge_new_old", th.BRIDGE_PRESENT, ABOVE)]
            c_checks += [check(f, "bridge_old_new", th.BRIDGE_PRESENT, ABOVE),
                         check(f, "bridge_new_new", th.BRIDGE_PRESENT, ABOVE)]
        else:
            a_checks.append(check(f, "new_old", th.COMPOSES, BELOW))
            if kind == CONTROL:
                a_checks.append(check(f, "bridge_new_old", th.BRIDGE_PRESENT, BELOW))
        b_checks += [check(f, "old_new", th.COMPOSES, BELOW), check(f, "new_new", th.COMPOSES, BELOW)]
    for f in finetunes:
        if f.checkpoint not in ("last", None):
            parts.append(f"extension (not voted), {f.name}: {_describe(f)}")
        elif f.extension:
            parts.append(f"extension (not voted), {f.name}: {f.extension}")
    votes = [from_checks("(iii-a) new+old composes from circuit parents, and only from them", a_checks),
             from_checks("(iii-b) old+new and new+new do not compose, from any parent", b_checks),
             from_checks("(iii-c) circuit parents recover the bridge on old+new and new+new", c_checks)]
    gated = a_checks + b_checks + c_checks
    tally = Counter(c.outcome for c in gated)
    failed = [f"{c.subject} {c.measure}" for c in gated if c.outcome == FAILED]
    open_ = [f"{c.subject} {c.measure}" for c in gated if c.outcome == OPEN]
    parts.insert(0, f"{tally[HELD]} of {len(gated)} expectations held"
                 + "".join(f", {tally[o]} {o}" for o in (FAILED, OPEN, UNMEASURED) if tally[o])
                 + (f"; failed: {', '.join(failed)}" if failed else "")
                 + (f"; undecided: {', '.join(open_)}" if open_ else ""))
    parts += [v.text() for v in votes]
    disagree = list(dict.fromkeys(d for f in voting if (d := bridge_disagreement(f.parent))))
    parts += disagree
    extra = {"expectations": {"held": tally[HELD], "total": len(gated), "failed": failed, "undecided": open_},
             "parents": kinds, "disagreements": disagree}
    lead = None
    if votes[1].outcome == FAILED:  # needs no circuit parent: any parent composing a new second hop contradicts it
        verdict, lead = "contradicted (old+new or new+new composes: transfer is not limited)", votes[1]
    elif CIRCUIT not in kinds.values():
        return _result(3, "not testable (no fine-tune from a measured circuit parent that learned the new facts)",
                       parts, RULE_3, learned_checks, votes, **extra)
    else:
        verdict = combine(votes)
        if verdict == "supported" and CONTROL not in kinds.values():
            verdict = "partly supported (every vote held, but no control was tested)"
    if untested:
        verdict += f" (not testable: {', '.join(untested)})"
    return _result(3, verdict, parts, RULE_3, learned_checks, votes, lead=lead, **extra)


def pick_category(final: dict, category: str) -> tuple[dict, str]:
    """For the figures: He et al.'s category when it has at least FAITHFUL_MIN_N queries, else its powered variant
    (stated). The verdicts always read He et al.'s."""
    v = final.get(category) or {}
    if (v.get("n") or 0) >= th.FAITHFUL_MIN_N or f"{category}_powered" not in final:
        return v, "faithful"
    return final[f"{category}_powered"], "powered"


# ------------------------------------------------------------------------------------------------ seeds
def _spread(per_seed: dict[int, dict]) -> list[str]:
    """For every gated number measured in more than one seed: its value per seed and their range, beside the widest
    within-seed interval, so that seed-to-seed spread and query noise can be compared."""
    values: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for s, result in per_seed.items():
        for c in result["checks"]:
            values.setdefault((c["subject"], c["measure"]), []).append((s, c["value [95% interval] (n)"]))
    out = []
    for (subject, measure), seen in values.items():
        points = [(s, text) for s, text in seen if text != "not measured"]
        if len(points) < 2:
            continue
        numbers = [float(text.split()[0]) for _, text in points]
        out.append(f"{subject} {measure}: across seeds {min(numbers):.2f}-{max(numbers):.2f} (sd "
                   f"{np.std(numbers, ddof=1):.2f}); within seed " + ", ".join(f"seed {s} {t}" for s, t in points))
    return out


def across_seeds(per_seed: dict[int, dict]) -> dict:
    """One finding decided per seed -> the overall verdict over the seeds where it was testable: their common
    outcome; "undecided at this n" when the decided ones agree and others straddle; "partly supported (seeds
    disagree: ...)" when decided seeds disagree. Seeds where it was not testable are listed, and a verdict that rests
    on one seed of several says so."""
    seeds = sorted(per_seed)
    if len(seeds) == 1:
        return per_seed[seeds[0]]
    outcomes = {s: outcome(per_seed[s]["verdict"]) for s in seeds}
    testable = [s for s in seeds if outcomes[s] != NOT_TESTABLE]
    untestable = [s for s in seeds if outcomes[s] == NOT_TESTABLE]
    spread = ", ".join(f"seed {s}: {outcomes[s]}" for s in seeds)
    decided = {outcomes[s] for s in testable if outcomes[s] != UNDECIDED}
    if not testable:
        verdict = f"{NOT_TESTABLE} (every seed: {spread})"
    elif len({outcomes[s] for s in testable}) == 1:
        verdict = f"{outcomes[testable[0]]} ({'all ' + str(len(seeds)) + ' seeds' if not untestable else spread})"
    elif len(decided) <= 1:
        verdict = f"{UNDECIDED} ({spread})"
    else:
        verdict = f"partly supported (seeds disagree: {spread})"
    notes = []
    if untestable:
        notes.append(f"decided over seeds {', '.join(map(str, testable)) or 'none'}; not testable in seeds "
                     f"{', '.join(map(str, untestable))}")
    if len(testable) == 1:
        notes.append(f"rests on one seed (seed {testable[0]})")
    details = [*notes, *(f"seed {s}: {per_seed[s]['verdict']}; {per_seed[s]['measured']}" for s in seeds),
               *(f"spread: {x}" for x in _spread(per_seed))]
    checks = [{**c, "subject": f"seed {s}: {c['subject']}"} for s in seeds for c in per_seed[s]["checks"]]
    votes = [{**v, "vote": f"seed {s}: {v['vote']}"} for s in seeds for v in per_seed[s].get("votes", [])]
    # the first screen's number comes from a seed whose outcome is the overall one (not seed 0 by default)
    agreeing = next((s for s in seeds if outcomes[s] == outcome(verdict)), None)
    first = per_seed[seeds[0] if agreeing is None else agreeing]
    decided = f"seed {agreeing}: {first['decided_by']}" if agreeing is not None else f"seeds disagree: {spread}"
    return {**first, "verdict": verdict, "decided_by": clip_words(decided, DECIDED_BY_WORDS),
            "measured": " | ".join(details), "details": details, "checks": checks, "votes": votes,
            "per_seed": outcomes}
