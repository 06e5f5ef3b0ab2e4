"""The drop-in GroupViT vision encoder (docs/groupvit.md).

Same constructor arguments and defaults, same ``state_dict`` keys and the same outputs as NVlabs'
``models/group_vit.py``, so its configs and checkpoints carry over; two extra keyword arguments
choose the kernels: ``attn_backend`` for the multi-head attention ("sdpa", "xformers",
"explicit") and ``assign_backend`` for the grouping blocks' assignment attention ("auto",
"reference", "triton", "cuda", "cpu").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from .attention import AttnBlock
from .grouping import AttnMaps, GroupingBlock, check_assign_backend
from .layers import MixerMlp, to_2tuple, trunc_normal_
from .registry import register_model

if TYPE_CHECKING:
    from torch.nn.modules.module import _IncompatibleKeys

__all__ = ["GroupViT", "GroupingLayer", "PatchEmbed", "interpolate_pos_encoding"]


def interpolate_pos_encoding(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bicubically resize a ``[1, N, C]`` square-grid position embedding to an ``h x w`` grid."""
    n = pos_embed.shape[1]
    # The shortcut is only an optimisation: a bicubic resize to the same grid is exactly the identity (weights
    # 0, 1, 0, 0). An export skips it, so that the grid stays a free dynamic size instead of being guarded on
    # h * w != n (docs/export.md, "torch.export").
    if not torch.compiler.is_exporting() and h * w == n and h == w:
        return pos_embed
    side = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)


class PatchEmbed(nn.Module):
    """Image to patch tokens: a strided conv, flattened, optionally LayerNorm'ed."""

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        kernel_size: int | Sequence[int] = 7,
        stride: int | Sequence[int] = 4,
        padding: int | Sequence[int] = 2,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        img_size, kernel_size = to_2tuple(img_size), to_2tuple(kernel_size)
        stride, padding = to_2tuple(stride), to_2tuple(padding)
        self.img_size = img_size
        self.in_chans = in_chans
        self.kernel_size = kernel_size
        self.patches_resolution = (
            int((img_size[1] + 2 * padding[1] - kernel_size[1]) / stride[1] + 1),
            int((img_size[0] + 2 * padding[0] - kernel_size[0]) / stride[0] + 1),
        )
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    @property
    def num_patches(self) -> int:
        return self.patches_resolution[1] * self.patches_resolution[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """``[B, C, H, W]`` -> (``[B, h * w, embed_dim]`` tokens, the ``(h, w)`` token grid)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor image batch, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must be a [B, C, H, W] image batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point image batch (normalised pixels), got {x.dtype}")
        weight_dtype = self.proj.weight.dtype
        if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"x is {x.dtype} but the model's parameters are {weight_dtype}: convert one of them "
                "(x.to(...) or model.to(...)) or run under torch.autocast"
            )
        _, c, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(f"x has {c} channels but the model expects in_chans={self.in_chans}")
        if h < self.kernel_size[0] or w < self.kernel_size[1]:
            raise ValueError(
                f"x of {h}x{w} pixels is smaller than one {self.kernel_size[0]}x{self.kernel_size[1]} patch"
            )
        if self.training and (h, w) != tuple(self.img_size):
            raise ValueError(
                f"in training mode x must be {self.img_size[0]}x{self.img_size[1]} (img_size), "
                f"got {h}x{w}; other sizes are supported in eval mode"
            )
        x = self.proj(x)
        hw_shape = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw_shape


class GroupingLayer(nn.Module):
    """One stage: optional group tokens, ``depth`` transformer blocks, then an optional grouping block."""

    def __init__(
        self,
        dim: int,
        num_input_token: int,
        depth: int,
        num_heads: int,
        num_group_token: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        downsample: nn.Module | None = None,
        use_checkpoint: bool = False,
        group_projector: nn.Module | None = None,
        zero_init_group_token: bool = False,
        attn_backend: str = "auto",
    ):
        super().__init__()
        self.dim = dim
        self.input_length = num_input_token
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.num_group_token = num_group_token
        self.group_token: nn.Parameter | None
        if num_group_token > 0:
            self.group_token = nn.Parameter(torch.zeros(1, num_group_token, dim))
            if not zero_init_group_token:
                trunc_normal_(self.group_token, std=0.02)
        else:
            self.group_token = None
        if not isinstance(drop_path, (list, tuple)):
            drop_path = [float(drop_path)] * depth  # type: ignore[arg-type]  # a float here
        self.blocks = nn.ModuleList(
            [
                AttnBlock(
                    dim=dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i],
                    norm_layer=norm_layer,
                    attn_backend=attn_backend,
                )
                for i in range(depth)
            ]
        )
        self.downsample = downsample
        self.input_resolution = num_input_token
        self.group_projector = group_projector

    @property
    def with_group_token(self) -> bool:
        return self.group_token is not None

    def split_x(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, L + S, C]`` -> (image tokens ``[B, L, C]``, group tokens ``[B, S, C]`` or None)."""
        if self.with_group_token:
            return x[:, : -self.num_group_token], x[:, -self.num_group_token :]
        return x, None

    def concat_x(self, x: torch.Tensor, group_token: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, C]`` and ``[B, S, C]`` -> ``[B, L + S, C]`` (``x`` alone without group tokens)."""
        return x if group_token is None else torch.cat([x, group_token], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        prev_group_token: torch.Tensor | None = None,
        return_attn: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, AttnMaps | None]:
        """``x [B, L, C]`` -> (tokens after the stage, its group tokens or None, its attention maps or None)."""
        if self.group_token is not None:  # with_group_token
            group_token = self.group_token.expand(x.size(0), -1, -1)
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
        else:
            group_token = None
        cat_x = self.concat_x(x, group_token)
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                cat_x = checkpoint.checkpoint(blk, cat_x, use_reentrant=False)
            else:
                cat_x = blk(cat_x)
        x, group_token = self.split_x(cat_x)
        attn_dict = None
        if self.downsample is not None:
            x, attn_dict = self.downsample(x, group_token, return_attn=return_attn)
        return x, group_token, attn_dict

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}, "
            f"num_group_token={self.num_group_token}"
        )


@register_model()
class GroupViT(nn.Module):
    """Group Vision Transformer (Xu et al., CVPR 2022), drop-in for NVlabs' ``GroupViT``.

    Forward: ``x [B, in_chans, H, W]`` -> ``x [B, num_features]`` (or logits with a head), plus
    ``feat [B, G_last, num_features]`` with ``return_feat`` and ``attn_dicts`` (one dict
    ``{'hard', 'soft'}`` of ``[B, 1, G, N]`` maps per grouping block, ``None`` for the last stage)
    with ``return_attn``; a tuple (or the bare tensor) unless ``as_dict``.
    """

    def __init__(  # noqa: C901  (NVlabs' constructor: one check per argument, each refused by name)
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dim: int = 384,
        embed_factors: Sequence[int] = (1, 1, 1),
        depths: Sequence[int] = (6, 3, 3),
        num_heads: Sequence[int] = (6, 6, 6),
        num_group_tokens: Sequence[int] = (64, 8, 0),
        num_output_groups: Sequence[int] = (64, 8),
        hard_assignment: bool = True,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        pos_embed_type: str = "simple",
        freeze_patch_embed: bool = False,
        *,
        gumbel: bool | None = None,
        gumbel_tau: float = 1.0,
        attn_backend: str = "auto",
        assign_backend: str = "auto",
    ):
        super().__init__()
        embed_factors, depths, num_heads = list(embed_factors), list(depths), list(num_heads)
        num_group_tokens, num_output_groups = list(num_group_tokens), list(num_output_groups)
        if patch_size not in (4, 8, 16):
            raise ValueError(f"patch_size must be 4, 8 or 16 (as in NVlabs), got {patch_size}")
        if not len(embed_factors) == len(depths) == len(num_group_tokens):
            raise ValueError("embed_factors, depths and num_group_tokens must have the same length")
        if not (all(h == 0 for h in num_heads) or len(depths) == len(num_heads)):
            raise ValueError("num_heads must have one entry per stage")
        if len(depths) - 1 != len(num_output_groups):
            raise ValueError("num_output_groups must have one entry fewer than depths")
        if pos_embed_type not in ("simple", "fourier"):
            raise ValueError(f"pos_embed_type must be 'simple' or 'fourier', got {pos_embed_type!r}")
        # strict=False: an all-zero num_heads may be shorter than the stages (checked above), and 0 checks nothing
        for i, (factor, heads) in enumerate(zip(embed_factors, num_heads, strict=False)):
            width = int(embed_dim * factor)
            if heads and width % heads:
                raise ValueError(
                    f"num_heads[{i}]={heads} must divide stage {i}'s width embed_dim * embed_factors[{i}] = {width}"
                )
        if gumbel and not hard_assignment:
            raise ValueError("gumbel=True needs hard_assignment=True (the noise samples the hard one-hot)")
        if not (isinstance(gumbel_tau, (int, float)) and math.isfinite(gumbel_tau) and gumbel_tau > 0):
            raise ValueError(f"gumbel_tau must be a finite number > 0, got {gumbel_tau!r}")
        check_assign_backend(assign_backend)
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.patch_norm = patch_norm
        self.num_features = int(embed_dim * embed_factors[len(depths) - 1])
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.qk_scale = qk_scale
        self.drop_rate = drop_rate
        self.attn_drop_rate = attn_drop_rate
        self.drop_path_rate = drop_path_rate
        self.num_group_tokens = num_group_tokens
        self.num_output_groups = num_output_groups
        self.pos_embed_type = pos_embed_type
        self.attn_backend = attn_backend
        self.assign_backend = assign_backend
        norm_layer = nn.LayerNorm

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            kernel_size=patch_size,
            stride=patch_size,
            padding=0,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None,
        )
        num_patches = self.patch_embed.num_patches
        self.patches_resolution = self.patch_embed.patches_resolution
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        if pos_embed_type == "simple":
            self.pos_embed = self.build_simple_position_embedding()
        else:
            self.pos_embed = self.build_2d_sincos_position_embedding()
        if freeze_patch_embed:
            for param in self.patch_embed.parameters():
                param.requires_grad = False
            self.pos_embed.requires_grad = False
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]  # stochastic depth decay
        num_input_token = num_patches
        num_output_token = num_input_token
        self.layers = nn.ModuleList()
        for i_layer in range(self.num_layers):
            dim = int(embed_dim * embed_factors[i_layer])
            downsample = None
            if i_layer < self.num_layers - 1:
                out_dim = embed_dim * embed_factors[i_layer + 1]
                downsample = GroupingBlock(
                    dim=dim,
                    out_dim=out_dim,
                    num_heads=num_heads[i_layer],
                    num_group_token=num_group_tokens[i_layer],
                    num_output_group=num_output_groups[i_layer],
                    norm_layer=norm_layer,
                    hard=hard_assignment,
                    # NVlabs ties the noise to the hard assignment; ``gumbel=False`` switches it off alone
                    gumbel=hard_assignment if gumbel is None else gumbel,
                    gumbel_tau=float(gumbel_tau),
                    attn_backend=attn_backend,
                    assign_backend=assign_backend,
                )
                num_output_token = num_output_groups[i_layer]
            if i_layer > 0 and num_group_tokens[i_layer] > 0:
                prev_dim = int(embed_dim * embed_factors[i_layer - 1])
                group_projector = nn.Sequential(
                    norm_layer(prev_dim),
                    MixerMlp(num_group_tokens[i_layer - 1], prev_dim // 2, num_group_tokens[i_layer]),
                )
                if dim != prev_dim:
                    group_projector = nn.Sequential(
                        group_projector, norm_layer(prev_dim), nn.Linear(prev_dim, dim, bias=False)
                    )
            else:
                group_projector = None
            self.layers.append(
                GroupingLayer(
                    dim=dim,
                    num_input_token=num_input_token,
                    depth=depths[i_layer],
                    num_heads=num_heads[i_layer],
                    num_group_token=num_group_tokens[i_layer],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i_layer]) : sum(depths[: i_layer + 1])],
                    norm_layer=norm_layer,
                    downsample=downsample,
                    use_checkpoint=use_checkpoint,
                    group_projector=group_projector,
                    zero_init_group_token=group_projector is not None,
                    attn_backend=attn_backend,
                )
            )
            if i_layer < self.num_layers - 1:
                num_input_token = num_output_token

        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    # ---- weights ---------------------------------------------------------------------------

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """As NVlabs: a learned ``pos_embed`` of another grid size is resized bicubically on load."""
        if self.pos_embed_type == "simple" and "pos_embed" in state_dict:
            loaded = state_dict["pos_embed"]
            if loaded.shape != self.pos_embed.shape:
                state_dict = OrderedDict(state_dict)
                h_new, w_new = self.patches_resolution[1], self.patches_resolution[0]
                state_dict["pos_embed"] = interpolate_pos_encoding(loaded, h_new, w_new)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def build_simple_position_embedding(self) -> nn.Parameter:
        pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, self.embed_dim))
        trunc_normal_(pos_embed, std=0.02)
        return pos_embed

    def build_2d_sincos_position_embedding(self, temperature: float = 10000.0) -> nn.Parameter:
        h, w = self.patch_embed.patches_resolution
        grid_w, grid_h = torch.meshgrid(
            torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij"
        )
        if self.embed_dim % 4:
            raise ValueError("embed_dim must be divisible by 4 for the 'fourier' position embedding")
        pos_dim = self.embed_dim // 4
        omega = 1.0 / (temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
        out_w = grid_w.flatten()[:, None] * omega[None, :]
        out_h = grid_h.flatten()[:, None] * omega[None, :]
        pos_emb = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None]
        return nn.Parameter(pos_emb, requires_grad=False)

    @property
    def width(self) -> int:
        return self.num_features

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    # ---- forward ---------------------------------------------------------------------------

    def get_pos_embed(self, b: int, h: int, w: int) -> torch.Tensor:
        if self.training:
            return self.pos_embed
        return interpolate_pos_encoding(self.pos_embed, h, w)

    def forward_features(
        self,
        x: torch.Tensor,
        *,
        return_attn: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[AttnMaps | None]]:
        """``[B, in_chans, H, W]`` -> (normed tokens ``[B, G_last, num_features]``, last group tokens or None,
        one attention-map dict (or None) per stage)."""
        x, hw_shape = self.patch_embed(x)
        x = self.pos_drop(x + self.get_pos_embed(x.shape[0], *hw_shape))
        group_token = None
        attn_dicts = []
        for layer in self.layers:
            x, group_token, attn_dict = layer(x, group_token, return_attn=return_attn)
            attn_dicts.append(attn_dict)
        return self.norm(x), group_token, attn_dicts

    def forward_image_head(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, C] -> [B, num_classes or C]``: average over tokens, then the head."""
        return self.head(torch.flatten(self.avgpool(x.transpose(1, 2)), 1))

    def forward(
        self,
        x: torch.Tensor,
        *,
        return_feat: bool = False,
        return_attn: bool = False,
        as_dict: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor | list[AttnMaps | None], ...] | dict[str, Any]:
        feat, _group_token, attn_dicts = self.forward_features(x, return_attn=return_attn)
        outs: dict[str, Any] = {"x": self.forward_image_head(feat)}
        if return_feat:
            outs["feat"] = feat
        if return_attn:
            outs["attn_dicts"] = attn_dicts
        if as_dict:
            return outs
        values = tuple(outs.values())
        return values[0] if len(values) == 1 else values
