"""The saturation-relative budget (``train.sat_multiple``): a run goes on to a multiple of its own saturation step,
measured as the findings measure it, so that a stop rule can never end a run before the findings can judge it."""

from __future__ import annotations

import json

import pytest

from grokscope.training.config import TrainConfig, parse_rule
from grokscope.training.loop import _apply_rule, sat_multiple_due, stop_text
from grokscope.training.state import LoopState


class Notes:
    def __init__(self):
        self.lines = []

    def note(self, text):
        self.lines.append(text)


def rows_with(train: list[float], ood: list[float] | None = None, every: int = 100) -> list[dict]:
    ood = ood or [0.0] * len(train)
    return [{"step": i * every, "train_acc": a, "test_inferred_ood": o} for i, (a, o) in enumerate(zip(train, ood))]


def run_rules(cfg: TrainConfig, rows: list[dict]) -> tuple[int | None, LoopState]:
    """Feed evaluations one by one as the loop does; the step at which the run would stop."""
    loop, rule, notes = LoopState(), parse_rule(cfg.stop_when) if cfg.stop_when else None, Notes()
    for i in range(len(rows)):
        if _apply_rule(rule, loop, rows[:i + 1], cfg, rows[i]["step"], notes):
            return rows[i]["step"], loop
    return None, loop


def test_due_step_is_the_multiple_of_the_kept_saturation_step():
    # 0.99 first touched at step 200 but not kept (a lucky evaluation); kept from step 400 on
    rows = rows_with([0.5, 0.9, 0.99, 0.95, 0.99, 0.995, 0.99, 1.0])
    assert sat_multiple_due(rows, 3.0) == 1200
    assert sat_multiple_due(rows, 2.5) == 1000
    assert sat_multiple_due(rows_with([0.5, 0.98, 0.98]), 3.0) is None  # never saturated: no due step


def test_sat_multiple_alone_stops_at_the_multiple_and_not_before():
    train = [0.2, 0.99, 0.99, 0.99] + [1.0] * 10  # t_sat = 100
    step, loop = run_rules(TrainConfig(sat_multiple=3.0), rows_with(train))
    assert step == 300 and loop.stop_reason == "3 x t_sat"
    step, _ = run_rules(TrainConfig(sat_multiple=3.0), rows_with([0.2, 0.9, 0.98] * 4))
    assert step is None  # an unsaturated run is never stopped by its multiple: max_steps ends it


def test_a_stop_rule_cannot_end_a_run_before_its_multiple():
    # OOD is up from the first evaluation: the rule alone would stop at step 100 (patience 2)
    train, ood = [0.2] + [0.99] * 11, [0.95] * 12  # t_sat = 100
    cfg = TrainConfig(stop_when="test_inferred_ood>=0.9", stop_patience=2)
    assert run_rules(cfg, rows_with(train, ood))[0] == 100
    step, loop = run_rules(TrainConfig(stop_when="test_inferred_ood>=0.9", stop_patience=2, sat_multiple=5.0),
                           rows_with(train, ood))
    assert step == 500 and loop.stop_reason == "stop rule test_inferred_ood>=0.9 and 5 x t_sat"


def test_a_rule_that_fails_late_keeps_the_run_going_past_the_multiple():
    train = [0.2] + [0.99] * 11  # t_sat = 100
    ood = [0.0] * 8 + [0.95] * 4  # the rule holds only from step 800 on
    step, _ = run_rules(TrainConfig(stop_when="test_inferred_ood>=0.9", stop_patience=2, sat_multiple=3.0),
                        rows_with(train, ood))
    assert step == 900


def test_stop_text_names_what_stopped_the_run():
    assert stop_text(TrainConfig(stop_when="train_acc>=0.9")) == "stop rule train_acc>=0.9"
    assert stop_text(TrainConfig(sat_multiple=3)) == "3 x t_sat"


@pytest.mark.parametrize("bad", ["sat_multiple=-1"])
def test_negative_multiple_is_refused(cli, tmp_path, smoke_data, bad):
    code, _, err = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set", bad,
                       "--out", tmp_path / "r")
    assert code == 2 and "sat_multiple" in err and "Traceback" not in err and not (tmp_path / "r").exists()


def test_a_run_with_a_multiple_it_never_reaches_ends_on_max_steps(cli, tmp_path, smoke_data):
    code, out, _ = cli("train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--out", tmp_path / "r",
                       "--set", "max_steps=30,eval_every=10,sat_multiple=3")
    assert code == 0, out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["final_step"] == 30 and summary["stop_reason"] == "max_steps"


def test_in_the_trainer_a_held_rule_waits_for_the_multiple(cli, tmp_path, smoke_data):
    """The smoke gpt never saturates in 60 steps: with the multiple, a stop rule that holds from step 20 does not end
    it; without, the rule ends it at step 30 (patience 2)."""
    base = ["train", "--data", smoke_data, "--preset", "smoke", "--quiet", "--set",
            "max_steps=60,eval_every=10,stop_when=step>=20,stop_patience=2,threads=1"]
    assert cli(*base, "--out", tmp_path / "rule")[0] == 0
    assert json.loads((tmp_path / "rule" / "summary.json").read_text())["final_step"] == 30
    assert cli(*base, "--set", "sat_multiple=3", "--out", tmp_path / "both")[0] == 0
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert summary["final_step"] == 60 and summary["stop_reason"] == "max_steps"
