"""Backend choice for groupvit_fast's ops: explicit, inspectable, overridable (xformers-style).

One :class:`Dispatcher` per op (``assign_attention``, ``multi_head_attention``) holds that op's
backends, a best-first priority list per device type and an environment variable:

* ``backend="auto"`` takes the first backend of the device's priority list that supports the call;
  when it passes over a preferred one, the fallback is logged once (logger ``groupvit_fast``) with
  every skipped backend's reasons;
* a named backend that cannot run raises ``ValueError`` with its reasons;
* the environment variable (read at each call) overrides ``"auto"`` globally;
* ``usage()`` counts which backend served each call, and ``table()`` is what
  ``python -m groupvit_fast.info`` prints.

Dispatch depends only on static facts of the call (an ``inputs`` dataclass of device type, dtype and
sizes); under ``torch.compile`` it is evaluated once at trace time
(``torch.compiler.assume_constant_result``), so neither the choice nor its logging breaks the graph.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from .backend import AssignBackend, AssignInputs
from .backends.native import CpuBackend, CudaBackend
from .backends.reference import ReferenceBackend
from .backends.triton import TritonBackend

__all__ = ["Dispatcher", "ASSIGN", "BACKENDS", "PRIORITY", "ENV_VAR", "get_backend", "select_backend", "backend_table"]

logger = logging.getLogger("groupvit_fast")

#: (op, device type, dtype, chosen, skipped reasons) already logged in this process
_logged_fallbacks: set[tuple] = set()


class Dispatcher:
    """The backends of one op and how a call picks one (see the module docstring)."""

    def __init__(
        self,
        op: str,
        backends: Mapping[str, object],
        priority: Mapping[str, tuple[str, ...]],
        env_var: str,
        inputs_type: type,
        fallback: str,
    ) -> None:
        self.op = op
        self.backends = dict(backends)
        self.priority = dict(priority)
        self.env_var = env_var
        self.inputs_type = inputs_type
        self.fallback = fallback  # the priority list of a device type not listed
        self._usage: dict[str, int] = {}
        # Read once here: select() then builds its flat tuple with plain getattr calls, which every
        # supported Dynamo traces (torch 2.11's cannot trace dataclasses.astuple: it deep-copies).
        self._field_names = tuple(field.name for field in dataclasses.fields(inputs_type))

        def select_fields(requested: str, *fields) -> str:  # a plain function: dynamo marks it constant
            return self._select_fields(requested, *fields)

        self._select_traced = torch.compiler.assume_constant_result(select_fields)

    def get(self, name: str) -> Any:
        try:
            return self.backends[name]
        except KeyError:
            raise ValueError(
                f"backend: unknown backend {name!r} of {self.op}; choose one of {['auto', *self.backends]}"
            ) from None

    def _log_fallback_once(self, inputs, chosen: str, skipped: dict[str, list[str]]) -> None:
        key = (self.op, inputs.device_type, inputs.dtype, chosen, tuple((k, tuple(v)) for k, v in skipped.items()))
        if key in _logged_fallbacks:
            return
        _logged_fallbacks.add(key)
        why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in skipped.items())
        logger.warning(
            "%s on %s/%s falls back to backend %r (%s)", self.op, inputs.device_type, inputs.dtype, chosen, why
        )

    def _select_fields(self, requested: str, *fields) -> str:
        inputs = self.inputs_type(*fields)
        if requested == "auto":
            requested = os.environ.get(self.env_var, "auto").strip().lower() or "auto"
        if requested != "auto":
            reasons = self.get(requested).not_supported_reasons(inputs)
            if reasons:
                raise ValueError(f"backend: {requested!r} cannot run this call: {'; '.join(reasons)} ({self.op})")
            return requested
        skipped: dict[str, list[str]] = {}
        for name in self.priority.get(inputs.device_type, (self.fallback,)):
            reasons = self.backends[name].not_supported_reasons(inputs)
            if not reasons:
                if skipped:
                    self._log_fallback_once(inputs, name, skipped)
                return name
            skipped[name] = reasons
        raise ValueError(f"backend: no {self.op} backend can run this call: {skipped}")

    def select(self, inputs: Any, requested: str = "auto") -> str:
        """The backend name a call with ``inputs`` uses (raises like the op would)."""
        if not isinstance(requested, str):
            raise TypeError(f"backend must be a string, got {type(requested).__name__}")
        fields = tuple(getattr(inputs, name) for name in self._field_names)
        if torch.compiler.is_compiling():
            return self._select_traced(requested, *fields)
        return self._select_fields(requested, *fields)

    def count(self, name: str) -> None:
        """Record that ``name`` served a call (not while tracing: a compiled call is counted by its graph)."""
        if not torch.compiler.is_compiling():
            self._usage[name] = self._usage.get(name, 0) + 1

    def usage(self) -> dict[str, int]:
        """Calls served per backend since import, e.g. ``{'cpu': 12}``; a snapshot copy."""
        return dict(self._usage)

    def table(self) -> list[tuple[str, str, str]]:
        """``(name, devices, status)`` per backend: 'usable', 'not available: <why>' or 'BROKEN: <why>'."""
        return [
            (name, ",".join(backend.devices) or "any", backend.availability().describe())
            for name, backend in self.backends.items()
        ]


ENV_VAR = "GROUPVIT_FAST_BACKEND"

#: Best first, per device type. Triton leads on CUDA tensors (autotuned; behind the opaque custom op, as the others);
#: the compiled CUDA C++ kernels are next; the reference always works.
PRIORITY: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpu", "reference"),
}

#: The dispatcher of ``assign_attention``.
ASSIGN = Dispatcher(
    "assign_attention",
    {b.name: b for b in (TritonBackend(), CudaBackend(), CpuBackend(), ReferenceBackend())},
    PRIORITY,
    ENV_VAR,
    AssignInputs,
    fallback="reference",
)
BACKENDS: dict[str, AssignBackend] = ASSIGN.backends


def get_backend(name: str) -> AssignBackend:
    return ASSIGN.get(name)


def select_backend(inputs: AssignInputs, requested: str = "auto") -> str:
    """The backend name ``assign_attention`` uses for ``inputs`` (raises like the op would)."""
    return ASSIGN.select(inputs, requested)


def backend_table() -> list[tuple[str, str, str]]:
    """``(name, devices, status)`` per ``assign_attention`` backend."""
    return ASSIGN.table()
