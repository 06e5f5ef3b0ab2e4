"""Every public function and method of the package carries type hints (the house style, checked).

Public = named in a module's ``__all__`` (functions, and the public methods of classes there), for
every module of ``groupvit_fast`` that declares one. ``self``/``cls``, ``*args``/``**kwargs`` and
``nn.Module.forward`` overrides of NVlabs' untyped signatures are not exempt: they are typed too.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import groupvit_fast

SKIP_MODULES = ("groupvit_fast.kernels",)  # Triton's @jit functions take untyped kernel arguments


def _public_modules():
    for info in pkgutil.walk_packages(groupvit_fast.__path__, "groupvit_fast."):
        if info.name.startswith(SKIP_MODULES) or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional dependency (e.g. tensorboard, webdataset) is not installed
            continue
        if hasattr(module, "__all__"):
            yield module


def _missing(fn, owner: str) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    missing = [
        f"{owner}({name})"
        for name, p in sig.parameters.items()
        if name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
    ]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append(f"{owner} -> return")
    return missing


def untyped_public_callables() -> list[str]:
    missing = []
    for module in _public_modules():
        for name in module.__all__:
            obj = getattr(module, name, None)
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                missing += _missing(obj, f"{module.__name__}.{name}")
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                for attr, member in vars(obj).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if inspect.isfunction(member):
                        missing += _missing(member, f"{module.__name__}.{name}.{attr}")
    return sorted(set(missing))


def test_every_public_function_and_method_is_typed():
    missing = untyped_public_callables()
    assert not missing, f"{len(missing)} untyped: " + ", ".join(missing)
