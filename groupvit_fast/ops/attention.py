"""``multi_head_attention``: softmax attention over the key axis, on the same backend protocol as
``assign_attention`` (see ``dispatch.py``).

Every multi-head attention of the models goes through here: the vision encoder's self- and cross-
attention, the text encoder's causal attention, and the patched NVlabs / Hugging Face modules.

Backends (``GroupViT(attn_backend=...)``, ``GROUPVIT_FAST_ATTN_BACKEND`` overrides ``"auto"``):

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (FlashAttention / memory-efficient
  kernels on GPU, a fused kernel on CPU);
* ``xformers``: ``xformers.ops.memory_efficient_attention`` (optional package);
* ``explicit``: the materialised ``softmax(q k^T * scale + mask) v`` of the original code.

``auto`` order: ``sdpa > xformers > explicit`` on CUDA, ``sdpa > explicit`` on CPU.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._availability import USABLE, Availability
from .backend import Backend
from .dispatch import Dispatcher

__all__ = [
    "multi_head_attention",
    "attention_backend_usage",
    "select_attention_backend",
    "attention_backend_table",
    "ATTENTION",
    "ATTN_ENV_VAR",
    "AttentionInputs",
    "AttentionBackend",
]

ATTN_ENV_VAR = "GROUPVIT_FAST_ATTN_BACKEND"


@dataclass(frozen=True)
class AttentionInputs:
    """Static facts of one call (safe under torch.compile)."""

    device_type: str
    dtype: torch.dtype
    has_mask: bool
    causal: bool
    dropout: bool


class AttentionBackend(Backend[AttentionInputs]):
    """One way to compute attention. Subclasses set ``name`` and implement ``attention``; what they
    declare (devices, dtypes, availability, ``not_supported_reasons``) is ``Backend``'s."""

    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, *, scale: float, mask: Tensor | None, causal: bool, dropout_p: float
    ) -> Tensor:
        raise NotImplementedError


def _causal_mask(q: Tensor, k: Tensor) -> Tensor:
    """Additive ``[L, S]`` mask: -inf above the diagonal (a query never sees later keys)."""
    return torch.full((q.shape[-2], k.shape[-2]), float("-inf"), device=q.device, dtype=q.dtype).triu_(1)


def _additive(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """A boolean mask (True = keep) as an additive float mask in ``like``'s dtype; float masks unchanged."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(like.dtype)
    return torch.zeros(mask.shape, dtype=like.dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class SdpaBackend(AttentionBackend):
    name = "sdpa"

    def attention(self, q, k, v, *, scale, mask, causal, dropout_p):
        if causal and mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale)
        if causal:
            mask = _additive(mask, q) + _causal_mask(q, k)
        attn_mask = mask if mask is None or mask.dtype == torch.bool else mask.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)


class XformersBackend(AttentionBackend):
    name = "xformers"
    devices = ("cuda", "cpu")

    def availability(self) -> Availability:
        try:
            importlib.import_module("xformers.ops")
        except ImportError as err:
            return Availability("absent", f"xformers is not installed ({err})")
        except Exception as err:  # noqa: BLE001 (installed but broken, e.g. built for another torch)
            return Availability("broken", f"xformers.ops failed to import ({type(err).__name__}: {err})")
        return USABLE

    def attention(self, q, k, v, *, scale, mask, causal, dropout_p):
        import xformers.ops as xops

        bias = _additive(mask, q)
        if causal:
            bias = _causal_mask(q, k) if bias is None else bias + _causal_mask(q, k)
        if bias is not None:
            bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p, scale=scale
        )
        return out.transpose(1, 2)


class ExplicitBackend(AttentionBackend):
    name = "explicit"

    def attention(self, q, k, v, *, scale, mask, causal, dropout_p):
        attn = (q @ k.transpose(-2, -1)) * scale
        mask = _additive(mask, q)
        if mask is not None:
            attn = attn + mask
        if causal:
            attn = attn + _causal_mask(q, k)
        attn = attn.softmax(dim=-1)
        if dropout_p > 0.0:
            attn = F.dropout(attn, p=dropout_p)
        return attn @ v


#: The dispatcher of ``multi_head_attention``.
ATTENTION = Dispatcher(
    "multi_head_attention",
    {b.name: b for b in (SdpaBackend(), XformersBackend(), ExplicitBackend())},
    {"cuda": ("sdpa", "xformers", "explicit"), "cpu": ("sdpa", "explicit")},
    ATTN_ENV_VAR,
    AttentionInputs,
    fallback="explicit",
)


def check_attention_backend(backend: str) -> str:
    """Refuse an unknown backend name (``"auto"`` or one of ``ATTENTION.backends``) when a model is
    built; a named backend that is absent or broken here is refused too, with its reason."""
    if not isinstance(backend, str):
        raise TypeError(f"attn_backend must be a string, got {type(backend).__name__}")
    if backend != "auto":
        if backend not in ATTENTION.backends:
            raise ValueError(f"attn_backend must be one of {('auto', *ATTENTION.backends)}, got {backend!r}")
        status = ATTENTION.get(backend).availability()
        if not status.usable:
            raise ValueError(f"attn_backend={backend!r} cannot be used here: {status.describe()}")
    return backend


def multi_head_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` over the key axis.

    Args:
        q: ``[B, h, L, d]``; k, v: ``[B, h, S, d]``.
        scale: logit scale (``d ** -0.5`` for standard attention).
        mask: additive float mask (``-inf`` hides a key) or boolean mask (``True`` keeps), broadcastable
            to ``[B, h, L, S]``.
        causal: hide keys after each query (``S == L``), as CLIP's text encoder does.
        dropout_p: dropout on the attention weights (training only; pass 0 in eval).
        backend: ``"auto"``, ``"sdpa"``, ``"xformers"`` or ``"explicit"``.

    Returns:
        ``[B, h, L, d]`` in q's dtype.

    Equivalent PyTorch::

        a = (q @ k.transpose(-2, -1)) * scale + mask        # + triu(-inf, 1) if causal
        out = a.softmax(-1) @ v
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be [B, h, L, d] / [B, h, S, d], got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal attention needs as many queries as keys, got {q.shape[-2]} and {k.shape[-2]}")
    inputs = AttentionInputs(q.device.type, q.dtype, mask is not None, bool(causal), dropout_p > 0.0)
    name = ATTENTION.select(inputs, backend)
    ATTENTION.count(name)
    return ATTENTION.get(name).attention(q, k, v, scale=scale, mask=mask, causal=bool(causal), dropout_p=dropout_p)


def attention_backend_usage() -> dict[str, int]:
    """Calls served per ``multi_head_attention`` backend since import; a snapshot copy."""
    return ATTENTION.usage()


def select_attention_backend(inputs: AttentionInputs, requested: str = "auto") -> str:
    """The backend ``multi_head_attention`` uses for ``inputs`` (raises like the op would)."""
    return ATTENTION.select(inputs, requested)


def attention_backend_table() -> list[tuple[str, str, str]]:
    """``(name, devices, status)`` per attention backend (what ``info`` prints)."""
    return ATTENTION.table()
