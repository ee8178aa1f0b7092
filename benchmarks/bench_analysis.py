"""Analysis speed, each against its baseline in the same run:

1. batched logit lens over the whole OOD probe set of a micro gpt vs a per-example loop doing the same work (the
   original pipeline ran one query at a time): target >= 50x;
2. the same for a micro trm, with the batched lens's achieved FLOP/s as a fraction of the measured matmul peak
   (the original per-example TRM lens took about 32 ms per query at D 256 on this machine);
3. causal tracing of 300 compositions x all layers x 3 positions on the micro gpt: target under 10 s.

Speed does not depend on the weights, so without --gpt-run / --trm-run random-initialised micro models are used.

    python benchmarks/bench_analysis.py [--gpt-run RUN] [--trm-run RUN] [--trm-d 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak, median_time  # noqa: E402

from grokscope import runs  # noqa: E402
from grokscope.analysis.logit_lens import lens_ranks  # noqa: E402
from grokscope.analysis.patching import causal_strength  # noqa: E402
from grokscope.data.counterfactuals import counterfactual_tokens  # noqa: E402
from grokscope.data.build import build_dataset  # noqa: E402
from grokscope.data.config import DATA_PRESETS  # noqa: E402
from grokscope.models import build_model, model_config  # noqa: E402
from grokscope.models.trm import swiglu_width  # noqa: E402
from grokscope.runtime import set_threads, tune_allocator  # noqa: E402
from grokscope.data.encoding import encode  # noqa: E402


def per_example_lens(model, enc):
    """The baseline: one query at a time through the same cached forward + unembedding + ranks."""
    out = []
    for i in range(len(enc)):
        out.append(lens_ranks(model, enc.take(torch.tensor([i])), chunk=1))
    return out


def trm_lens_flops(model, n):
    c = model.cfg
    L, D = c.n_positions, c.d_model
    per_block = 2 * (L * D * 3 * swiglu_width(D, c.expansion) + D * L * 3 * swiglu_width(L, c.expansion))
    levels = c.H_cycles * (c.L_cycles + 1)
    heads = c.n_stages * 2 * c.seq_len * D * c.n_vocab_rows  # every stage through the lm_head
    return n * (levels * c.n_layers * per_block + heads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpt-run", type=Path)
    parser.add_argument("--trm-run", type=Path)
    parser.add_argument("--trm-d", type=int, default=128, help="width of the random-init trm")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    threads = set_threads(args.threads or None)
    tune_allocator()
    ds = build_dataset(DATA_PRESETS["micro"])
    torch.manual_seed(0)
    gpt = runs.load_model(args.gpt_run)[0] if args.gpt_run else build_model(
        model_config("gpt", "micro", d_vocab=ds.vocab.d_vocab)).eval()
    trm = runs.load_model(args.trm_run)[0] if args.trm_run else build_model(
        model_config("trm", "paper", d_vocab=ds.vocab.d_vocab, overrides={"d_model": args.trm_d})).eval()
    ood = encode(ds, ds.probe("test_inferred_ood"))
    print(f"threads {threads}; OOD probe set: {len(ood)} queries (micro dataset)")

    print("\n== 1. gpt logit lens, whole OOD probe set ==")
    t_batch = median_time(lambda: lens_ranks(gpt, ood), 5)
    t_loop = median_time(lambda: per_example_lens(gpt, ood), 3)
    print(f"batched {t_batch * 1e3:.1f} ms, per-example {t_loop * 1e3:.0f} ms ({t_loop / len(ood) * 1e3:.2f} ms/query)"
          f" -> {t_loop / t_batch:.0f}x (target >= 50x)")

    print(f"\n== 2. trm logit lens (D {trm.cfg.d_model}, {trm.cfg.n_stages} stages), whole OOD probe set ==")
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        trm.cfg.forward_dtype = name
        peak = matmul_peak(dtype)
        t_batch = median_time(lambda: lens_ranks(trm, ood, chunk=512), 3)
        t_loop = median_time(lambda: per_example_lens(trm, ood), 1)
        flops = trm_lens_flops(trm, len(ood))
        print(f"{name}: batched {t_batch * 1e3:.0f} ms ({flops / t_batch / 1e9:.1f} GFLOP/s = "
              f"{flops / t_batch / peak:.0%} of the {peak / 1e9:.0f} GFLOP/s {name} matmul peak), per-example "
              f"{t_loop / len(ood) * 1e3:.1f} ms/query -> {t_loop / t_batch:.1f}x")

    print("\n== 3. causal tracing, 300 compositions x all layers x 3 positions, micro gpt ==")
    rows = ds.probe("train_inferred")[:300]
    enc = encode(ds, rows)
    t0 = time.perf_counter()
    cf = counterfactual_tokens(ds, rows)
    t_cf = time.perf_counter() - t0
    t_trace = median_time(lambda: causal_strength(gpt, enc, cf), 3)
    _, counts, labels = causal_strength(gpt, enc, cf)
    print(f"counterfactual selection {t_cf:.2f} s + patching {t_trace:.2f} s = {t_cf + t_trace:.2f} s "
          f"(target < 10 s); {len(labels)} layers, clean-correct examples patched per position: "
          f"{counts.tolist()}")
    if counts.sum() == 0:
        print("note: this model answers none correctly, so nothing was patched: pass a trained --gpt-run")


if __name__ == "__main__":
    main()
