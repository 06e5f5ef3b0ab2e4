"""Drop-in GroupViT modules and the model registry. Models reach kernels only through ``groupvit_fast.ops``.

Importing this package imports every model module, so each class has registered itself
(``@register_model()``) before ``build_model`` can be called.
"""

from .attention import ATTN_BACKENDS, Attention, AttnBlock, CrossAttnBlock
from .group_vit import GroupingLayer, GroupViT, PatchEmbed
from .grouping import AssignAttention, GroupingBlock
from .multi_label_contrastive import MultiLabelContrastive
from .registry import MODELS, build_model, register_model, released_config
from .text_transformer import TextTransformer

__all__ = [
    "GroupViT",
    "GroupingLayer",
    "PatchEmbed",
    "GroupingBlock",
    "AssignAttention",
    "Attention",
    "AttnBlock",
    "CrossAttnBlock",
    "ATTN_BACKENDS",
    "MultiLabelContrastive",
    "TextTransformer",
    "MODELS",
    "build_model",
    "register_model",
    "released_config",
]
