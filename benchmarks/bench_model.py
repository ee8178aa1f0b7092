"""Model speed on this machine, each against its named baseline in the same run.

1. micro gpt training steps/s vs HuggingFace GPT2LMHeadModel of identical size (sdpa), same threads and batch;
2. achieved FLOP/s of the micro gpt and micro trm training steps vs the measured fp32 matmul peak;
3. overhead of idle hook points (vs the same model with hook points short-circuited);
4. one TRM training step at the original configuration scaled to D 128 / 256 (batch 512, bf16 and fp32), median of
   steps 6-15, vs a reference implementation with the original's layout (transpose -> fused Linear over positions ->
   chunk -> transpose, default allocator) run in a subprocess, and vs the original code's numbers measured on this
   2-core machine (3.2 s bf16, 6.2 s fp32 at D 128; 6.7 s / 14.5 s at D 256, median of steps 6-15).

    python benchmarks/bench_model.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak, median_time  # noqa: E402

from grokscope.models import build_model, model_config  # noqa: E402
from grokscope.models.hooks import HookPoint  # noqa: E402
from grokscope.runtime import set_threads, tune_allocator  # noqa: E402

ORIGINAL_S_PER_STEP = {(128, "bfloat16"): 3.2, (128, "float32"): 6.2, (256, "bfloat16"): 6.7, (256, "float32"): 14.5}
V, B = 2207, 512


def gpt_batch():
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, V - 1, (B, 5), generator=g)
    at = torch.tensor([[2, 3]] * B)
    return seq, at, torch.gather(seq, 1, at + 1)


def gpt_step_fn(model, seq, at, targets, precision):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else None

    def step():
        if ctx:
            with ctx():
                logits = model(seq, at=at)
        else:
            logits = model(seq, at=at)
        F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def hf_step_fn(seq, precision):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=V, n_positions=5, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0, embd_pdrop=0,
                     attn_pdrop=0, attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg).train()
    labels = seq.clone()
    labels[:, :3] = -100  # the original pipeline's masking: the loss covers t and </a> only (§4.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def step():
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=seq, labels=labels).loss
        else:
            loss = model(input_ids=seq, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def section_gpt(args, peak):
    print("\n== 1. micro gpt vs HuggingFace GPT2LMHeadModel (sdpa), batch 512, steps/s (median) ==")
    seq, at, targets = gpt_batch()
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        ours = build_model(model_config("gpt", "micro", d_vocab=V)).train()
        ours_fn = gpt_step_fn(ours, seq, at, targets, precision)
        try:
            hf_fn = hf_step_fn(seq, precision)
        except ImportError:
            hf_fn = None
        reps = args.repeats
        t_ours, t_hf = [], []
        for _ in range(reps):  # round-robin so machine drift hits both alike
            t_ours.append(median_time(ours_fn, 10, warmup=3))
            if hf_fn:
                t_hf.append(median_time(hf_fn, 10, warmup=3))
        so = 1 / statistics.median(t_ours)
        line = f"{precision}: grokscope {so:.1f} steps/s"
        if hf_fn:
            sh = 1 / statistics.median(t_hf)
            line += f", HF {sh:.1f} steps/s -> ratio {so / sh:.2f} (target >= 1.1)"
        else:
            line += " (transformers not installed: pip install 'grokscope[hf]')"
        print(line)
        results[precision] = statistics.median(t_ours)
    flops = ours.flops_per_step(B)
    print(f"\n== 2a. micro gpt achieved FLOP/s (fp32 step): {flops / results['fp32'] / 1e9:.1f} GFLOP/s = "
          f"{flops / results['fp32'] / peak:.0%} of the measured fp32 matmul peak (target >= 50%)")
    return ours


def section_hooks(args):
    print("\n== 3. idle hook points: training step with hook points vs short-circuited ==")
    seq, at, targets = gpt_batch()
    torch.manual_seed(0)
    model = build_model(model_config("gpt", "micro", d_vocab=V)).train()
    fn = gpt_step_fn(model, seq, at, targets, "fp32")
    real_call = HookPoint.__call__
    with_hooks, without = [], []
    for _ in range(args.repeats * 2):
        with_hooks.append(median_time(fn, 10, warmup=2))
        HookPoint.__call__ = lambda self, x: x  # bypass nn.Module.__call__ entirely
        without.append(median_time(fn, 10, warmup=2))
        HookPoint.__call__ = real_call
    a, b = statistics.median(with_hooks), statistics.median(without)
    n = len(model.hook_dict)
    print(f"{n} hook points: {a * 1e3:.1f} ms vs {b * 1e3:.1f} ms per step -> overhead {(a - b) / b:+.1%} "
          f"(target <= 3%)")


TRM_CHILD = r'''
import json, statistics, sys, time, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from grokscope.models import build_model, model_config
from grokscope.models import trm as trm_mod
from grokscope.runtime import set_threads, tune_allocator
D, dtype, reference = int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
threads, steps = int(sys.argv[5]), int(sys.argv[6])
set_threads(threads)
if reference:
    # The original layout: transpose -> one fused Linear over positions -> chunk -> silu*up -> Linear -> transpose,
    # default glibc allocator (fresh mmap per large activation).
    def swiglu(x, gate_up, down):
        gate, up = F.linear(x, gate_up.to(x.dtype)).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, down.to(x.dtype))
    trm_mod.swiglu = swiglu
else:
    tune_allocator()
torch.manual_seed(0)
m = build_model(model_config("trm", "paper", d_vocab=2207, overrides={"d_model": D, "forward_dtype": dtype})).train()
params = [p for n, p in m.named_parameters() if n != "puzzle_emb"]
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=1.0)
g = torch.Generator().manual_seed(0)
x = torch.randint(1, 2206, (512, 5), generator=g); y = torch.randint(1, 2206, (512, 5), generator=g)
times = []
for i in range(steps):
    t = time.perf_counter()
    logits, q = m(x, return_q=True)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss = loss + 0.5 * F.binary_cross_entropy_with_logits(q, torch.zeros_like(q))
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t)
flops = m.flops_per_step(512)
print(json.dumps({"steady": statistics.median(times[5:]), "first": times[0], "flops": flops}))
'''


def trm_step(D, dtype, reference, threads, steps):
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "GROKSCOPE_NO_MALLOPT": "1"} if reference else dict(os.environ)
    out = subprocess.run([sys.executable, "-c", TRM_CHILD, src, str(D), dtype, "1" if reference else "0",
                          str(threads), str(steps)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_trm(args, peak):
    print("\n== 4. TRM training step, original configuration at D 128 / 256, batch 512 "
          "(median of steps 6-15, each run in its own process) ==")
    widths = (128,) if args.quick else (128, 256)
    print(f"{'D':>4} {'dtype':>9} {'grokscope s':>12} {'reference s':>12} {'ratio':>6} {'original s':>11} "
          f"{'ratio':>6} {'GFLOP/s':>8} {'of peak':>8}")
    for D in widths:
        for dtype in ("bfloat16", "float32"):
            ours = trm_step(D, dtype, False, args.threads, 15)
            ref = trm_step(D, dtype, True, args.threads, 15) if not args.quick or D == 128 else None
            orig = ORIGINAL_S_PER_STEP.get((D, dtype))
            gflops = ours["flops"] / ours["steady"] / 1e9
            print(f"{D:>4} {dtype:>9} {ours['steady']:>12.2f} {ref['steady'] if ref else float('nan'):>12.2f} "
                  f"{(ref['steady'] / ours['steady']) if ref else float('nan'):>6.2f} {orig:>11.1f} "
                  f"{orig / ours['steady']:>6.2f} {gflops:>8.1f} "
                  f"{(gflops * 1e9 / peak) if dtype == 'float32' else float('nan'):>8.0%}")
    print("target: >= 1.5x faster than the original at the same configuration and numerics; "
          ">= 50% of fp32 peak (fp32 rows)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="D 128 only, fewer repeats")
    parser.add_argument("--threads", type=int, default=0, help="threads (default: all cores of this process)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.threads = set_threads(args.threads or None)
    tune_allocator()
    if args.quick:
        args.repeats = 1
    peak = matmul_peak(torch.float32)
    peak_bf16 = matmul_peak(torch.bfloat16)
    print(f"threads {args.threads}; measured matmul peak: fp32 {peak / 1e9:.1f} GFLOP/s, bf16 "
          f"{peak_bf16 / 1e9:.1f} GFLOP/s (2048^3, median of 5)")
    section_gpt(args, peak)
    section_hooks(args)
    section_trm(args, peak)


if __name__ == "__main__":
    main()
