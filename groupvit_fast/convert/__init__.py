"""Weight formats: NVlabs GroupViT <-> Hugging Face ``transformers`` GroupViT.

``hf_to_nvlabs(state_dict)`` / ``nvlabs_to_hf(state_dict)`` take either kind of state dict and
tell them apart by their keys:

* vision encoder only: HF ``GroupViTVisionModel`` (``vision_model.*``) <-> ``groupvit_fast.GroupViT``
  (``patch_embed.*``, ``layers.*``, ...) -- ``convert/vision.py``;
* the whole image-text model: HF ``GroupViTModel`` (``vision_model.*``, ``text_model.*``,
  ``visual_projection.*``, ``text_projection.*``, ``logit_scale``) <-> ``MultiLabelContrastive``
  (``img_encoder.*``, ``text_encoder.*``, ``img_projector.*``, ``text_projector.*``, ``logit_scale``)
  -- ``convert/full.py``.
"""

from __future__ import annotations

import torch

from .full import (
    DROPPED_NVLABS_KEYS,
    HF_TEXT_PREFIX,
    hf_full_to_nvlabs,
    hf_text_to_nvlabs,
    is_hf_full,
    is_nvlabs_full,
    nvlabs_full_to_hf,
    nvlabs_text_to_hf,
)
from .vision import HF_VISION_PREFIX, hf_vision_to_nvlabs, nvlabs_vision_to_hf


def hf_to_nvlabs(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GroupViT weights (``GroupViTModel`` or ``GroupViTVisionModel``) -> NVlabs keys.

    A full model gives ``MultiLabelContrastive`` keys, a vision model ``GroupViT`` keys.
    """
    return hf_full_to_nvlabs(state_dict) if is_hf_full(state_dict) else hf_vision_to_nvlabs(state_dict)


def nvlabs_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs weights (``MultiLabelContrastive`` or ``GroupViT``) -> HF keys.

    A full model gives ``GroupViTModel`` keys, a vision encoder ``GroupViTVisionModel`` keys.
    """
    return nvlabs_full_to_hf(state_dict) if is_nvlabs_full(state_dict) else nvlabs_vision_to_hf(state_dict)


__all__ = [
    "hf_to_nvlabs",
    "nvlabs_to_hf",
    "hf_vision_to_nvlabs",
    "nvlabs_vision_to_hf",
    "hf_full_to_nvlabs",
    "nvlabs_full_to_hf",
    "hf_text_to_nvlabs",
    "nvlabs_text_to_hf",
    "is_hf_full",
    "is_nvlabs_full",
    "HF_VISION_PREFIX",
    "HF_TEXT_PREFIX",
    "DROPPED_NVLABS_KEYS",
]
