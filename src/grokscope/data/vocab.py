"""Compact vocabularies and token encoding, one per task (He et al. App. B; ``docs/methods.md``, "Data").

Ids follow the TRM pipeline: 0 = PAD, then the tokens of the original ``vocab.json`` (composition, in its order:
entities 1..N, relations N+1..N+R, the six special tokens; comparison: entities, attributes, values, three labels per
attribute, then the six special tokens, so that in both tasks the last id is the unused ``</q>``, the id the TRM's
``quirk_vocab_offset`` leaves without a row). The GPT pipeline of the original added these tokens to the 50k GPT-2
BPE table; a compact vocabulary is equivalent in function (a documented deviation), and one id scheme serves both
model families.

A vocabulary also knows its task's storage rows: their ``columns``, the target sequence of each row (``encode``),
the prompt length, and the bridge entity where the task has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SPECIALS = ("<mask>", "<sep>", "<a>", "</a>", "<q>", "</q>")
PAD = "<pad>"
TOKEN_RE = re.compile(r"<[^>]+>")  # the regex split that replaces the GPT-2 tokenizer
SEQ_LEN = 5  # (h, r1, r2, t, </a>) for compositions; (h, r, t, </a>, pad) for atomic facts


@dataclass(frozen=True)
class Vocab:
    """The composition task's: rows ``(h, r1, r2, b, t)``, sequences ``[h, r1, r2, t, </a>]``."""

    num_entities: int
    num_relations: int

    pad_id = 0
    task = "composition"
    columns = ("h", "r1", "r2", "b", "t")
    seq_len = SEQ_LEN
    REQUIRED_COLUMNS = (0, 1, 4)  # set in every row (atomic facts have r2 = b = -1)

    def signature(self) -> str:
        """The sizes the content fingerprint hashes."""
        return f"{self.num_entities}:{self.num_relations}"

    def row_limits(self) -> np.ndarray:
        """Per column, one past the largest valid id."""
        return np.array([self.num_entities, self.num_relations, self.num_relations, self.num_entities,
                         self.num_entities])

    def row_problem(self, rows: np.ndarray) -> str | None:
        """What is wrong with rows whose ids are in range (None: nothing); the column limits say the rest."""
        return None

    def prompt_lengths(self, rows: np.ndarray) -> np.ndarray:
        """[n] tokens before the answer: 2 for an atomic fact (h, r), 3 for a composition (h, r1, r2)."""
        return np.where(np.asarray(rows)[:, 2] >= 0, 3, 2)

    def bridge_ids(self, rows: np.ndarray) -> np.ndarray:
        """[n] the bridge entity's token id (-1 for atomic facts)."""
        rows = np.asarray(rows)
        return np.where(rows[:, 3] >= 0, self.entity_id(rows[:, 3]), -1)

    def entity_id(self, e):
        return 1 + e

    def relation_id(self, r):
        return 1 + self.num_entities + r

    def special_id(self, token: str) -> int:
        return 1 + self.num_entities + self.num_relations + SPECIALS.index(token)

    @property
    def end_id(self) -> int:
        """Id of ``</a>``, the end-of-answer marker."""
        return self.special_id("</a>")

    @property
    def d_vocab(self) -> int:
        return 1 + self.num_entities + self.num_relations + len(SPECIALS)

    def original_tokens(self) -> list[str]:
        """The original authors' vocab.json list (2,206 tokens at N=2000, R=200): no pad token."""
        return ([f"<e_{i}>" for i in range(self.num_entities)]
                + [f"<r_{i}>" for i in range(self.num_relations)] + list(SPECIALS))

    def tokens(self) -> list[str]:
        """Token string of every id, index = id."""
        return [PAD] + self.original_tokens()

    def to_json(self) -> dict:
        return {"tokens": self.tokens(), "pad_id": self.pad_id, "end_id": self.end_id,
                "num_entities": self.num_entities, "num_relations": self.num_relations,
                "d_vocab": self.d_vocab, "seq_len": SEQ_LEN}

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Storage rows (h, r1, r2, b, t) -> target sequences [n, 5] of token ids.

        Composition: [h, r1, r2, t, </a>]; atomic (r2 = -1): [h, r, t, </a>, pad]."""
        rows = np.asarray(rows)
        out = np.zeros((len(rows), SEQ_LEN), dtype=np.int64)
        atomic = rows[:, 2] < 0
        out[:, 0] = self.entity_id(rows[:, 0])
        out[:, 1] = self.relation_id(rows[:, 1])
        out[:, 2] = np.where(atomic, self.entity_id(rows[:, 4]), self.relation_id(rows[:, 2]))
        out[:, 3] = np.where(atomic, self.end_id, self.entity_id(rows[:, 4]))
        out[:, 4] = np.where(atomic, self.pad_id, self.end_id)
        return out

    def decode(self, ids) -> str:
        """Token ids -> the original string form, pads dropped (e.g. ``<e_1><r_2><e_3></a>``)."""
        table = self.tokens()
        return "".join(table[i] for i in ids if i != self.pad_id)


def comparison_labels(v1, v2) -> np.ndarray:
    """The comparison task's label of each pair of values: 0 (v1 < v2), 1 (equal) or 2 (v1 > v2)."""
    return np.sign(np.asarray(v1, np.int64) - np.asarray(v2, np.int64)) + 1


COMPARISON_SEQ_LEN = 7  # [attr, <q>, e1, <mask>, e2, label, </a>]; atomic facts [e, attr, value, </a>, pad x 3]


@dataclass(frozen=True)
class ComparisonVocab:
    """Wang et al.'s comparison task (their ``comparison.ipynb``): rows ``(e1, attr, e2, v1, v2, answer)``
    (``data/comparison.py``), a comparison read as ``[attr, <q>, e1, <mask>, e2]`` and answered with one of the
    attribute's three labels, an atomic fact read as ``[e, attr]`` and answered with the value."""

    num_entities: int
    num_attributes: int
    num_values: int

    pad_id = 0
    task = "comparison"
    columns = ("e1", "attr", "e2", "v1", "v2", "answer")
    seq_len = COMPARISON_SEQ_LEN
    REQUIRED_COLUMNS = (0, 1, 5)

    def signature(self) -> str:
        return f"comparison:{self.num_entities}:{self.num_attributes}:{self.num_values}"

    def entity_id(self, e):
        return 1 + e

    def attribute_id(self, a):
        return 1 + self.num_entities + a

    def value_id(self, v):
        return 1 + self.num_entities + self.num_attributes + v

    def label_id(self, a, label):
        """The token ``<attr_a_label>`` (label 0: smaller, 1: equal, 2: larger)."""
        return 1 + self.num_entities + self.num_attributes + self.num_values + 3 * a + label

    def special_id(self, token: str) -> int:
        return 1 + self.num_entities + self.num_attributes + self.num_values + 3 * self.num_attributes + \
            SPECIALS.index(token)

    @property
    def end_id(self) -> int:
        return self.special_id("</a>")

    @property
    def d_vocab(self) -> int:
        return 1 + self.num_entities + self.num_attributes + self.num_values + len(SPECIALS) + 3 * self.num_attributes

    def _labels(self) -> list[str]:
        return [f"<attr_{i}_{k}>" for i in range(self.num_attributes) for k in range(3)]

    def original_tokens(self) -> list[str]:
        """The notebook's vocab.json list, in its order (specials before the labels)."""
        head = self.tokens()[1:1 + self.num_entities + self.num_attributes + self.num_values]
        return head + list(SPECIALS) + self._labels()

    def tokens(self) -> list[str]:
        """Token string of every id, index = id (the labels before the specials: see the module's docstring)."""
        return ([PAD] + [f"<e_{i}>" for i in range(self.num_entities)]
                + [f"<attr_{i}>" for i in range(self.num_attributes)] + [f"<{v}>" for v in range(self.num_values)]
                + self._labels() + list(SPECIALS))

    def to_json(self) -> dict:
        return {"task": self.task, "tokens": self.tokens(), "pad_id": self.pad_id, "end_id": self.end_id,
                "num_entities": self.num_entities, "num_attributes": self.num_attributes,
                "num_values": self.num_values, "d_vocab": self.d_vocab, "seq_len": self.seq_len}

    def row_limits(self) -> np.ndarray:
        return np.array([self.num_entities, self.num_attributes, self.num_entities, self.num_values,
                         self.num_values, max(self.num_values, 3)])

    def row_problem(self, rows: np.ndarray) -> str | None:
        """Atomic facts answer a value, with no second entity or values; comparisons carry both values and answer
        the label they give (0: smaller, 1: equal, 2: larger)."""
        rows = np.asarray(rows, dtype=np.int64)
        inferred = rows[:, 2] >= 0
        atomic, comp = rows[~inferred], rows[inferred]
        if (atomic[:, 3:5] != -1).any() or (atomic[:, 5] >= self.num_values).any():
            return "an atomic fact with a second entity, values, or a value out of range"
        if (comp[:, 3:5] < 0).any() or (comp[:, 5] != comparison_labels(comp[:, 3], comp[:, 4])).any():
            return "a comparison whose label is not the one its two values give"
        return None

    def prompt_lengths(self, rows: np.ndarray) -> np.ndarray:
        """[n] 2 for an atomic fact (e, attr), 5 for a comparison (attr, <q>, e1, <mask>, e2)."""
        return np.where(np.asarray(rows)[:, 2] >= 0, 5, 2)

    def bridge_ids(self, rows: np.ndarray) -> np.ndarray:
        """No bridge entity in this task: -1 for every row."""
        return np.full(len(rows), -1, dtype=np.int64)

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Storage rows -> target sequences [n, 7]: a comparison ``[attr, <q>, e1, <mask>, e2, label, </a>]``, an
        atomic fact ``[e, attr, value, </a>, pad, pad, pad]``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.seq_len), dtype=np.int64)
        inferred = rows[:, 2] >= 0
        e1, attr, e2, answer = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 5]
        out[:, 0] = np.where(inferred, self.attribute_id(attr), self.entity_id(e1))
        out[:, 1] = np.where(inferred, self.special_id("<q>"), self.attribute_id(attr))
        out[:, 2] = np.where(inferred, self.entity_id(e1), self.value_id(answer))
        out[:, 3] = np.where(inferred, self.special_id("<mask>"), self.end_id)
        out[:, 4] = np.where(inferred, self.entity_id(np.maximum(e2, 0)), self.pad_id)
        out[:, 5] = np.where(inferred, self.label_id(attr, answer), self.pad_id)
        out[:, 6] = np.where(inferred, self.end_id, self.pad_id)
        return out

    def decode(self, ids) -> str:
        table = self.tokens()
        return "".join(table[i] for i in ids if i != self.pad_id)


def vocab_from_json(data: dict) -> Vocab | ComparisonVocab:
    """The vocabulary a ``vocab.json`` describes (no ``task`` key: composition, as every older dataset); raises
    ValueError naming what is missing."""
    task = data.get("task", Vocab.task)
    if task == Vocab.task:
        sizes = ("num_entities", "num_relations")
        cls = Vocab
    elif task == ComparisonVocab.task:
        sizes = ("num_entities", "num_attributes", "num_values")
        cls = ComparisonVocab
    else:
        raise ValueError(f"unknown task {task!r} (composition or comparison)")
    values = [data.get(k) for k in sizes]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{' / '.join(sizes)} are missing or not positive integers")
    return cls(*values)
