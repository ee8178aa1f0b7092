"""Typed config groups, presets and ``--set key=value`` overrides.

Every config is a dataclass whose fields have a type, a default and a comment. ``problems()`` lists every invalid
field at once (the CLI prints one line per problem); unknown override keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from grokscope.errors import GrokscopeError


def _coerce(value: str, annotation: Any, key: str) -> Any:
    """Parse a command-line string into the type a dataclass field declares."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        annotation = args[0]
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={value!r} is not a boolean (use true/false)")
    if annotation is int:
        try:
            as_float = float(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not an integer") from None
        if not as_float.is_integer():
            raise ValueError(f"{key}={value!r} is not an integer")
        return int(as_float)
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not a number") from None
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """Split ``["a=1", "b=x"]`` (or comma-joined ``"a=1,b=x"``) into a dict; malformed items are errors."""
    out: dict[str, str] = {}
    problems = []
    for pair in pairs or []:
        for item in pair.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                problems.append(f"override {item!r} is not key=value (example: --set num_entities=300)")
                continue
            key, value = item.split("=", 1)
            out[key.strip()] = value.strip()
    if problems:
        raise GrokscopeError(problems)
    return out


def apply_overrides(cfg: Any, overrides: dict[str, Any], what: str = "config") -> Any:
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied; all bad keys/values reported together."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes, problems = {}, []
    for key, value in overrides.items():
        if key not in fields:
            problems.append(f"unknown {what} key {key!r}; valid keys: {', '.join(sorted(fields))}")
            continue
        try:
            changes[key] = _coerce(value, hints[key], key) if isinstance(value, str) else value
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise GrokscopeError(problems)
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], what: str = "config") -> Any:
    """Build ``cls`` from a dict (e.g. loaded YAML/JSON); unknown keys are errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GrokscopeError([f"unknown {what} key {k!r}; valid keys: {', '.join(sorted(names))}" for k in unknown])
    return cls(**data)
