"""The benchmark segmentation datasets' presets: class lists and test-time settings (docs/evaluation.md).

Each preset is the set-up of NVlabs' evaluation configs (``segmentation/configs/_base_/datasets``) or, for
ADE20K and Cityscapes, of the later work that evaluated GroupViT on them. Data only: importing this
module needs neither torch nor an extra, so the command line lists the datasets with the core install
(and without torch, beside the ONNX runner).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..datasets.scenes import SCENE_CLASSES
from ..datasets.shapes import SHAPE_CLASSES
from ..segmentation.classes import PRESETS as CLASS_PRESETS
from ..segmentation.test_time import PROTOCOL, TestTimeSettings
from .data_files import read_names

__all__ = ["DatasetPreset", "DATASETS", "get_preset"]


@dataclass(frozen=True)
class DatasetPreset:
    """How one benchmark is read and evaluated.

    ``class_names``: label order of the masks (``'background'`` first when it is predicted by
    thresholding); ``bg_thresh``: the background threshold (``None`` without a background class);
    ``short_side`` / ``max_long_side``: mmseg's ``img_scale=(max_long_side, short_side)`` keep-ratio
    resize; ``crop`` / ``stride``: the sliding window (NVlabs' protocol, ``segmentation.test_time.PROTOCOL``,
    where not given); ``reduce_zero_label``: mask value 0 means "unlabelled" (becomes 255) and the others
    shift down by one (ADE20K).
    """

    name: str
    class_names: tuple[str, ...]
    bg_thresh: float | None
    short_side: int = PROTOCOL.short_side
    max_long_side: int = PROTOCOL.max_long_side
    crop: int = PROTOCOL.crop_size
    stride: int = PROTOCOL.stride
    reduce_zero_label: bool = False

    @property
    def test_time(self) -> TestTimeSettings:
        """The dataset's test-time settings, the ``preset`` of ``segmentation.test_time.resolve_test_time``."""
        return TestTimeSettings(self.short_side, self.crop, self.stride, self.max_long_side, self.bg_thresh)


DATASETS: dict[str, DatasetPreset] = {
    # NVlabs' three benchmarks: classes and background threshold from segment's own presets (one home)
    "voc": DatasetPreset("voc", CLASS_PRESETS["voc"].names, CLASS_PRESETS["voc"].bg_thresh),
    "context": DatasetPreset("context", CLASS_PRESETS["context"].names, CLASS_PRESETS["context"].bg_thresh),
    "coco-object": DatasetPreset("coco-object", CLASS_PRESETS["coco"].names, CLASS_PRESETS["coco"].bg_thresh),
    "ade20k": DatasetPreset("ade20k", read_names("ade20k_classes.txt"), None, reduce_zero_label=True),
    "cityscapes": DatasetPreset("cityscapes", read_names("cityscapes_classes.txt"), None, short_side=1024),
    # the held-out split of `prepare-data scenes` (docs/training.md, "Scenes: segmentation from captions"):
    # images of 64-128 px seen at the 64 px the recipe trains at (short side 64, long side at most 128), in
    # 64 px windows at stride 32: one window for a square image, up to three for a 2:1 one. The recipe's
    # checkpoint carries its own test time (448 px short side: train/configs/scenes.yml), which wins
    "scenes": DatasetPreset("scenes", SCENE_CLASSES, 0.5, short_side=64, max_long_side=128, crop=64, stride=32),
    # the held-out split of `prepare-data shapes` (docs/training.md, "Shapes: grouping where colour does not
    # name the class") at the faithful miniature of NVlabs' protocol for a model trained at 64 px: twice
    # the training resolution (a 128 px short side), 128 px windows at stride 64 (a square image is one window)
    "shapes": DatasetPreset("shapes", SHAPE_CLASSES, 0.5, short_side=128, max_long_side=256, crop=128, stride=64),
}


def get_preset(dataset: str) -> DatasetPreset:
    """The preset of ``dataset`` (``ValueError`` naming the known ones otherwise)."""
    if not isinstance(dataset, str) or dataset.lower() not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[dataset.lower()]
