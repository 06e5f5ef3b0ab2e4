"""groupvit_fast: fused kernels and a drop-in model for GroupViT."""

from ._version import __version__
from .models import GroupViT
from .ops import assign_attention

__all__ = ["__version__", "assign_attention", "GroupViT"]
