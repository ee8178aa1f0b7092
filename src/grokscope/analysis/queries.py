"""Per-query records: for one checkpoint and one probe set, one row per query with the predicted answer, the
logit-lens argmax at every stage x position, and the bridge-use outcome at every patch stage.

These files (``RUN/analysis/queries/step_<8 digits>.<probe type>.parquet`` + ``schema.json``) are what the report
aggregates (``metrics/records.py``), as the original authors saved ``all_items.json`` and ``logit_lens_ood.json``
and plotted from those: a metric can be redefined without re-running the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope import artifacts
from grokscope.data.counterfactuals import FORWARD, bridge_patches
from grokscope.data.encoding import encode
from grokscope.data.store import Dataset, is_composition
from grokscope.metrics import thresholds as th
from grokscope.metrics.records import TIDY_COLUMNS, aggregate
from grokscope.models.readout import R1, answers, interchange, stage_argmax


@torch.no_grad()
def query_records(model, ds: Dataset, rows: np.ndarray, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The records frame of the compositions in ``rows`` and its schema."""
    rows = np.asarray(rows)
    rows = rows[is_composition(rows)]
    enc = encode(ds, rows).to(model.device)
    prompt = model.prompt(enc)
    argmax = stage_argmax(model, prompt).cpu()  # [S, B, T]
    S, B, T = argmax.shape
    stages = [label for label, _ in model.readout_stages()]
    frame = {"query": np.arange(B), **{c: rows[:, i] for i, c in enumerate(("h", "r1", "r2", "b", "t"))},
             "b_token": enc.bridge.cpu().numpy(), "t_token": enc.answer.cpu().numpy()}
    pred = answers(model, prompt).cpu().numpy()
    frame["pred"] = pred
    frame["correct"] = pred == frame["t_token"]
    for s, label in enumerate(stages):
        for p in range(T):
            frame[f"lens.{label}.{p}"] = argmax[s, :, p].numpy().astype(np.int32)
    patches = bridge_patches(ds, rows, seed=seed)
    has = patches["direction"] >= 0
    expect = np.where(has, ds.vocab.entity_id(patches["expect"]), -1)
    frame["patch_t_token"], frame["patch_direction"] = expect, patches["direction"]
    for i, c in enumerate(("h", "r1", "r2")):
        frame[f"patch_{c}"] = patches["other"][:, i]
    patch_labels = [label for label, _ in model.patch_stages()]
    outcome = np.full((len(patch_labels), B), -1, dtype=np.int8)
    if has.any():
        index = torch.from_numpy(np.flatnonzero(has)).to(prompt.device)
        partner = model.prompt(encode(ds, patches["other"][has]).to(model.device))
        forward = torch.from_numpy(patches["direction"][has] == FORWARD).to(prompt.device).view(-1, 1)
        query = prompt[index]
        patched = interchange(model, torch.where(forward, partner, query), torch.where(forward, query, partner)).cpu()
        outcome[:, has] = (patched.numpy() == expect[has][None]).astype(np.int8)
    for s, label in enumerate(patch_labels):
        frame[f"use.{label}"] = outcome[s]
    schema = {"family": model.family, "bridge_metric": model.bridge_metric,
              "bridge_use_version": th.BRIDGE_USE_VERSION, "stages": stages,
              "patch_stages": patch_labels, "positions": T, "r1_position": R1,
              "bridge_found_mask": model.bridge_found_mask(S, T).tolist()}
    return pd.DataFrame(frame), schema


def records_path(run: Path, step: int, probe_type: str) -> Path:
    return Path(run) / "analysis" / "queries" / f"step_{step:08d}.{probe_type}.parquet"


def write_records(run: Path, step: int, probe_type: str, frame: pd.DataFrame, schema: dict) -> Path:
    path = records_path(run, step, probe_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(path.parent / "schema.json", schema)
    write_parquet_atomic(frame, path)
    return path


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` to ``path`` whole or not at all: written beside it, then moved in; a write that fails (a full disk)
    leaves the old table and no partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def bridge_use_table(frame: pd.DataFrame, schema: dict, probe_type: str, run: str = "", step: int = 0) -> pd.DataFrame:
    """Tidy bridge-use table from a records frame: one row per patch stage (position r1), plus the maximum."""
    agg = aggregate(frame, schema)
    n = agg.get("n_use", 0)
    records = [(run, step, probe_type, s, i, "r1", "bridge_use", agg.get(f"bridge_use@{s}"), n)
               for i, s in enumerate(schema["patch_stages"])]
    records.append((run, step, probe_type, "max", -1, "r1", "bridge_use", agg.get("bridge_use"), n))
    return pd.DataFrame.from_records(records, columns=TIDY_COLUMNS)
