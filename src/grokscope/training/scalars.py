"""Every evaluation's numbers as TensorBoard scalars in ``RUN/tensorboard/``, when tensorboard is importable (the
``track`` extra); without it nothing is written and nothing fails. ``metrics.jsonl`` stays the record the tool reads.
"""

from __future__ import annotations

import math
from pathlib import Path


class ScalarLog:
    def __init__(self, folder: Path, resumed_at: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is not installed
            self.writer = None
            return
        # A resumed run drops what an interrupted process logged after its checkpoint (purge_step), as metrics.jsonl
        # does, so a curve never holds a step twice.
        self.writer = SummaryWriter(str(folder), purge_step=None if resumed_at is None else resumed_at + 1)

    def write(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    math.isfinite(value):
                self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
