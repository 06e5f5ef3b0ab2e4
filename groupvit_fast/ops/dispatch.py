"""Backend choice for assignment attention: explicit, inspectable, overridable.

``backend="auto"`` takes the first backend of the device's priority list that supports the call;
a named backend that cannot run raises ``ValueError`` with its reasons. The environment variable
``GROUPVIT_FAST_BACKEND`` (read at each call) overrides ``"auto"`` globally. When ``auto`` passes
over a preferred backend, the fallback is logged once (logger ``groupvit_fast``), with the reasons.
``python -m groupvit_fast.info`` prints the same table.
"""

from __future__ import annotations

import logging
import os

import torch

from .backend import AssignBackend, AssignInputs
from .backends.native import CpuBackend, CudaBackend
from .backends.reference import ReferenceBackend
from .backends.triton import TritonBackend

__all__ = ["BACKENDS", "PRIORITY", "ENV_VAR", "get_backend", "select_backend", "backend_table"]

logger = logging.getLogger("groupvit_fast")

ENV_VAR = "GROUPVIT_FAST_BACKEND"

BACKENDS: dict[str, AssignBackend] = {
    b.name: b for b in (TritonBackend(), CudaBackend(), CpuBackend(), ReferenceBackend())
}

#: Best first, per device type. Triton leads on CUDA tensors (autotuned, visible to torch.compile);
#: the compiled CUDA C++ kernels are next; the reference always works.
PRIORITY: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpu", "reference"),
}

_logged_fallbacks: set[tuple] = set()


def get_backend(name: str) -> AssignBackend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend: unknown backend {name!r}; choose one of {['auto', *BACKENDS]}") from None


def _log_fallback_once(inputs: AssignInputs, chosen: str, skipped: dict[str, list[str]]) -> None:
    key = (inputs.device_type, inputs.dtype, chosen, tuple((k, tuple(v)) for k, v in skipped.items()))
    if key in _logged_fallbacks:
        return
    _logged_fallbacks.add(key)
    why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in skipped.items())
    logger.warning("assign_attention on %s/%s falls back to backend %r (%s)",
                   inputs.device_type, inputs.dtype, chosen, why)


def _select(device_type, dtype, batch, groups, tokens, channels, num_heads, has_noise, requested) -> str:
    inputs = AssignInputs(device_type, dtype, batch, groups, tokens, channels, num_heads, has_noise)
    if requested == "auto":
        requested = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if requested != "auto":
        reasons = get_backend(requested).not_supported_reasons(inputs)
        if reasons:
            raise ValueError(f"backend: {requested!r} cannot run this call: {'; '.join(reasons)}")
        return requested
    skipped: dict[str, list[str]] = {}
    for name in PRIORITY.get(device_type, ("reference",)):
        reasons = BACKENDS[name].not_supported_reasons(inputs)
        if not reasons:
            if skipped:
                _log_fallback_once(inputs, name, skipped)
            return name
        skipped[name] = reasons
    raise ValueError(f"backend: no backend can run this call: {skipped}")


# torch.compile calls this once at trace time and bakes the answer into the graph (it depends only
# on static facts), so dispatch and its one-time logging never cause a graph break.
_select_traced = torch.compiler.assume_constant_result(_select)


def select_backend(inputs: AssignInputs, requested: str = "auto") -> str:
    """The backend name ``assign_attention`` uses for ``inputs`` (raises like the op would)."""
    args = (inputs.device_type, inputs.dtype, inputs.batch, inputs.groups, inputs.tokens, inputs.channels,
            inputs.num_heads, inputs.has_noise, requested)
    if torch.compiler.is_compiling():
        return _select_traced(*args)
    return _select(*args)


def backend_table() -> list[tuple[str, str, str]]:
    """``(name, devices, status)`` per backend: 'usable', 'not available: <why>' or 'BROKEN: <why>'."""
    return [(name, ",".join(backend.devices) or "any", backend.availability().describe())
            for name, backend in BACKENDS.items()]
