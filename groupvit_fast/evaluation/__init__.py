"""Zero-shot evaluation of GroupViT: ImageNet classification and benchmark-dataset mIoU (docs/evaluation.md)."""

from .._extras import require_extra

require_extra("groupvit_fast.evaluation", "eval")  # before the modules below import them: one line naming the extra

from .classification import build_classifier, evaluate_classification, imagenet_classes, resolve_templates  # noqa: E402
from .datasets import DATASETS, DatasetPreset, find_samples  # noqa: E402
from .segmentation import evaluate_segmentation, segmentation_metrics  # noqa: E402

__all__ = [
    "evaluate_classification",
    "evaluate_segmentation",
    "build_classifier",
    "imagenet_classes",
    "resolve_templates",
    "segmentation_metrics",
    "DATASETS",
    "DatasetPreset",
    "find_samples",
]
