"""Milestones and regime labels from a run's metrics rows (``metrics.jsonl``): torch-free, used by the trainer's
summary, the analyses and the report alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from grokscope.metrics import thresholds as th
from grokscope.metrics.intervals import ABOVE, rate_at

TEST_METRICS = {"t_id": "test_inferred_iid", "t_ood": "test_inferred_ood"}


def first_step(rows: list[dict], metric: str, threshold: float) -> int | None:
    """The step of the first evaluation at which ``metric`` is at least ``threshold`` (None if never)."""
    for row in rows:
        value = row.get(metric)
        if value is not None and value >= threshold:
            return row["step"]
    return None


def sustained_step(rows: list[dict], metric: str, threshold: float, k: int = th.SUSTAIN_EVALS,
                   n: int | None = None) -> int | None:
    """The step of the first evaluation at which ``metric`` has reached ``threshold`` with some certainty: it starts
    ``k`` consecutive evaluations at or above it, or its 95% interval (over ``n/<metric>``, else ``n``) lies above it.
    A crossing on one evaluation that the next ones do not keep is noise on a small probe set, not a milestone.
    None if never; a run that ends fewer than ``k`` evaluations after a crossing whose interval does not clear the
    level has not reached it yet."""
    measured = [r for r in rows if r.get(metric) is not None]
    for i, row in enumerate(measured):
        if row[metric] < threshold:
            continue
        rate = rate_at(row, metric, n)
        if rate.n and rate.against(threshold) == ABOVE:
            return row["step"]
        window = measured[i:i + k]
        if len(window) == k and all(r[metric] >= threshold for r in window):
            return row["step"]
    return None


@dataclass(frozen=True)
class GrokDefinition:
    """What "grokked" means for a model family: a test metric at or above a level. The gpt groks on ID compositions
    (Wang et al. §3); He et al.'s TRM on OOD compositions, where it plateaus at 0.66-0.70 (He et al. §4, Fig. 2A).
    Each family declares its own (``ModelFamily.grokked``); a run's ``summary.json`` records it."""

    metric: str = "test_inferred_iid"
    threshold: float = th.GROKKED

    @classmethod
    def of(cls, summary: dict, family: str | None = None) -> "GrokDefinition":
        """The definition a run recorded; for a run written before runs recorded it, its built-in family's."""
        g = (summary or {}).get("grokked")
        if not g:
            return GROKKED_BY_FAMILY.get(family, cls())
        return cls(g.get("metric", cls.metric), float(g.get("threshold", cls.threshold)))

    def text(self) -> str:
        return f"{'OOD' if self.metric.endswith('ood') else 'ID'} test >= {self.threshold}"


# The built-in families' definitions, torch-free: the trm class declares its own from here, and the report reads a
# run's family's definition here when its summary.json predates the record.
GROKKED_BY_FAMILY = {"gpt": GrokDefinition(), "trm": GrokDefinition("test_inferred_ood", th.GROKKED_TRM_OOD)}


def milestones(rows: list[dict], sat_threshold: float, thresholds: list[float], bridge_metric: str,
               grokked: GrokDefinition | None = None) -> dict:
    """t_sat (training accuracy >= sat_threshold), t_grokked (the family's definition) and t_<id|ood|bridge><pct> for
    each threshold; ``bridge_metric`` names the family's bridge measure (``bridge_use`` or ``bridge_found``), read on
    OOD compositions."""
    grokked = grokked or GrokDefinition()
    out = {"t_sat": first_step(rows, "train_acc", sat_threshold),
           "t_grokked": first_step(rows, grokked.metric, grokked.threshold)}
    metrics = {**TEST_METRICS, "t_bridge": f"{bridge_metric}_ood"}
    for prefix, metric in metrics.items():
        for value in thresholds:
            out[milestone_key(prefix, value)] = first_step(rows, metric, value)
    return out


def milestone_key(prefix: str, threshold: float) -> str:
    """The name of a milestone: ``milestone_key("t_id", 0.9) == "t_id90"``."""
    return f"{prefix}{round(threshold * 100)}"


@dataclass
class RegimeThresholds:
    """The stated operationalisation of He et al.'s regimes (see ``docs/methods.md``)."""

    sat: float = th.SATURATION
    generalised: float = th.GENERALISED
    high: float = th.HIGH
    bridge_circuit: float = th.BRIDGE_CIRCUIT
    bridge_fake: float = th.BRIDGE_FAKE
    delay_factor: float = th.DELAY_FACTOR


def is_delayed(t_sat: int | None, t_gen: int | None, factor: float = th.DELAY_FACTOR) -> bool:
    """Generalisation came late: first test accuracy >= GENERALISED at least ``factor`` x t_sat after saturation."""
    return t_sat is not None and t_gen is not None and t_gen - t_sat >= factor * max(t_sat, 1)


def classify_regime(rows: list[dict], test_metric: str, bridge_metric: str,
                    limits: RegimeThresholds | None = None) -> dict:
    """natural grokking / no delay / fake grokking / no generalisation, with the milestones that decided it.

    ``bridge_metric`` is the full metric name (e.g. ``bridge_use_ood``). Fake grokking: test accuracy high while the
    bridge measure, averaged over the evaluations where accuracy is high, stays below ``bridge_fake``."""
    limits = limits or RegimeThresholds()
    t_sat, t_gen = sustained_step(rows, "train_acc", limits.sat), sustained_step(rows, test_metric, limits.generalised)
    high = [r for r in rows if (r.get(test_metric) or 0) >= limits.high]
    bridges = [r[bridge_metric] for r in high if r.get(bridge_metric) is not None]
    bridge_at_high = sum(bridges) / len(bridges) if bridges else None
    if t_gen is None:
        label = "no generalisation"
    elif bridge_at_high is not None and bridge_at_high < limits.bridge_fake:
        label = "fake grokking"
    elif is_delayed(t_sat, t_gen, limits.delay_factor):
        label = "natural grokking"
    else:
        label = "no delay"
    return {"regime": label, "test_metric": test_metric, "bridge_metric": bridge_metric, "t_sat": t_sat,
            "t_gen": t_gen, "t_high": high[0]["step"] if high else None, "bridge_when_high": bridge_at_high,
            "circuit": bridge_at_high is not None and bridge_at_high >= limits.bridge_circuit,
            "final_test": rows[-1].get(test_metric) if rows else None, "thresholds": asdict(limits)}
