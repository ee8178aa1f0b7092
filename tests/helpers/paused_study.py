"""Run ``grokscope`` with a pause planted at one point of a study, for the kill test: when the study reaches the
point, this writes the marker file and sleeps, so the test's SIGKILL lands exactly there (never a race with a
stage that finishes faster than the test can look).

    python tests/helpers/paused_study.py POINT MARKER study --preset smoke --out DIR

POINT: data, train_before_checkpoint, train_after_checkpoint, analyze, transfer, report. Nothing is changed in the
package: the pause wraps one of its functions in this process only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _pause(marker: Path):
    marker.write_text("paused\n")
    time.sleep(3600)


def plant(point: str, marker: Path) -> None:
    from grokscope import runs
    from grokscope.analysis import run_analysis
    from grokscope.data import store
    from grokscope.reporting import build

    def wrap(module, name, when):
        original = getattr(module, name)

        def paused(*args, **kwargs):
            if when(*args, **kwargs):
                _pause(marker)
            return original(*args, **kwargs)
        setattr(module, name, paused)

    def checkpointed(run, *_a, **_k) -> bool:
        return bool(runs.list_checkpoints(Path(run)))

    if point == "data":  # the dataset is built and about to be written
        wrap(store, "save", lambda *a, **k: True)
    elif point == "train_before_checkpoint":  # the run folder holds its config, no checkpoint yet
        wrap(runs, "save_checkpoint", lambda run, *a, **k: not Path(run).name.startswith("ft_")
             and not checkpointed(run))
    elif point == "train_after_checkpoint":
        wrap(runs, "save_checkpoint", lambda run, *a, **k: not Path(run).name.startswith("ft_") and checkpointed(run))
    elif point == "analyze":  # an analysis table is about to be merged into the run's analysis folder
        wrap(run_analysis, "merge_table", lambda *a, **k: True)
    elif point == "transfer":  # a fine-tune has a checkpoint and is about to write the next
        wrap(runs, "save_checkpoint", lambda run, *a, **k: Path(run).name.startswith("ft_") and checkpointed(run))
    elif point == "report":  # the report is being written into its temporary folder
        wrap(build, "_write_report", lambda *a, **k: True)
    else:
        raise SystemExit(f"unknown pause point {point!r}")


if __name__ == "__main__":
    plant(sys.argv[1], Path(sys.argv[2]))
    from grokscope.cli import main

    main(sys.argv[3:])
