"""The trainer's step against an earlier commit's, in the same run: seconds per optimiser step of the user-facing
path (``api.train``), for a micro gpt run alone, and for the micro study's training stage: a stack of three micro gpt
runs and a stack of three micro trm runs (the loop backend), the study's two training jobs, which its two workers run
side by side. The stage's step is the slower job's (each is timed on one thread with the other core idle, so memory
traffic between the two is left out).

Each case trains to N and to 3N steps with evaluation only at the ends; the step time is (t(3N) - t(N)) / 2N, which
leaves out setup and the final evaluation. The baseline runs this same script in a subprocess on a git worktree of
``--baseline`` (default: the commit before the one training step, eb3bbbc), alternating with this checkout, one
thread each, in the order ABBA BAAB...: each side goes first in half the repeats, so a machine that speeds up or
slows down over the run (a neighbour, the CPU's clock) does not favour the side that always runs first. Prints the
median per case, each measurement, and the ratio (baseline / this checkout: above 1 means this checkout is faster).

    python benchmarks/bench_train_step.py [--quick] [--baseline COMMIT] [--repeats 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {"gpt alone": ("gpt", 1), "gpt stack of 3": ("gpt", 3), "trm stack of 3": ("trm", 3)}
STAGE = ("gpt stack of 3", "trm stack of 3")  # the micro study's training stage: these two jobs side by side


def time_case(data: Path, family: str, runs: int, steps: int, work: Path) -> float:
    """Seconds to train ``runs`` stacked runs of ``family`` for ``steps`` steps (one process, one thread)."""
    from grokscope import api
    from grokscope.training.runspec import RunSpec

    shutil.rmtree(work, ignore_errors=True)
    sets = [f"train.max_steps={steps}", f"train.eval_every={steps}", "train.threads=1", "train.compile=false"]
    specs = [RunSpec.build(data, work / f"r{k}", family, "micro", [*sets, f"train.seed={k}"], quiet=True)
             for k in range(runs)]
    t0 = time.perf_counter()
    api.train(spec=specs if runs > 1 else specs[0], **({"backend": "loop"} if runs > 1 else {}))
    return time.perf_counter() - t0


def child(args) -> None:
    """One measurement in this process: prints {case: seconds per step}."""
    data, out = Path(args.data), Path(args.work)
    result = {}
    for name, (family, runs) in CASES.items():
        short = time_case(data, family, runs, args.steps, out / "short")
        long = time_case(data, family, runs, 3 * args.steps, out / "long")
        result[name] = (long - short) / (2 * args.steps)
    result["micro study training stage"] = max(result[name] for name in STAGE)
    print(json.dumps(result))


def measure(src: Path, data: Path, steps: int, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "GROKSCOPE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", "--data", str(data), "--work", str(work), "--steps",
                          str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (N 30 instead of 100)")
    parser.add_argument("--baseline", default="eb3bbbc", help="the commit to compare with")
    parser.add_argument("--repeats", type=int, default=4, help="measurements per side (default 4)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    steps = 30 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline],
                       check=True, capture_output=True)
        try:
            from grokscope import api

            api.build_data(tmp / "data", preset="micro")
            times: dict[str, dict[str, list[float]]] = {"baseline": {}, "this": {}}
            sides = (("baseline", baseline / "src"), ("this", ROOT / "src"))
            for rep in range(args.repeats):  # alternating ABBA, so drift in the machine's load hits both alike
                for label, src in (sides if rep % 4 in (0, 3) else sides[::-1]):
                    for case, seconds in measure(src, tmp / "data", steps, tmp / "work").items():
                        times[label].setdefault(case, []).append(seconds)
                print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False,
                           capture_output=True)
    print(f"seconds per optimiser step, median of {args.repeats} (N = {steps}); ratio = {args.baseline} / this")
    for case in [*CASES, "micro study training stage"]:
        old, new = statistics.median(times["baseline"][case]), statistics.median(times["this"][case])
        print(f"  {case:16s} {args.baseline}: {old * 1e3:7.2f} ms   this: {new * 1e3:7.2f} ms   ratio {old / new:.3f}")
        for label in ("baseline", "this"):  # the spread, so a reader sees whether the ratio stands out of the noise
            print(f"    {label:8s} each: " + " ".join(f"{t * 1e3:.1f}" for t in times[label][case]))


if __name__ == "__main__":
    main()
