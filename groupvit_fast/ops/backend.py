"""What every assignment-attention backend declares and implements (xformers-style).

A backend says which inputs it can take (``not_supported_reasons``), whether it is built and
usable on this machine at all (``unavailable_reason``), and implements the three entry points of
the op's contract (docs/assign_op.md): the fused forward, the recomputing backward, and the
Gumbel noise its kernels draw for a ``(seed, offset)`` (exposed so tests can check that the
forward and the backward saw the same noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = ["AssignParams", "AssignInputs", "AssignBackend"]


class AssignParams(NamedTuple):
    """The non-tensor arguments of one call, after defaults are resolved (scale is a number)."""

    num_heads: int
    scale: float
    hard: bool
    gumbel: bool
    tau: float
    sum_assign: bool
    eps: float
    return_attn: bool


@dataclass(frozen=True)
class AssignInputs:
    """What dispatch knows about a call: static facts only, so it is safe under torch.compile."""

    device_type: str
    dtype: torch.dtype
    batch: int
    groups: int
    tokens: int
    channels: int
    num_heads: int
    has_noise: bool


class AssignBackend:
    """Base class. Subclasses set ``name`` and override the methods they support."""

    name: str = "?"
    #: device types this backend can run on
    devices: tuple[str, ...] = ()
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)

    def unavailable_reason(self) -> str | None:
        """``None`` when built and usable on this machine, else why not (shown by ``info``)."""
        return None

    def not_supported_reasons(self, inputs: AssignInputs) -> list[str]:
        """Every reason this backend cannot run ``inputs`` (empty list: it can)."""
        reasons = []
        unavailable = self.unavailable_reason()
        if unavailable is not None:
            reasons.append(unavailable)
        if inputs.device_type not in self.devices:
            reasons.append(f"device type {inputs.device_type!r} not in {self.devices}")
        if inputs.dtype not in self.dtypes:
            reasons.append(f"dtype {inputs.dtype} not in {self.dtypes}")
        return reasons

    def forward(self, q, k, v, noise, seed: int, offset: int, params: AssignParams):
        """Returns ``(out [B,G,C] in q's dtype, r [B,h,G] float32, hard [B,h,G,N], soft [B,h,G,N])``;
        ``hard``/``soft`` are empty tensors unless ``params.return_attn``."""
        raise NotImplementedError(f"backend {self.name!r} has no forward")

    def backward(self, grad_out, q, k, v, out, r, noise, seed: int, offset: int, params: AssignParams):
        """Returns ``(dq, dk, dv)`` in the input dtype, recomputing logits, noise and assignment."""
        raise NotImplementedError(f"backend {self.name!r} has no backward")

    def gumbel_noise(self, shape: tuple[int, int, int, int], seed: int, offset: int, device) -> torch.Tensor:
        """The float32 ``[B, H, G, N]`` noise this backend's kernels draw for ``(seed, offset)``."""
        raise NotImplementedError(f"backend {self.name!r} draws no in-kernel noise")
