"""Drop-in GroupViT modules. Models reach kernels only through ``groupvit_fast.ops``."""

from .attention import ATTN_BACKENDS, Attention, AttnBlock, CrossAttnBlock
from .group_vit import GroupingLayer, GroupViT, PatchEmbed
from .grouping import AssignAttention, GroupingBlock

__all__ = ["GroupViT", "GroupingLayer", "PatchEmbed", "GroupingBlock", "AssignAttention", "Attention", "AttnBlock",
           "CrossAttnBlock", "ATTN_BACKENDS"]
