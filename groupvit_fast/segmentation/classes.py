"""Class lists, prompt templates and palettes for zero-shot segmentation.

Presets follow NVlabs' evaluation set-up (``segmentation/datasets/*.py`` and the ``test_cfg`` of
``segmentation/configs/_base_/datasets/*.py``): a list whose first name is ``'background'`` has a
background class, which is not put through the text encoder but predicted by thresholding
(``bg_thresh``: 0.95 for PASCAL VOC and COCO-Object, 0.35 for PASCAL Context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TEMPLATES",
    "PRESETS",
    "ClassSet",
    "resolve_classes",
    "pascal_palette",
    "VOC_CLASSES",
    "CONTEXT_CLASSES",
    "COCO_OBJECT_CLASSES",
    "BACKGROUND",
]

BACKGROUND = "background"

#: Prompt template sets (NVlabs ``datasets/imagenet_template.py``); segmentation uses 'simple'.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "simple": ("a photo of a {}.",),
    "subset": (
        "itap of a {}.",
        "a bad photo of a {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
    "identity": ("{}",),
}

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "plant",
    "sheep",
    "sofa",
    "train",
    "monitor",
)
CONTEXT_CLASSES = (
    "background",
    "airplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "plant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "monitor",
    "wall",
    "water",
    "window",
    "wood",
)
COCO_OBJECT_CLASSES = (
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)


@dataclass(frozen=True)
class ClassSet:
    """``names``: all label names in label order (``names[0] == 'background'`` when ``with_bg``);
    ``bg_thresh``: the background threshold (used only with a background class)."""

    names: tuple[str, ...]
    bg_thresh: float = 0.95

    @property
    def with_bg(self) -> bool:
        return self.names[0] == BACKGROUND

    @property
    def text_names(self) -> tuple[str, ...]:
        """The names put through the text encoder (all but the background)."""
        return self.names[1:] if self.with_bg else self.names


PRESETS: dict[str, ClassSet] = {
    "voc": ClassSet(VOC_CLASSES, 0.95),
    "context": ClassSet(CONTEXT_CLASSES, 0.35),
    "coco": ClassSet(COCO_OBJECT_CLASSES, 0.95),
}


def resolve_classes(classes: str | Sequence[str], bg_thresh: float | None = None) -> ClassSet:
    """A preset name (``'voc'``, ``'context'``, ``'coco'``) or a list of two or more class names.

    Raises ``ValueError`` for an unknown preset, empty or duplicate names, or a list with fewer
    than two labels (one label makes every pixel that label).
    """
    if isinstance(classes, str):
        if classes.lower() in PRESETS:
            preset = PRESETS[classes.lower()]
            return ClassSet(preset.names, preset.bg_thresh if bg_thresh is None else bg_thresh)
        if "," not in classes:
            raise ValueError(
                f"unknown class preset {classes!r}: use one of {sorted(PRESETS)} or give two or more class names"
            )
        classes = classes.split(",")
    names = tuple(str(c).strip() for c in classes)
    if len(names) == 1 and names[0].lower() in PRESETS:
        return resolve_classes(names[0], bg_thresh)
    if any(not n for n in names):
        raise ValueError("class names must not be empty")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate class names: {', '.join(dup)}")
    if BACKGROUND in names[1:]:
        raise ValueError("'background' must be the first class (it is predicted by thresholding, not by text)")
    if len(names) < 2:
        raise ValueError(f"need two or more classes (or a preset: {sorted(PRESETS)}), got {list(names)}")
    if len(names) > 65535:
        raise ValueError(f"at most 65535 classes, got {len(names)}")
    return ClassSet(names, 0.95 if bg_thresh is None else bg_thresh)


def pascal_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (label i -> RGB, interleaving the bits of i); label 0 is black."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return palette
