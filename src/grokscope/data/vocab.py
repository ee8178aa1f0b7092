"""Compact vocabulary and token encoding (He et al. App. B; ``docs/methods.md``, "Data").

Ids follow the TRM pipeline: 0 = PAD, entities 1..N, relations N+1..N+R, then the six special tokens of the
original ``vocab.json``. The GPT pipeline of the original added these tokens to the 50k GPT-2 BPE table; a compact
vocabulary is equivalent in function (a documented deviation), and one id scheme serves both model families.
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
    num_entities: int
    num_relations: int

    pad_id = 0

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
