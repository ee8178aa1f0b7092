"""Named hook points with scoped lifetimes (TransformerLens semantics, our own small implementation).

Every activation an analysis may read or patch passes through a ``HookPoint`` (an identity module). ``HookedModule``
names them from their module path (``blocks.3.hook_resid_post``, ``stage.H1_commit``), and offers:

- ``hooks(fwd_hooks)``: a context manager that attaches ``(name_or_filter, fn)`` pairs and always removes them,
  also when the body raises. ``fn(tensor, hook)`` may return a replacement tensor (patching) or None (reading).
- ``run_with_cache(*args, names_filter=...)``: caches only the activations asked for.

With nothing attached a hook point is a plain module call that returns its input; the idle cost is measured by
``benchmarks/bench_model.py`` (target: at most 3% of a training step).
"""

from __future__ import annotations

import contextlib
from typing import Union
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], Union[torch.Tensor, None]]
NameFilter = Union[str, Iterable[str], Callable[[str], bool], None]


class HookPoint(nn.Module):
    """Identity module marking a named activation."""

    def __init__(self):
        super().__init__()
        self.name: str = ""
        self._fns: list[HookFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fns:  # the idle fast path: one attribute check
            return x
        for fn in self._fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x

    def add(self, fn: HookFn) -> None:
        self._fns.append(fn)

    def remove(self, fn: HookFn) -> None:
        self._fns.remove(fn)

    @property
    def has_hooks(self) -> bool:
        return bool(self._fns)

    def extra_repr(self) -> str:
        return self.name


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _name: True
    if isinstance(names, str):
        return lambda name: name == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda name: name in wanted


class HookedModule(nn.Module):
    """Mixin for models with hook points; call ``setup_hooks()`` at the end of ``__init__``."""

    hook_dict: dict[str, HookPoint]

    def setup_hooks(self) -> None:
        self.hook_dict = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    @property
    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    def _resolve(self, names: NameFilter) -> list[HookPoint]:
        if isinstance(names, str) and names not in self.hook_dict:
            raise KeyError(f"no hook point named {names!r}; see model.hook_names")
        match = _matcher(names)
        return [hp for name, hp in self.hook_dict.items() if match(name)]

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[NameFilter, HookFn]] = ()) -> Iterator["HookedModule"]:
        """Attach hooks for the duration of the ``with`` block; everything added is removed on exit."""
        added: list[tuple[HookPoint, HookFn]] = []
        try:
            for names, fn in fwd_hooks:
                for hp in self._resolve(names):
                    hp.add(fn)
                    added.append((hp, fn))
            yield self
        finally:
            for hp, fn in reversed(added):
                hp.remove(fn)

    def run_with_cache(self, *args, names_filter: NameFilter = None, detach: bool = True, **kwargs):
        """Run the model and return ``(output, cache)`` with only the activations ``names_filter`` selects."""
        cache: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        with self.hooks([(names_filter, save)]):
            out = self(*args, **kwargs)
        return out, cache
