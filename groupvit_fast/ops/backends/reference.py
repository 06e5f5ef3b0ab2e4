"""The pure-PyTorch backend, usable everywhere, float64 included.

It ``runs_eagerly``: ``assign_attention(..., backend="reference")`` runs the NVlabs-faithful
``groupvit_fast.reference.assign_attention_reference`` under plain autograd (``eager``), which is
what ``torch.compile(reference)`` baselines compile. The same math also sits behind the custom op's
contract (forward, recomputing backward, Philox noise): used when the op itself is asked for the
reference backend, e.g. by ``torch.library.opcheck`` and the parity tests' ``reference-op`` row.
"""

from __future__ import annotations

import torch

from ...reference.assign_attention import assign_attention_reference
from ...reference.assign_attention_grad import assign_attention_backward_math, assign_attention_forward_math
from ...reference.philox import philox_gumbel_noise
from ..backend import AssignBackend, AssignParams, BackwardOutputs, ForwardOutputs, NoiseShape, Tensor


@torch.library.custom_op("groupvit_fast::philox_gumbel_noise", mutates_args=())
def philox_gumbel_noise_op(like: torch.Tensor, shape: list[int], seed: torch.Tensor) -> torch.Tensor:
    """The documented Philox noise (reference/philox.py) on ``like``'s device. An op, so that
    torch.compile treats the 10-round integer hash as one opaque call rather than inlining it."""
    seed_value, offset = (int(x) for x in seed.tolist())
    b, h, g, n = shape
    return philox_gumbel_noise((b, h, g, n), seed_value, offset, like.device)


@philox_gumbel_noise_op.register_fake
def _(like, shape, seed):
    return like.new_empty(shape, dtype=torch.float32)


class ReferenceBackend(AssignBackend):
    name = "reference"
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    runs_eagerly = True

    def eager(
        self, q: Tensor, k: Tensor, v: Tensor, noise: Tensor | None, seed: Tensor | None, params: AssignParams
    ) -> tuple[Tensor, Tensor, Tensor]:
        # An explicit seed selects the documented Philox noise, the same the fused backends draw for
        # that seed; without one the reference draws torch's own Gumbel noise (sample_gumbel).
        if params.gumbel and noise is None and seed is not None:
            noise = philox_gumbel_noise_op(q.detach(), [q.shape[0], params.num_heads, q.shape[1], k.shape[1]], seed)
        return assign_attention_reference(q, k, v, noise=noise, **params.math())

    @staticmethod
    def _noise(q, noise, seed, offset, params: AssignParams, n_tokens: int):
        if not params.gumbel:
            return None
        if noise is None:
            noise = philox_gumbel_noise((q.shape[0], params.num_heads, q.shape[1], n_tokens), seed, offset, q.device)
        return noise.to(torch.float32)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, noise: Tensor | None, seed: int, offset: int, params: AssignParams
    ) -> ForwardOutputs:
        noise = self._noise(q, noise, seed, offset, params, k.shape[1])
        compute = torch.float64 if q.dtype == torch.float64 else torch.float32
        qc, kc, vc = q.to(compute), k.to(compute), v.to(compute)
        noise_c = None if noise is None else noise.to(compute)
        kwargs = params.math()
        out, r = assign_attention_forward_math(qc, kc, vc, noise=noise_c, **kwargs)
        if params.return_attn:
            _, hard, soft = assign_attention_reference(qc, kc, vc, noise=noise_c, **kwargs)
            # the exact one-hot (no straight-through rounding), as the fused kernels produce it
            if params.hard:
                hard = torch.zeros_like(hard).scatter_(-2, hard.argmax(dim=-2, keepdim=True), 1.0)
            hard, soft = hard.to(q.dtype), soft.to(q.dtype)
        else:
            hard, soft = q.new_empty(0), q.new_empty(0)
        return out.to(q.dtype), r.to(torch.float32), hard, soft

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
        noise = self._noise(q, noise, seed, offset, params, k.shape[1])
        compute = torch.float64 if q.dtype == torch.float64 else torch.float32
        tensors = [t.to(compute) for t in (grad_out, q, k, v, out, r)]
        grads = assign_attention_backward_math(
            *tensors, noise=None if noise is None else noise.to(compute), **params.math()
        )
        dq, dk, dv = (g.to(q.dtype) for g in grads)
        return dq, dk, dv

    def gumbel_noise(self, shape: NoiseShape, seed: int, offset: int, device: torch.device) -> Tensor:
        return philox_gumbel_noise(shape, seed, offset, device)
