"""The one config path: ``--set`` grammar and coercion, strict dict loading at every level, and a property test
that every ``--set`` value either gives a valid config or is refused with one line per problem."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grokscope import api
from grokscope.config import apply_overrides, coerce, from_dict, route_sets, split_set_items
from grokscope.data.config import DataConfig
from grokscope.errors import GrokscopeError
from grokscope.models.gpt import GPTConfig
from grokscope.studies.spec import load_spec
from grokscope.training.config import TrainConfig
from grokscope.training.runspec import RunSpec


def test_coerce_types_and_refusals():
    assert coerce("3", int, "k") == 3 and coerce("1e3", int, "k") == 1000 and coerce(" 2.5 ", float, "k") == 2.5
    assert coerce("true", bool, "k") is True and coerce("off", bool, "k") is False
    assert coerce("none", int | None, "k") is None and coerce("x", str, "k") == "x"
    for bad, kind in (("nan", float), ("inf", float), ("-inf", float), ("1.5", int), ("abc", int), ("nan", int),
                      ("maybe", bool), ("none", int)):
        with pytest.raises(ValueError):
            coerce(bad, kind, "k")


def test_split_set_items_keeps_commas_inside_values():
    assert split_set_items(["lr=1e-3,train.seed=2", "milestone_thresholds=0.5,0.9"]) == [
        ("lr", "1e-3"), ("train.seed", "2"), ("milestone_thresholds", "0.5,0.9")]
    with pytest.raises(GrokscopeError, match="not key=value"):
        split_set_items(["lr"])


def test_route_sets_qualified_bare_and_errors():
    sections = {"train": TrainConfig, "model": GPTConfig}
    routed = route_sets([("lr", "1"), ("model.d_model", "64"), ("n_layers", "2"), ("train.seed", "3")], sections)
    assert routed == {"train": {"lr": "1", "seed": "3"}, "model": {"d_model": "64", "n_layers": "2"}}
    with pytest.raises(GrokscopeError) as err:
        route_sets([("colour", "red"), ("model.colour", "red")], sections)
    assert len(err.value.problems) == 2 and all("colour" in p for p in err.value.problems)


@dataclasses.dataclass
class Inner:
    a: int = 1


@dataclasses.dataclass
class Outer:
    inner: Inner
    items: list[Inner] = dataclasses.field(default_factory=list)


def test_from_dict_rejects_unknown_keys_at_every_level():
    assert from_dict(Outer, {"inner": {"a": "2"}, "items": [{"a": 3}]}).items[0].a == 3
    with pytest.raises(GrokscopeError) as err:
        from_dict(Outer, {"inner": {"b": 1}, "items": [{"a": 1}, {"sett": 2}], "extra": 0}, "study")
    problems = err.value.problems
    assert any("study.inner.b" in p for p in problems) and any("study.items[1].sett" in p for p in problems)
    assert any("study.extra" in p for p in problems)
    with pytest.raises(GrokscopeError, match="must be a mapping"):
        from_dict(Outer, ["not", "a", "dict"], "study")


def test_apply_overrides_reports_every_problem():
    with pytest.raises(GrokscopeError) as err:
        apply_overrides(TrainConfig(), {"lr": "nan", "seed": "x", "colour": "red"}, "train")
    assert len(err.value.problems) == 3


def test_nested_study_typo_names_the_key(tmp_path):
    text = (tmp_path / "s.yaml")
    base = open(api.__file__.replace("api.py", "presets/smoke.yaml")).read()
    text.write_text(base.replace("set: {max_steps: 60, eval_every: 20}", "sett: {max_steps: 60}"))
    with pytest.raises(GrokscopeError) as err:
        load_spec(str(text))
    assert err.value.problems == ["unknown key study.models[0].sett; valid keys: family, name, per_regime, preset, "
                                  "regimes, set"]


# --------------------------------------------------------------------------------------------- property tests
TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
DATA_KEYS = [f.name for f in dataclasses.fields(DataConfig)]
VALUES = st.one_of(st.integers(-5, 10 ** 6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["nan", "inf", "true", "none", "", "1e-3", "0.5,0.9", "ce", "bf16", "x=y", "-0"]),
                   st.text(max_size=6))


def _valid_or_refused(fn) -> None:
    try:
        cfg = fn()
    except GrokscopeError as exc:
        assert exc.problems and all(p and "\n" not in p for p in exc.problems)
        return
    for f in dataclasses.fields(cfg):  # a config that was accepted holds only finite numbers
        value = getattr(cfg, f.name)
        assert not (isinstance(value, float) and not math.isfinite(value)), f.name


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(TRAIN_KEYS + ["model.d_model", "model.n_heads", "colour"]), value=VALUES)
def test_train_set_values_parse_or_are_refused(key, value):
    _valid_or_refused(lambda: RunSpec.build("d", "o", "gpt", "smoke", [f"{key}={value}"]).configs(d_vocab=77)[0])


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(DATA_KEYS + ["data.phi", "bogus"]), value=VALUES)
def test_data_set_values_parse_or_are_refused(key, value):
    _valid_or_refused(lambda: api.data_config("smoke", None, None, [f"{key}={value}"]).validate())


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(["data.phi", "train.lr", "model.d_model", "transfer.max_steps", "train.seed",
                            "data.num_entities", "typo.x"]), value=VALUES)
def test_study_set_values_parse_or_are_refused(key, value):
    _valid_or_refused(lambda: load_spec("smoke", [f"{key}={value}"]).data)


def test_run_spec_round_trips_and_reads_a_spec_an_older_version_wrote():
    spec = RunSpec.build("d", "o", "trm", "micro", ["lr=2e-3", "q_halt_weight=0.5"])
    assert spec.model["q_halt_weight"] == 0.5 and "q_halt_weight" not in spec.train  # the trm's own setting
    assert RunSpec.from_dict(spec.to_dict()) == spec
    old = spec.to_dict()  # 0.1.0 wrote the trm's settings under train
    old["train"] = {**old["train"], **{k: old["model"].pop(k) for k in ("q_halt_weight", "puzzle_lr",
                                                                       "puzzle_weight_decay")}}
    assert RunSpec.from_dict(old) == spec
    train_cfg, model_cfg = RunSpec.from_dict(old).configs(d_vocab=50)
    assert model_cfg.q_halt_weight == 0.5 and train_cfg.lr == 2e-3
    with pytest.raises(GrokscopeError, match="unknown key 'colour'"):
        RunSpec.from_dict({**spec.to_dict(), "colour": 1})
