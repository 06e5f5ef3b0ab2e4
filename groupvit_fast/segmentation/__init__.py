"""Zero-shot semantic segmentation with GroupViT (docs/segmentation.md)."""

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
