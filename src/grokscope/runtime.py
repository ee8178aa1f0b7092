"""The machine a run uses: device choice, and process-level performance settings for CPU training (allocator
tuning and thread count).

glibc serves large allocations with fresh ``mmap`` calls and returns them on free, so every step of a model with
big activations (the TRM's SwiGLU intermediates) pays page faults on zeroed memory; the calibration measured
10-45% kernel time at batch 512. Raising the mmap and trim thresholds lets freed activation memory be reused from
the heap instead. This changes no numerics. On 2 cores, two multi-threaded torch processes slow each other 5-10x
(OpenMP barriers spin), so one training process uses the cores it is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import sys

import torch

from grokscope.errors import GrokscopeError

DEVICES = ("auto", "cpu", "cuda", "mps")

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_tuned = False


def tune_allocator() -> bool:
    """Keep freed large blocks in the heap (glibc only); returns whether the settings were applied."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("GROKSCOPE_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 62 if
              ctypes.sizeof(ctypes.c_long) == 8 else 1 << 30) and libc.mallopt(_M_TOP_PAD, 1 << 28))
    except (OSError, AttributeError):
        return False
    _tuned = bool(ok)
    return _tuned


def set_threads(threads: int | None = None) -> int:
    """Use the cores this process may run on (oversubscription makes OpenMP slow); GROKSCOPE_THREADS overrides."""
    if threads is None:
        threads = env_threads() or available_cores()
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def available_cores() -> int:
    """The cores this process may run on (the affinity mask where the OS has one, as on Linux)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def env_threads() -> int | None:
    value = os.environ.get("GROKSCOPE_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise GrokscopeError(f"GROKSCOPE_THREADS={value!r} is not a positive integer; unset it or set e.g. 2")
    return int(value)


def pick_device(device: str) -> str:
    """auto -> cuda, else mps, else cpu; an explicit device must exist on this machine."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if device not in DEVICES:
        raise GrokscopeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise GrokscopeError("--device cuda requested but no CUDA device is available; use --device cpu")
    if device == "mps" and not has_mps:
        raise GrokscopeError("--device mps requested but this machine has no MPS device; use --device cpu")
    return device


def memory_bytes(device: str) -> int:
    """The memory a run on ``device`` can use: the GPU's total memory, else this machine's RAM."""
    if device == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_compiler_available() -> bool:
    """Whether inductor can build CPU kernels here: it needs a C++ compiler ($CXX, else c++ or g++)."""
    import shutil

    return any(shutil.which(c) for c in (os.environ.get("CXX"), "c++", "g++") if c)


def configure(device: str, threads: int | None = None) -> None:
    """Per-process settings for a run on ``device``: CPU threads and the allocator."""
    if device == "cpu":
        set_threads(threads or None)
        tune_allocator()


@contextlib.contextmanager
def matmul_precision(device: str, tf32: bool):
    """fp32 matmuls on CUDA in TF32 or at full fp32 precision for the duration, the caller's setting restored after.
    Through torch's ``fp32_precision`` where it exists (2.9 on): reading the old ``allow_tf32`` flag raises once a
    caller has used the new API."""
    if device != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    key = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, key)
    setattr(matmul, key, ("tf32" if tf32 else "ieee") if key == "fp32_precision" else tf32)
    try:
        yield
    finally:
        setattr(matmul, key, before)


def training_matmuls(device: str):
    """While training on CUDA, TF32 for the fp32 matmuls (an fp32 run otherwise runs Ampere+ tensor cores at full
    fp32 precision, several times slower); the caller's setting comes back after, so the analyses that follow in one
    process (compared with the CPU's at full fp32) and a notebook's own code keep theirs."""
    return matmul_precision(device, tf32=True)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX on x86, the BF16 extension on Arm). Elsewhere
    oneDNN emulates it, and a bf16 autocast step is many times slower than fp32: 16x for the micro gpt and 12x for
    the micro trm on an AVX2-only EPYC (docs/calibration.md)."""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            # oneDNN's own check passes any AVX-512 CPU (Skylake to Ice Lake), where bf16 is still emulated
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without these checks or without oneDNN
        return False


def resolve_precision(precision: str, device: str) -> tuple[str, str | None]:
    """The precision a run on ``device`` can use, and a note when it differs from the one asked for: fp16 needs
    CUDA (its GradScaler); bf16 on a GPU without it (before Ampere) falls back to fp16, and on a CPU without native
    bf16 to fp32 (emulated bf16 would be slower, not faster)."""
    if precision == "fp16" and device != "cuda":
        if device == "cpu" and not cpu_has_bf16():
            return "fp32", "note: fp16 needs CUDA and this CPU has no native bf16; using fp32 instead"
        return "bf16", "note: fp16 needs CUDA; using bf16 instead"
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16", "note: this GPU has no bf16; using fp16 with a GradScaler instead"
    if precision == "bf16" and device == "cpu" and not cpu_has_bf16():
        return "fp32", ("note: this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16), where bf16 is emulated "
                        "and many times slower; using fp32 instead")
    return precision, None
