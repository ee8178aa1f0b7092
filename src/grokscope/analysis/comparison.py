"""The comparison task's circuit measures (Wang et al.'s parallel circuit; their ``causal_tracing_comparison.py``),
for any model family, as one tidy table per checkpoint and probe set (``docs/comparison.md``).

A comparison prompt is ``[attr, <q>, e1, <mask>, e2]``. Wang et al. find that a grokked transformer retrieves both
entities' values in the lower layers, each at its entity's position, and compares them in the upper layers. Per
readout stage:

- ``value_top1`` / ``value_mrr`` at the positions of e1 (2) and e2 (4): whether the entity's value for the attribute
  is the top value token decoded at the entity's own position (chance 1 / number of values), and its MRR over the
  whole vocabulary as the authors rank it;
- ``label_top1`` at the answer position (the gpt's last prompt position, the trm's label slot): whether the query's
  label is the top token there over the whole vocabulary (the comparison read; a model that never compared does not
  put a label first);
- ``patch_flip`` at e1 (2) / e2 (4) (causal tracing): the entity's state (e1 with the ``<mask>`` after it, as the
  authors patch; e2) is replaced at that stage by the state of a counterfactual query whose entity (of the same
  split, ID or OOD, as the one it replaces) has a value that changes the label (the other entity's value, or a
  neighbour of it when the two are equal, as the authors choose), and the share of patched queries that then answer
  the counterfactual's label is read, over the queries the model answers right both unpatched and as the
  counterfactual (``n``; as composition's tracing keeps the queries answered right). Near 1 where that state still
  carries the value the comparison uses; it falls once the value has moved on to the answer position.

A model trained on atomic facts only has never compared: it must score low on ``label_top1`` and ``patch_flip``;
``value_top1`` is reported beside its chance level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from grokscope.data.comparison import value_table
from grokscope.data.encoding import encode
from grokscope.data.store import Dataset, is_composition
from grokscope.data.vocab import comparison_labels
from grokscope.metrics.records import TIDY_COLUMNS
from grokscope.models.readout import answers, patched_stages, replace_at, stage_logits

E1, MASK, E2 = 2, 3, 4  # prompt positions of [attr, <q>, e1, <mask>, e2]
PATCHED = {E1: [E1, MASK], E2: [E2]}  # per entity (by its position), the positions Wang et al. replace
ENTITY_NAMES = {E1: "e1", E2: "e2"}


def answer_position(tokens: torch.Tensor, seq_len: int) -> int:
    """Where the label is read: a causal decoder's last prompt position; a model that fills answer slots (the trm,
    whose prompt is the whole sequence) the label's own slot."""
    return tokens.shape[1] - 2 if tokens.shape[1] == seq_len else tokens.shape[1] - 1


@torch.no_grad()
def lens_records(model, ds: Dataset, rows: np.ndarray) -> list[tuple]:
    """(stage, stage_index, position, metric, value) of the value and label lens over ``rows`` (comparisons)."""
    vocab = ds.vocab  # (the lens' logits are per token position: no prefix offset, unlike the hooks' states)
    tokens = model.prompt(encode(ds, rows)).to(model.device)
    logits = stage_logits(model, tokens)  # [S, B, T, V]
    names = [label for label, _ in model.readout_stages()]
    rows_t = torch.from_numpy(rows.astype(np.int64)).to(logits.device)
    values = torch.as_tensor(vocab.value_id(np.arange(vocab.num_values)), device=logits.device)
    out = []
    for at, value_col in ((E1, 3), (E2, 4)):
        at_logits = logits[:, :, at]  # [S, B, V]
        value_ids = torch.as_tensor(vocab.value_id(rows[:, value_col]), device=logits.device)
        top = at_logits[..., values].argmax(-1) == rows_t[:, value_col]  # among the value tokens
        chosen = torch.gather(at_logits, -1, value_ids.view(1, -1, 1).expand(len(names), -1, 1))
        rank = (at_logits > chosen).sum(-1).float()  # over the whole vocabulary, as the authors rank
        for s, name in enumerate(names):
            out.append((name, s, at, "value_top1", float(top[s].float().mean())))
            out.append((name, s, at, "value_mrr", float((1 / (rank[s] + 1)).mean())))
    label_ids = torch.as_tensor(vocab.label_id(rows[:, 1], rows[:, 5]), device=logits.device)
    at = answer_position(tokens, vocab.seq_len)
    read = logits[:, :, at].argmax(-1) == label_ids  # [S, B]
    for s, name in enumerate(names):
        out.append((name, s, at, "label_top1", float(read[s].float().mean())))
    return out


def counterfactuals(ds: Dataset, rows: np.ndarray, entity: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each comparison, a counterfactual with ``entity`` (e1 or e2) replaced by another entity of the same
    split for the attribute (ID for an ID comparison, OOD for an OOD one: the counterfactual is a comparison the
    dataset could hold) whose value changes the label: the other entity's value when the two differ, else a
    neighbour of it. Returns (index of the comparisons that have one, their counterfactual rows)."""
    atomic, is_ood = ds.arrays["atomic"], ds.arrays["atomic.is_ood"].astype(bool)
    value = value_table(atomic, ds.vocab.num_entities, ds.vocab.num_attributes)
    in_id = np.zeros_like(value, dtype=bool)
    in_id[atomic[:, 0], atomic[:, 1]] = ~is_ood
    rng = np.random.default_rng(seed)
    col, other = (0, 4) if entity == "e1" else (2, 3)  # the replaced entity's column; the other entity's value
    keep, out = [], []
    for k, row in enumerate(rows.tolist()):
        attr, v_other = row[1], row[other]
        wanted = [v_other] if row[3] != row[4] else [v for v in (v_other - 1, v_other + 1)
                                                        if 0 <= v < ds.vocab.num_values]
        pool = np.flatnonzero(np.isin(value[:, attr], wanted) & (in_id[:, attr] == in_id[row[col], attr]))
        pool = pool[(pool != row[0]) & (pool != row[2])]
        if not len(pool):
            continue
        new = list(row)
        new[col] = int(rng.choice(pool))
        new[3], new[4] = value[new[0], attr], value[new[2], attr]
        new[5] = int(comparison_labels(new[3], new[4]))
        keep.append(k)
        out.append(new)
    return np.array(keep, dtype=np.int64), np.array(out, dtype=rows.dtype).reshape(-1, rows.shape[1])


@torch.no_grad()
def trace_records(model, ds: Dataset, rows: np.ndarray) -> tuple[list[tuple], dict[int, int]]:
    """(stage, stage_index, position, metric, value) of the causal tracing at e1 and e2; and how many comparisons
    each entity's tracing used: those with a counterfactual, answered right both as themselves and as the
    counterfactual (none: no rows for that entity)."""
    names, stages = [label for label, _ in model.patch_stages()], [hook for _, hook in model.patch_stages()]
    out, counts = [], {}
    for entity, positions in PATCHED.items():
        keep, ctf = counterfactuals(ds, rows, ENTITY_NAMES[entity])
        counts[entity] = 0
        if not len(keep):
            continue
        clean = model.prompt(encode(ds, rows[keep])).to(model.device)
        source = model.prompt(encode(ds, ctf)).to(model.device)
        expect = torch.as_tensor(ds.vocab.label_id(ctf[:, 1], ctf[:, 5]), device=model.device)
        own = torch.as_tensor(ds.vocab.label_id(rows[keep, 1], rows[keep, 5]), device=model.device)
        right = (answers(model, clean) == own) & (answers(model, source) == expect)
        counts[entity] = int(right.sum())
        if not counts[entity]:
            continue
        clean, source, expect = clean[right], source[right], expect[right]
        _, cache = model.run_with_cache(source, names_filter=stages)
        patch = replace_at([model.token_offset + p for p in positions], cache)
        for s, name in enumerate(names):
            with model.hooks([(hook, patch) for hook in patched_stages(model, stages, s)]):
                flipped = model.answer_logits(clean).argmax(-1) == expect
            out.append((name, s, entity, "patch_flip", float(flipped.float().mean())))
    return out, counts


def comparison_table(model, ds: Dataset, rows: np.ndarray, probe_type: str, run: str = "", step: int = 0,
                     lens: bool = True, trace: bool = True) -> pd.DataFrame:
    """The lens and the causal tracing (each where asked) on the comparisons of ``rows``, as tidy rows; ``n`` is the
    number of comparisons each row averages over."""
    rows = rows[is_composition(rows)]
    records = [(*r, len(rows)) for r in lens_records(model, ds, rows)] if lens and len(rows) else []
    # (a trace with no query left for an entity writes no rows for it: there is nothing to average)
    if trace and len(rows):
        traced, counts = trace_records(model, ds, rows)
        records += [(*r, counts[r[2]]) for r in traced]
    df = pd.DataFrame.from_records(records, columns=["stage", "stage_index", "position", "metric", "value", "n"])
    df.insert(0, "probe_type", probe_type)
    df.insert(0, "step", step)
    df.insert(0, "run", run)
    return df[TIDY_COLUMNS]


def summarise(table: pd.DataFrame) -> dict:
    """Per (step, probe type): each measure's best stage value (``<metric>@e1`` / ``@e2`` / ``@answer``), and the
    first stage at which the label is read by at least half of the queries (None: never)."""
    out = {}
    for (step, probe), part in table.groupby(["step", "probe_type"]):
        best = part.groupby(["metric", "position"])["value"].max()
        entry = {f"{metric}@{'answer' if metric == 'label_top1' else ENTITY_NAMES[position]}": float(v)
                 for (metric, position), v in best.items()}
        read = part[(part.metric == "label_top1") & (part.value >= 0.5)]
        entry["label_read_from"] = None if read.empty else str(read.sort_values("stage_index").iloc[0]["stage"])
        out[f"{step}/{probe}"] = entry
    return out
