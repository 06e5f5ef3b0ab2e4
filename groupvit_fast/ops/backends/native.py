"""The compiled backends from csrc/: ``cpu`` (fused, multithreaded C++) and ``cuda`` (CUDA C++).

Both are kernels of the same native ops, registered by ``groupvit_fast._C`` per dispatch key
(``TORCH_LIBRARY_IMPL(groupvit_fast, CPU | CUDA, ...)``)::

    groupvit_fast::assign_attention_forward_native(Tensor q, Tensor k, Tensor v, Tensor? noise,
        int seed, int offset, int num_heads, float scale, bool hard, bool gumbel, float tau,
        bool sum_assign, float eps, bool return_attn) -> (Tensor out, Tensor r, Tensor hard, Tensor soft)
    groupvit_fast::assign_attention_backward_native(Tensor grad_out, Tensor q, Tensor k, Tensor v,
        Tensor out, Tensor r, Tensor? noise, int seed, int offset, int num_heads, float scale,
        bool hard, bool gumbel, float tau, bool sum_assign, float eps) -> (Tensor dq, Tensor dk, Tensor dv)
    groupvit_fast::gumbel_noise_native(Tensor like, int[] shape, int seed, int offset) -> Tensor
"""

from __future__ import annotations

import torch

from ... import _extension
from ..backend import AssignBackend, AssignParams


class _NativeBackend(AssignBackend):
    need_cuda = False

    def unavailable_reason(self) -> str | None:
        reason = _extension.unavailable_reason(need_cuda=self.need_cuda)
        if reason is None and self.need_cuda and not torch.cuda.is_available():
            return "no CUDA device is visible"
        return reason

    def forward(self, q, k, v, noise, seed, offset, params: AssignParams):
        return torch.ops.groupvit_fast.assign_attention_forward_native(
            q, k, v, noise, seed, offset, params.num_heads, params.scale, params.hard, params.gumbel, params.tau,
            params.sum_assign, params.eps, params.return_attn)

    def backward(self, grad_out, q, k, v, out, r, noise, seed, offset, params: AssignParams):
        return torch.ops.groupvit_fast.assign_attention_backward_native(
            grad_out, q, k, v, out, r, noise, seed, offset, params.num_heads, params.scale, params.hard,
            params.gumbel, params.tau, params.sum_assign, params.eps)

    def gumbel_noise(self, shape, seed, offset, device):
        like = torch.empty(0, device=device)
        return torch.ops.groupvit_fast.gumbel_noise_native(like, list(shape), seed, offset)


class CpuBackend(_NativeBackend):
    name = "cpu"
    devices = ("cpu",)


class CudaBackend(_NativeBackend):
    name = "cuda"
    devices = ("cuda",)
    need_cuda = True
