"""Zero-shot semantic segmentation with GroupViT (docs/segmentation.md).

Names load on first use (PEP 562): ``classes``, ``geometry`` and ``io`` import no torch, so the
onnxruntime runner (docs/export.md) reuses them where torch is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .classes import PRESETS, TEMPLATES, ClassSet, resolve_classes
    from .inference import (
        ASSIGNMENTS,
        GroupViTSegmenter,
        check_assignment,
        compose_assignment_maps,
        compose_soft_maps,
        crop_class_scores,
        group_class_affinity,
        preprocess_image,
        rescale_size,
        sliding_windows,
    )
    from .io import class_fractions, load_image, load_label_mask, save_json, save_label_png, save_overlay_png
    from .metrics import ConfusionMatrix
    from .text import TextEmbeddingCache, class_text_embeddings

__all__ = [
    "GroupViTSegmenter",
    "ClassSet",
    "resolve_classes",
    "PRESETS",
    "TEMPLATES",
    "class_text_embeddings",
    "TextEmbeddingCache",
    "compose_soft_maps",
    "compose_assignment_maps",
    "check_assignment",
    "ASSIGNMENTS",
    "group_class_affinity",
    "crop_class_scores",
    "sliding_windows",
    "rescale_size",
    "preprocess_image",
    "ConfusionMatrix",
    "load_image",
    "load_label_mask",
    "save_label_png",
    "save_overlay_png",
    "class_fractions",
    "save_json",
]

_LAZY = {
    "ClassSet": ".classes",
    "resolve_classes": ".classes",
    "PRESETS": ".classes",
    "TEMPLATES": ".classes",
    "sliding_windows": ".geometry",
    "rescale_size": ".geometry",
    "GroupViTSegmenter": ".inference",
    "compose_soft_maps": ".inference",
    "compose_assignment_maps": ".inference",
    "check_assignment": ".assignment",
    "ASSIGNMENTS": ".assignment",
    "group_class_affinity": ".inference",
    "crop_class_scores": ".inference",
    "preprocess_image": ".preprocess",
    "class_text_embeddings": ".text",
    "TextEmbeddingCache": ".text",
    "ConfusionMatrix": ".metrics",
    "load_image": ".io",
    "load_label_mask": ".io",
    "save_label_png": ".io",
    "save_overlay_png": ".io",
    "class_fractions": ".io",
    "save_json": ".io",
}


#: the submodules, reachable as attributes like those of an eagerly imported package
_SUBMODULES = ("assignment", "classes", "geometry", "inference", "io", "metrics", "preprocess", "text")

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__, _SUBMODULES)
