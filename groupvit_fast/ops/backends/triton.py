"""The Triton backend (kernels/assign_attention.py, installed as ``groupvit_fast.kernels``)."""

from __future__ import annotations

import os

from ..backend import AssignBackend


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


class TritonBackend(AssignBackend):
    name = "triton"
    devices = ("cuda",)

    def unavailable_reason(self) -> str | None:
        try:
            import triton  # noqa: F401
        except ImportError as err:
            return f"triton is not installed ({err})"
        return "the Triton kernels are not written yet"
