"""The Triton backend: kernels/assign_attention.py, installed as ``groupvit_fast.kernels.assign_attention``.

Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` set before the kernels are imported it also runs
on CPU tensors in Triton's interpreter (slow: for tests). The kernels are imported lazily, on the
first availability check, so ``import groupvit_fast`` never imports triton.

Noise guarantee: for a ``(seed, offset)`` the kernels draw exactly the Philox uniforms of
``groupvit_fast.reference.philox`` (bit for bit in ``u``); ``e = -log(-log(u))`` agrees with it up
to the last bits of the device's ``log``.
"""

from __future__ import annotations

import importlib
import logging
import os

import torch

from ..backend import (
    USABLE,
    AssignBackend,
    AssignInputs,
    AssignParams,
    Availability,
    BackwardOutputs,
    ForwardOutputs,
    NoiseShape,
    Tensor,
)

logger = logging.getLogger("groupvit_fast")

_KERNELS = "groupvit_fast.kernels.assign_attention"


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def _kernels():
    return importlib.import_module(_KERNELS)


_broken_logged: set[str] = set()


def _log_broken_once(status: Availability) -> None:
    reason = str(status.reason)
    if reason not in _broken_logged:
        _broken_logged.add(reason)
        logger.error("groupvit_fast: triton backend BROKEN: %s", status.reason)


class TritonBackend(AssignBackend):
    name = "triton"

    @property
    def max_groups(self) -> int:
        """The kernels' G limit (``MAX_GROUPS``: the [G_PAD, BLOCK_N] logits tile of all groups stays on chip)."""
        return _kernels().MAX_GROUPS

    @property
    def devices(self) -> tuple[str, ...]:  # type: ignore[override]
        # CPU only through the interpreter, decided when the kernels were decorated (at import).
        try:
            interpret = _kernels().INTERPRET
        except Exception:  # noqa: BLE001 (unimportable kernels: fall back to the variable)
            interpret = _interpret_env()
        return ("cuda", "cpu") if interpret else ("cuda",)

    def availability(self) -> Availability:
        try:
            import triton  # noqa: F401
        except ImportError as err:
            return Availability("absent", f"triton is not installed ({err})")
        try:
            kernels = _kernels()
        except Exception as err:  # noqa: BLE001 (a triton too old, or our kernels broken: report, never crash)
            status = Availability("broken", f"the Triton kernels failed to import ({type(err).__name__}: {err})")
            _log_broken_once(status)
            return status
        if kernels.INTERPRET != _interpret_env():
            return Availability(
                "absent",
                f"TRITON_INTERPRET changed after the Triton kernels were imported (they "
                f"were decorated with interpret={kernels.INTERPRET}); set it before "
                "importing groupvit_fast",
            )
        if not kernels.INTERPRET and not torch.cuda.is_available():
            return Availability(
                "absent",
                "no CUDA device is visible (TRITON_INTERPRET=1 runs the kernels on CPU in Triton's interpreter)",
            )
        return USABLE

    def not_supported_reasons(self, inputs: AssignInputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if not reasons and inputs.groups > self.max_groups:  # the limit is read from the importable kernels
            reasons.append(
                f"G={inputs.groups} groups > {self.max_groups} (the logits tile of all groups must fit on chip)"
            )
        return reasons

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, noise: Tensor | None, seed: int, offset: int, params: AssignParams
    ) -> ForwardOutputs:
        return _kernels().assign_attention_forward(
            q, k, v, return_attn=params.return_attn, noise=noise, seed=seed, offset=offset, **params.math()
        )

    def backward(
        self,
        grad_out: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        out: Tensor,
        r: Tensor,
        noise: Tensor | None,
        seed: int,
        offset: int,
        params: AssignParams,
    ) -> BackwardOutputs:
        return _kernels().assign_attention_backward(
            grad_out, q, k, v, out, r, noise=noise, seed=seed, offset=offset, **params.math()
        )

    def gumbel_noise(self, shape: NoiseShape, seed: int, offset: int, device: torch.device) -> Tensor:
        return _kernels().gumbel_noise(tuple(shape), seed, offset, device=device)
