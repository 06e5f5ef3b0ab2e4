"""Zero-shot evaluation of GroupViT: ImageNet classification and benchmark-dataset mIoU (docs/evaluation.md)."""

from .classification import build_classifier, evaluate_classification, imagenet_classes, resolve_templates
from .datasets import DATASETS, DatasetPreset, find_samples
from .segmentation import evaluate_segmentation, segmentation_metrics

__all__ = [
    "evaluate_classification", "evaluate_segmentation", "build_classifier", "imagenet_classes", "resolve_templates",
    "segmentation_metrics", "DATASETS", "DatasetPreset", "find_samples",
]
