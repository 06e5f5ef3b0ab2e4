"""Zero-shot evaluation of GroupViT: ImageNet classification and benchmark-dataset mIoU (docs/evaluation.md).

The public names load on first use (PEP 562), after checking the ``eval`` extra: a missing extra is one
line naming it. Submodules that need no extra (the dataset presets, the report writer) import with the
core install alone, so the command line can describe ``eval`` and ``prepare-data`` without the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

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

_HOMES = {
    "evaluate_classification": "classification",
    "build_classifier": "classification",
    "imagenet_classes": "classification",
    "resolve_templates": "classification",
    "evaluate_segmentation": "segmentation",
    "segmentation_metrics": "segmentation",
    "DATASETS": "presets",
    "DatasetPreset": "presets",
    "find_samples": "datasets",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .._extras import require_extra

    require_extra("groupvit_fast.evaluation", "eval")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
