"""Lazy package attributes (PEP 562), as transformers' ``_LazyModule``: a package lists where each public name
lives and imports that module on first access, so importing the package imports nothing heavy (torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, names: Mapping[str, str], public: Iterable[str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each public name to its relative module
    (``".models"``); ``submodules`` are also reachable as attributes. A loaded name is cached in the package's
    globals, so ``__getattr__`` runs once per name."""
    subs = frozenset(submodules)
    public = tuple(public)

    def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562's name)
        module = importlib.import_module(package)
        if name in subs:
            return importlib.import_module(f".{name}", package)
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where, package), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(vars(importlib.import_module(package))) | set(public))

    return __getattr__, __dir__
