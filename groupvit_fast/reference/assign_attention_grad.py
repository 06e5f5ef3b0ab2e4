"""The forward and hand-derived backward of assignment attention, written out in PyTorch.

These two functions are the executable form of docs/assign_op.md ("Math" and "Backward"): the
formulas every fused kernel implements. They are checked against autograd of the NVlabs-faithful
``assign_attention_reference`` with float64 ``gradcheck`` in the tests, so a kernel that agrees
with them agrees with NVlabs.

Unlike the reference, the forward here produces the *exact* one-hot in hard mode (no
``1 - s + s`` rounding) and returns the per-group counts ``r`` that the backward needs: the same
contract as the kernels (save q, k, v, out, r and the noise seed; recompute the rest).
"""

from __future__ import annotations

import torch

__all__ = ["assign_attention_forward_math", "assign_attention_backward_math"]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _assignment(qh, kh, scale, hard, gumbel, tau, noise):
    """z, S and A of the spec, all [B, h, G, N]."""
    z = (qh @ kh.transpose(-2, -1)) * scale
    y = ((z + noise) if gumbel else z) / tau  # tau applies with or without noise (spec)
    s = y.softmax(dim=-2)
    if hard:
        a = torch.zeros_like(s).scatter_(-2, s.argmax(dim=-2, keepdim=True), 1.0)
    else:
        a = s
    return z, s, a


def assign_attention_forward_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(out [B,G,C], r [B,h,G])`` with ``r[g] = sum_n A[g, n]``."""
    d = q.shape[-1] // num_heads
    scale = d**-0.5 if scale is None else scale
    qh, kh, vh = _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads)
    _, _, a = _assignment(qh, kh, scale, hard, gumbel, tau, noise)
    r = a.sum(dim=-1)
    weights = a if sum_assign else a / (r.unsqueeze(-1) + eps)  # R = A / (r + eps)
    return _merge_heads(weights @ vh), r


def assign_attention_backward_math(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    r: torch.Tensor,
    *,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(dq, dk, dv)`` from the saved ``q, k, v, out, r`` (docs/assign_op.md, "Backward")."""
    d = q.shape[-1] // num_heads
    scale = d**-0.5 if scale is None else scale
    qh, kh, vh = _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads)
    d_out, outh = _heads(grad_out, num_heads), _heads(out, num_heads)
    _, s, a = _assignment(qh, kh, scale, hard, gumbel, tau, noise)  # recomputed, never saved

    denom = (r + eps).unsqueeze(-1)
    weights = a if sum_assign else a / denom  # R
    dv = weights.transpose(-2, -1) @ d_out  # dv[n] = sum_g R[g,n] dO[g]
    d_weights = d_out @ vh.transpose(-2, -1)  # dR[g,n] = <dO[g], v_n>
    if sum_assign:
        d_assign = d_weights  # dA = dR
    else:
        delta = (d_out * outh).sum(dim=-1, keepdim=True)  # delta[g] = <dO[g], out[g]>
        d_assign = (d_weights - delta) / denom  # dA = (dR - delta) / (r + eps)
    # dS = dA (straight-through in hard mode); softmax Jacobian over the group axis:
    dy = s * (d_assign - (s * d_assign).sum(dim=-2, keepdim=True))
    dz = dy / tau  # no gradient into the noise
    dq = scale * (dz @ kh)  # dq[g] = scale * sum_n dz[g,n] k_n
    dk = scale * (dz.transpose(-2, -1) @ qh)  # dk[n] = scale * sum_g dz[g,n] q_g
    return _merge_heads(dq), _merge_heads(dk), _merge_heads(dv)
