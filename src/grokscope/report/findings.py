"""The three findings (DESIGN §1), computed from a study's measurements, with the paper's reference numbers
(PAPER_SPEC §8) beside them. Verdicts come from the numbers and the stated criteria, never written in advance."""

from __future__ import annotations

# PAPER_SPEC §10.2 acceptance criteria, used as the stated decision rules.
CRITERIA = {
    "same_path_r": 0.8,  # causal-map and bridge-profile correlation for "same path"
    "new_old_em": 0.9,  # new fact as first hop composes
    "old_new_em_max": 0.15,  # new fact as second hop fails ...
    "old_new_bridge": 0.5,  # ... although the bridge is found
    "new_new_em_max": 0.05,
    "fake_ood": 0.9,
    "fake_bridge_max": 0.5,
}

PAPER = {
    1: "natural (A) and both-full (B) TRMs: bridge found 0.998 / 1.000 at the end of training; identical "
       "fine-tuning curves (Fig. 4 rows A, B)",
    2: "second-hop full (D): OOD target-found 0.968 at the end while bridge found averaged 0.04 before 300k "
       "steps, 0.18 over 300-700k, 0.65 at the end; both-full (B): bridge 1.000",
    3: "natural (A): new+old EM 1.000 (n=16), old+new EM 0.000 (n=18) with bridge 1.000, new+new EM 0.007 "
       "with bridge 0.966; control: new+old 0.31, bridge 0.000",
}


def _fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def finding_1(compare: dict | None, milestones: dict | None = None) -> dict:
    """Needs a run that saturated and then generalised on ID compositions (grokked): otherwise the comparison of
    its saturated and last checkpoints says nothing about grokking."""
    if not compare or "skipped" in compare:
        why = (compare or {}).get("skipped", "no comparison available")
        return {"finding": 1, "verdict": "not measured", "measured": why, "paper": PAPER[1]}
    ms = milestones or {}
    if ms.get("t_sat") is None or ms.get("t_id50") is None:
        return {"finding": 1, "verdict": "not testable at this tier", "paper": PAPER[1],
                "measured": f"the natural run did not both saturate and generalise (t_sat {ms.get('t_sat')}, "
                            f"t_id50 {ms.get('t_id50')}), so there is no grokked checkpoint to compare"}
    r1, r2 = compare.get("causal_map_corr"), compare.get("bridge_profile_corr")
    measured = (f"checkpoint {compare['step_a']} (training saturation) vs {compare['step_b']} (last) on "
                f"{compare['n_queries']} ID compositions: causal-map r {_fmt(r1)}, bridge-profile r {_fmt(r2)}, "
                f"same first bridge stage {_fmt(compare['same_first_stage'])} -> {compare['verdict']}")
    verdict = {"same path": "supported", "different path": "contradicted"}.get(compare["verdict"], "undetermined")
    return {"finding": 1, "verdict": verdict, "measured": measured, "paper": PAPER[1],
            "rule": f"same path iff every computable r >= {compare.get('threshold', CRITERIA['same_path_r'])}"}


def finding_2(regimes: dict[str, dict]) -> dict:
    """regimes: regime name -> {'regime': classify_regime output, 'final': final metrics}."""
    second, both = regimes.get("second_full"), regimes.get("both_full")
    if second is None:
        return {"finding": 2, "verdict": "not measured", "measured": "no second_full run", "paper": PAPER[2]}
    s, sf = second["regime"], second["final"]
    measured = (f"second_full: final OOD exact match {_fmt(sf.get('test_inferred_ood'))}, target found "
                f"{_fmt(sf.get('target_found_ood'))}, bridge found {_fmt(sf.get('bridge_found_ood'))}; regime "
                f"'{s['regime']}' (bridge when OOD >= {CRITERIA['fake_ood']}: {_fmt(s['bridge_when_high'])})")
    if both is not None:
        bf = both["final"]
        measured += (f"; both_full: OOD {_fmt(bf.get('test_inferred_ood'))}, bridge "
                     f"{_fmt(bf.get('bridge_found_ood'))}, regime '{both['regime']['regime']}'")
    if s["regime"] == "fake grokking":
        verdict = "supported"
    elif s["t_gen"] is None:
        verdict = "not observed at this tier (no OOD generalisation in second_full)"
    elif s["circuit"]:
        verdict = "contradicted (the bridge is found when OOD accuracy is high)"
    else:
        verdict = "undetermined"
    return {"finding": 2, "verdict": verdict, "measured": measured, "paper": PAPER[2],
            "rule": f"fake grokking iff OOD >= {CRITERIA['fake_ood']} while bridge found < "
                    f"{CRITERIA['fake_bridge_max']}"}


def _pick(final: dict, cat: str) -> tuple[dict, str]:
    """The faithful category when it has at least 20 queries, else the powered variant (stated)."""
    v = final.get(cat) or {}
    if (v.get("n") or 0) >= 20 or f"{cat}_powered" not in final:
        return v, "faithful"
    return final[f"{cat}_powered"], "powered"


def finding_3(transfers: dict[str, dict]) -> dict:
    """transfers: fine-tune name -> its summary['transfer'] (from grokked / circuit checkpoints)."""
    if not transfers:
        return {"finding": 3, "verdict": "not measured", "measured": "no fine-tune runs", "paper": PAPER[3]}
    parts, votes = [], []
    for name, t in transfers.items():
        final = t["final"]
        new_fact = float(final["atomic_new"]["exact_match"] or 0)
        if new_fact < 0.9:  # the finding is about composing *learned* new facts
            parts.append(f"{name}: new facts not learned (New Fact acc {_fmt(new_fact)} < 0.9), not testable")
            continue
        no, kind_no = _pick(final, "new_old")
        on, kind_on = _pick(final, "old_new")
        nn = final.get("new_new") or {}
        parts.append(f"{name}: New Fact {_fmt(final['atomic_new']['exact_match'])}; new+old EM "
                     f"{_fmt(no.get('exact_match'))} ({kind_no}, n={no.get('n')}); old+new EM "
                     f"{_fmt(on.get('exact_match'))} with bridge {_fmt(on.get('bridge_found'))} ({kind_on}, "
                     f"n={on.get('n')}); new+new EM {_fmt(nn.get('exact_match'))}, bridge "
                     f"{_fmt(nn.get('bridge_found'))}")
        ok = [(no.get("exact_match") or 0) >= CRITERIA["new_old_em"],
              (on.get("exact_match") or 0) <= CRITERIA["old_new_em_max"]
              and (on.get("bridge_found") or 0) >= CRITERIA["old_new_bridge"],
              (nn.get("exact_match") or 0) <= CRITERIA["new_new_em_max"]]
        votes.append(sum(ok))
    best = max(votes, default=None)
    verdict = ("not testable at this tier" if best is None else "supported" if best == 3
               else "partly supported" if best >= 1 else "contradicted")
    return {"finding": 3, "verdict": verdict, "measured": "; ".join(parts), "paper": PAPER[3],
            "rule": f"new+old EM >= {CRITERIA['new_old_em']}; old+new EM <= {CRITERIA['old_new_em_max']} with "
                    f"bridge >= {CRITERIA['old_new_bridge']}; new+new EM <= {CRITERIA['new_new_em_max']} "
                    f"(all three: supported; some: partly)"}
