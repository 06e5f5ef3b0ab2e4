"""What every case's runner is: one (case, implementation) turned into a zero-argument call to
time, with what the harnesses measure and check around it; and which implementations can run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from groupvit_fast.ops import BACKENDS, backend_usage

#: Modules an implementation needs beyond torch (``impl_unavailable`` names the missing one).
_NEEDS = {"hf": ("transformers",), "loader": ("omegaconf", "webdataset", "timm")}


@dataclass
class Runner:
    """What the harnesses time, measure and check for one (case, implementation)."""

    #: the timed call (one op call, or one model forward / training step)
    fn: Callable[[], Any]
    #: images per call (model cases), for images/s
    images: int | None = None
    #: ``() -> list of tensors`` to compare against a reference (None: not comparable)
    outputs: Callable[[], list[torch.Tensor]] | None = None
    #: storages that are inputs or parameters: excluded from "extra" saved bytes
    owned_storages: set[int] = field(default_factory=set)
    #: runs a forward under grad for the saved-tensor count (None: nothing is saved, e.g. eval)
    forward_for_saved: Callable[[], Any] | None = None
    #: the assignment-attention backend the call reached (model cases: as dispatch chose it)
    backend: str | None = None
    #: ``() -> float``: the error column when it is not a relative error of ``outputs`` (segmentation:
    #: the fraction of pixels whose label differs from the reference pipeline's), and what it is
    error: Callable[[], float] | None = None
    error_vs: str | None = None


def impl_unavailable(impl: str, device: str) -> str | None:
    """Why ``impl`` cannot run on ``device`` here (None: it can)."""
    if impl in BACKENDS and impl != "reference":
        backend = BACKENDS[impl]
        reason = backend.unavailable_reason()
        if reason is None and device not in backend.devices:
            reason = f"backend {impl!r} runs on {backend.devices}, not {device}"
        return reason
    for module in _NEEDS.get(impl, ()):
        try:
            importlib.import_module(module)
        except ImportError as err:
            return f"{module} is not installed ({err})"
    return None


def dispatched_backends(probe: Callable[[], Any]) -> str | None:
    """The assignment-attention backends dispatch picked during ``probe()`` (comma-separated;
    None: none). Usage is not counted inside compiled graphs: probe with an eager module."""
    before = backend_usage()
    probe()
    return ",".join(sorted(k for k, n in backend_usage().items() if n > before.get(k, 0))) or None


def fresh_compile(fn, **kwargs):
    """``torch.compile(fn)`` after clearing Dynamo's caches, so that every case compiles its own
    static graph instead of piling entries on one code object until the recompile limit makes
    Dynamo silently fall back to eager."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False, **kwargs)
