"""Tiny synthetic datasets written in each benchmark layout (helpers of tests/evaluation)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from groupvit_small import small_config

# real CLIP token ids (vocabulary 49408) so that the prompts go through the shipped tokenizer
EVAL_CONFIG = small_config(text_encoder={"vocab_size": 49408, "context_length": 77, "layers": 1})


def write_rgb(path: str, h: int, w: int, seed: int, fmt: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    # smooth colour blobs rather than noise: JPEG keeps them, and the model sees structure
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(np.sin(xx / (3 + seed % 5) + c) * 100 + 128 + rng.normal(0, 5, (h, w))) for c in range(3)], -1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, format=fmt, quality=95)


def write_mask(path: str, labels: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def random_mask(h: int, w: int, num_classes: int, seed: int, ignore: bool = True) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    mask = rng.integers(0, num_classes, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    if ignore:
        mask[:2, :] = 255  # a border of ignored pixels, as VOC's object outlines
    return mask


#: (height, width) of the images of every tiny dataset: landscape, portrait, and one that needs 2 windows
SIZES = [(40, 60), (56, 40), (32, 32)]


def make_layout(root: str, dataset: str, sizes=SIZES, num_classes: int | None = None) -> list[tuple[str, str]]:
    """Write a tiny dataset in ``dataset``'s layout under ``root``; returns its (image, mask) paths."""
    from groupvit_fast.evaluation.datasets import DATASETS

    k = num_classes or len(DATASETS[dataset].class_names)
    pairs = []
    stems = [f"2007_{i:06d}" for i in range(len(sizes))]
    for i, ((h, w), stem) in enumerate(zip(sizes, stems, strict=True)):
        mask = random_mask(h, w, k, i)
        if dataset in ("voc", "context"):
            base = os.path.join(root, "VOCdevkit", "VOC2012" if dataset == "voc" else "VOC2010")
            img = os.path.join(base, "JPEGImages", stem + ".jpg")
            msk = os.path.join(
                base, "SegmentationClass" if dataset == "voc" else "SegmentationClassContext", stem + ".png"
            )
        elif dataset == "coco-object":
            img = os.path.join(root, "images", "val2017", f"{i:012d}.jpg")
            msk = os.path.join(root, "annotations", "val2017", f"{i:012d}_instanceTrainIds.png")
        elif dataset == "ade20k":
            base = os.path.join(root, "ADEChallengeData2016")
            img = os.path.join(base, "images", "validation", f"ADE_val_{i:08d}.jpg")
            msk = os.path.join(base, "annotations", "validation", f"ADE_val_{i:08d}.png")
            mask = np.where(mask == 255, 0, mask + 1)  # ADE stores 0 = unlabelled, classes from 1
        else:
            city = "lindau" if i % 2 else "frankfurt"
            img = os.path.join(root, "leftImg8bit", "val", city, f"{city}_{i:06d}_000019_leftImg8bit.png")
            msk = os.path.join(root, "gtFine", "val", city, f"{city}_{i:06d}_000019_gtFine_labelTrainIds.png")
        write_rgb(img, h, w, i)
        write_mask(msk, mask)
        pairs.append((img, msk))
    if dataset in ("voc", "context"):
        split = os.path.join(base, "ImageSets", "Segmentation" if dataset == "voc" else "SegmentationContext")
        os.makedirs(split, exist_ok=True)
        with open(os.path.join(split, "val.txt"), "w") as f:
            f.write("\n".join(stems) + "\n")
    return pairs


CLASSES = ["cat", "dog", "bird", "fish", "horse", "car", "tree"]
PER_CLASS = 2


def write_imagefolder(root):
    """``root/<wnid>/*.JPEG`` in ImageFolder layout; returns [(path, label)] in torchvision order."""
    out = []
    for label, _ in enumerate(CLASSES):
        for j in range(PER_CLASS):
            path = os.path.join(root, f"n{label:08d}", f"img_{j}.JPEG")
            write_rgb(path, 60 + 7 * j, 50 + 5 * label, seed=label * 10 + j, fmt="JPEG")
            out.append((path, label))
    return out
