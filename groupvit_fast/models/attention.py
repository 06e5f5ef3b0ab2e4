"""Multi-head attention and the two transformer blocks of GroupViT, on fused attention kernels.

Parameter names are NVlabs' (``qkv`` or ``q_proj/k_proj/v_proj``, ``proj``); only the core
changes: ``softmax(q k^T * scale) v`` is the op ``groupvit_fast.ops.multi_head_attention`` with
``attn_backend`` ``"auto"`` (default: SDPA), ``"sdpa"``, ``"xformers"`` or ``"explicit"`` (the
original materialised ``softmax(QK^T)``, the reference model); see ``groupvit_fast/ops/attention.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..ops.attention import ATTENTION, check_attention_backend, multi_head_attention
from .layers import DropPath, Mlp

__all__ = ["Attention", "CrossAttnBlock", "AttnBlock", "ATTN_BACKENDS", "attention_forward", "split_heads"]

#: The names ``attn_backend`` accepts besides ``"auto"`` (the op's backends).
ATTN_BACKENDS = tuple(ATTENTION.backends)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, N, C] -> [B, h, N, C / h]`` (a view)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def attention_forward(
    self: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    *,
    value: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Attention.forward`` as a function of any module with NVlabs' ``Attention`` attributes
    (``qkv_fuse``, ``qkv`` or ``q_proj/k_proj/v_proj``, ``num_heads``, ``scale``, ``attn_drop``, ``proj``,
    ``proj_drop``) and an ``attn_backend``: ours, and NVlabs instances patched by ``apply_groupvit_fast``
    run this same code."""
    b, n, c = query.shape
    if self.qkv_fuse:
        if key is not None or value is not None:
            raise ValueError("Attention(qkv_fuse=True) is self-attention: pass no key/value")
        # [B, N, 3, h, d] -> three [B, h, N, d] views, no copies
        qkv = self.qkv(query).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
    else:
        key = query if key is None else key
        value = key if value is None else value
        q, k, v = (
            split_heads(self.q_proj(query), self.num_heads),
            split_heads(self.k_proj(key), self.num_heads),
            split_heads(self.v_proj(value), self.num_heads),
        )
    dropout_p = self.attn_drop.p if self.training else 0.0
    # NVlabs' mask is additive [B, L, S]: one per batch element, shared by the heads
    out = multi_head_attention(
        q,
        k,
        v,
        scale=self.scale,
        mask=None if mask is None else mask.unsqueeze(1),
        dropout_p=dropout_p,
        backend=getattr(self, "attn_backend", "auto"),
    )
    out = out.transpose(1, 2).reshape(b, n, c)
    return self.proj_drop(self.proj(out))


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention with NVlabs' parameter layout."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        out_dim: int | None = None,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qkv_fuse: bool = False,
        attn_backend: str = "auto",
    ):
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.qkv_fuse = qkv_fuse
        self.attn_backend = check_attention_backend(attn_backend)
        if qkv_fuse:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    forward = attention_forward

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, qkv_fuse={self.qkv_fuse}, attn_backend={self.attn_backend!r}"


class CrossAttnBlock(nn.Module):
    """Cross attention of ``query`` to ``key`` with an MLP; ``post_norm`` puts the LN at the end."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        post_norm: bool = False,
        attn_backend: str = "auto",
    ):
        super().__init__()
        if post_norm:
            self.norm_post = norm_layer(dim)
            self.norm_q = nn.Identity()
            self.norm_k = nn.Identity()
        else:
            self.norm_q = norm_layer(dim)
            self.norm_k = norm_layer(dim)
            self.norm_post = nn.Identity()
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            attn_backend=attn_backend,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, query: torch.Tensor, key: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``query [B, L, C]`` attends to ``key [B, S, C]`` (optional additive ``mask [B, L, S]``) -> ``[B, L, C]``."""
        x = query + self.drop_path(self.attn(self.norm_q(query), self.norm_k(key), mask=mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return self.norm_post(x)


class AttnBlock(nn.Module):
    """Pre-norm transformer block with fused-qkv self-attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        attn_backend: str = "auto",
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            qkv_fuse=True,
            attn_backend=attn_backend,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, C]`` (optional additive ``mask [B, N, N]``) -> ``[B, N, C]``."""
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))
