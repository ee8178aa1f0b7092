"""The GPU speed table: trainer steps of the papers' models against the authors' code and named baselines, measured
in one process on one device with one torch.

Parts (``--parts``, default all; each prints its elapsed time when it finishes):

- ``trm``: the trm ``paper`` configuration (He et al.: D 1536, H_cycles 2, L_cycles 6, two layers, batch 512, bf16):
  the grokscope trainer step (AdamW + SignSGD, EMA, stablemax + q-halt loss) eager and compiled; with
  ``--authors-dir DIR`` also the authors' original model and loss head imported from DIR (their ``TRM_model``
  folder; ``authors_trm.py``), compiled as their pretrain script compiles it, on the same examples.
  Ratio: authors' ms / grokscope compiled ms (above 1: grokscope is faster);
- ``gpt``: gpt ``wang`` (8 x 768, batch 512, fp16 + GradScaler on CUDA): the grokscope trainer step against HF
  GPT2LMHeadModel of the same size (needs the ``hf`` extra), both eager. Ratio: HF ms / grokscope ms;
- ``micro``: the micro gpt in the full trainer (evaluations included): steps/s;
- ``stack``: K micro gpt runs stacked in one process against one run alone, like with like: both at the device's
  default, compiled on CUDA (the vmap stack compiles one graph for all its runs), eager on a CPU; timed after a
  warm-up that holds the compiles. Ratio: aggregate steps/s of the stack / steps/s alone.

Every timed row: ms per step (median of 30 synchronised steps after 10 warm-up steps, which include compiling),
peak memory (CUDA ``max_memory_allocated`` since the row began, building the model included; None on a CPU) and
tokens/s (batch x 5 sequence tokens per step).

    python benchmarks/bench_gpu.py [--device cuda] [--quick] [--parts trm,gpt,micro,stack] [--authors-dir DIR]
                                   [--stack-k 16] [--json PATH]

``--quick`` shrinks every size (and the trm's recursion) so the script runs on a CPU in about a minute: it checks
the script, not the speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import authors_trm  # noqa: E402
from grokscope import api, artifacts, runtime  # noqa: E402
from grokscope.data.encoding import SEQ_LEN, training_set  # noqa: E402
from grokscope.data.store import load  # noqa: E402
from grokscope.errors import GrokscopeError  # noqa: E402
from grokscope.models import build_model  # noqa: E402
from grokscope.training.runspec import RunSpec  # noqa: E402
from grokscope.training.state import TrainState  # noqa: E402
from grokscope.training.step import LoopPass, train_step  # noqa: E402

PARTS = ("trm", "gpt", "micro", "stack")
# He et al.'s trm as the paper preset must hold it (the authors' side is built from the same config).
HE_TRM = {"d_model": 1536, "H_cycles": 2, "L_cycles": 6, "n_layers": 2, "expansion": 4.0, "puzzle_emb_len": 16}


# ------------------------------------------------------------------------------------------------ timing


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


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else None


def release(device: str) -> None:
    """Free the last row's model before the next: compiled graphs hold their model's tensors until dynamo resets."""
    torch._dynamo.reset()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Context:
    device: str
    quick: bool
    root: Path
    authors: authors_trm.AuthorsCode | None
    stack_k: int
    warmup: int = field(init=False)
    repeats: int = field(init=False)

    def __post_init__(self):
        self.warmup, self.repeats = (2, 3) if self.quick else (10, 30)

    def dataset(self, name: str) -> Path:
        """The smoke graph stands in for the paper's in ``--quick``; the micro graph as the micro tier trains."""
        out = self.root / name
        if not out.exists():
            if name == "paper":
                api.build_data(out, preset="smoke" if self.quick else "paper")
            else:
                api.build_data(out, preset="micro", sets=["out_degree=19"])
        return out

    def measure(self, make_step, tokens_per_step: int) -> dict:
        """Build a step (counted in the peak memory), time it, read the peak, free it. ``make_step`` returns the step,
        or (step, note)."""
        reset_peak(self.device)
        made = make_step()
        step, note = made if isinstance(made, tuple) else (made, "")
        seconds = timed_steps(step, self.device, self.warmup, self.repeats)
        out = {"ms": 1e3 * seconds, "peak_mib": peak_mib(self.device), "tokens_per_s": tokens_per_step / seconds}
        if note:
            out["note"] = note
        del step, made
        release(self.device)
        return out


def row(part: str, model: str, code: str, **values) -> dict:
    return {"part": part, "model": model, "code": code, **values}


# ------------------------------------------------------------------------------------------------ grokscope steps


def resolved(family: str, preset: str, data: Path, device: str, compile_: bool, sets: list[str]):
    """(dataset, TrainConfig, model config) as the trainer resolves them for ``device``."""
    ds = load(data)
    cfg, mcfg = RunSpec.build(data, "-", family, preset, [*sets, f"train.compile={str(compile_).lower()}"]).configs(
        ds.vocab.d_vocab)
    precision, _ = runtime.resolve_precision(cfg.precision, device)  # fp16 needs CUDA: bf16 elsewhere
    cfg = replace(cfg, precision=precision)
    return ds, cfg, mcfg.for_precision(cfg.precision)


def fixed_batch(ds, batch_size: int, device: str):
    """The same ``batch_size`` training examples for every code timed on them."""
    rows = training_set(ds)
    index = torch.randint(0, len(rows), (batch_size,), generator=torch.Generator().manual_seed(0))
    return rows.take(index).to(device)


def trainer_step_fn(family: str, preset: str, data: Path, device: str, compile_: bool, sets: list[str]):
    """One optimiser step of the grokscope trainer (its ``train_step``) on a fixed batch, as a callable."""
    ds, cfg, mcfg = resolved(family, preset, data, device, compile_, sets)
    runtime.configure(device, cfg.threads)  # the threads the trainer sets first (TF32: main, for every code)
    torch.manual_seed(0)
    model = build_model(mcfg).to(device).train()
    state = TrainState(model, cfg, 10_000, device)
    forward_backward = LoopPass([state], max_steps=0)
    batch = fixed_batch(ds, cfg.batch_size, device)
    state.loop.step = 10_000  # past the warm-up: the lr is the recipe's

    def step():
        train_step([state], [batch], forward_backward)
        state.loop.step += 1
    return step


# ------------------------------------------------------------------------------------------------ parts


def part_trm(ctx: Context) -> list[dict]:
    # --quick: D 64, batch 16 and one L-cycle: the unrolled recursion sets the step time and much of the compile
    # time (this part took 52 s on a cold compile cache at one L-cycle, 79 s at the paper's six, on one CPU core).
    sets = ["model.d_model=64", "train.batch_size=16", "model.L_cycles=1"] if ctx.quick else []
    data = ctx.dataset("paper")
    ds, cfg, mcfg = resolved("trm", "paper", data, ctx.device, True, sets)
    if not ctx.quick:
        differs = {k: (v, getattr(mcfg, k)) for k, v in HE_TRM.items() if getattr(mcfg, k) != v}
        if differs:  # the authors' side is sized from this config: both would be another model than the paper's
            raise RuntimeError(f"the trm paper config is not He et al.'s (paper, this config): {differs}")
    what = (f"D {mcfg.d_model}, H {mcfg.H_cycles} x L {mcfg.L_cycles}, {mcfg.n_layers} layers, batch "
            f"{cfg.batch_size}, {mcfg.forward_dtype}")
    tokens, rows = cfg.batch_size * SEQ_LEN, []
    for compiled in (False, True):
        r = ctx.measure(lambda c=compiled: trainer_step_fn("trm", "paper", data, ctx.device, c, sets), tokens)
        rows.append(row("trm", "trm paper", f"grokscope {'compiled' if compiled else 'eager'}", **r, note=what))
    if ctx.authors is not None:
        rows.append(authors_row(ctx, ds, cfg, mcfg, what, ours_ms=rows[1]["ms"]))
    return rows


def authors_row(ctx: Context, ds, cfg, mcfg, what: str, ours_ms: float) -> dict:
    """Their step on the same examples, compiled. A failure of their code on this torch or device is one line and an
    ``error`` in the row: the other parts are still measured (and the script exits 1 at the end)."""
    config = authors_trm.he_config(mcfg, cfg.batch_size, mcfg.forward_dtype)
    enc = fixed_batch(ds, cfg.batch_size, ctx.device)
    batch = authors_trm.batch_for(enc.inputs, enc.labels, config["vocab_size"])
    try:
        r = ctx.measure(lambda: authors_trm.step_fn(ctx.authors, config, batch, ctx.device, compile_=True),
                        cfg.batch_size * SEQ_LEN)
    except Exception as exc:
        release(ctx.device)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"warning: the authors' TRM step failed ({type(exc).__name__}: {first})", file=sys.stderr)
        return row("trm", "trm paper", "authors (compiled)", ms=None, error=f"{type(exc).__name__}: {first}",
                   note=what)
    r["note"] = f"{what}; {r.get('note', '')}; from {ctx.authors.folder}"
    return row("trm", "trm paper", "authors (compiled)", **r, ratio=r["ms"] / ours_ms)


def hf_gpt2_step(d_model: int, n_layers: int, n_heads: int, vocab: int, batch: int, device: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=SEQ_LEN, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1,  # GPT-2's 50256 is outside this vocabulary
                     attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    seq = torch.randint(1, vocab - 1, (batch, SEQ_LEN), device=device)
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
    return step


def hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def part_gpt(ctx: Context) -> list[dict]:
    sets = ["model.d_model=64", "model.n_heads=2", "model.n_layers=2", "train.batch_size=16"] if ctx.quick else []
    data = ctx.dataset("paper")
    ds, cfg, mcfg = resolved("gpt", "paper", data, ctx.device, False, sets)
    tokens = cfg.batch_size * SEQ_LEN
    what = f"{mcfg.n_layers} x {mcfg.d_model}, batch {cfg.batch_size}, {cfg.precision}"
    # Eager against eager (HF's model runs eager as Wang et al.'s Trainer ran it); the compiled gpt is left out to
    # keep the check short: its compile costs more than every gpt row together.
    ours = row("gpt", "gpt wang", "grokscope eager", note=what,
               **ctx.measure(lambda: trainer_step_fn("gpt", "paper", data, ctx.device, False, sets), tokens))
    if not hf_available():
        return [ours, row("gpt", "gpt wang", "HF GPT2LMHeadModel (eager)", ms=None, note="transformers not installed")]
    r = ctx.measure(lambda: hf_gpt2_step(mcfg.d_model, mcfg.n_layers, mcfg.n_heads, ds.vocab.d_vocab,
                                         cfg.batch_size, ctx.device), tokens)
    return [ours, row("gpt", "gpt wang", "HF GPT2LMHeadModel (eager)", **r, ratio=r["ms"] / ours["ms"], note=what)]


def part_micro(ctx: Context) -> list[dict]:
    steps = 20 if ctx.quick else 400
    reset_peak(ctx.device)
    summary = api.train(ctx.dataset("micro"), ctx.root / "micro_run", "gpt", "micro",
                        [f"train.max_steps={steps}", f"train.eval_every={steps // 4}"], device=ctx.device, quiet=True)
    rate = summary["steps_per_second"]
    batch = RunSpec.build(ctx.dataset("micro"), "-", "gpt", "micro").train["batch_size"]
    return [row("micro", "gpt micro", "grokscope trainer (evaluations included)", steps_per_s=rate,
                peak_mib=peak_mib(ctx.device), tokens_per_s=rate * batch * SEQ_LEN)]


def part_stack(ctx: Context) -> list[dict]:
    """k stacked runs against one alone, both at the device's default (compiled on CUDA, eager on a CPU), timed from
    the evaluation after the warm-up (compiles included there) to the end."""
    k, steps, warm = (2, 10, 5) if ctx.quick else (ctx.stack_k, 300, 100)
    data, root = ctx.dataset("micro"), ctx.root / "stack"
    # drop_last: every batch full, so each code compiles one graph (the lone run's is the micro part's, cached)
    sets = [f"train.max_steps={steps}", f"train.eval_every={warm}", "train.eval_bridge_use=0", "train.drop_last=true"]

    def steps_per_s(run: Path) -> float:
        """Steps per second between the first evaluation after the warm-up and the last: every step in between
        plus the evaluations there, no compile."""
        wall = {r["step"]: r["wall_seconds"] for r in artifacts.read_metrics(run)}
        return (steps - warm) / (wall[steps] - wall[warm])
    reset_peak(ctx.device)
    api.train(data, root / "alone", "gpt", "micro", sets, device=ctx.device, quiet=True)
    alone, alone_peak = steps_per_s(root / "alone"), peak_mib(ctx.device)
    reset_peak(ctx.device)
    api.train(spec=[RunSpec.build(data, root / f"k{i}", "gpt", "micro", [*sets, f"train.seed={i}"],
                                  device=ctx.device, quiet=True) for i in range(k)])
    aggregate = k * steps_per_s(root / "k0")  # the runs step in lockstep: one run's rate is the stack's step rate
    backend = "vmap" if ctx.device == "cuda" else "loop"  # the auto backend (training/stack.py)
    compiled = "compiled" if ctx.device == "cuda" else "eager"
    note = f"{compiled} both (the device's default); timed from step {warm} to {steps}, evaluations included"
    shutil.rmtree(root, ignore_errors=True)
    return [row("stack", "gpt micro", "1 run alone", steps_per_s=alone, peak_mib=alone_peak, note=note),
            row("stack", "gpt micro", f"{k} runs stacked ({backend})", steps_per_s=aggregate,
                peak_mib=peak_mib(ctx.device), ratio=aggregate / alone, note=note)]


PART_FUNCTIONS = {"trm": part_trm, "gpt": part_gpt, "micro": part_micro, "stack": part_stack}


# ------------------------------------------------------------------------------------------------ output


def ratios(rows: list[dict]) -> dict[str, float]:
    """The headline ratios, by name (only those whose rows ran)."""
    ms = {(r["model"], r["code"]): r.get("ms") for r in rows}
    out = {}
    eager, compiled = ms.get(("trm paper", "grokscope eager")), ms.get(("trm paper", "grokscope compiled"))
    if eager and compiled:
        out["trm_eager_over_compiled"] = eager / compiled
    for r in rows:
        if r.get("ratio") is None:
            continue
        key = {"trm": "trm_authors_over_grokscope_compiled", "gpt": "gpt_hf_over_grokscope_eager",
               "stack": "stack_aggregate_over_alone"}[r["part"]]
        out[key] = r["ratio"]
    return out


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    print("\n| part | model | code | ms/step | peak MiB | tokens/s | steps/s | ratio | note |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['part']} | {r['model']} | {r['code']} | {fmt(r.get('ms'), '.2f')} | "
              f"{fmt(r.get('peak_mib'), ',.0f')} | {fmt(r.get('tokens_per_s'), ',.0f')} | "
              f"{fmt(r.get('steps_per_s'), '.1f')} | {fmt(r.get('ratio'), '.2f')} | "
              f"{'FAILED: ' + r['error'] + '; ' if r.get('error') else ''}{r.get('note', '')} |")


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"--parts {text!r}: choose from {', '.join(PARTS)} (comma-separated)")
    return parts


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the script on a CPU in about a minute")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {','.join(PARTS)} (default all)")
    ap.add_argument("--authors-dir", help="the authors' TRM_model folder: time their TRM step beside grokscope's")
    ap.add_argument("--stack-k", type=int, default=16, help="runs stacked in the stack part (default 16)")
    ap.add_argument("--json", type=Path, help="write every number of the table to this JSON file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # every user error before any work, one line each
        parts = parse_parts(args.parts)
        runtime.pick_device(args.device)
        authors = authors_trm.load(args.authors_dir) if args.authors_dir else None
    except (ValueError, authors_trm.AuthorsCodeError, GrokscopeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = args.device
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; parts: {','.join(parts)}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="grokscope-bench-gpu-"))
    ctx = Context(device, args.quick, root, authors, args.stack_k)
    rows, seconds = [], {}
    try:
        for part in parts:
            t0 = time.perf_counter()
            with runtime.training_matmuls(device):  # every code timed with the matmul precision training uses
                rows += PART_FUNCTIONS[part](ctx)
            seconds[part] = round(time.perf_counter() - t0, 1)
            print(f"[{part}] {seconds[part]:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(rows)
    headline = ratios(rows)
    for key, value in headline.items():
        print(f"{key}: {value:.2f}x")
    table = {"device": name, "torch": torch.__version__, "quick": args.quick, "parts": parts, "seconds": seconds,
             "rows": rows, "ratios": headline}
    out = args.json or Path(tempfile.gettempdir()) / "grokscope-bench-gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1))
    print(f"table: {out}")
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
