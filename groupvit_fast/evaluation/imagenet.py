"""ImageNet validation readers: a torchvision ``ImageFolder`` tree or webdataset tar shards.

* ``ImageFolder``: ``<data>/<wnid>/*.JPEG`` (or ``<data>/val/<wnid>/...``), classes in sorted folder
  order, images sorted within each class (torchvision's order);
* webdataset shards: ``.tar`` files whose members ``<key>.jpg`` and ``<key>.cls`` (the label as
  decimal text) make one sample, as NVlabs writes them. The shards are indexed once (tar headers
  only) so that any sample can be read directly: each rank then takes an exact disjoint slice,
  which streaming shard by shard cannot give when shard counts do not divide evenly. Only the
  standard library reads them (the ``webdataset`` package is not needed).

Both give ``float32 [3, crop, crop]`` images: shorter side resized to ``resize`` (bicubic, the
longer side truncated, as torchvision's ``Resize(int)``), centre crop ``crop``, ImageNet mean/std.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "ImageRecord",
    "find_imagefolder",
    "find_shards",
    "index_shards",
    "ImageNetSamples",
    "val_transform",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".webp")
_TAR_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ImageRecord:
    """One image: a file (``offset is None``) or ``size`` bytes at ``offset`` inside the tar ``path``."""

    path: str
    label: int
    offset: int | None = None
    size: int | None = None
    name: str = ""


def find_imagefolder(root: str) -> tuple[list[str], list[ImageRecord]]:
    """``(class_folders, records)`` of an ImageFolder tree (``ValueError`` if empty or missing)."""
    if os.path.isdir(os.path.join(root, "val")):
        root = os.path.join(root, "val")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"{root}: no class folders (expected <wnid>/*.JPEG)")
    records = []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for f in sorted(os.listdir(folder)):
            if f.lower().endswith(_IMAGE_EXTENSIONS):
                records.append(ImageRecord(os.path.join(folder, f), label, name=f"{cls}/{f}"))
    if not records:
        raise ValueError(f"{root}: the class folders hold no images")
    return classes, records


def _expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> ``a-000.tar, a-001.tar, a-002.tar`` (webdataset's shard notation)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo)
    return [
        p
        for i in range(int(lo), int(hi) + 1)
        for p in _expand_braces(pattern[: m.start()] + str(i).zfill(width) + pattern[m.end() :])
    ]


def find_shards(data: str) -> list[str]:
    """Tar shards named by ``data``: a folder of ``*.tar``, one ``.tar``, a glob or a brace pattern."""
    if os.path.isdir(data):
        shards = sorted(glob.glob(os.path.join(data, "*.tar")))
        if not shards:
            raise ValueError(f"{data}: no .tar shards in this folder")
        return shards
    shards = sorted(glob.glob(data)) if any(c in data for c in "*?[") else _expand_braces(data)
    if not shards:
        raise ValueError(f"{data}: no shard matches")
    for s in shards:
        if not os.path.isfile(s):
            raise ValueError(f"{s}: no such folder or shard" if s == data else f"{s}: no such shard")
    return shards


def _split_key(member_name: str) -> tuple[str, str]:
    # webdataset's rule: the extension starts at the first dot of the file's base name
    folder, base = os.path.split(member_name)
    stem, _, ext = base.partition(".")
    return os.path.join(folder, stem), ext.lower()


def index_shards(shards: list[str]) -> list[ImageRecord]:
    """One record per ``<key>.jpg`` + ``<key>.cls`` pair, in shard and member order.

    ``ValueError`` naming the shard for an unreadable tar, a sample without ``cls`` or image, or a
    ``cls`` that is not an integer.
    """
    records = []
    for shard in shards:
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = _split_key(member.name)
                    entry = samples.setdefault(key, {})
                    if ext == "cls":
                        raw = tar.extractfile(member).read().decode("utf-8").strip()
                        try:
                            entry["cls"] = int(raw)
                        except ValueError:
                            raise ValueError(f"{shard}: {member.name} holds {raw[:20]!r}, not a class index") from None
                    elif ext in _TAR_IMAGE_KEYS:
                        entry["image"] = (member.offset_data, member.size)
        except (tarfile.TarError, OSError) as err:
            raise ValueError(f"{shard}: cannot read tar shard ({err})") from None
        for key, entry in samples.items():
            if "image" not in entry or "cls" not in entry:
                missing = "image (jpg)" if "image" not in entry else "cls"
                raise ValueError(f"{shard}: sample {key!r} has no {missing}")
            offset, size = entry["image"]
            records.append(ImageRecord(shard, entry["cls"], offset, size, name=key))
    if not records:
        raise ValueError(f"{shards[0]}: the shards hold no samples")
    return records


def val_transform(image: PILImage, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """PIL RGB image -> normalised ``float32 [3, crop, crop]`` (resize shorter side, centre crop)."""
    from PIL import Image

    w, h = image.size
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    image = image.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (arr - mean) / std


class ImageNetSamples(torch.utils.data.Dataset):
    """Item ``i``: ``{'image': [3, crop, crop], 'label': int}`` or ``{'error': one line}`` (raised by the
    main process, not as a worker traceback)."""

    def __init__(self, records: list[ImageRecord], indices: list[int], resize: int = 256, crop: int = 224):
        self.records = records
        self.indices = indices
        self.resize = resize
        self.crop = crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image, UnidentifiedImageError

        rec = self.records[self.indices[i]]
        where = rec.path if rec.offset is None else f"{rec.path}: {rec.name}"
        try:
            if rec.offset is None:
                with Image.open(rec.path) as img:
                    image = img.convert("RGB")
            else:
                with open(rec.path, "rb") as f:
                    f.seek(rec.offset)
                    data = f.read(rec.size)
                with Image.open(io.BytesIO(data)) as img:
                    image = img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            return {"error": f"{where}: cannot read image ({err})"}
        return {"image": val_transform(image, self.resize, self.crop), "label": rec.label}
