"""Hugging Face ``GroupViTVisionModel`` <-> NVlabs / groupvit_fast ``GroupViT`` state-dict keys.

The two implementations compute the same function (see tests/test_convert.py); they differ in
names and in one layout: NVlabs' transformer blocks use a fused ``qkv`` Linear (rows ordered
q, k, v), HF's use three Linears ``q_proj``, ``k_proj``, ``v_proj``.
"""

from __future__ import annotations

import re

import torch

from .rules import compile_rules, join_qkv, rename, split_fused_qkv, unknown_keys_error

__all__ = ["hf_vision_to_nvlabs", "nvlabs_vision_to_hf", "HF_VISION_PREFIX"]

HF_VISION_PREFIX = "vision_model."

# (HF key template, NVlabs key template) without the HF prefix; first match wins, in both directions.
# Placeholders: {s} stage, {b} block (digits), {p} weight|bias, {rest} any suffix.
_RULES = [
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("embeddings.layernorm.{p}", "patch_embed.norm.{p}"),
    ("encoder.stages.{s}.layers.{b}.self_attn.out_proj.{p}", "layers.{s}.blocks.{b}.attn.proj.{p}"),
    ("encoder.stages.{s}.layers.{b}.layer_norm1.{p}", "layers.{s}.blocks.{b}.norm1.{p}"),
    ("encoder.stages.{s}.layers.{b}.layer_norm2.{p}", "layers.{s}.blocks.{b}.norm2.{p}"),
    ("encoder.stages.{s}.layers.{b}.mlp.{rest}", "layers.{s}.blocks.{b}.mlp.{rest}"),
    (
        "encoder.stages.{s}.downsample.pre_assign_attn.attn.out_proj.{p}",
        "layers.{s}.downsample.pre_assign_attn.attn.proj.{p}",
    ),
    ("encoder.stages.{s}.downsample.{rest}", "layers.{s}.downsample.{rest}"),
    ("encoder.stages.{s}.group_projector.{rest}", "layers.{s}.group_projector.{rest}"),
    ("encoder.stages.{s}.group_token", "layers.{s}.group_token"),
    ("layernorm.{p}", "norm.{p}"),
]
_PLACEHOLDERS = {"s": r"\d+", "b": r"\d+", "p": r"weight|bias", "rest": r".+"}
_HF_QKV = re.compile(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)")
_NV_QKV = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)")


_HF_TO_NV, _NV_TO_HF = compile_rules(_RULES, _PLACEHOLDERS)


def hf_vision_to_nvlabs(state_dict: dict[str, torch.Tensor], prefix: str = HF_VISION_PREFIX) -> dict[str, torch.Tensor]:
    """Keys ``vision_model.*`` of HF ``GroupViTVisionModel`` -> ``GroupViT`` (NVlabs) keys.

    Raises ``ValueError`` naming the keys it cannot map (never a silently partial result).
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for full_key, tensor in state_dict.items():
        key = full_key[len(prefix) :] if full_key.startswith(prefix) else None
        match = _HF_QKV.fullmatch(key) if key is not None else None
        if match:
            stage, block, which, kind = match.groups()
            qkv.setdefault((stage, block, kind), {})[which] = tensor
            continue
        new_key = rename(key, _HF_TO_NV) if key is not None else None
        if new_key is None:
            unknown.append(full_key)
        else:
            out[new_key] = tensor
    if unknown:
        raise unknown_keys_error("Hugging Face GroupViT vision weights", unknown)
    for (stage, block, kind), parts in qkv.items():
        out[f"layers.{stage}.blocks.{block}.attn.qkv.{kind}"] = join_qkv(
            parts, f"stage {stage} layer {block} self_attn ({kind})"
        )
    return out


def nvlabs_vision_to_hf(state_dict: dict[str, torch.Tensor], prefix: str = HF_VISION_PREFIX) -> dict[str, torch.Tensor]:
    """``GroupViT`` (NVlabs) keys -> HF ``GroupViTVisionModel`` keys (``vision_model.*``)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        match = _NV_QKV.fullmatch(key)
        if match:
            stage, block, kind = match.groups()
            for which, part in split_fused_qkv(key, tensor).items():
                out[f"{prefix}encoder.stages.{stage}.layers.{block}.self_attn.{which}_proj.{kind}"] = part
            continue
        new_key = rename(key, _NV_TO_HF)
        if new_key is None:
            unknown.append(key)
        else:
            out[prefix + new_key] = tensor
    if unknown:
        raise unknown_keys_error("NVlabs GroupViT vision weights", unknown)
    return out
