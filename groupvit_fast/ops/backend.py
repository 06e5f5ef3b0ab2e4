"""What every backend declares (``Backend``, shared by ``assign_attention`` and ``multi_head_attention``),
and what every assignment-attention backend implements (xformers-style).

A backend says which inputs it can take (``not_supported_reasons``), whether it is built and
usable on this machine at all (``availability``: usable, absent, or broken), and implements the three entry points of
the op's contract (docs/assign_op.md): the fused forward, the recomputing backward, and the
Gumbel noise its kernels draw for a ``(seed, offset)`` (exposed so tests can check that the
forward and the backward saw the same noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import torch

from .._availability import USABLE, Availability

__all__ = [
    "Backend",
    "ForwardOutputs",
    "BackwardOutputs",
    "NoiseShape",
    "AssignParams",
    "AssignInputs",
    "AssignBackend",
    "Availability",
    "USABLE",
    "forward_outputs_like",
    "backward_outputs_like",
]


Tensor = torch.Tensor
#: ``(out [B,G,C], r [B,h,G] float32, hard [B,h,G,N], soft [B,h,G,N])``: what a backend's forward returns.
ForwardOutputs = tuple[Tensor, Tensor, Tensor, Tensor]
#: ``(dq, dk, dv)``: what a backend's backward returns.
BackwardOutputs = tuple[Tensor, Tensor, Tensor]
#: ``(B, h, G, N)``: the shape of the Gumbel noise.
NoiseShape = tuple[int, int, int, int]


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

    def math(self) -> dict[str, Any]:
        """The seven arguments of the op's math (docs/assign_op.md, "Math"), by name and in the native
        schemas' order: what every backend's entry points take (``return_attn`` only asks for read-outs)."""
        return {name: getattr(self, name) for name in self._fields if name != "return_attn"}


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


class _StaticFacts(Protocol):
    """What every op's ``inputs`` dataclass holds at least (``AssignInputs``, ``AttentionInputs``)."""

    @property
    def device_type(self) -> str: ...

    @property
    def dtype(self) -> torch.dtype: ...


InputsT = TypeVar("InputsT", bound=_StaticFacts)


class Backend(Generic[InputsT]):
    """One way to run one op: what it declares, for the op's ``Dispatcher`` (``dispatch.py``).

    Subclasses set ``name``, ``devices`` and ``dtypes``, override ``availability`` when they need
    something this machine may lack, and extend ``not_supported_reasons`` with their own limits.
    """

    name: str = "?"
    #: device types this backend can run on (empty: any)
    devices: tuple[str, ...] = ()
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)

    def availability(self) -> Availability:
        """Usable, absent or broken on this machine, with the reason (shown by ``info``)."""
        return USABLE

    def unavailable_reason(self) -> str | None:
        """``None`` when built and usable on this machine, else why not."""
        status = self.availability()
        return None if status.usable else status.reason

    def not_supported_reasons(self, inputs: InputsT) -> list[str]:
        """Every reason this backend cannot run ``inputs`` (empty list: it can)."""
        reasons = []
        status = self.availability()
        if not status.usable:
            reasons.append(str(status.reason))
        if self.devices and inputs.device_type not in self.devices:
            reasons.append(f"device type {inputs.device_type!r} not in {self.devices}")
        if inputs.dtype not in self.dtypes:
            reasons.append(f"dtype {inputs.dtype} not in {self.dtypes}")
        return reasons


class AssignBackend(Backend[AssignInputs]):
    """An ``assign_attention`` backend. Subclasses set ``name`` and override the methods they support."""

    #: True for a backend that is plain PyTorch under autograd: the public function then calls
    #: ``eager`` instead of the custom op (one path for every backend, chosen by this property).
    runs_eagerly: bool = False

    def eager(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        noise: torch.Tensor | None,
        seed: torch.Tensor | None,
        params: AssignParams,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(out, hard, soft)`` computed in plain PyTorch under autograd (``runs_eagerly`` backends);
        ``seed`` is the ``[seed, offset]`` tensor when the caller gave a seed, else None."""
        raise NotImplementedError(f"backend {self.name!r} has no eager path")

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, noise: Tensor | None, seed: int, offset: int, params: AssignParams
    ) -> ForwardOutputs:
        """Returns ``(out [B,G,C] in q's dtype, r [B,h,G] float32, hard [B,h,G,N], soft [B,h,G,N])``;
        ``hard``/``soft`` are empty tensors unless ``params.return_attn``."""
        raise NotImplementedError(f"backend {self.name!r} has no forward")

    def backward(
        self,
        grad_out: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        r: torch.Tensor,
        noise: torch.Tensor | None,
        seed: int,
        offset: int,
        params: AssignParams,
    ) -> BackwardOutputs:
        """Returns ``(dq, dk, dv)`` in the input dtype, recomputing logits, noise and assignment."""
        raise NotImplementedError(f"backend {self.name!r} has no backward")

    def gumbel_noise(self, shape: NoiseShape, seed: int, offset: int, device: torch.device) -> Tensor:
        """The float32 ``[B, H, G, N]`` noise this backend's kernels draw for ``(seed, offset)``."""
        raise NotImplementedError(f"backend {self.name!r} draws no in-kernel noise")


def forward_outputs_like(
    q: torch.Tensor, k: torch.Tensor, num_heads: int, return_attn: bool, *, zeros: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward's outputs ``(out [B,G,C], r [B,h,G] float32, hard, soft)`` as new tensors on q's device,
    the maps ``[B,h,G,N]`` with ``return_attn`` else empty: the one description of the output shapes,
    used by every fake (meta) implementation and by the empty-batch path."""
    make = q.new_zeros if zeros else q.new_empty
    b, g, _c = q.shape
    attn_shape = (b, num_heads, g, k.shape[1]) if return_attn else (0,)
    return make(q.shape), make((b, num_heads, g), dtype=torch.float32), make(attn_shape), make(attn_shape)


def backward_outputs_like(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, zeros: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` shaped like ``(q, k, v)``: the backward's fake and empty-batch outputs."""
    if zeros:
        return q.new_zeros(q.shape), k.new_zeros(k.shape), v.new_zeros(v.shape)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
