"""Milestones from metrics rows: the first evaluation at which a metric reaches a threshold (DESIGN §6)."""

from __future__ import annotations

# milestone prefix -> metric it tracks
MILESTONE_METRICS = {"t_id": "test_inferred_iid", "t_ood": "test_inferred_ood", "t_bridge": "bridge_found_ood"}


def first_step(rows: list[dict], metric: str, threshold: float) -> int | None:
    for row in rows:
        value = row.get(metric)
        if value is not None and value >= threshold:
            return row["step"]
    return None


def milestones(rows: list[dict], sat_threshold: float, thresholds: list[float]) -> dict[str, int | None]:
    """t_sat (training accuracy >= sat_threshold) and t_<id|ood|bridge><pct> for each threshold."""
    out = {"t_sat": first_step(rows, "train_acc", sat_threshold)}
    for prefix, metric in MILESTONE_METRICS.items():
        for thr in thresholds:
            out[f"{prefix}{round(thr * 100)}"] = first_step(rows, metric, thr)
    return out
