"""Dataset rows -> model tensors, per family (PAPER_SPEC §2.2, §4 loss masking), and the resumable batch order.

Both families see the target sequence ``[h, r1, r2, t, </a>]`` (atomic: ``[h, r, t, </a>, pad]``):
- gpt (causal LM): the loss covers exactly the two predictions after the prompt, t and ``</a>`` (§4.1), so the
  model computes logits only at those two positions (``at``) with ``targets`` the tokens that follow;
- trm (non-autoregressive): inputs are the prompt with answer slots = pad, labels the whole target sequence with
  pads ignored, so the copied prefix, t and ``</a>`` are all supervised (§2.2, §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grokscope.data.store import Dataset

IGNORE = -100


@dataclass
class Encoded:
    """Tensors for a set of facts: everything training and evaluation need."""

    seq: torch.Tensor  # [n, 5] target sequences
    prompt_len: torch.Tensor  # [n] 2 (atomic) or 3 (composition)
    inputs: torch.Tensor  # [n, 5] trm inputs (answer slots = pad); gpt uses seq
    labels: torch.Tensor  # [n, 5] trm labels (pad -> IGNORE)
    at: torch.Tensor  # [n, 2] gpt positions that predict t and </a>
    targets: torch.Tensor  # [n, 2] t and </a>
    bridge: torch.Tensor  # [n] bridge entity token id (-1 for atomic facts)

    def __len__(self) -> int:
        return len(self.seq)

    def take(self, index: torch.Tensor) -> "Encoded":
        return Encoded(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def to(self, device) -> "Encoded":
        return Encoded(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def encode(ds: Dataset, rows: np.ndarray) -> Encoded:
    vocab = ds.vocab
    seq = torch.from_numpy(vocab.encode(rows))
    prompt_len = torch.from_numpy(np.where(rows[:, 2] < 0, 2, 3))
    pos = torch.arange(seq.shape[1])
    inputs = torch.where(pos < prompt_len[:, None], seq, vocab.pad_id)
    labels = torch.where(seq == vocab.pad_id, IGNORE, seq)
    at = torch.stack([prompt_len - 1, prompt_len], dim=1)
    targets = torch.gather(seq, 1, at + 1)
    bridge = torch.from_numpy(np.where(rows[:, 3] >= 0, vocab.entity_id(rows[:, 3]), -1))
    return Encoded(seq, prompt_len, inputs, labels, at, targets, bridge)


def training_set(ds: Dataset) -> Encoded:
    """All training items: atomic facts then compositions (order is irrelevant: batches are permuted)."""
    return encode(ds, np.concatenate([ds.arrays["train_atomic"], ds.arrays["train_inferred"]]))


class BatchOrder:
    """Epoch-wise random permutations, fully determined by (seed, epoch): resuming needs only the position."""

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool, epoch: int = 0, offset: int = 0):
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.epoch, self.offset = epoch, offset
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def next(self) -> torch.Tensor:
        if self.offset >= self.n or (self.drop_last and self.offset + self.batch_size > self.n):
            self.epoch, self.offset = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        index = self._perm[self.offset:self.offset + self.batch_size]
        self.offset += len(index)
        return index

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}
