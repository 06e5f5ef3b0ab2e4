"""A synthetic image-text dataset: coloured shapes with captions, written as webdataset shards.

Each sample is one filled shape (``SHAPES``) in one colour (``COLOURS``) at a random place and
size on a random grey background, captioned ``"a photo of a <colour> <shape>"``, stored as
img2dataset does (``<key>.jpg``, ``<key>.txt``, ``<key>.json``). Small enough to train a tiny
GroupViT on a CPU in minutes (``configs/tiny.yml``); the tests use it too.
"""

from __future__ import annotations

import io
import json
import os
import random
from typing import TYPE_CHECKING

from ...common.files import atomic_write

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from PIL import Image

__all__ = ["COLOURS", "SHAPES", "class_names", "write_synthetic_shards", "draw_shape"]

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 220, 40)}
SHAPES = ("square", "circle", "triangle")


def class_names() -> list[str]:
    """``'<colour> <shape>'`` for every class, class index order."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def draw_shape(colour: str, shape: str, size: int, rng: random.Random) -> Image.Image:
    """A ``size x size`` RGB ``PIL.Image`` of one shape."""
    from PIL import Image, ImageDraw

    grey = rng.randrange(90, 170)
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    extent = rng.randrange(size // 3, int(size * 0.8))
    x0, y0 = rng.randrange(0, size - extent), rng.randrange(0, size - extent)
    box = (x0, y0, x0 + extent, y0 + extent)
    fill = COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(x0 + extent // 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)], fill=fill)
    return image


def write_synthetic_shards(
    folder: str,
    num_shards: int,
    length: int,
    *,
    image_size: int = 64,
    seed: int = 0,
    pattern: str = "synthetic-{:06d}.tar",
) -> list[str]:
    """Write ``length`` samples over ``num_shards`` shards into ``folder``; returns the shard paths.

    Shards are written through ``atomic_write``, so a folder holds only complete shards.
    """
    from webdataset import TarWriter

    if num_shards <= 0 or length < num_shards:
        raise ValueError(f"need num_shards > 0 and length >= num_shards, got {num_shards} and {length}")
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    names = class_names()
    paths = []
    for shard in range(num_shards):
        path = os.path.join(folder, pattern.format(shard))
        indices = range(shard * length // num_shards, (shard + 1) * length // num_shards)

        def write(tmp: str, indices: range = indices) -> None:
            with TarWriter(tmp) as sink:
                for index in indices:
                    label = rng.randrange(len(names))
                    colour, shape = names[label].split()
                    buffer = io.BytesIO()
                    draw_shape(colour, shape, image_size, rng).save(buffer, format="JPEG", quality=90)
                    caption = f"a photo of a {colour} {shape}"
                    sink.write(
                        {
                            "__key__": f"{index:09d}",
                            "jpg": buffer.getvalue(),
                            "txt": caption,
                            "json": json.dumps({"caption": caption, "label": label}).encode(),
                        }
                    )

        atomic_write(path, write)
        paths.append(path)
    return paths
