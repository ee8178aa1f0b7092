"""torch.compile against eager on the CPU, for each family at its micro size, in one run.

For the gpt and the trm (micro preset, the micro natural dataset, the trainer's own thread count): the median time
of the grokscope trainer step eager and compiled (after warm-up, timed in alternating rounds), the compile time
(the first compiled call less the first eager one), the speed ratio, and the number of steps after which compiling
has paid for itself. The verdict column says whether it pays within the family's micro budget (its ``max_steps``).

    python benchmarks/bench_compile_cpu.py [--rounds 15] [--quick]

Run it with nothing else on the machine: two torch processes on two cores slow each other 5-10x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# A cold compile, as a user's first run sees it: a fresh inductor cache, the FX graph cache off (a warm cache makes
# later runs compile in under a second; the break-even below is the cold, worst case).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="grokscope-inductor-")
os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import trainer_step_fn  # noqa: E402
from grokscope import api  # noqa: E402
from grokscope.training.runspec import RunSpec  # noqa: E402


def first_call(step) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def paired_medians(eager, compiled, warmup: int, rounds: int, per_round: int = 10) -> tuple[float, float]:
    """Median seconds per step of each, timed in alternating rounds of ``per_round`` steps, so that a slow spell of
    a shared machine lands on both alike."""
    for _ in range(warmup):
        eager()
        compiled()
    times = {eager: [], compiled: []}
    for _ in range(rounds):
        for step in (eager, compiled):
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            times[step].append((time.perf_counter() - t0) / per_round)
    return statistics.median(times[eager]), statistics.median(times[compiled])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="alternating rounds of 10 steps each")
    ap.add_argument("--quick", action="store_true", help="few repeats: check the script, not the speed")
    args = ap.parse_args()
    warmup, rounds = (2, 2) if args.quick else (10, args.rounds)
    root = Path(tempfile.mkdtemp(prefix="grokscope-bench-compile-"))
    api.build_data(root / "micro", preset="micro")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print("\n| family | eager ms/step | compiled ms/step | speed ratio | compile s | pays after (steps) | micro budget "
          "| verdict |\n|---|---|---|---|---|---|---|---|")
    for family in ("gpt", "trm"):
        budget = RunSpec.build(root / "micro", "-", family, "micro").train["max_steps"]
        eager_step = trainer_step_fn(family, "micro", root / "micro", "cpu", False, [])
        compiled_step = trainer_step_fn(family, "micro", root / "micro", "cpu", True, [])
        first_eager, first = first_call(eager_step), first_call(compiled_step)
        eager, compiled = paired_medians(eager_step, compiled_step, warmup, rounds)
        compile_s = max(0.0, first - first_eager)
        gain = eager - compiled
        pays = compile_s / gain if gain > 0 else float("inf")
        verdict = "pays" if pays < budget else "does not pay"
        print(f"| {family} | {1e3 * eager:.2f} | {1e3 * compiled:.2f} | {eager / compiled:.2f}x | {compile_s:.1f} | "
              f"{pays:,.0f} | {budget:,} | {verdict} |")


if __name__ == "__main__":
    main()
