"""Aggregates from per-query records (``RUN/analysis/queries/``), without torch: what the report shows is computed
here from one row per query, so a measure can be redefined without re-running any model.

Measures (``docs/methods.md``):
- ``answer_acc``: share of queries whose predicted answer token is t;
- ``bridge_found`` / ``target_found``: He et al.'s logit-lens rates, b (t) the argmax at any counted stage and
  position; ``bridge_found@<stage>`` per stage;
- ``b_decodable_at_r1@<stage>``: Wang et al.'s top-1 share of b at the r1 position (descriptive);
- ``bridge_use@<stage>`` and ``bridge_use`` (the maximum over stages): share of patches whose answer became the
  expected one when the r1 state was interchanged (causal; forward for ID queries, reverse for OOD and new hops,
  ``data/counterfactuals.bridge_patches``), over the queries that have a patch (``n_use``);
- ``bridge_given_correct``: of the ``n_correct`` correctly answered queries, the share with the bridge by the
  family's measure (bridge use at some stage for the gpt, bridge found for the trm).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th

# The tidy long format of every analysis table (lens, causal tracing, bridge use): one row per measurement.
TIDY_COLUMNS = ["run", "step", "probe_type", "stage", "stage_index", "position", "metric", "value", "n"]

RECORD_NAME = re.compile(r"step_(\d{8})\.(.+)\.parquet$")


def read_schema(folder: Path) -> dict:
    path = Path(folder) / "schema.json"
    try:
        schema = json.loads(path.read_text())
        if not isinstance(schema, dict) or not {"stages", "patch_stages", "positions"} <= set(schema):
            raise ValueError("missing keys")
    except (OSError, ValueError) as exc:
        raise GrokscopeError(f"{path}: unreadable ({exc}); re-run `grokscope analyze`") from None
    return schema


def list_records(run: Path) -> list[tuple[int, str, Path]]:
    """(step, probe type, path) of every records file of a run, ordered by step."""
    folder = Path(run) / "analysis" / "queries"
    found = []
    for path in folder.glob("step_*.parquet") if folder.is_dir() else []:
        match = RECORD_NAME.search(path.name)
        if match:
            found.append((int(match.group(1)), match.group(2), path))
    return sorted(found)


def _lens(frame: pd.DataFrame, schema: dict) -> np.ndarray:
    """[S, T, B] the lens argmax of every stage and position."""
    return np.stack([[frame[f"lens.{s}.{p}"].to_numpy() for p in range(schema["positions"])]
                     for s in schema["stages"]])


def _found(frame: pd.DataFrame, schema: dict, lens: np.ndarray) -> np.ndarray:
    """[S, T, B] b decoded at a (stage, position) the family's bridge found counts."""
    S, T = len(schema["stages"]), schema["positions"]
    mask = np.asarray(schema.get("bridge_found_mask") or np.ones((S, T), bool), dtype=bool)
    return (lens == frame["b_token"].to_numpy()) & mask[:, :, None]


def _uses(frame: pd.DataFrame, schema: dict) -> tuple[np.ndarray, np.ndarray]:
    """([B, patch stages] whether each query's patch worked at each stage, [B] whether the query has a patch).
    Records of an older bridge-use measure (v1: donors could be trained compositions; OOD was measured forward)
    count as having none: a memoriser could pass them. Re-running `grokscope analyze` measures them anew."""
    current = schema.get("bridge_use_version", 1) >= th.BRIDGE_USE_VERSION
    has = (frame["patch_t_token"].to_numpy() >= 0) if current and "patch_t_token" in frame else \
        np.zeros(len(frame), bool)
    hit = np.stack([(frame[f"use.{s}"] == 1).to_numpy() for s in schema["patch_stages"]], axis=1) \
        if schema["patch_stages"] else np.zeros((len(frame), 0), bool)
    return hit, has


def aggregate(frame: pd.DataFrame, schema: dict) -> dict[str, float]:
    """Every measure above for one records frame."""
    stages = schema["stages"]
    n = len(frame)
    out: dict[str, float] = {"n": n}
    if n == 0:
        return out
    b, t = frame["b_token"].to_numpy(), frame["t_token"].to_numpy()
    lens = _lens(frame, schema)
    hit_b = _found(frame, schema, lens)
    out["answer_acc"] = float(frame["correct"].mean())
    out["bridge_found"] = float(hit_b.any((0, 1)).mean())
    out["target_found"] = float((lens == t).any((0, 1)).mean())
    r1 = schema.get("r1_position", 1)
    for i, s in enumerate(stages):
        out[f"bridge_found@{s}"] = float(hit_b[i].any(0).mean())
        out[f"b_decodable_at_r1@{s}"] = float((lens[i, r1] == b).mean())
    use, has = _uses(frame, schema)
    out["n_use"] = int(has.sum())
    uses = [float(use[has, i].mean()) if has.any() else float("nan") for i in range(use.shape[1])]
    for s, value in zip(schema["patch_stages"], uses):
        out[f"bridge_use@{s}"] = value
    finite = [u for u in uses if u == u]
    out["bridge_use"] = max(finite) if finite else float("nan")
    # Of the correct answers, the share whose query had the bridge by the family's measure (He et al. §3: "every
    # correct prediction ... through successful recovery of the bridge entity").
    correct = frame["correct"].to_numpy().astype(bool)
    present = use.any(1) if schema.get("bridge_metric") == "bridge_use" else hit_b.any((0, 1))
    out["n_correct"] = int(correct.sum())
    measured = schema.get("bridge_use_version", 1) >= th.BRIDGE_USE_VERSION or schema.get("bridge_metric") != \
        "bridge_use"
    out["bridge_given_correct"] = float(present[correct].mean()) if correct.any() and measured else float("nan")
    return out


def stage_hits(frame: pd.DataFrame, schema: dict, measure: str) -> np.ndarray:
    """[queries, stages] 0/1: per query and stage, whether ``measure`` (bridge_found or bridge_use) hit; its column
    means are ``aggregate``'s ``<measure>@<stage>``. For bridge_use only the queries that have a patch count."""
    if measure == "bridge_use":
        use, has = _uses(frame, schema)
        return use[has].astype(np.int8)
    return _found(frame, schema, _lens(frame, schema)).any(1).T.astype(np.int8)


def run_aggregates(run: Path) -> pd.DataFrame:
    """One row per (step, probe type) of a run: every measure of ``aggregate``."""
    found = list_records(run)
    if not found:
        return pd.DataFrame()
    schema = read_schema(Path(run) / "analysis" / "queries")
    rows = []
    for step, probe_type, path in found:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise GrokscopeError(f"{path}: unreadable ({type(exc).__name__}); re-run `grokscope analyze`") from None
        rows.append({"step": step, "probe_type": probe_type, **aggregate(frame, schema)})
    return pd.DataFrame(rows)


def stage_profile(aggregates: pd.DataFrame, schema: dict, step: int, probe_type: str, measure: str) -> list[float]:
    """Per-stage values of ``measure`` (bridge_use, bridge_found, b_decodable_at_r1) at one step and probe type."""
    row = aggregates[(aggregates.step == step) & (aggregates.probe_type == probe_type)]
    if row.empty:
        return []
    stages = schema["patch_stages"] if measure == "bridge_use" else schema["stages"]
    return [float(row.iloc[0][f"{measure}@{s}"]) for s in stages]
