"""Patch an already-built GroupViT in place so it runs on groupvit_fast's kernels.

``apply_groupvit_fast(model)`` walks ``model`` and rebinds the ``forward`` of each instance it
recognises (Liger-Kernel style instance patching; classes are left alone):

* NVlabs-style modules (``models/group_vit.py``: ``AssignAttention``, ``Attention``, recognised by
  their class name and attributes, with no import of NVlabs code): assignment attention goes
  through ``groupvit_fast.ops.assign_attention`` (no ``[B, h, G, N]`` tensor unless ``return_attn``),
  multi-head attention through ``scaled_dot_product_attention``;
* Hugging Face ``transformers`` GroupViT (``GroupViTAssignAttention``, ``GroupViTAttention``,
  ``GroupViTStage``): the same, with HF's call signatures and return values. The patched
  ``GroupViTAttention`` returns no attention weights (as HF's SDPA attentions); the grouping maps
  (``output_attentions`` of the vision model) are still returned, and computed only when asked for;
* groupvit_fast's own modules: their ``attn_backend`` / ``assign_backend`` are set.

Eval-mode outputs are unchanged up to float rounding. In training mode the Gumbel noise comes
from groupvit_fast's counter-based generator (docs/assign_op.md), so samples differ from
``torch.distributions.Gumbel`` draws while following the same distribution. Attention dropout on
the assignment weights (never enabled in GroupViT) keeps the original code path.

``revert_groupvit_fast(model)`` restores the original ``forward`` methods.
"""

from __future__ import annotations

import types
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .models.attention import _check_attn_backend, multi_head_attention
from .ops import assign_attention

__all__ = ["apply_groupvit_fast", "revert_groupvit_fast"]

_ORIG = "_groupvit_fast_original_forward"
_ASSIGN_BACKEND = "_groupvit_fast_assign_backend"
_ATTN_BACKEND = "_groupvit_fast_attn_backend"
_RETURN_ATTN = "_groupvit_fast_return_attn"


# ---- NVlabs-style modules --------------------------------------------------------------------


def _nvlabs_assign_forward(self, query, key=None, *, value=None, return_attn=False):
    """NVlabs ``AssignAttention.forward`` on the fused op: ``(out [B, G, C], attn_dict or None)``."""
    key = query if key is None else key
    value = key if value is None else value
    if self.training and self.attn_drop.p > 0.0:
        return getattr(self, _ORIG)(query, key, value=value, return_attn=return_attn)
    q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
    use_gumbel = bool(self.gumbel and self.training)
    result = assign_attention(q, k, v, num_heads=self.num_heads, scale=self.scale, hard=self.hard, gumbel=use_gumbel,
                              tau=self.gumbel_tau if use_gumbel else 1.0, sum_assign=self.sum_assign,
                              eps=self.assign_eps, return_attn=return_attn, backend=getattr(self, _ASSIGN_BACKEND))
    out, attn_dict = result if return_attn else (result, None)
    return self.proj_drop(self.proj(out)), attn_dict


def _nvlabs_attention_forward(self, query, key=None, *, value=None, mask=None):
    """NVlabs ``Attention.forward`` (fused qkv self-attention or q/k/v cross-attention) on SDPA."""
    b, n, c = query.shape
    h = self.num_heads
    if self.qkv_fuse:
        if key is not None or value is not None:
            raise ValueError("Attention(qkv_fuse=True) is self-attention: pass no key/value")
        q, k, v = self.qkv(query).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        key = query if key is None else key
        value = key if value is None else value
        q = self.q_proj(query).view(b, n, h, c // h).transpose(1, 2)
        k = self.k_proj(key).view(b, key.shape[1], h, c // h).transpose(1, 2)
        v = self.v_proj(value).view(b, value.shape[1], h, c // h).transpose(1, 2)
    out = multi_head_attention(q, k, v, scale=self.scale, mask=mask,
                               dropout_p=self.attn_drop.p if self.training else 0.0,
                               attn_backend=getattr(self, _ATTN_BACKEND))
    return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def _is_nvlabs_assign(m: nn.Module) -> bool:
    return type(m).__name__ == "AssignAttention" and all(
        hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "proj", "hard", "gumbel", "gumbel_tau", "sum_assign",
                                "assign_eps", "num_heads", "scale", "attn_drop", "proj_drop"))


def _is_nvlabs_attention(m: nn.Module) -> bool:
    return type(m).__name__ == "Attention" and all(
        hasattr(m, a) for a in ("qkv_fuse", "num_heads", "scale", "proj", "attn_drop", "proj_drop"))


# ---- Hugging Face transformers modules -------------------------------------------------------


def _hf_assign_forward(self, query, key):
    """HF ``GroupViTAssignAttention.forward``: ``(out [B, G, C], soft [B, G, N] or None)``."""
    q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(key)
    need = getattr(self, _RETURN_ATTN, True)
    # HF: gumbel (training) / hard argmax (eval) assignment, tau 1, normalised with assign_eps
    result = assign_attention(q, k, v, num_heads=1, scale=self.scale, hard=True, gumbel=self.training, tau=1.0,
                              sum_assign=False, eps=self.assign_eps, return_attn=need,
                              backend=getattr(self, _ASSIGN_BACKEND))
    if need:
        out, attn_dict = result
        soft = attn_dict["soft"][:, 0]
    else:
        out, soft = result, None
    return self.proj(out), soft


def _hf_attention_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kwargs):
    """HF ``GroupViTAttention.forward`` on SDPA: ``(out [B, L, C], None)``."""
    b, n, c = hidden_states.shape
    kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    h, d = self.num_heads, self.head_dim
    q = self.q_proj(hidden_states).view(b, n, h, d).transpose(1, 2)
    k = self.k_proj(kv).view(b, kv.shape[1], h, d).transpose(1, 2)
    v = self.v_proj(kv).view(b, kv.shape[1], h, d).transpose(1, 2)
    backend = getattr(self, _ATTN_BACKEND)
    dropout = self.dropout if self.training else 0.0
    if backend == "sdpa":
        # HF passes an additive (float) or boolean [B, 1, L, S] mask, or None; SDPA takes both
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout, scale=self.scale)
    else:
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, 0]
            if mask.dtype == torch.bool:
                mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
        out = multi_head_attention(q, k, v, scale=self.scale, mask=mask, dropout_p=dropout, attn_backend=backend)
    return self.out_proj(out.transpose(1, 2).reshape(b, n, c)), None


def _hf_stage_forward(self, hidden_states, prev_group_token=None, output_attentions=False):
    """HF ``GroupViTStage.forward``: tells the assignment whether its maps are wanted."""
    assign = self.downsample.assign if self.downsample is not None else None
    if assign is not None and hasattr(assign, _ASSIGN_BACKEND):
        setattr(assign, _RETURN_ATTN, bool(output_attentions))
    try:
        return getattr(self, _ORIG)(hidden_states, prev_group_token, output_attentions)
    finally:
        if assign is not None and hasattr(assign, _ASSIGN_BACKEND):
            setattr(assign, _RETURN_ATTN, True)


def _is_hf(m: nn.Module, name: str) -> bool:
    return type(m).__name__ == name and type(m).__module__.startswith("transformers.")


# ---- public ----------------------------------------------------------------------------------


def _bind(module: nn.Module, fn) -> None:
    if not hasattr(module, _ORIG):
        setattr(module, _ORIG, module.forward)
    module.forward = types.MethodType(fn, module)


def apply_groupvit_fast(model: nn.Module, *, attn_backend: str = "sdpa",
                        assign_backend: str = "auto") -> dict[str, int]:
    """Patch ``model`` (NVlabs-style, Hugging Face or groupvit_fast GroupViT) in place; returns what was patched.

    ``attn_backend``: ``"sdpa"`` (default), ``"xformers"`` or ``"explicit"``; ``assign_backend``: as
    ``groupvit_fast.assign_attention(backend=...)``. Applying again only changes the backends.
    Raises ``ValueError`` when ``model`` holds no GroupViT module.
    """
    from .models.attention import Attention as FastAttention
    from .models.grouping import AssignAttention as FastAssign
    from .models.text_transformer import CausalSelfAttention

    _check_attn_backend(attn_backend)
    if not isinstance(assign_backend, str):
        raise TypeError(f"assign_backend must be a string, got {type(assign_backend).__name__}")
    patched: Counter = Counter()
    for module in model.modules():
        if isinstance(module, FastAssign):
            module.assign_backend = assign_backend
            patched["groupvit_fast.AssignAttention"] += 1
        elif isinstance(module, (FastAttention, CausalSelfAttention)):
            module.attn_backend = attn_backend
            patched[f"groupvit_fast.{type(module).__name__}"] += 1
        elif _is_nvlabs_assign(module):
            setattr(module, _ASSIGN_BACKEND, assign_backend)
            _bind(module, _nvlabs_assign_forward)
            patched["nvlabs.AssignAttention"] += 1
        elif _is_nvlabs_attention(module):
            setattr(module, _ATTN_BACKEND, attn_backend)
            _bind(module, _nvlabs_attention_forward)
            patched["nvlabs.Attention"] += 1
        elif _is_hf(module, "GroupViTAssignAttention"):
            setattr(module, _ASSIGN_BACKEND, assign_backend)
            _bind(module, _hf_assign_forward)
            patched["transformers.GroupViTAssignAttention"] += 1
        elif _is_hf(module, "GroupViTAttention"):
            setattr(module, _ATTN_BACKEND, attn_backend)
            _bind(module, _hf_attention_forward)
            patched["transformers.GroupViTAttention"] += 1
        elif _is_hf(module, "GroupViTStage") and module.downsample is not None:
            _bind(module, _hf_stage_forward)
            patched["transformers.GroupViTStage"] += 1
    if not patched:
        raise ValueError(f"{type(model).__name__} holds no GroupViT attention or assignment module to patch")
    return dict(patched)


def revert_groupvit_fast(model: nn.Module) -> int:
    """Undo ``apply_groupvit_fast`` on NVlabs-style and HF modules; returns how many were restored."""
    restored = 0
    for module in model.modules():
        if hasattr(module, _ORIG):
            del module.forward  # the instance attribute; the class's forward shows through again
            for attr in (_ORIG, _ASSIGN_BACKEND, _ATTN_BACKEND, _RETURN_ATTN):
                if attr in module.__dict__:
                    delattr(module, attr)
            restored += 1
    return restored
