"""groupvit_fast: fused kernels and a drop-in model for GroupViT.

The public names load on first use (PEP 562 ``__getattr__``, as transformers' ``_LazyModule``): importing
``groupvit_fast`` imports no torch, so the torch-free parts (the onnxruntime runner of
``groupvit_fast.export``, docs/export.md) run where torch is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from ._version import __version__

if TYPE_CHECKING:
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

#: where each public name lives (the submodule is imported on first access)
_LAZY = {
    "assign_attention": ".ops",
    "GroupViT": ".models",
    "TextTransformer": ".models",
    "MultiLabelContrastive": ".models",
    "build_model": ".models",
    "tokenize": ".tokenizer",
    "load_checkpoint": ".checkpoint",
    "apply_groupvit_fast": ".patch",
    "revert_groupvit_fast": ".patch",
    "apply_groupvit_fast_to_classes": ".patch",
    "revert_groupvit_fast_classes": ".patch",
}


#: subpackages an eager import used to bind (``groupvit_fast.ops.backend_usage()`` after ``import groupvit_fast``)
_SUBMODULES = (
    "checkpoint",
    "common",
    "convert",
    "export",
    "models",
    "ops",
    "patch",
    "reference",
    "segmentation",
    "tokenizer",
)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__, _SUBMODULES)
