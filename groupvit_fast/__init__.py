"""groupvit_fast: fused kernels and a drop-in model for GroupViT."""

from ._version import __version__
from .checkpoint import load_checkpoint
from .models import GroupViT, MultiLabelContrastive, TextTransformer, build_model
from .ops import assign_attention
from .patch import (
    apply_groupvit_fast,
    apply_groupvit_fast_to_classes,
    revert_groupvit_fast,
    revert_groupvit_fast_classes,
)
from .tokenizer import tokenize

__all__ = [
    "__version__",
    "assign_attention",
    "GroupViT",
    "TextTransformer",
    "MultiLabelContrastive",
    "tokenize",
    "build_model",
    "load_checkpoint",
    "apply_groupvit_fast",
    "revert_groupvit_fast",
    "apply_groupvit_fast_to_classes",
    "revert_groupvit_fast_classes",
]
