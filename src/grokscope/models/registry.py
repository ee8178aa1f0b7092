"""Build a model of either family from a named config, any field overridden, sized from a dataset."""

from __future__ import annotations

import dataclasses

from grokscope.config import apply_overrides
from grokscope.errors import GrokscopeError
from grokscope.models.gpt import GPT, GPT_CONFIGS, GPTConfig
from grokscope.models.trm import TRM, TRM_CONFIGS, TRMConfig

FAMILIES = {"gpt": (GPTConfig, GPT_CONFIGS, GPT), "trm": (TRMConfig, TRM_CONFIGS, TRM)}


def model_config(family: str, name: str, d_vocab: int, seq_len: int = 5, overrides: dict | None = None):
    """Resolve family + named config + overrides into a validated config dataclass."""
    if family not in FAMILIES:
        raise GrokscopeError(f"unknown model family {family!r}; choose gpt or trm")
    cls, named, _ = FAMILIES[family]
    if name not in named:
        raise GrokscopeError(f"unknown {family} config {name!r}; choose one of {', '.join(named)}")
    length = {"n_ctx": seq_len} if family == "gpt" else {"seq_len": seq_len}
    cfg = cls(d_vocab=d_vocab, **length, **named[name])
    if overrides:
        cfg = apply_overrides(cfg, overrides, what=f"{family} model")
    problems = cfg.problems()
    if problems:
        raise GrokscopeError(problems)
    return cfg


def build_model(cfg):
    for cls, _, model_cls in FAMILIES.values():
        if isinstance(cfg, cls):
            return model_cls(cfg)
    raise TypeError(f"not a model config: {cfg!r}")


def config_from_dict(family: str, data: dict):
    cls = FAMILIES[family][0]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
