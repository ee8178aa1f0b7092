"""Wang et al.'s contrast (their Fig. 1 and §4-5): out-of-distribution generalisation succeeds on the comparison task
and fails on composition, for the same model, from a study's files (``docs/methods.md``, "The comparison task").

A study with a ``comparison`` section trains a model on composition (its natural regime) and on comparison. The
finding "W" is decided per seed from plain numbers, then across seeds, with the votes and checks of He et al.'s
findings (``reporting/findings.py``):

- (a) OOD comparison above chance: the final OOD comparison exact match lies above its chance floor, the share of
  the most frequent label among the OOD comparisons (a model that never compares can do no better), plus
  ``th.ABOVE_CHANCE`` (a model at chance straddles the floor itself);
- (b) OOD comparison generalised: it lies above halfway between that floor and 1.0 (Wang et al.'s grokked model is
  near 1.0 on OOD comparisons); testable once the comparison run generalised in distribution (its final ID interval
  above ``th.GROKKED``): the claim is about a grokked model;
- (c) OOD composition not generalised: the natural run's final OOD composition exact match lies below halfway
  between its floor (its step-0 value, about 1 / entities) and 1.0 (Wang et al.: about 0 even after 2M steps);
  testable once that run generalised ID (above ``th.GROKKED``): OOD at chance says nothing of a model that learned
  nothing.

The verdict (``verdict_w``): (a) or (c) failed: contradicted (no OOD comparison above chance, or composition
generalised OOD: either way the contrast is absent); (a) and (c) held: supported when (b) held, partly supported
otherwise (the comparison rises above chance but not to Wang et al.'s level, or its ID did not generalise); an
interval straddling (a)'s or (c)'s threshold: undecided at this n; one of them not testable (unmeasured, no
composition run, its ID not generalised, a run cut short by the time cap): not testable.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from grokscope.data.store import load
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import ABOVE, BELOW, final_rate
from grokscope.reporting.findings import (FAILED, HELD, NOT_TESTABLE, OPEN, UNDECIDED, Check, Vote, _result,
                                         across_seeds, from_checks)

FINDING = "W"
OOD = "test_inferred_ood"
CLAIM = ("A grokked transformer generalises out of distribution on comparison but not on composition (Wang et al. "
         "§4-5, Fig. 1)")
PAPER = ("Fig. 1: on composition the OOD test accuracy stays about 0 even after 2M steps while ID "
         "rises to about 1.0; on comparison OOD rises with ID, because its circuit is parallel (both values are "
         "retrieved in the lower layers and compared in the upper ones)")
RULE = ("per seed: (a) OOD comparison exact match (mean of the last 3 evaluations, 95% Wilson interval) above its "
        f"chance floor (the most frequent label's share of the OOD comparisons) + {th.ABOVE_CHANCE}; (b) above "
        f"halfway between that floor and 1.0, testable once the run's ID is above {th.GROKKED}; (c) the natural "
        "composition run's OOD exact match below halfway between its step-0 value and 1.0, testable once its ID is "
        f"above {th.GROKKED}. (a) or (c) failed: contradicted (the contrast is absent); (a) and (c) held: "
        "supported when (b) held, else partly supported; (a) or (c) undecided: undecided at this n; unmeasured: not "
        "testable. Seeds are combined as for He et al.'s findings")


def halfway(floor: float) -> float:
    """Generalised on a task: halfway between its chance floor and 1.0 (as Finding 3's COMPOSES is halfway between
    full composition and a coin flip)."""
    return round(floor + (1.0 - floor) / 2, 3)


def label_chance(run: dict, probe: str = OOD) -> float | None:
    """The share of the most frequent label among a comparison run's ``probe`` set (the best a model that never
    compares can do), from its dataset; None when the dataset is gone."""
    data = run["config"].get("data") or {}
    for path in (data.get("path"), Path(run["path"]) / str(data.get("relative", ""))):
        if path and Path(path).is_dir():
            return _label_share(str(Path(path).resolve()), probe)
    return None


@functools.lru_cache(maxsize=64)
def _label_share(path: str, probe: str) -> float | None:
    """(cached: a report asks once per figure, table row and finding)"""
    try:
        rows = load(Path(path), verify=False).probe(probe)
    except GrokscopeError:
        return None
    return round(float(np.bincount(rows[:, 5], minlength=3).max() / len(rows)), 3) if len(rows) else None


def step0(run: dict, metric: str) -> float | None:
    """A run's value of ``metric`` at step 0 (its chance floor), None when its first row is not step 0."""
    first = run["rows"][0] if run["rows"] else {}
    return first.get(metric) if first.get("step") == 0 else None


def _text(rate) -> str:
    return rate.text() if rate is not None else "not measured"


def _learned_id(run: dict, task: str) -> str | None:
    """Why a run's ID accuracy does not let its OOD accuracy speak (None when it does): a model that never
    generalised in distribution says nothing about out of distribution (Wang et al.'s claims are about grokked
    models)."""
    rate = final_rate(run["rows"], "test_inferred_iid")
    if rate is None:
        return f"{run['name']} has no ID {task} accuracy"
    if rate.against(th.GROKKED) != ABOVE:
        return f"{run['name']} did not generalise ID {task} (ID {rate.text()}, needs above {th.GROKKED})"
    return None


def contrast_votes(comparison: dict, composition: dict | None) -> tuple[list[Vote], list[str]]:
    """The three votes of one seed, and what was measured, from a comparison run and a natural composition run."""
    cmp_ood, cmp_id = final_rate(comparison["rows"], OOD), final_rate(comparison["rows"], "test_inferred_iid")
    chance = label_chance(comparison)
    measured = [f"{comparison['name']}: OOD comparison {_text(cmp_ood)}, ID {_text(cmp_id)}, chance (most frequent "
                f"OOD label) " + (f"{chance:.3f}" if chance is not None else "unknown (dataset gone)")]
    votes = []
    if chance is None or chance + th.ABOVE_CHANCE >= 1.0:
        why = "its dataset is gone" if chance is None else f"one label is {chance:.2f} of the OOD comparisons"
        votes += [Vote("(a) OOD comparison above chance", NOT_TESTABLE, why),
                  Vote("(b) OOD comparison generalised", NOT_TESTABLE, why)]
    else:
        above = Check(FINDING, comparison["name"], "OOD comparison EM", cmp_ood, round(chance + th.ABOVE_CHANCE, 3),
                      ABOVE, floor=chance, source=f"toolkit: the most frequent label's share + {th.ABOVE_CHANCE}")
        votes.append(from_checks("(a) OOD comparison above chance", [above]))
        unlearned = _learned_id(comparison, "comparison")
        votes.append(Vote("(b) OOD comparison generalised", NOT_TESTABLE, unlearned) if unlearned else
                     from_checks("(b) OOD comparison generalised",
                                 [Check(FINDING, comparison["name"], "OOD comparison EM", cmp_ood, halfway(chance),
                                        ABOVE, floor=chance, source="toolkit: halfway between chance and 1.0")]))
    if composition is None:
        votes.append(Vote("(c) OOD composition not generalised", NOT_TESTABLE, "no natural composition run"))
        return votes, measured
    comp_ood, floor = final_rate(composition["rows"], OOD), step0(composition, OOD)
    measured.append(f"{composition['name']}: OOD composition {_text(comp_ood)}, ID "
                    f"{_text(final_rate(composition['rows'], 'test_inferred_iid'))}, step-0 OOD "
                    + ("unknown" if floor is None else f"{floor:.3f}"))
    unlearned = _learned_id(composition, "composition")
    if unlearned or floor is None:
        votes.append(Vote("(c) OOD composition not generalised", NOT_TESTABLE,
                          unlearned or f"{composition['name']} has no step-0 evaluation (its chance floor)"))
    else:
        votes.append(from_checks("(c) OOD composition not generalised",
                                 [Check(FINDING, composition["name"], "OOD composition EM", comp_ood, halfway(floor),
                                        BELOW, floor=floor, source="toolkit: halfway between chance and 1.0")]))
    cut = [r["name"] for r in (comparison, composition) if (r.get("summary") or {}).get("cut_short")]
    if cut:  # a run stopped by the time cap measured less than its budget: nothing is decided on it
        votes = [Vote(v.name, NOT_TESTABLE, f"{', '.join(cut)} cut short by the time cap") for v in votes]
    return votes, measured


def finding_w(per_seed_runs: dict[int, tuple[dict, dict | None]]) -> dict:
    """Finding W for one model: seed -> (its comparison run, its natural composition run or None)."""
    per_seed = {}
    for seed, (comparison, composition) in per_seed_runs.items():
        votes, measured = contrast_votes(comparison, composition)
        verdict = verdict_w(votes)
        # "partly": the first screen names what fell short, the vote (b)
        per_seed[seed] = _result_w(verdict, measured, votes, votes[1] if verdict.startswith("partly") else None)
    return across_seeds(per_seed)


def verdict_w(votes: list[Vote]) -> str:
    """The contrast's verdict from its votes (a), (b), (c), in that order (the rule in the module docstring)."""
    above, general, composition = votes
    deciding = (above, composition)
    untestable = "; ".join(f"{v.name}: {v.why}" for v in deciding if v.outcome == NOT_TESTABLE)
    if any(v.outcome == FAILED for v in deciding):
        failed = " and ".join(v.name for v in deciding if v.outcome == FAILED)
        return f"contradicted ({failed} failed)"
    if any(v.outcome == OPEN for v in deciding):
        return f"{UNDECIDED} ({untestable} not testable)" if untestable else UNDECIDED
    if untestable:
        return f"{NOT_TESTABLE} ({untestable})"
    if general.outcome == HELD:
        return "supported"
    return f"partly supported ({general.name}: {general.outcome}{': ' + general.why if general.why else ''})"


def _result_w(verdict: str, measured: list[str], votes: list[Vote], lead: Vote | None = None) -> dict:
    out = _result(1, verdict, measured, RULE, votes=votes, lead=lead)
    return {**out, "finding": FINDING, "claim": CLAIM, "paper": PAPER, "source": "Wang et al."}
