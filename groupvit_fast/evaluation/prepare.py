"""``groupvit-fast prepare-data``: label maps of PASCAL Context and COCO-Object from their sources.

* PASCAL Context (59 classes + background): the Detail API's ``trainval_merged.json`` holds, per
  VOC2010 image (``images``: ``image_id``, ``file_name``, ``height``, ``width``, ``phase``), COCO-RLE
  masks with a category id (``annos_segmentation``). Painting the masks in file order (a later
  one over an earlier one) gives the class-id map; its 60 ids (0 and the 59 classes' ids, in
  ascending order) become labels 0..59, as mmseg's ``pascal_context.py`` converter maps them.
  Writes ``VOC2010/SegmentationClassContext/<stem>.png`` and
  ``VOC2010/ImageSets/SegmentationContext/{train,val}.txt``.
* COCO-Object (80 things + background): from COCO-Stuff-164k's ``stuffthingmaps`` PNGs (value =
  COCO category id - 1; things 0..89 with gaps, stuff 91..181, 255 unlabelled): thing ``i`` of
  the 80 (in category-id order) -> ``i + 1``, stuff -> 0 (background), 255 stays ignored. Writes
  ``annotations/<split>2017/<stem>_instanceTrainIds.png``.

Every PNG is written atomically and the split files last: an interrupted conversion leaves no
split file, so ``eval seg`` refuses the folder instead of evaluating part of it. A value the
mapping does not know stops the conversion with the file's name.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from ..common.files import atomic_write

__all__ = [
    "CONTEXT_CATEGORY_IDS",
    "COCO_THING_IDS",
    "decode_rle",
    "context_label_map",
    "convert_context",
    "coco_object_labels",
    "convert_coco_object",
]

#: the Detail category ids of PASCAL Context's 59 classes, with 0 (unlabelled -> background) first
CONTEXT_CATEGORY_IDS = tuple(
    sorted(
        (
            0,
            2,
            259,
            260,
            415,
            324,
            9,
            258,
            144,
            18,
            19,
            22,
            23,
            397,
            25,
            284,
            158,
            159,
            416,
            33,
            162,
            420,
            454,
            295,
            296,
            427,
            44,
            45,
            46,
            308,
            59,
            440,
            445,
            31,
            232,
            65,
            354,
            424,
            68,
            326,
            72,
            458,
            34,
            207,
            80,
            355,
            85,
            347,
            220,
            349,
            360,
            98,
            187,
            104,
            105,
            366,
            189,
            368,
            113,
            115,
        )
    )
)

#: COCO's 80 thing category ids (1-based, with the gaps of the 91-id list)
COCO_THING_IDS = tuple(
    list(range(1, 12))
    + list(range(13, 26))
    + [27, 28]
    + list(range(31, 45))
    + list(range(46, 66))
    + [67, 70]
    + list(range(72, 83))
    + list(range(84, 91))
)


def decode_rle(rle: dict) -> np.ndarray:
    """COCO run-length encoding (``{'size': [h, w], 'counts': list | str}``) -> ``uint8 [h, w]`` mask.

    Runs alternate 0s and 1s (starting with 0s) over the pixels in column-major order. The string
    form packs each run in 5-bit groups (ASCII offset 48, bit 5 = "more groups follow", bit 4 of
    the last group = sign) and stores every run from the fourth on as its difference to the run two
    before it.
    """
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        text = counts.decode("ascii") if isinstance(counts, bytes) else counts
        runs: list[int] = []
        pos = 0
        while pos < len(text):
            value, shift, more = 0, 0, True
            while more:
                group = ord(text[pos]) - 48
                value |= (group & 0x1F) << (5 * shift)
                more = bool(group & 0x20)
                pos += 1
                shift += 1
                if not more and group & 0x10:
                    value |= -1 << (5 * shift)
            if len(runs) > 2:
                value += runs[-2]
            runs.append(value)
    else:
        runs = [int(c) for c in counts]
    if sum(runs) != h * w or any(r < 0 for r in runs):
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, the mask has {h * w}")
    values = np.zeros(len(runs), dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, runs).reshape(w, h).T


def context_label_map(height: int, width: int, annotations: list[dict], where: str) -> np.ndarray:
    """``uint8 [h, w]`` labels 0..59 of one image from its ``annos_segmentation`` entries (in file order)."""
    ids = np.zeros((height, width), dtype=np.int64)
    for ann in annotations:
        m = decode_rle(ann["segmentation"])
        if m.shape != ids.shape:
            raise ValueError(f"{where}: a mask is {m.shape[1]}x{m.shape[0]}, the image {width}x{height}")
        ids[m != 0] = int(ann["category_id"])
    table = np.asarray(CONTEXT_CATEGORY_IDS)
    index = np.searchsorted(table, ids)
    index = np.minimum(index, len(table) - 1)
    unknown = np.unique(ids[table[index] != ids])
    if unknown.size:
        raise ValueError(f"{where}: category ids {unknown[:5].tolist()} are not among PASCAL Context's 59 classes")
    return index.astype(np.uint8)


def _save_png(path: str, labels: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(labels.astype(np.uint8), mode="L")
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _write_lines(path: str, lines: list[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)

    atomic_write(path, write)


def convert_context(devkit: str, json_path: str, progress: bool = False) -> dict[str, int]:
    """Write PASCAL Context label PNGs and split files under ``devkit`` (``VOCdevkit`` or ``VOC2010``'s
    parent). Returns the number of images per phase."""
    base = os.path.join(devkit, "VOC2010") if os.path.isdir(os.path.join(devkit, "VOC2010")) else devkit
    if not os.path.isdir(os.path.join(base, "JPEGImages")):
        raise ValueError(f"{base}: no JPEGImages folder (give the VOCdevkit folder holding VOC2010)")
    if not os.path.isfile(json_path):
        raise ValueError(f"{json_path}: no such file")
    try:
        with open(json_path, encoding="utf-8") as f:
            detail = json.load(f)
        images = detail["images"]
        annos = detail["annos_segmentation"]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{json_path}: not valid JSON ({err})") from None
    except (KeyError, TypeError):
        raise ValueError(
            f"{json_path}: no 'images' / 'annos_segmentation' (not Detail's trainval_merged.json)"
        ) from None
    per_image: dict[int, list[dict]] = {}
    for ann in annos:
        per_image.setdefault(ann["image_id"], []).append(ann)
    out_dir = os.path.join(base, "SegmentationClassContext")
    split_dir = os.path.join(base, "ImageSets", "SegmentationContext")
    os.makedirs(out_dir, exist_ok=True)
    phases: dict[str, list[str]] = {}
    iterator = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="prepare context", unit="img")
    for img in iterator:
        stem = os.path.splitext(img["file_name"])[0]
        labels = context_label_map(
            int(img["height"]),
            int(img["width"]),
            per_image.get(img["image_id"], []),
            f"{json_path}: {img['file_name']}",
        )
        _save_png(os.path.join(out_dir, stem + ".png"), labels)
        phases.setdefault(img.get("phase", "trainval"), []).append(stem)
    os.makedirs(split_dir, exist_ok=True)
    for phase, stems in phases.items():
        _write_lines(os.path.join(split_dir, f"{phase}.txt"), sorted(stems))
    return {phase: len(stems) for phase, stems in phases.items()}


def coco_object_labels(stuff_labels: np.ndarray, where: str) -> np.ndarray:
    """COCO-Stuff label values -> COCO-Object labels (things 1..80, stuff 0, 255 ignored)."""
    table = np.full(256, -1, dtype=np.int64)
    for i, cat in enumerate(COCO_THING_IDS):
        table[cat - 1] = i + 1
    table[91:182] = 0
    table[255] = 255
    out = table[stuff_labels.astype(np.int64)]
    if (out < 0).any():
        bad = np.unique(stuff_labels[out < 0])
        raise ValueError(f"{where}: values {bad[:5].tolist()} are neither COCO things, stuff (91..181) nor 255")
    return out.astype(np.uint8)


def convert_coco_object(stuff_dir: str, out_root: str, split: str = "val", progress: bool = False) -> int:
    """Convert every ``<stem>.png`` of ``stuff_dir`` (COCO-Stuff ``stuffthingmaps_trainval2017/<split>2017``)
    into ``out_root/annotations/<split>2017/<stem>_instanceTrainIds.png``; returns the count."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(stuff_dir):
        raise ValueError(f"{stuff_dir}: no such folder")
    files = sorted(glob.glob(os.path.join(stuff_dir, "*.png")))
    if not files:
        raise ValueError(f"{stuff_dir}: no .png label maps")
    out_dir = os.path.join(out_root, "annotations", f"{split}2017")
    os.makedirs(out_dir, exist_ok=True)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="prepare coco-object", unit="img")
    n = 0
    for path in files:
        try:
            with Image.open(path) as img:
                if img.mode not in ("L", "P"):
                    raise ValueError(f"{path}: a label map must be single-channel 8-bit, got mode {img.mode}")
                arr = np.array(img)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path}: cannot read ({err})") from None
        stem = os.path.splitext(os.path.basename(path))[0]
        _save_png(os.path.join(out_dir, f"{stem}_instanceTrainIds.png"), coco_object_labels(arr, path))
        n += 1
    return n
