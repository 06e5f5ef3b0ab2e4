"""Multi-head attention and the two transformer blocks of GroupViT, on fused attention kernels.

Parameter names are NVlabs' (``qkv`` or ``q_proj/k_proj/v_proj``, ``proj``); only the core
changes: ``softmax(q k^T * scale) v`` is computed by

* ``attn_backend="sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``, i.e.
  FlashAttention / memory-efficient kernels on GPU and a fused kernel on CPU;
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` (optional extra);
* ``"explicit"``: the original materialised ``softmax(QK^T)`` (the reference model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, Mlp

__all__ = ["Attention", "CrossAttnBlock", "AttnBlock", "ATTN_BACKENDS", "multi_head_attention"]

ATTN_BACKENDS = ("sdpa", "xformers", "explicit")


def _check_attn_backend(attn_backend: str) -> str:
    if attn_backend not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {attn_backend!r}")
    if attn_backend == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError as err:
            raise ValueError(f"attn_backend='xformers' needs xformers installed ({err})") from None
    return attn_backend


def multi_head_attention(q, k, v, *, scale: float, mask=None, dropout_p: float = 0.0, attn_backend: str = "sdpa"):
    """``softmax(q k^T * scale + mask) v`` for ``q [B,h,L,d]``, ``k, v [B,h,S,d]``, ``mask [B,L,S]`` additive."""
    if attn_backend == "sdpa":
        attn_mask = None if mask is None else mask.unsqueeze(1).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    if attn_backend == "xformers":
        import xformers.ops as xops

        bias = None if mask is None else mask.unsqueeze(1).expand(-1, q.shape[1], -1, -1).to(q.dtype)
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_bias=bias, p=dropout_p, scale=scale)
        return out.transpose(1, 2)
    attn = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        attn = attn + mask.unsqueeze(1)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention with NVlabs' parameter layout."""

    def __init__(self, dim, num_heads, out_dim=None, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0,
                 qkv_fuse=False, attn_backend: str = "sdpa"):
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.qkv_fuse = qkv_fuse
        self.attn_backend = _check_attn_backend(attn_backend)
        if qkv_fuse:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, query, key=None, *, value=None, mask=None):
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
            q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        dropout_p = self.attn_drop.p if self.training else 0.0
        out = multi_head_attention(q, k, v, scale=self.scale, mask=mask, dropout_p=dropout_p,
                                   attn_backend=self.attn_backend)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, qkv_fuse={self.qkv_fuse}, attn_backend={self.attn_backend!r}"


class CrossAttnBlock(nn.Module):
    """Cross attention of ``query`` to ``key`` with an MLP; ``post_norm`` puts the LN at the end."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, post_norm=False,
                 attn_backend: str = "sdpa"):
        super().__init__()
        if post_norm:
            self.norm_post = norm_layer(dim)
            self.norm_q = nn.Identity()
            self.norm_k = nn.Identity()
        else:
            self.norm_q = norm_layer(dim)
            self.norm_k = norm_layer(dim)
            self.norm_post = nn.Identity()
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                              proj_drop=drop, attn_backend=attn_backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, query, key, *, mask=None):
        x = query + self.drop_path(self.attn(self.norm_q(query), self.norm_k(key), mask=mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return self.norm_post(x)


class AttnBlock(nn.Module):
    """Pre-norm transformer block with fused-qkv self-attention."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, attn_backend: str = "sdpa"):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                              proj_drop=drop, qkv_fuse=True, attn_backend=attn_backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, mask=None):
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))
