"""What a fine-tune adds to a run, as data the training loop reads: its budget (when it stops before its cap, a
function of its metrics rows, so a resumed fine-tune stops exactly where an uninterrupted one would), its categories
of two-hop queries (He et al. §5.1), and the transfer summary written into its ``summary.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from grokscope.data.transfer import RETENTION_SETS
from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import first_step


@dataclass(frozen=True)
class FineTuneBudget:
    """When a fine-tune stops before its ``max_steps`` cap (a function of its metrics rows, so resume is exact)."""

    new_fact_multiple: float = 5.0  # run at least this many times the steps New Fact accuracy needed to reach 0.99
    flat_evals: int = 4  # ... and until the watched category has not moved for this many evaluations
    flat_tolerance: float = 0.02  # "not moved": max - min over those evaluations at most this
    watch: str = "new_old_powered"

    def problems(self) -> list[str]:
        p = []
        if not 0 <= self.new_fact_multiple <= 1e6:
            p.append(f"new_fact_multiple (--new-fact-multiple) must be in [0, 1e6] (0 = run to max_steps; got "
                     f"{self.new_fact_multiple})")
        if not 1 <= self.flat_evals <= 10_000:
            p.append(f"flat_evals (--flat-evals) must be in [1, 10000] (got {self.flat_evals})")
        if not 0 <= self.flat_tolerance <= 1:
            p.append(f"flat_tolerance (--flat-tolerance) must be in [0, 1] (got {self.flat_tolerance})")
        return p

    def stop_reason(self, rows: list[dict]) -> str:
        """Why the fine-tune stops at the last of ``rows`` ("" = it goes on)."""
        if self.new_fact_multiple <= 0 or not rows:
            return ""
        learned = first_step(rows, "atomic_new", th.NEW_FACT_MILESTONE)
        step = rows[-1]["step"]
        if learned is None or step < max(self.new_fact_multiple * learned, 1):
            return ""
        recent = [r.get(self.watch) for r in rows[-self.flat_evals:]]
        if len(recent) < self.flat_evals or any(v is None for v in recent) or \
                max(recent) - min(recent) > self.flat_tolerance:
            return ""
        return (f"new facts >= {th.NEW_FACT_MILESTONE} at step {learned}; ran {self.new_fact_multiple:g}x that and "
                f"{self.watch} moved <= {self.flat_tolerance:g} over the last {self.flat_evals} evaluations")


CATEGORIES = {  # metric suffix -> (probe type, category code or None, faithful filter)
    "new_old": ("test_inferred_new_mix", 1, True),
    "old_new": ("test_inferred_new_mix", 2, True),
    "new_old_powered": ("test_inferred_new_mix_powered", 1, False),
    "old_new_powered": ("test_inferred_new_mix_powered", 2, False),
    "new_new": ("test_inferred_new", None, False),
}


def transfer_summary(rows: list[dict], counts: dict[str, int]) -> dict:
    """Steps to New Fact accuracy >= NEW_FACT_MILESTONE and to new+old >= NEW_OLD_COMPOSES; the final value of every
    category measure."""
    last = rows[-1] if rows else {}
    final = {name: {"exact_match": last.get(name), "bridge_found": last.get(f"bridge_found_{name}"),
                    "bridge_use": last.get(f"bridge_use_{name}"), "n": counts.get(name),
                    "retained": last.get(f"{name}_retained"), "n_retained": last.get(f"n/{name}_retained"),
                    "retention": last.get(f"retention_{name}")}
             for name in ["atomic_new", *CATEGORIES]}
    retention = {t: last.get(t) for t in ("id_atomic", "ood_atomic", "train_inferred", "test_inferred_iid",
                                          "test_inferred_ood", *RETENTION_SETS)}
    return {"steps_to_new_fact": first_step(rows, "atomic_new", th.NEW_FACT_MILESTONE),
            "steps_to_new_old": first_step(rows, "new_old", th.NEW_OLD_COMPOSES),
            "steps_to_new_old_powered": first_step(rows, "new_old_powered", th.NEW_OLD_COMPOSES),
            "thresholds": {"new_fact": th.NEW_FACT_MILESTONE, "new_old": th.NEW_OLD_COMPOSES},
            "final": final, "retention": retention}
