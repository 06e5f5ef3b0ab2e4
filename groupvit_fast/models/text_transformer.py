"""GroupViT's text encoder: a CLIP-style causal transformer (docs/groupvit.md, "Text encoder").

Same constructor arguments, ``state_dict`` keys and outputs as NVlabs' ``models/transformer.py``
(``TextTransformer``), so its configs and checkpoints carry over:

* ``token_embedding.weight [vocab, W]``, ``positional_embedding [context, W]``, ``ln_final.*``;
* per block ``transformer.resblocks.{i}.``: ``attn.in_proj_weight [3W, W]`` / ``attn.in_proj_bias [3W]``
  (rows ordered q, k, v, as ``nn.MultiheadAttention``), ``attn.out_proj.{weight,bias}``, ``ln_1.*``,
  ``mlp.c_fc.*``, ``mlp.c_proj.*``, ``ln_2.*``.

What changes is the core: NVlabs runs ``nn.MultiheadAttention`` on a materialised ``[L, L]`` additive
mask (``-inf`` above the diagonal, so token ``i`` sees tokens ``0..i``); we run
``scaled_dot_product_attention(..., is_causal=True)``, the same function through a fused kernel.
Batch-first layout throughout (NVlabs permutes to ``[L, B, W]`` for ``nn.MultiheadAttention``).
"""

from __future__ import annotations

import typing
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from ..ops.attention import check_attention_backend, multi_head_attention
from .registry import register_model

__all__ = ["TextTransformer", "Transformer", "ResidualAttentionBlock", "CausalSelfAttention", "QuickGELU"]


class QuickGELU(nn.Module):
    """CLIP's activation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with ``nn.MultiheadAttention``'s parameter layout.

    ``x [B, L, W] -> [B, L, W]``; equivalent PyTorch::

        q, k, v = F.linear(x, in_proj_weight, in_proj_bias).chunk(3, -1)      # per head d = W / heads
        a = softmax(q k^T / sqrt(d) + triu(-inf, 1)) v
        out = out_proj(a)
    """

    def __init__(self, embed_dim: int, num_heads: int, *, attn_backend: str = "auto"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"width {embed_dim} is not divisible by the number of heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.attn_backend = check_attention_backend(attn_backend)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        # nn.MultiheadAttention's own init (xavier on the fused projection, zero biases); the
        # TextTransformer then re-initialises the weights as NVlabs does.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # [B, L, 3, h, d] -> three [B, h, L, d] views
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = multi_head_attention(q, k, v, scale=self.head_dim**-0.5, causal=True, backend=self.attn_backend)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, attn_backend={self.attn_backend!r}"


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(x))`` with a 4x QuickGELU MLP."""

    def __init__(self, d_model: int, n_head: int, *, attn_backend: str = "auto"):
        super().__init__()
        self.attn = CausalSelfAttention(d_model, n_head, attn_backend=attn_backend)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, d_model * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(d_model * 4, d_model)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``layers`` causal blocks of ``width`` channels and ``heads`` heads, batch-first ``[B, L, W]``."""

    def __init__(
        self, width: int, layers: int, heads: int, use_checkpoint: bool = False, *, attn_backend: str = "auto"
    ):
        super().__init__()
        self.width = width
        self.layers = layers
        self.use_checkpoint = use_checkpoint
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, attn_backend=attn_backend) for _ in range(layers)]
        )
        # CLIP's / NVlabs' initialisation
        proj_std = (width**-0.5) * ((2 * layers) ** -0.5)
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in typing.cast(list[ResidualAttentionBlock], list(self.resblocks)):
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)  # type: ignore[union-attr,arg-type]  # nn.Sequential
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)  # type: ignore[union-attr,arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@register_model()
class TextTransformer(nn.Module):
    """Text encoder, drop-in for NVlabs' ``TextTransformer`` (``heads = width // 64``).

    Forward: ``text [B, L]`` token ids (``L <= context_length``; CLIP tokens, end-of-text = the
    largest id of each row) -> ``x [B, width]``, the final-LN feature at the end-of-text token;
    ``{'x': x}`` with ``as_dict``. Equivalent PyTorch::

        h = token_embedding(text) + positional_embedding[:L]
        h = ln_final(blocks(h))                                   # causal self-attention
        x = h[arange(B), text.argmax(-1)]

    Shorter rows than ``context_length`` are fine: the attention is causal, so positions after the
    end-of-text token never change the feature (padding to 77 gives the same ``x``).
    """

    def __init__(
        self,
        context_length: int,
        width: int,
        layers: int,
        vocab_size: int,
        use_checkpoint: bool = False,
        *,
        attn_backend: str = "auto",
    ):
        super().__init__()
        if width < 64:
            raise ValueError(f"width must be at least 64 (NVlabs uses heads = width // 64), got {width}")
        self.context_length = context_length
        self.width = width
        self.vocab_size = vocab_size
        self.transformer = Transformer(
            width=width, layers=layers, heads=width // 64, use_checkpoint=use_checkpoint, attn_backend=attn_backend
        )
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def build_attention_mask(self) -> torch.Tensor:
        """NVlabs' additive causal mask ``[context, context]`` (``-inf`` above the diagonal), for reference."""
        return torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)

    def forward(self, text: torch.Tensor, *, as_dict: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """``text [B, L]`` token ids -> ``[B, width]`` (the end-of-text token's feature);
        ``{'x': ...}`` with ``as_dict``."""
        if not isinstance(text, torch.Tensor) or text.dim() != 2:
            raise ValueError(
                f"text must be a [B, L] tensor of token ids, got "
                f"{tuple(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__}"
            )
        if text.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text must hold integer token ids, got dtype {text.dtype}")
        length = text.shape[1]
        if length > self.context_length:
            raise ValueError(f"text has {length} tokens per row, more than context_length={self.context_length}")
        if text.numel() and not torch.compiler.is_compiling():
            # an id past the vocabulary is an IndexError on the CPU and a device-side assert on a GPU
            low, high = int(text.min()), int(text.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"text holds token ids in [{low}, {high}], outside the vocabulary "
                    f"[0, {self.vocab_size}) (tokenize with groupvit_fast.tokenize)"
                )
        x = self.token_embedding(text) + self.positional_embedding[:length]
        x = self.ln_final(self.transformer(x))
        # the end-of-text token has the largest id in each row (CLIP vocabulary: 49407)
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
        return {"x": x} if as_dict else x

    def extra_repr(self) -> str:
        return f"context_length={self.context_length}, width={self.width}, vocab_size={self.vocab_size}"
