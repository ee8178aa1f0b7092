"""Dataset rows -> model tensors (He et al. App. B; Wang et al.), one container for every model family.

Both families see the target sequence ``[h, r1, r2, t, </a>]`` (atomic facts: ``[h, r, t, </a>, pad]``); in a
comparison dataset ``[attr, <q>, e1, <mask>, e2, label, </a>]`` (atomic facts ``[e, attr, value, </a>, pad x 3]``):
- a causal decoder reads ``seq`` and is supervised at ``at`` (the positions that predict t and ``</a>``) with
  ``targets`` the tokens that follow;
- a non-autoregressive model reads ``inputs`` (the prompt with answer slots = pad) and is supervised on ``labels``
  (the whole target sequence, pads ignored), so the copied prefix, t and ``</a>`` all count.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from grokscope.data.store import Dataset
from grokscope.data.vocab import SEQ_LEN  # noqa: F401 (the composition task's length, for this module's readers)

IGNORE = -100  # label value that the losses skip


@dataclass
class Encoded:
    """Tensors for a set of facts: everything training, evaluation and the analyses read."""

    seq: torch.Tensor  # [n, T] target sequences (T = the task's seq_len: 5 composition, 7 comparison)
    prompt_len: torch.Tensor  # [n] 2 (atomic), 3 (composition) or 5 (comparison)
    inputs: torch.Tensor  # [n, T] prompt with answer slots = pad
    labels: torch.Tensor  # [n, T] target sequence with pads = IGNORE
    at: torch.Tensor  # [n, 2] positions of seq that predict t and </a>
    targets: torch.Tensor  # [n, 2] t and </a>
    bridge: torch.Tensor  # [n] bridge entity token id (-1 for atomic facts and comparisons)

    def __len__(self) -> int:
        return len(self.seq)

    def take(self, index: torch.Tensor) -> "Encoded":
        return Encoded(*(getattr(self, f.name)[index] for f in fields(self)))

    def to(self, device) -> "Encoded":
        return Encoded(*(getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)))

    @property
    def answer(self) -> torch.Tensor:
        """[n] the answer token t."""
        return self.targets[:, 0]

    @property
    def device(self) -> torch.device:
        return self.seq.device


def encode(ds: Dataset, rows: np.ndarray) -> Encoded:
    vocab = ds.vocab
    rows = np.asarray(rows).reshape(-1, len(vocab.columns))
    seq = torch.from_numpy(vocab.encode(rows))
    prompt_len = torch.from_numpy(vocab.prompt_lengths(rows))
    pos = torch.arange(seq.shape[1])
    inputs = torch.where(pos < prompt_len[:, None], seq, vocab.pad_id)
    labels = torch.where(seq == vocab.pad_id, IGNORE, seq)
    at = torch.stack([prompt_len - 1, prompt_len], dim=1)
    targets = torch.gather(seq, 1, at + 1)
    bridge = torch.from_numpy(vocab.bridge_ids(rows))
    return Encoded(seq, prompt_len, inputs, labels, at, targets, bridge)


def training_rows(ds: Dataset) -> np.ndarray:
    """All training items: atomic facts then compositions (order is irrelevant: batches are permuted)."""
    return np.concatenate([ds.arrays["train_atomic"], ds.arrays["train_inferred"]])


def training_set(ds: Dataset) -> Encoded:
    return encode(ds, training_rows(ds))
