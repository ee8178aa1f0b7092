"""Which comparisons a comparison run gets right: exact match by the gap between the two values and by label.

    python docs/calibration/comparison_gaps.py RUN [--step N|last] [--probes test_inferred_iid,test_inferred_ood]

A model that reads each entity's exact value and compares is right at every gap; one that has learned a coarse
ordering of the entities (from the comparisons it saw) is right on far-apart values and near chance on near ones,
and rarely answers "equal" (gap 0). `docs/calibration.md` §10 reads the micro gpt with it. Prints one line per
probe set: n, exact match, then exact match (n) per gap and per label (0 smaller, 1 equal, 2 larger).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from grokscope import runs
from grokscope.analysis.run_analysis import run_dataset
from grokscope.data.encoding import encode
from grokscope.models.readout import answers


def gap_table(run: Path, step: str, probes: list[str]) -> list[str]:
    model = runs.load_model(run, int(step) if step.isdigit() else step)[0]
    ds = run_dataset(run)
    if ds.task != "comparison":
        raise SystemExit(f"{run}: not a comparison run")
    out = []
    for probe in probes:
        rows = ds.probe(probe)
        right = answers(model, model.prompt(encode(ds, rows).to(model.device))).cpu().numpy() == \
            ds.vocab.label_id(rows[:, 1], rows[:, 5])
        gap = np.abs(rows[:, 3] - rows[:, 4])
        by_gap = " ".join(f"{g}:{right[gap == g].mean():.2f}({(gap == g).sum()})" for g in np.unique(gap))
        by_label = " ".join(f"{k}:{right[rows[:, 5] == k].mean():.2f}({(rows[:, 5] == k).sum()})"
                            for k in range(3) if (rows[:, 5] == k).any())
        out.append(f"{probe}: n {len(rows)}, exact match {right.mean():.3f}\n  by |v1 - v2|: {by_gap}\n"
                   f"  by label: {by_label}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--step", default="last")
    parser.add_argument("--probes", default="test_inferred_iid,test_inferred_ood")
    args = parser.parse_args()
    print("\n".join(gap_table(args.run, args.step, args.probes.split(","))))


if __name__ == "__main__":
    main()
