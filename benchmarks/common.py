"""Shared helpers for the benchmark scripts: medians, matmul peak, step timing."""

from __future__ import annotations

import statistics
import time

import torch


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a large square matmul at the current thread count (the machine's practical peak)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = median_time(lambda: a @ b, repeats, warmup=2)
    return 2 * n**3 / t
