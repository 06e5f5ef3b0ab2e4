"""Autocast dtypes: the names a user gives a precision, and the autocast context that runs it.

``train.amp_dtype``, ``groupvit-fast eval --autocast``, ``evaluate_segmentation(autocast=...)`` and the
benchmark cases read their choice here, so each accepts the same spellings and refuses the others alike.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_dtype", "autocast_context"]

_BY_NAME: dict[str, torch.dtype | None] = {
    "fp32": None,
    "float32": None,
    "none": None,  # None: fp32, autocast off
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def autocast_dtype(
    choice: str | torch.dtype | bool | None,
    device: torch.device | None = None,
    *,
    key: str = "autocast",
    fp16_needs_cuda: bool = False,
) -> torch.dtype | None:
    """The autocast dtype ``choice`` names: ``None`` (fp32: no autocast), ``torch.bfloat16`` or ``torch.float16``.

    ``choice``: ``None``/``False``/``'fp32'``/``'none'``, ``'bf16'``/``'bfloat16'``, ``'fp16'``/``'float16'``,
    a ``torch.dtype``, or ``'auto'``: bf16 on a CUDA ``device``, fp32 elsewhere. ``ValueError`` (naming
    ``key``) for anything else, and for fp16 off CUDA with ``fp16_needs_cuda`` (the evaluation pipelines:
    CPU autocast in fp16 covers few ops, so the figures would not be fp16 ones).
    """
    dtype = _parse(choice, device, key)
    if fp16_needs_cuda and dtype == torch.float16 and (device is None or device.type != "cuda"):
        raise ValueError(f"{key}='fp16' needs a CUDA device")
    return dtype


def _parse(choice: str | torch.dtype | bool | None, device: torch.device | None, key: str) -> torch.dtype | None:
    if choice is None or choice is False:
        return None
    if isinstance(choice, torch.dtype):
        if choice in (torch.bfloat16, torch.float16):
            return choice
        if choice == torch.float32:
            return None
    elif isinstance(choice, str):
        name = choice.lower()
        if name == "auto":
            return torch.bfloat16 if device is not None and device.type == "cuda" else None
        if name in _BY_NAME:
            return _BY_NAME[name]
    raise ValueError(f"{key} must be auto, bf16, fp16 or fp32, got {choice!r}")


def autocast_context(
    device_type: str, dtype: torch.dtype | None, *, disable_outer: bool = False
) -> contextlib.AbstractContextManager:
    """``torch.autocast(device_type, dtype)``; for ``dtype=None`` nothing (an enclosing autocast stays on),
    or, with ``disable_outer=True``, autocast switched off (a timed fp32 run stays fp32 whatever encloses it)."""
    if dtype is not None:
        return torch.autocast(device_type, dtype=dtype)
    return torch.autocast(device_type, enabled=False) if disable_outer else contextlib.nullcontext()
