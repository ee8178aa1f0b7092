"""The GPU speed table: trainer steps of the papers' models against named baselines, measured in one run.

Rows (median of the timed steps after warm-up, one process, the same device):

1. trm ``paper`` (D 1536, batch 512, bf16): the grokscope trainer step (optimisers, EMA, q-halt loss), eager and
   compiled (the CUDA default). The authors' TRM code is not bundled (it is not ours to copy): time it with its own
   command on the same card; the ratio is printed against ``--authors-ms`` when given;
2. gpt ``wang`` (8 x 768, batch 512, fp16 + GradScaler): the grokscope trainer step vs HF GPT2LMHeadModel of the
   same size (needs the ``hf`` extra);
3. the micro gpt in the full trainer (evaluations included): steps/s;
4. K micro gpt runs stacked in one process (``training/stack.py``) vs one run: aggregate steps/s and the ratio.

    python benchmarks/bench_gpu.py [--device cuda] [--quick] [--authors-ms MS] [--stack-k 16]

``--quick`` shrinks every size so the script runs on a CPU in a minute (it checks the script, not the speed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grokscope import api, runtime  # noqa: E402
from grokscope.data.encoding import training_set  # noqa: E402
from grokscope.data.store import load  # noqa: E402
from grokscope.models import build_model  # noqa: E402
from grokscope.training.loop import make_train_step  # noqa: E402
from grokscope.training.runspec import RunSpec  # noqa: E402
from grokscope.training.state import TrainState  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_steps(step, device: str, warmup: int, repeats: int) -> float:
    """Median seconds per call of ``step()`` (synchronised), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def trainer_step_time(family: str, preset: str, data: Path, device: str, compile_: bool, sets: list[str],
                      warmup: int, repeats: int) -> float:
    return timed_steps(trainer_step_fn(family, preset, data, device, compile_, sets), device, warmup, repeats)


def trainer_step_fn(family: str, preset: str, data: Path, device: str, compile_: bool, sets: list[str]):
    """One optimiser step of the grokscope trainer (its ``train_step``) on a fixed batch, as a callable."""
    ds = load(data)
    cfg, mcfg = RunSpec.build(data, "-", family, preset, [*sets, f"train.compile={str(compile_).lower()}"]).configs(
        ds.vocab.d_vocab)
    if cfg.precision == "fp16" and device != "cuda":
        cfg = type(cfg)(**{**cfg.__dict__, "precision": "bf16"})
    torch.manual_seed(0)
    model = build_model(mcfg.for_precision(cfg.precision)).to(device).train()
    state = TrainState(model, cfg, 10_000, device)
    step_fn = make_train_step(state, cfg, device)
    batch_set = training_set(ds).to(device)
    index = torch.randint(0, len(batch_set), (cfg.batch_size,), device=device)
    batch = batch_set.take(index)
    counter = {"step": 10_000}

    runtime.configure(device, cfg.threads)  # the threads the trainer would use

    def step():
        step_fn(batch, counter["step"])
        counter["step"] += 1
    return step


def hf_gpt2_step_time(d_model: int, n_layers: int, n_heads: int, vocab: int, batch: int, device: str,
                      warmup: int, repeats: int) -> float | None:
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    cfg = GPT2Config(vocab_size=vocab, n_positions=5, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                     attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    seq = torch.randint(1, vocab - 1, (batch, 5), device=device)
    labels = seq.clone()
    labels[:, :3] = -100  # the loss covers t and </a>, as the papers' GPT-2 pipeline masks it

    def step():
        with torch.autocast(device_type=device, dtype=torch.float16 if device == "cuda" else torch.bfloat16):
            loss = model(seq, labels=labels).loss
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()
        opt.zero_grad(set_to_none=True)
    return timed_steps(step, device, warmup, repeats)


def trainer_steps_per_second(data: Path, out: Path, device: str, steps: int) -> float:
    summary = api.train(data, out, "gpt", "micro", [f"train.max_steps={steps}", f"train.eval_every={steps // 4}"],
                        device=device, quiet=True)
    return summary["steps_per_second"]


def stacked_rate(data: Path, root: Path, device: str, k: int, steps: int) -> tuple[float, float]:
    """(aggregate steps/s of k stacked runs, steps/s of one run alone), evaluation only at the ends."""
    sets = [f"train.max_steps={steps}", f"train.eval_every={steps}", "train.eval_bridge_use=0"]
    t0 = time.perf_counter()
    api.train(data, root / "alone", "gpt", "micro", sets, device=device, quiet=True)
    alone = steps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    api.train(spec=[RunSpec.build(data, root / f"k{i}", "gpt", "micro", [*sets, f"train.seed={i}"], device=device,
                                  quiet=True) for i in range(k)])
    return k * steps / (time.perf_counter() - t0), alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the script on a CPU")
    ap.add_argument("--authors-ms", type=float, help="the authors' TRM step (ms) measured on the same card")
    ap.add_argument("--stack-k", type=int, default=16)
    args = ap.parse_args()
    device, quick = args.device, args.quick
    warmup, repeats = (2, 3) if quick else (10, 30)
    root = Path(tempfile.mkdtemp(prefix="grokscope-bench-gpu-"))
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}")
    rows = []
    api.build_data(root / "paper", preset="smoke" if quick else "paper")
    api.build_data(root / "micro", preset="micro", sets=["out_degree=19"])

    trm_sets = ["model.d_model=64", "train.batch_size=16"] if quick else []
    for compiled in (False, True):
        ms = 1e3 * trainer_step_time("trm", "paper", root / "paper", device, compiled, trm_sets, warmup, repeats)
        rows.append({"model": "trm paper", "code": f"grokscope {'compiled' if compiled else 'eager'}", "ms": ms})

    gpt_sets = ["model.d_model=64", "model.n_heads=2", "model.n_layers=2", "train.batch_size=16"] if quick else []
    ms = 1e3 * trainer_step_time("gpt", "paper", root / "paper", device, device == "cuda", gpt_sets, warmup, repeats)
    rows.append({"model": "gpt wang", "code": "grokscope", "ms": ms})
    vocab = load(root / "paper").vocab.d_vocab
    hf = hf_gpt2_step_time(*((64, 2, 2) if quick else (768, 8, 12)), vocab, 16 if quick else 512, device, warmup,
                           repeats)
    rows.append({"model": "gpt wang", "code": "HF GPT2LMHeadModel", "ms": None if hf is None else 1e3 * hf})

    rate = trainer_steps_per_second(root / "micro", root / "micro_run", device, 40 if quick else 400)
    rows.append({"model": "gpt micro", "code": "grokscope trainer (evaluations included)", "steps/s": rate})
    k = 2 if quick else args.stack_k
    aggregate, alone = stacked_rate(root / "micro", root / "stack", device, k, 20 if quick else 300)
    rows.append({"model": "gpt micro", "code": f"{k} runs stacked vs 1 alone", "steps/s": aggregate,
                 "ratio": aggregate / alone})

    print("\n| model | code | ms/step | steps/s | ratio |\n|---|---|---|---|---|")
    for r in rows:
        ms = "-" if r.get("ms") is None else f"{r['ms']:.1f}"
        rate = "-" if r.get("steps/s") is None else f"{r['steps/s']:.1f}"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.1f}x"
        print(f"| {r['model']} | {r['code']} | {ms} | {rate} | {ratio} |")
    trm = {r["code"]: r["ms"] for r in rows if r["model"] == "trm paper"}
    gpt = {r["code"]: r["ms"] for r in rows if r["model"] == "gpt wang"}
    print(f"\ntrm compile speed-up over eager: {trm['grokscope eager'] / trm['grokscope compiled']:.2f}x")
    if args.authors_ms:
        print(f"trm vs the authors' code ({args.authors_ms:.1f} ms, measured separately): "
              f"{args.authors_ms / trm['grokscope compiled']:.2f}x")
    if gpt.get("HF GPT2LMHeadModel"):
        print(f"gpt wang vs HF GPT2LMHeadModel: {gpt['HF GPT2LMHeadModel'] / gpt['grokscope']:.2f}x")
    (root / "table.json").write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    print(f"table: {root / 'table.json'}")
    shutil.rmtree(root / "stack", ignore_errors=True)


if __name__ == "__main__":
    main()
