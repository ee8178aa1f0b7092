"""A live progress line (step, the train loss at the last evaluation, key accuracies, steps/s, ETA); ``quiet``
prints one log line per evaluation instead."""

from __future__ import annotations

import sys
import time

KEYS = (("train_acc", "train"), ("test_inferred_iid", "id"), ("test_inferred_ood", "ood"))


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, start: int = 0, quiet: bool = False, label: str = "",
                 bridge_key: str = "bridge_use_ood"):
        self.total, self.quiet, self.label = total, quiet, label
        self.keys = (*KEYS, (bridge_key, "bridge"))
        self.live = not quiet and sys.stderr.isatty()
        self.t0, self.s0 = time.perf_counter(), start
        self.loss: float | None = None
        self.accs = ""
        self._last_draw = 0.0

    def _rate(self, step: int) -> float:
        dt = time.perf_counter() - self.t0
        return (step - self.s0) / dt if dt > 0 else 0.0

    def advance(self, step: int) -> None:
        now = time.perf_counter()
        if self.live and now - self._last_draw > 0.2:
            self._last_draw = now
            rate = self._rate(step)
            eta = (self.total - step) / rate if rate > 0 else 0
            frac = step / max(self.total, 1)
            bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
            loss = "" if self.loss is None else f"loss {self.loss:.4f} "
            sys.stderr.write(f"\r{self.label} [{bar}] {step}/{self.total} {loss}{self.accs} "
                             f"{rate:.1f} it/s ETA {_fmt_seconds(eta)}  ")
            sys.stderr.flush()

    def eval(self, step: int, row: dict) -> None:
        self.loss = row.get("train_loss")  # read at evaluations only: no host sync per step
        self.accs = " ".join(f"{short} {row[k]:.3f}" for k, short in self.keys if row.get(k) is not None)
        if not self.live:
            loss = f"loss {row['train_loss']:.4f} " if row.get("train_loss") is not None else ""
            print(f"step {step}/{self.total} {loss}{self.accs} ({self._rate(step):.1f} it/s, "
                  f"{_fmt_seconds(row['wall_seconds'])} elapsed)", flush=True)

    def note(self, text: str) -> None:
        if self.live:
            sys.stderr.write("\n")
        print(text, flush=True)

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()
