"""Benchmark segmentation datasets: their folder layouts, read (the presets: ``presets.py``).

Each preset is the set-up of NVlabs' evaluation configs (``segmentation/configs/_base_/datasets``)
or, for ADE20K and Cityscapes, of the later work that evaluated GroupViT on them; the folder
layouts are those of mmseg's dataset classes (docs/evaluation.md lists them). ``find_samples``
resolves a layout to ``(image, mask)`` pairs and checks, before any model work, that every folder,
split file, image and mask exists and that every mask has its image's size (PNG/JPEG headers only).
Label values are checked when each mask is decoded (``SegmentationSamples``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..segmentation.inference import preprocess_image
from ..segmentation.io import load_image, load_label_mask
from .presets import DATASETS, DatasetPreset, get_preset

__all__ = ["DatasetPreset", "DATASETS", "Sample", "get_preset", "find_samples", "check_sizes", "SegmentationSamples"]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Sample:
    image: str
    mask: str


def _folder(path: str) -> str:
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such folder")
    return path


def _descend(root: str, *candidates: str) -> str:
    """``root`` itself or the first of ``root/<candidate>`` that exists (users point at either level)."""
    for cand in candidates:
        if os.path.isdir(os.path.join(root, cand)):
            return os.path.join(root, cand)
    return root


def _split_ids(split_file: str) -> list[str]:
    if not os.path.isfile(split_file):
        raise ValueError(f"{split_file}: no such split file")
    with open(split_file, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{split_file}: the split file lists no image")
    return ids


def _pairs_from_split(base: str, image_dir: str, mask_dir: str, split_file: str) -> list[Sample]:
    images, masks = _folder(os.path.join(base, image_dir)), _folder(os.path.join(base, mask_dir))
    out = []
    for stem in _split_ids(os.path.join(base, split_file)):
        out.append(Sample(os.path.join(images, stem + ".jpg"), os.path.join(masks, stem + ".png")))
    return out


def _pairs_from_folder(
    image_dir: str, mask_dir: str, image_suffix: str, mask_suffix: str, recursive: bool = False
) -> list[Sample]:
    _folder(image_dir)
    _folder(mask_dir)
    pattern = (
        os.path.join(image_dir, "*", "*" + image_suffix) if recursive else os.path.join(image_dir, "*" + image_suffix)
    )
    images = sorted(glob.glob(pattern))
    if not images:
        raise ValueError(f"{image_dir}: no *{image_suffix} images")
    out = []
    for path in images:
        rel = os.path.relpath(path, image_dir)
        out.append(Sample(path, os.path.join(mask_dir, rel[: -len(image_suffix)] + mask_suffix)))
    return out


def find_samples(dataset: str, data_root: str, split: str = "val") -> list[Sample]:
    """The ``(image, mask)`` pairs of ``dataset``'s ``split`` under ``data_root`` (sorted, as listed).

    ``data_root`` may be the folder holding ``VOCdevkit`` / ``ADEChallengeData2016`` or that folder
    itself. ``ValueError`` naming the first missing folder, split file, image or mask.
    """
    preset = get_preset(dataset)
    root = _folder(os.fspath(data_root))
    if preset.name in ("voc", "context"):
        year = "VOC2012" if preset.name == "voc" else "VOC2010"
        base = _descend(_descend(root, "VOCdevkit"), year)
        if preset.name == "voc":
            samples = _pairs_from_split(
                base, "JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation", f"{split}.txt")
            )
        else:
            samples = _pairs_from_split(
                base,
                "JPEGImages",
                "SegmentationClassContext",
                os.path.join("ImageSets", "SegmentationContext", f"{split}.txt"),
            )
    elif preset.name == "coco-object":
        samples = _pairs_from_folder(
            os.path.join(root, "images", f"{split}2017"),
            os.path.join(root, "annotations", f"{split}2017"),
            ".jpg",
            "_instanceTrainIds.png",
        )
    elif preset.name == "ade20k":
        base = _descend(root, "ADEChallengeData2016")
        folder = {"val": "validation", "train": "training"}.get(split, split)
        samples = _pairs_from_folder(
            os.path.join(base, "images", folder), os.path.join(base, "annotations", folder), ".jpg", ".png"
        )
    elif preset.name in ("scenes", "shapes"):  # <root>/{images,masks}/<stem>.png, or prepare-data's --out folder
        base = _descend(root, "eval" if split == "val" else split)
        samples = _pairs_from_folder(os.path.join(base, "images"), os.path.join(base, "masks"), ".png", ".png")
    else:  # cityscapes: leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
        samples = _pairs_from_folder(
            os.path.join(root, "leftImg8bit", split),
            os.path.join(root, "gtFine", split),
            "_leftImg8bit.png",
            "_gtFine_labelTrainIds.png",
            recursive=True,
        )
    for s in samples:
        for path, what in ((s.image, "image"), (s.mask, "mask")):
            if not os.path.isfile(path):
                raise ValueError(f"{path}: no such {what} file")
    return samples


def check_sizes(samples: list[Sample]) -> None:
    """``ValueError`` naming the first mask whose size differs from its image (headers only, no decode)."""
    from PIL import Image, UnidentifiedImageError

    for s in samples:
        sizes = []
        for path in (s.image, s.mask):
            try:
                with Image.open(path) as img:
                    sizes.append(img.size)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{path}: cannot read ({err})") from None
        if sizes[0] != sizes[1]:
            raise ValueError(
                f"{s.mask}: mask is {sizes[1][0]}x{sizes[1][1]}, its image {s.image} is "
                f"{sizes[0][0]}x{sizes[0][1]} (width x height)"
            )


class SegmentationSamples(torch.utils.data.Dataset):
    """Decodes and resizes in DataLoader workers: item ``i`` is a dict with ``index``, ``image``
    (normalised ``float32 [3, h, w]`` at the test scale), ``raw`` (``uint8 [3, H, W]``, only when
    ``keep_raw``), ``mask`` (``int64 [H, W]``, 255 = ignored) or ``error`` (a one-line message; the
    main process raises it, so that a bad file reads as one line and not as a worker traceback)."""

    def __init__(
        self, samples: list[Sample], preset: DatasetPreset, indices: list[int] | None = None, keep_raw: bool = False
    ):
        self.samples = samples
        self.preset = preset
        self.indices = list(range(len(samples))) if indices is None else list(indices)
        self.keep_raw = keep_raw

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        index = self.indices[i]
        sample = self.samples[index]
        try:
            raw = load_image(sample.image)
            mask = load_label_mask(sample.mask)
        except ValueError as err:
            return {"index": index, "error": str(err)}
        if self.preset.reduce_zero_label:
            mask = torch.where(mask == 0, IGNORE_INDEX, mask - 1)
            mask[mask == IGNORE_INDEX - 1] = IGNORE_INDEX
        labelled = mask[mask != IGNORE_INDEX]
        k = len(self.preset.class_names)
        if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= k):
            bad = np.unique(labelled[(labelled < 0) | (labelled >= k)].numpy()).tolist()
            return {
                "index": index,
                "error": f"{sample.mask}: label values {bad[:5]} outside 0..{k - 1} (and not "
                f"{IGNORE_INDEX}) for {self.preset.name}",
            }
        item = {
            "index": index,
            "image": preprocess_image(raw, self.preset.short_side, self.preset.max_long_side),
            "mask": mask,
        }
        if self.keep_raw:
            item["raw"] = raw
        return item
