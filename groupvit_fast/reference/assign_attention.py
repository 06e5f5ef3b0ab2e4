"""Pure-PyTorch assignment attention: the oracle every fused backend is checked against.

This is a faithful transcription of NVlabs GroupViT's ``AssignAttention`` core
(``models/group_vit.py``): logits ``q @ k^T * scale``, (Gumbel-)softmax over the **group**
axis, a hard one-hot via the straight-through trick ``onehot - soft.detach() + soft``, and
segment merging ``A / (sum_n A + eps) @ v``. It materialises several ``[B, h, G, N]`` tensors on
purpose: it is the slow, obviously-correct path (docs/assign_op.md, "Math").

Nothing here imports the code it checks.
"""

from __future__ import annotations

import torch

__all__ = ["assign_attention_reference", "sample_gumbel"]


def sample_gumbel(shape: tuple[int, ...], *, device: torch.device, seed: int | None = None) -> torch.Tensor:
    """Gumbel(0, 1) noise in float32, drawn with torch's generator (``seed`` makes it reproducible).

    ``u ~ U(0, 1)`` clamped to ``[finfo.tiny, 1 - eps]`` then ``-log(-log(u))``: the same inverse-CDF
    that ``torch.distributions.Gumbel`` (used by NVlabs) applies.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    u = torch.rand(shape, device=device, dtype=torch.float32, generator=generator)
    finfo = torch.finfo(torch.float32)
    u = u.clamp(min=finfo.tiny, max=1.0 - finfo.eps)
    return -torch.log(-torch.log(u))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # [B, L, C] -> [B, h, L, C/h]
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _hard_one_hot(y_soft: torch.Tensor) -> torch.Tensor:
    # argmax over groups (dim=-2); torch.max returns the first maximal index, so ties go to the lowest g.
    index = y_soft.max(dim=-2, keepdim=True)[1]
    return torch.zeros_like(y_soft).scatter_(-2, index, 1.0)


def assign_attention_reference(
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
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference assignment attention, differentiable by plain autograd.

    Args:
        q: ``[B, G, C]`` group queries. k, v: ``[B, N, C]`` image keys / values.
        noise: optional ``[B, h, G, N]`` Gumbel noise; drawn with ``sample_gumbel`` when ``gumbel``
            and not given.

    Returns:
        ``(out [B, G, C], hard [B, h, G, N], soft [B, h, G, N])`` where ``hard`` is the assignment
        ``A`` before the per-group normalisation (straight-through value) and ``soft`` the plain
        ``softmax_g(z)`` without noise, exactly the two maps NVlabs returns with ``return_attn``.

    Equivalent NVlabs code (per head)::

        raw = (q @ k.transpose(-2, -1)) * scale
        attn = gumbel_softmax(raw, dim=-2, hard=hard, tau=tau) if gumbel else hard_softmax(raw, dim=-2)
        attn = attn / (attn.sum(-1, keepdim=True) + eps)
        out = attn @ v
    """
    b, g, c = q.shape
    n = k.shape[1]
    d = c // num_heads
    if scale is None:
        scale = d**-0.5
    qh, kh, vh = _split_heads(q, num_heads), _split_heads(k, num_heads), _split_heads(v, num_heads)

    raw = (qh @ kh.transpose(-2, -1)) * scale  # z: [B, h, G, N]
    if gumbel:
        if noise is None:
            noise = sample_gumbel((b, num_heads, g, n), device=q.device, seed=seed)
        y = (raw + noise.to(raw.dtype)) / tau
    else:
        # The op applies tau with or without noise (spec). NVlabs only uses tau inside its Gumbel
        # softmax; the drop-in model therefore passes tau=1 whenever it asks for no noise.
        y = raw / tau if tau != 1.0 else raw
    y_soft = y.softmax(dim=-2)
    if hard:
        attn = _hard_one_hot(y_soft) - y_soft.detach() + y_soft  # straight-through (NVlabs)
    else:
        attn = y_soft
    soft = raw.softmax(dim=-2)

    if sum_assign:
        weights = attn
    else:
        weights = attn / (attn.sum(dim=-1, keepdim=True) + eps)
    out = (weights @ vh).transpose(1, 2).reshape(b, g, c)
    return out, attn, soft
