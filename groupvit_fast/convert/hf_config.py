"""The Hugging Face config of an NVlabs GroupViT model config, beside the weight conversion that maps one
model's weights onto the other (as transformers' ``convert_groupvit_nvlab_to_hf.py`` builds its
``GroupViTConfig`` next to its key renames; docs/groupvit.md, "Checkpoints").

``hf_vision_config(img_encoder)`` gives the ``GroupViTVisionConfig`` of ``GroupViT(**img_encoder)``;
``hf_groupvit_config(model)`` the ``GroupViTConfig`` of a ``MultiLabelContrastive`` config. A key the
NVlabs config leaves out takes our constructors' default: ``hf_vision_config({})`` is GroupViT-S's
encoder, ``hf_groupvit_config(released_config())`` GroupViT-S.
Needs the ``hf`` extra (transformers) when called; importing this module does not.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: transformers is imported when a function runs (the hf extra)
    from transformers import GroupViTConfig, GroupViTVisionConfig

__all__ = ["hf_vision_config", "hf_groupvit_config", "NVLABS_TEXT_TOKEN_IDS"]

#: NVlabs pools the text at the largest token id (the end-of-text token), which HF's text model does
#: when ``eos_token_id == 2`` (its legacy "argmax of the ids" rule); 0 and 1 are then start and padding
NVLABS_TEXT_TOKEN_IDS = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def _with_defaults(cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over ``cls.__init__``'s defaults (``type`` dropped)."""
    params = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in given.items() if k != "type"}}


def hf_vision_config(img_encoder: Mapping[str, Any]) -> GroupViTVisionConfig:
    """The ``transformers.GroupViTVisionConfig`` of ``GroupViT(**img_encoder)`` (an NVlabs ``img_encoder``
    dict; HF repeats the last stage's group count and uses one head count for every stage)."""
    from transformers import GroupViTVisionConfig

    from ..models.group_vit import GroupViT

    kw = _with_defaults(GroupViT, img_encoder)
    embed = int(kw["embed_dim"])
    depths = [int(d) for d in kw["depths"]]
    groups = [int(g) for g in kw["num_output_groups"]]
    heads = {int(h) for h in kw["num_heads"]}
    if len(heads) != 1:
        raise ValueError(f"num_heads {list(kw['num_heads'])}: HF's GroupViT takes one head count for every stage")
    return GroupViTVisionConfig(
        hidden_size=embed,
        intermediate_size=int(embed * kw["mlp_ratio"]),
        depths=depths,
        num_hidden_layers=sum(depths),
        num_attention_heads=heads.pop(),
        num_group_tokens=[int(g) for g in kw["num_group_tokens"]],
        num_output_groups=groups + groups[-1:],
        image_size=int(size if isinstance(size := kw["img_size"], int) else size[0]),
        patch_size=int(kw["patch_size"]),
        num_channels=int(kw["in_chans"]),
    )


def hf_groupvit_config(model: Mapping[str, Any]) -> GroupViTConfig:
    """The ``transformers.GroupViTConfig`` of a ``MultiLabelContrastive`` config (``img_encoder``,
    ``text_encoder``, ``output_dim``, ``proj_inner_dim``; NVlabs' text heads: ``width // 64``)."""
    from transformers import GroupViTConfig

    from ..models.multi_label_contrastive import MultiLabelContrastive
    from ..models.text_transformer import TextTransformer

    top = _with_defaults(MultiLabelContrastive, model)
    text = _with_defaults(TextTransformer, top["text_encoder"])
    width = int(text["width"])
    text_config = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": int(text["layers"]),
        "num_attention_heads": max(1, width // 64),
        "max_position_embeddings": int(text["context_length"]),
        "vocab_size": int(text["vocab_size"]),
        **NVLABS_TEXT_TOKEN_IDS,
    }
    return GroupViTConfig(
        text_config=text_config,
        vision_config=hf_vision_config(top["img_encoder"]).to_dict(),
        projection_dim=int(top["output_dim"]),
        projection_intermediate_dim=int(top["proj_inner_dim"]),
    )
