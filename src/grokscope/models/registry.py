"""The model families: name -> (config dataclass, named configs, model class). ``register_family`` adds one.

This is the only place that knows which families exist; everything else works through ``ModelFamily``.
"""

from __future__ import annotations

from dataclasses import dataclass

from grokscope.config import apply_overrides, check, from_dict
from grokscope.errors import GrokscopeError
from grokscope.models.family import ModelFamily
from grokscope.models.gpt import GPT, GPT_CONFIGS, GPTConfig
from grokscope.models.trm import TRM, TRM_CONFIGS, TRMConfig


@dataclass(frozen=True)
class Family:
    name: str
    # A dataclass with d_vocab, for_dataset(d_vocab, seq_len), for_precision(p), problems(), draws_random() (does
    # a training forward pass draw random numbers, e.g. dropout) and SIZED_FROM_DATA (the fields the dataset and
    # the precision set, which a comparison of recipes skips).
    config_cls: type
    named_configs: dict[str, dict]
    model_cls: type[ModelFamily]


FAMILIES: dict[str, Family] = {}


def register_family(name: str, config_cls: type, named_configs: dict[str, dict], model_cls: type[ModelFamily]) -> None:
    """Make a model family available to every command (``--model NAME``) and to ``load_model``."""
    if not issubclass(model_cls, ModelFamily):
        raise TypeError(f"{model_cls.__name__} must derive from ModelFamily")
    missing = [m for m in ("for_dataset", "for_precision", "problems", "draws_random", "SIZED_FROM_DATA")
               if not hasattr(config_cls, m)]
    if missing:
        raise TypeError(f"{config_cls.__name__} must define {', '.join(missing)} (see models/registry.py: Family)")
    FAMILIES[name] = Family(name, config_cls, dict(named_configs), model_cls)


register_family("gpt", GPTConfig, GPT_CONFIGS, GPT)
register_family("trm", TRMConfig, TRM_CONFIGS, TRM)


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise GrokscopeError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def model_config(family_name: str, name: str, d_vocab: int, seq_len: int = 5, overrides: dict | None = None):
    """Resolve family + named config + overrides into a validated config dataclass sized for a dataset."""
    fam = family(family_name)
    if name not in fam.named_configs:
        raise GrokscopeError(f"unknown {family_name} config {name!r}; choose one of {', '.join(fam.named_configs)}")
    cfg = fam.config_cls(**fam.named_configs[name]).for_dataset(d_vocab, seq_len)
    if overrides:
        cfg = apply_overrides(cfg, overrides, what="model")
    return check(cfg)


def family_of(cfg) -> Family:
    for fam in FAMILIES.values():
        if type(cfg) is fam.config_cls:
            return fam
    raise TypeError(f"not a registered model config: {type(cfg).__name__}")


def build_model(cfg) -> ModelFamily:
    return family_of(cfg).model_cls(cfg)


def config_from_dict(family_name: str, data: dict, where: str = "model config"):
    """A run's recorded model config; unknown keys are errors (a hand-edited typo must not pass silently)."""
    return check(from_dict(family(family_name).config_cls, data, where))

