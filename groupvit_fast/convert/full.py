"""Hugging Face ``GroupViTModel`` <-> NVlabs ``MultiLabelContrastive`` state dicts (image + text model).

Key correspondence (HF left, NVlabs right):

* ``vision_model.*`` <-> ``img_encoder.*`` (``convert/vision.py``);
* ``text_model.embeddings.token_embedding.weight`` <-> ``text_encoder.token_embedding.weight``,
  ``text_model.embeddings.position_embedding.weight`` <-> ``text_encoder.positional_embedding``,
  ``text_model.final_layer_norm.*`` <-> ``text_encoder.ln_final.*``;
* per text layer ``text_model.encoder.layers.{i}.`` <-> ``text_encoder.transformer.resblocks.{i}.``:
  ``self_attn.{q,k,v}_proj.{weight,bias}`` <-> ``attn.in_proj_{weight,bias}`` (concatenated in the
  order q, k, v, as ``nn.MultiheadAttention`` stores them), ``self_attn.out_proj`` <-> ``attn.out_proj``,
  ``layer_norm1/2`` <-> ``ln_1/2``, ``mlp.fc1/fc2`` <-> ``mlp.c_fc/c_proj``;
* ``visual_projection.{0,1,3}`` / ``text_projection.{0,1,3}`` (Linear, BatchNorm1d, -, Linear) <->
  ``img_projector`` / ``text_projector`` ``.linear_hidden.0``, ``.linear_hidden.1``, ``.linear_out``:
  HF Linear weights ``[out, in]`` are NVlabs 1x1 Conv1d weights ``[out, in, 1]``;
* ``logit_scale`` <-> ``logit_scale``. NVlabs' ``multi_label_logit_scale`` (used only by the
  training loss) has no HF counterpart: ``nvlabs_full_to_hf`` drops it.

Every function raises ``ValueError`` naming the keys it cannot map: never a partial result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .rules import compile_rules, join_qkv, rename, split_fused_qkv, unknown_keys_error
from .vision import HF_VISION_PREFIX, hf_vision_to_nvlabs, nvlabs_vision_to_hf

__all__ = [
    "hf_full_to_nvlabs",
    "nvlabs_full_to_hf",
    "hf_text_to_nvlabs",
    "nvlabs_text_to_hf",
    "is_hf_full",
    "is_nvlabs_full",
    "HF_TEXT_PREFIX",
    "DROPPED_NVLABS_KEYS",
]

HF_TEXT_PREFIX = "text_model."
#: NVlabs keys with no Hugging Face counterpart (dropped by ``nvlabs_full_to_hf``).
DROPPED_NVLABS_KEYS = ("multi_label_logit_scale",)

# text: (HF template without prefix, NVlabs TextTransformer template); {b} block, {p} weight|bias
_TEXT_RULES = [
    ("embeddings.token_embedding.weight", "token_embedding.weight"),
    ("embeddings.position_embedding.weight", "positional_embedding"),
    ("final_layer_norm.{p}", "ln_final.{p}"),
    ("encoder.layers.{b}.self_attn.out_proj.{p}", "transformer.resblocks.{b}.attn.out_proj.{p}"),
    ("encoder.layers.{b}.layer_norm1.{p}", "transformer.resblocks.{b}.ln_1.{p}"),
    ("encoder.layers.{b}.layer_norm2.{p}", "transformer.resblocks.{b}.ln_2.{p}"),
    ("encoder.layers.{b}.mlp.fc1.{p}", "transformer.resblocks.{b}.mlp.c_fc.{p}"),
    ("encoder.layers.{b}.mlp.fc2.{p}", "transformer.resblocks.{b}.mlp.c_proj.{p}"),
]
_PLACEHOLDERS = {"b": r"\d+", "p": r"weight|bias"}
_HF_TEXT_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)")
_NV_TEXT_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)")

# projectors: HF Sequential index -> NVlabs ProjectMLP sub-module, and whether the weight is a 1x1 conv
_PROJ_PARTS = {"0": ("linear_hidden.0", True), "1": ("linear_hidden.1", False), "3": ("linear_out", True)}
_PROJ_NAMES = {"visual_projection": "img_projector", "text_projection": "text_projector"}
_HF_PROJ = re.compile(r"(visual_projection|text_projection)\.(\d+)\.(\w+)")
_NV_PROJ = re.compile(r"(img_projector|text_projector)\.(linear_hidden\.\d+|linear_out)\.(\w+)")


_TEXT_HF_TO_NV, _TEXT_NV_TO_HF = compile_rules(_TEXT_RULES, _PLACEHOLDERS)


# ---- text encoder ----------------------------------------------------------------------------


def hf_text_to_nvlabs(state_dict: dict[str, torch.Tensor], prefix: str = HF_TEXT_PREFIX) -> dict[str, torch.Tensor]:
    """Keys ``text_model.*`` of HF ``GroupViTTextModel`` -> ``TextTransformer`` (NVlabs) keys."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for full_key, tensor in state_dict.items():
        key = full_key[len(prefix) :] if full_key.startswith(prefix) else None
        if key == "embeddings.position_ids":  # a buffer of 0..L-1 in older HF versions, not a weight
            continue
        match = _HF_TEXT_QKV.fullmatch(key) if key is not None else None
        if match:
            block, which, kind = match.groups()
            qkv.setdefault((block, kind), {})[which] = tensor
            continue
        new_key = rename(key, _TEXT_HF_TO_NV) if key is not None else None
        if new_key is None:
            unknown.append(full_key)
        else:
            out[new_key] = tensor
    if unknown:
        raise unknown_keys_error("Hugging Face GroupViT text weights", unknown)
    for (block, kind), parts in qkv.items():
        out[f"transformer.resblocks.{block}.attn.in_proj_{kind}"] = join_qkv(
            parts, f"text layer {block} self_attn ({kind})"
        )
    return out


def nvlabs_text_to_hf(state_dict: dict[str, torch.Tensor], prefix: str = HF_TEXT_PREFIX) -> dict[str, torch.Tensor]:
    """``TextTransformer`` (NVlabs) keys -> HF ``GroupViTTextModel`` keys (``text_model.*``)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        match = _NV_TEXT_IN_PROJ.fullmatch(key)
        if match:
            block, kind = match.groups()
            for which, part in split_fused_qkv(key, tensor).items():
                out[f"{prefix}encoder.layers.{block}.self_attn.{which}_proj.{kind}"] = part
            continue
        new_key = rename(key, _TEXT_NV_TO_HF)
        if new_key is None:
            unknown.append(key)
        else:
            out[prefix + new_key] = tensor
    if unknown:
        raise unknown_keys_error("NVlabs GroupViT text weights", unknown)
    return out


# ---- the full model --------------------------------------------------------------------------


def is_hf_full(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict looks like a whole HF ``GroupViTModel`` (text tower or projections present)."""
    return any(
        k.startswith((HF_TEXT_PREFIX, "visual_projection.", "text_projection.")) or k == "logit_scale"
        for k in state_dict
    ) and not any(k.startswith(("img_encoder.", "text_encoder.")) for k in state_dict)


def is_nvlabs_full(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict looks like a whole NVlabs ``MultiLabelContrastive``."""
    return any(k.startswith(("img_encoder.", "text_encoder.", "img_projector.", "text_projector.")) for k in state_dict)


def _split(state_dict, prefixes) -> tuple[dict, dict]:
    inside, rest = {}, {}
    for k, v in state_dict.items():
        (inside if k.startswith(prefixes) else rest)[k] = v
    return inside, rest


def hf_full_to_nvlabs(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``GroupViTModel`` state dict -> NVlabs ``MultiLabelContrastive`` state dict.

    The result has no ``multi_label_logit_scale``: a model built with ``multi_label > 0`` keeps its
    own (initial) value when loading it (``groupvit_fast.load_checkpoint`` does that and says so).
    """
    vision, rest = _split(state_dict, (HF_VISION_PREFIX,))
    text, rest = _split(rest, (HF_TEXT_PREFIX,))
    out: dict[str, torch.Tensor] = {}
    out.update({"img_encoder." + k: v for k, v in hf_vision_to_nvlabs(vision).items()})
    out.update({"text_encoder." + k: v for k, v in hf_text_to_nvlabs(text).items()})
    unknown = []
    for key, tensor in rest.items():
        if key == "logit_scale":
            out[key] = tensor
            continue
        match = _HF_PROJ.fullmatch(key)
        if match and match.group(2) in _PROJ_PARTS:
            which, index, name = match.groups()
            part, is_conv = _PROJ_PARTS[index]
            if is_conv and name == "weight":
                tensor = tensor.unsqueeze(-1)  # Linear [out, in] -> Conv1d [out, in, 1]
            out[f"{_PROJ_NAMES[which]}.{part}.{name}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise unknown_keys_error("Hugging Face GroupViTModel weights", unknown)
    return out


def nvlabs_full_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs ``MultiLabelContrastive`` state dict -> HF ``GroupViTModel`` state dict.

    Needs the released projector form (``proj_num_layers=2``: Conv1d, BatchNorm, ReLU, Conv1d);
    drops ``multi_label_logit_scale`` (no HF counterpart).
    """
    vision, rest = _split(state_dict, ("img_encoder.",))
    text, rest = _split(rest, ("text_encoder.",))
    out: dict[str, torch.Tensor] = {}
    out.update(nvlabs_vision_to_hf({k[len("img_encoder.") :]: v for k, v in vision.items()}))
    out.update(nvlabs_text_to_hf({k[len("text_encoder.") :]: v for k, v in text.items()}))
    to_hf_index = {part: index for index, (part, _) in _PROJ_PARTS.items()}
    hf_names = {v: k for k, v in _PROJ_NAMES.items()}
    unknown = []
    for key, tensor in rest.items():
        if key == "logit_scale":
            out[key] = tensor
            continue
        if key in DROPPED_NVLABS_KEYS:
            continue
        match = _NV_PROJ.fullmatch(key)
        if match and match.group(2) in to_hf_index:
            which, part, name = match.groups()
            if _PROJ_PARTS[to_hf_index[part]][1] and name == "weight":
                if tensor.dim() != 3 or tensor.shape[-1] != 1:
                    raise ValueError(f"state_dict: {key} has shape {tuple(tensor.shape)}, not a 1x1 Conv1d weight")
                tensor = tensor.squeeze(-1)
            out[f"{hf_names[which]}.{to_hf_index[part]}.{name}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise unknown_keys_error(
            "NVlabs MultiLabelContrastive weights with the 2-layer projectors HF supports", unknown
        )
    return out
