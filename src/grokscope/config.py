"""The one config path: typed dataclasses loaded strictly from dicts, and the one ``--set`` grammar.

Every config (data, model, train, transfer, study) is a dataclass. ``from_dict`` builds one from a dict (YAML, JSON)
and rejects unknown keys at every level of nesting, naming the full path of the key. ``--set`` items have one
grammar for every command: ``section.key=value``, where a bare ``key=value`` is shorthand for the one section of
the command that has such a field. Values are coerced to the field's declared type; NaN and infinity are refused.
Every problem is collected and reported at once, one line each.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from grokscope.errors import GrokscopeError

_NONE_WORDS = ("none", "null")
# A comma starts a new item only when what follows looks like ``key=`` (values such as "0.5,0.9" keep commas).
_ITEM_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.]*\s*=)")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


INT_LIMIT = 2 ** 63 - 1  # every integer setting fits a signed 64-bit integer (torch seeds, numpy sizes)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` (a command-line string or a YAML scalar) as the type ``annotation`` declares; ValueError if not."""
    annotation, optional = _unwrap_optional(annotation)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise ValueError(f"{key} may not be empty")
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={value!r} is not a boolean (use true or false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r} is not an integer")
        try:  # exact for integer text (a float would round 2^63-1), else through float (1e3 is 1000)
            number = int(str(value).strip()) if str(value).strip().lstrip("+-").isdigit() else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not an integer") from None
        if isinstance(number, float) and (not math.isfinite(number) or not number.is_integer()):
            raise ValueError(f"{key}={value!r} is not an integer")
        if abs(number) > INT_LIMIT:
            raise ValueError(f"{key}={value!r} is over the limit of 2^63-1 = {INT_LIMIT}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{key}={value!r} is not a finite number")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key} must be a string, not a {type(value).__name__}")
        return str(value)
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (Any,)
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
        return [coerce(v, item_type, f"{key}[{i}]") if item_type is not Any else v for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping (key: value), not {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and typing.get_origin(args[1]) is dict:  # e.g. per_regime: {regime: {key: value}}
            for k, v in value.items():
                if not isinstance(v, dict):
                    raise ValueError(f"{key}.{k} must be a mapping (key: value), not {v!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key)
    return value


def field_key(field: dataclasses.Field) -> str:
    """The key a field has in dicts and YAML (``metadata={"key": "from"}`` for names Python reserves)."""
    return field.metadata.get("key", field.name)


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys, missing required keys and bad values are errors, at every
    level of nesting, each named by its path (``study.models[0].sett``)."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise GrokscopeError(f"{where} must be a mapping of keys to values, not {type(data).__name__}")
    fields = {field_key(f): f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    problems, kwargs = [], {}
    for key in data:
        if key not in fields:
            problems.append(f"unknown key {where}.{key}; valid keys: {', '.join(sorted(fields))}")
    for key, f in fields.items():
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{where}.{key} is missing")
            continue
        try:
            kwargs[f.name] = _build_value(data[key], hints[f.name], f"{where}.{key}")
        except GrokscopeError as exc:
            problems.extend(exc.problems)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise GrokscopeError(problems)
    return cls(**kwargs)


def _build_value(value: Any, annotation: Any, where: str) -> Any:
    inner, optional = _unwrap_optional(annotation)
    if value is None and optional:
        return None
    origin = typing.get_origin(inner)
    if dataclasses.is_dataclass(inner):
        return from_dict(inner, value, where)
    if origin is list:
        (item_type,) = typing.get_args(inner) or (Any,)
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, not {value!r}")
        if dataclasses.is_dataclass(item_type):
            out, problems = [], []
            for i, item in enumerate(value):
                try:
                    out.append(from_dict(item_type, item, f"{where}[{i}]"))
                except GrokscopeError as exc:
                    problems.extend(exc.problems)
            if problems:
                raise GrokscopeError(problems)
            return out
    return coerce(value, annotation, where)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as a plain dict with its YAML keys (the inverse of ``from_dict``); fields derived after loading
    (``init=False``) are not part of the file."""
    out = {}
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, list):
            value = [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[field_key(f)] = value
    return out


# --------------------------------------------------------------------------------------------- the --set grammar
def repeated(items: list) -> list:
    """The items a list names more than once, each once, in order (a study's ``[last, last]``, a grid's ``1,1``)."""
    return list(dict.fromkeys(x for i, x in enumerate(items) if x in items[:i]))


def split_set_items(items: list[str] | None) -> list[tuple[str, str]]:
    """``["lr=1e-3", "a=1,b=x"]`` -> ``[("lr", "1e-3"), ("a", "1"), ("b", "x")]``; malformed items are errors."""
    out, problems = [], []
    if isinstance(items, str):
        items = [items]
    for item in items or []:
        if not isinstance(item, str):
            problems.append(f"--set {item!r} is not text of the form key=value (example: --set train.lr=1e-3)")
            continue
        for part in _ITEM_SPLIT.split(item):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                problems.append(f"--set {part!r} is not key=value (example: --set train.lr=1e-3)")
                continue
            out.append((key.strip(), value.strip()))
    if problems:
        raise GrokscopeError(problems)
    return out


def route_sets(items: list[tuple[str, Any]], sections: dict[str, type | None]) -> dict[str, dict[str, Any]]:
    """Assign each ``key=value`` to a section: ``section.key`` names it, a bare key goes to the one section whose
    dataclass has that field. ``sections`` maps section names to their dataclass (None: accept any key, checked
    later). Returns {section: {key: raw value}}; unknown or ambiguous keys are errors, all reported at once."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in sections}
    problems = []
    known = {name: ({field_key(f) for f in dataclasses.fields(cls)} if cls is not None else None)
             for name, cls in sections.items()}
    for key, value in items:
        section, dot, name = key.partition(".")
        if dot and section in sections:
            if known[section] is not None and name not in known[section]:
                elsewhere = [s for s, names in known.items() if names is not None and name in names]
                if elsewhere:  # e.g. a setting a later version moved to another section (train -> model)
                    problems.append(f"{name!r} is not a {section} setting but a {elsewhere[0]} one: --set "
                                    f"{elsewhere[0]}.{name}={value}")
                else:
                    problems.append(f"unknown {section} key {name!r} in --set {key}; valid keys: "
                                    f"{', '.join(sorted(known[section]))}")
                continue
            routed[section][name] = value
            continue
        owners = [s for s, names in known.items() if names is not None and key in names]
        if len(owners) == 1:
            routed[owners[0]][key] = value
        elif len(owners) > 1:
            problems.append(f"--set {key} is ambiguous: qualify it as " + " or ".join(f"{s}.{key}" for s in owners))
        else:
            valid = "; ".join(f"{s}.{{{','.join(sorted(names))}}}" if names is not None else f"{s}.KEY"
                              for s, names in known.items())
            problems.append(f"unknown --set key {key!r}; valid keys: {valid}")
    if problems:
        raise GrokscopeError(problems)
    return routed


def apply_overrides(cfg: Any, overrides: dict[str, Any], what: str = "config") -> Any:
    """A copy of dataclass ``cfg`` with ``overrides`` applied and coerced; every bad key or value reported."""
    fields = {field_key(f): f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes, problems = {}, []
    for key, value in overrides.items():
        if key not in fields:
            problems.append(f"unknown {what} key {key!r}; valid keys: {', '.join(sorted(fields))}")
            continue
        try:
            changes[fields[key].name] = coerce(value, hints[fields[key].name], f"{what}.{key}")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise GrokscopeError(problems)
    return dataclasses.replace(cfg, **changes)


def check(cfg: Any) -> Any:
    """Raise every problem ``cfg.problems()`` lists, at once; return ``cfg``."""
    problems = cfg.problems()
    if problems:
        raise GrokscopeError(problems)
    return cfg
