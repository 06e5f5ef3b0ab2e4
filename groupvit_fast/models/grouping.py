"""GroupViT's grouping block: group tokens attend to image tokens, tokens merge into segments.

``AssignAttention`` keeps NVlabs' parameters (``q_proj``, ``k_proj``, ``v_proj``, ``proj``) and
hands its core to the fused op ``groupvit_fast.ops.assign_attention`` (docs/assign_op.md): no
``[B, G, N]`` tensor is materialised unless the attention maps are asked for. Maps asked for under
autograd carry the reference's gradients (docs/assign_op.md, "Differentiability of the maps").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..ops import BACKENDS, assign_attention
from ..reference.assign_attention import sample_gumbel
from .attention import CrossAttnBlock
from .layers import Mlp, to_2tuple

__all__ = [
    "AssignAttention",
    "GroupingBlock",
    "assign_forward",
    "assign_core",
    "check_assign_backend",
    "differentiable_maps",
    "MAP_NAMES",
]

#: The attention maps of one grouping block: ``{"hard", "soft"}``, each ``[B, 1, G, N]``.
AttnMaps = dict[str, torch.Tensor]

#: The maps ``return_attn`` gives, as NVlabs names them.
MAP_NAMES = ("hard", "soft")


def check_assign_backend(assign_backend: str) -> str:
    """Refuse an unknown ``assign_backend`` when the model is built, not at its first forward."""
    choices = ("auto", *BACKENDS)
    if assign_backend not in choices:
        raise ValueError(f"assign_backend must be one of {choices}, got {assign_backend!r}")
    return assign_backend


def _dropout_path(
    self: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_gumbel: bool
) -> tuple[torch.Tensor, AttnMaps]:
    # Attention dropout acts on the normalised [B, h, G, N] weights, which the fused op never
    # forms; NVlabs never enables it in GroupViT, so this rare case uses the explicit math.
    from ..reference.assign_attention import assign_attention_reference

    _, hard_attn, soft_attn = assign_attention_reference(
        q,
        k,
        v,
        num_heads=self.num_heads,
        scale=self.scale,
        hard=self.hard,
        gumbel=use_gumbel,
        tau=self.gumbel_tau if use_gumbel else 1.0,
        sum_assign=self.sum_assign,
        eps=self.assign_eps,
    )
    attn = hard_attn
    if not self.sum_assign:
        attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
    attn = self.attn_drop(attn)
    b, g, c = q.shape
    vh = v.reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)
    out = (attn @ vh).transpose(1, 2).reshape(b, g, c)
    return out, {"hard": hard_attn, "soft": soft_attn}


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def differentiable_maps(
    q: torch.Tensor,
    k: torch.Tensor,
    one_hot: torch.Tensor | None,
    *,
    num_heads: int,
    scale: float,
    hard: bool,
    tau: float,
    noise: torch.Tensor | None,
    names: tuple[str, ...] = MAP_NAMES,
) -> AttnMaps:
    """The reference's maps, differentiable in ``q [B, G, C]`` and ``k [B, N, C]`` (docs/assign_op.md,
    "Differentiability of the maps"); each ``[B, h, G, N]``:

    * ``soft = softmax_g(z)``, ``z = scale * q k^T`` (no noise, no tau);
    * ``hard = one_hot - S.detach() + S`` with ``S = softmax_g((z + noise) / tau)`` (straight-through,
      NVlabs' formula), or ``S`` itself when not ``hard``. ``one_hot [B, h, G, N]`` is the assignment
      the op chose (so the map is the one ``out`` was merged with); ``noise`` the Gumbel noise it used.

    Equivalent PyTorch: ``groupvit_fast.reference.assign_attention_reference``'s ``(attn, soft)``.
    """
    z = (_split_heads(q, num_heads) @ _split_heads(k, num_heads).transpose(-2, -1)) * scale
    maps = {}
    if "hard" in names:
        y = z if noise is None else z + noise.to(z.dtype)
        s = (y / tau if tau != 1.0 else y).softmax(dim=-2)
        maps["hard"] = one_hot.detach().to(s.dtype) - s.detach() + s if hard else s
    if "soft" in names:
        maps["soft"] = z.softmax(dim=-2)
    return maps


def assign_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    num_heads: int,
    scale: float,
    hard: bool,
    gumbel: bool,
    tau: float,
    sum_assign: bool,
    eps: float,
    return_attn: bool,
    backend: str,
    names: tuple[str, ...] = MAP_NAMES,
) -> tuple[torch.Tensor, AttnMaps | None]:
    """``groupvit_fast.ops.assign_attention`` on projected ``q [B, G, C]``, ``k, v [B, N, C]`` ->
    ``(out [B, G, C], maps or None)``, with the maps ``names`` (each ``[B, h, G, N]``) when ``return_attn``.

    Three paths (docs/assign_op.md, "Differentiability of the maps"):

    * no maps: the fused op alone; nothing ``[B, h, G, N]``-sized is formed or saved for backward;
    * maps without autograd (``torch.no_grad()``, or ``q`` and ``k`` need no gradient): the op's maps,
      read-outs computed in its kernels;
    * maps under autograd: ``out`` still from the fused op, the maps from ``differentiable_maps``, so
      they carry the reference's gradients. A ``"hard"`` map in Gumbel mode needs the noise the op
      used: it is drawn here with torch's generator (``sample_gumbel``) and handed to the op.
    """
    kwargs = dict(
        num_heads=num_heads,
        scale=scale,
        hard=hard,
        gumbel=gumbel,
        tau=tau,
        sum_assign=sum_assign,
        eps=eps,
        backend=backend,
    )
    if not return_attn:
        return assign_attention(q, k, v, **kwargs), None
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)):
        out, maps = assign_attention(q, k, v, return_attn=True, **kwargs)
        return out, {name: maps[name] for name in names}
    noise = None
    if gumbel and "hard" in names:
        b, g, _ = q.shape
        noise = sample_gumbel((b, num_heads, g, k.shape[1]), device=q.device)
    if "hard" in names:
        out, maps = assign_attention(q, k, v, return_attn=True, noise=noise, **kwargs)
        if maps["hard"].requires_grad:  # a backend under plain autograd (reference): its maps are the originals
            return out, {name: maps[name] for name in names}
        one_hot = maps["hard"]
    else:  # the soft map needs neither the assignment nor the noise: out keeps the in-kernel noise
        out, one_hot = assign_attention(q, k, v, **kwargs), None
    return out, differentiable_maps(
        q, k, one_hot, num_heads=num_heads, scale=scale, hard=hard, tau=tau, noise=noise, names=names
    )


def assign_forward(
    self: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    *,
    value: torch.Tensor | None = None,
    return_attn: bool = False,
) -> tuple[torch.Tensor, AttnMaps | None]:
    """``AssignAttention.forward`` as a function of any module with NVlabs' ``AssignAttention``
    attributes (``q_proj``, ``k_proj``, ``v_proj``, ``proj``, ``hard``, ``gumbel``, ``gumbel_tau``,
    ``sum_assign``, ``assign_eps``, ``num_heads``, ``scale``, ``attn_drop``, ``proj_drop``) and an
    ``assign_backend``: ours, and NVlabs instances patched by ``apply_groupvit_fast``, run this code.

    Returns ``(out [B, G, C], {"hard", "soft"} or None)``.
    """
    key = query if key is None else key
    value = key if value is None else value
    q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
    use_gumbel = bool(self.gumbel and self.training)
    if self.training and self.attn_drop.p > 0.0:
        out, attn_dict = _dropout_path(self, q, k, v, use_gumbel)
    else:
        out, attn_dict = assign_core(
            q,
            k,
            v,
            num_heads=self.num_heads,
            scale=self.scale,
            hard=self.hard,
            gumbel=use_gumbel,
            tau=self.gumbel_tau if use_gumbel else 1.0,
            sum_assign=self.sum_assign,
            eps=self.assign_eps,
            return_attn=return_attn,
            backend=getattr(self, "assign_backend", "auto"),
        )
    out = self.proj_drop(self.proj(out))
    return out, (attn_dict if return_attn else None)


class AssignAttention(nn.Module):
    """Single-purpose cross attention from group tokens (queries) to image tokens.

    Training mode with ``gumbel=True`` adds Gumbel noise (temperature ``gumbel_tau``); eval mode is
    deterministic and, as in NVlabs, ignores ``gumbel_tau``. ``assign_backend`` is passed to the op
    (``"auto"`` picks the fastest usable backend for the device).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        hard: bool = True,
        gumbel: bool = False,
        gumbel_tau: float = 1.0,
        sum_assign: bool = False,
        assign_eps: float = 1.0,
        assign_backend: str = "auto",
    ):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.hard = hard
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau
        self.sum_assign = sum_assign
        self.assign_eps = assign_eps
        self.assign_backend = check_assign_backend(assign_backend)

    forward = assign_forward

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, hard={self.hard}, gumbel={self.gumbel}, sum_assign={self.sum_assign}, "
            f"gumbel_tau={self.gumbel_tau}, assign_eps={self.assign_eps}, assign_backend={self.assign_backend!r}"
        )


class GroupingBlock(nn.Module):
    """Merges ``[B, L, C]`` image tokens into ``[B, num_output_group, out_dim]`` segment tokens.

    ``g = LN(group tokens)``, ``x = LN(image tokens)``; the group tokens are projected over the token
    axis to ``num_output_group`` queries, refined by cross attention to ``x``, then assignment
    attention merges ``x`` into them, followed by an MLP over channels (docs/groupvit.md, "Data flow", step 3).
    """

    def __init__(
        self,
        *,
        dim: int,
        out_dim: int | None,
        num_heads: int,
        num_group_token: int,
        num_output_group: int,
        norm_layer: Callable[[int], nn.Module],
        mlp_ratio: float | Sequence[float] = (0.5, 4.0),
        hard: bool = True,
        gumbel: bool = True,
        sum_assign: bool = False,
        assign_eps: float = 1.0,
        gumbel_tau: float = 1.0,
        attn_backend: str = "auto",
        assign_backend: str = "auto",
    ):
        super().__init__()
        self.dim = dim
        self.hard = hard
        self.gumbel = gumbel
        self.sum_assign = sum_assign
        self.num_output_group = num_output_group
        self.norm_tokens = norm_layer(dim)
        tokens_dim, channels_dim = [int(x * dim) for x in to_2tuple(mlp_ratio)]
        self.mlp_inter = Mlp(num_group_token, tokens_dim, num_output_group)
        self.norm_post_tokens = norm_layer(dim)
        self.norm_x = norm_layer(dim)
        self.pre_assign_attn = CrossAttnBlock(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=4,
            qkv_bias=True,
            norm_layer=norm_layer,
            post_norm=True,
            attn_backend=attn_backend,
        )
        self.assign = AssignAttention(
            dim=dim,
            num_heads=1,
            qkv_bias=True,
            hard=hard,
            gumbel=gumbel,
            gumbel_tau=gumbel_tau,
            sum_assign=sum_assign,
            assign_eps=assign_eps,
            assign_backend=assign_backend,
        )
        self.norm_new_x = norm_layer(dim)
        self.mlp_channels = Mlp(dim, channels_dim, out_dim)
        if out_dim is not None and dim != out_dim:
            self.reduction = nn.Sequential(norm_layer(dim), nn.Linear(dim, out_dim, bias=False))
        else:
            self.reduction = nn.Identity()

    def project_group_token(self, group_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, S_1, C] -> [B, S_2, C]``: an MLP over the token axis, then LN."""
        projected = self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2)
        return self.norm_post_tokens(projected)

    def forward(
        self, x: torch.Tensor, group_tokens: torch.Tensor, return_attn: bool = False
    ) -> tuple[torch.Tensor, AttnMaps | None]:
        """``x [B, L, C]``, ``group_tokens [B, S, C]`` -> ``([B, num_output_group, out_dim], maps or None)``."""
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        projected = self.project_group_token(group_tokens)
        projected = self.pre_assign_attn(projected, x)
        new_x, attn_dict = self.assign(projected, x, return_attn=return_attn)
        new_x = new_x + projected
        new_x = self.reduction(new_x) + self.mlp_channels(self.norm_new_x(new_x))
        return new_x, attn_dict

    def extra_repr(self) -> str:
        return (
            f"hard={self.hard}, gumbel={self.gumbel}, sum_assign={self.sum_assign}, "
            f"num_output_group={self.num_output_group}"
        )
