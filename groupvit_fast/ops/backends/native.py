"""The compiled backends from csrc/: ``cpu`` (fused, multithreaded C++) and ``cuda`` (CUDA C++).

Both are kernels of the same native ops, ``assign_attention_forward_native``,
``assign_attention_backward_native`` and ``gumbel_noise_native``, whose schemas are written once in
``csrc/op_schemas.h`` and registered by ``groupvit_fast._C`` per dispatch key
(``TORCH_LIBRARY_IMPL(groupvit_fast, CPU | CUDA, ...)``). Facts of the build (instruction set, the
CUDA kernels' group limit) are read from the extension's ``build_info()``, not copied here.

What each guarantees (csrc/cpu/assign_kernels_impl.h, csrc/cuda/assign_attention_kernels.cu):

* fp32, fp16 and bf16 inputs (any strides), fp32 compute, outputs in the input dtype; hard mode
  merges by a segmented sum (no ``[G, N]`` matrix); the backward recomputes logits, noise and
  assignment from ``q, k, v, out, r`` and the seed.
* In-kernel noise follows ``groupvit_fast/reference/philox.py``: the uniform draw is bit-exact,
  ``-log(-log(u))`` agrees with the NumPy oracle to about 1e-6 (a single-precision log).
* ``cpu``: bitwise independent of the thread count (chunking depends on the shapes only; chunk
  partial sums are reduced in a fixed order). AVX2+FMA kernels when the CPU has them, else a
  baseline build (``GROUPVIT_FAST_CPU_ISA=baseline`` forces it).
* ``cuda``: G <= 512 (the ``[G, 32]`` logits tiles live in shared memory); the per-group sums use
  fp32 atomics, so their last bits may change from run to run.
* Non-finite inputs give what the dense formula ``R @ v`` gives: a NaN softmax column makes every
  output of its (batch, head) NaN; a non-finite ``v[n, d]`` reaches ``out[g, d]`` of every group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ... import _extension
from ..backend import (
    AssignBackend,
    AssignInputs,
    AssignParams,
    Availability,
    BackwardOutputs,
    ForwardOutputs,
    NoiseShape,
    Tensor,
    backward_outputs_like,
    forward_outputs_like,
)

_fakes_registered = False


def _register_fakes() -> None:
    """Fake (meta) implementations of the native ops, for torch.compile / opcheck of the raw ops."""
    global _fakes_registered
    if _fakes_registered:
        return
    _fakes_registered = True

    @torch.library.register_fake("groupvit_fast::assign_attention_forward_native")
    def _(q, k, v, noise, seed, offset, num_heads, scale, hard, gumbel, tau, sum_assign, eps, return_attn):
        return forward_outputs_like(q, k, num_heads, return_attn)

    @torch.library.register_fake("groupvit_fast::assign_attention_backward_native")
    def _(grad_out, q, k, v, out, r, noise, seed, offset, num_heads, scale, hard, gumbel, tau, sum_assign, eps):
        return backward_outputs_like(q, k, v)

    @torch.library.register_fake("groupvit_fast::gumbel_noise_native")
    def _(like, shape, seed, offset):
        return like.new_empty(shape, dtype=torch.float32)


def native_ops():
    """``torch.ops.groupvit_fast`` with the native ops loaded (raises if the extension is not)."""
    if _extension.load_extension() is None:
        raise RuntimeError(f"the compiled backends are unavailable: {_extension.unavailable_reason()}")
    _register_fakes()
    return torch.ops.groupvit_fast


class _NativeBackend(AssignBackend):
    need_cuda = False

    def availability(self) -> Availability:
        status = _extension.availability(need_cuda=self.need_cuda)
        if status.usable and self.need_cuda and not torch.cuda.is_available():
            return Availability("absent", "no CUDA device is visible")
        return status

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, noise: Tensor | None, seed: int, offset: int, params: AssignParams
    ) -> ForwardOutputs:
        # the schema's scalars are the math's, in order, then return_attn (csrc/op_schemas.h)
        return native_ops().assign_attention_forward_native(
            q, k, v, noise, seed, offset, *params.math().values(), params.return_attn
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
        return native_ops().assign_attention_backward_native(
            grad_out, q, k, v, out, r, noise, seed, offset, *params.math().values()
        )

    def gumbel_noise(self, shape: NoiseShape, seed: int, offset: int, device: torch.device) -> Tensor:
        like = torch.empty(0, device=device)
        return native_ops().gumbel_noise_native(like, list(shape), seed, offset)


class CpuBackend(_NativeBackend):
    name = "cpu"
    devices = ("cpu",)


def extension_facts() -> dict[str, str]:
    """The ``key=value`` facts of the loaded extension's ``build_info()`` (empty when not loaded)."""
    if _extension.load_extension() is None:
        return {}
    text = native_ops().build_info()
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


def cpu_isas() -> list[str]:
    """The CPU kernel copies this build and CPU can run, best first (e.g. ``["avx2", "baseline"]``)."""
    return extension_facts().get("cpu_isas", "").split("|") if _extension.load_extension() is not None else []


def set_cpu_isa(isa: str) -> str:
    """Make the CPU kernel copy ``isa`` (``"auto"``, ``"baseline"``, ``"avx2"``, ``"avx512"``) the one
    every later ``cpu`` call runs; return the name of the copy chosen before. Raises ``ValueError``
    for a name that is unknown or that this CPU cannot run."""
    return native_ops().set_cpu_isa(isa)


@contextlib.contextmanager
def use_cpu_isa(isa: str) -> Iterator[str]:
    """Run the block on the CPU kernel copy ``isa`` (see :func:`set_cpu_isa`); yields its name."""
    before = set_cpu_isa(isa)
    try:
        yield extension_facts()["cpu_isa"]
    finally:
        set_cpu_isa(before)


class CudaBackend(_NativeBackend):
    name = "cuda"
    devices = ("cuda",)
    need_cuda = True

    @property
    def max_groups(self) -> int | None:
        """The CUDA kernels' G limit (``kMaxGroups``: the [G, 32] logits tiles live in shared memory)."""
        value = extension_facts().get("cuda_max_groups")
        return int(value) if value is not None else None

    def not_supported_reasons(self, inputs: AssignInputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        limit = self.max_groups
        if limit is not None and inputs.groups > limit:
            reasons.append(f"G = {inputs.groups} groups > {limit} (the logits tile lives in shared memory)")
        return reasons
