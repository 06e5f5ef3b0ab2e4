"""groupvit_fast: fused kernels and a drop-in model for GroupViT."""

from ._version import __version__
from .builder import build_model
from .checkpoint import load_checkpoint
from .models import GroupViT
from .models.multi_label_contrastive import MultiLabelContrastive
from .models.text_transformer import TextTransformer
from .ops import assign_attention
from .patch import apply_groupvit_fast
from .tokenizer import tokenize

__all__ = ["__version__", "assign_attention", "GroupViT", "TextTransformer", "MultiLabelContrastive", "tokenize",
           "build_model", "load_checkpoint", "apply_groupvit_fast"]
