"""The resumable batch order: epoch-wise random permutations, fully determined by (seed, epoch)."""

from __future__ import annotations

import torch


class BatchOrder:
    """Epoch-wise random permutations, fully determined by (seed, epoch): resuming needs only the position."""

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool, epoch: int = 0, offset: int = 0,
                 device: str | torch.device = "cpu"):
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.epoch, self.offset, self.device = epoch, offset, device
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        # Drawn on the CPU (the same order on every device), then moved once per epoch: slicing it per step needs
        # no host-device copy. To CUDA from pinned memory, so the copy is queued on the stream instead of making the
        # host wait at every epoch's start (the caching host allocator keeps the buffer until the copy is done).
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        if torch.device(self.device).type == "cuda":
            return perm.pin_memory().to(self.device, non_blocking=True)
        return perm.to(self.device)

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
