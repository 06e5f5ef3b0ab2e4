"""What every generated data set draws alike: colours, regular polygons, the muted textured ground and
the placement of non-overlapping objects (docs/training.md, "Scenes: segmentation from captions" and
"Shapes: grouping where colour does not name the class").

Each function draws from the ``random.Random`` it is given, in a fixed order, so a scene is a function
of its stream alone: ``scenes`` and ``shapes`` call these in the order their generators document.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from PIL import Image

__all__ = ["BACKGROUND_MAX_SATURATION", "rgb", "regular_polygon", "muted_background", "place_object", "png_bytes"]

#: the ground's saturation bound: the base colour is <= 0.12, its stripes and blotches <= 0.16
BACKGROUND_MAX_SATURATION = 0.18


def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """8-bit RGB of an HSV colour (hue wraps around)."""
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def regular_polygon(cx: float, cy: float, radius: float, n: int, angle: float) -> list[tuple[float, float]]:
    """The ``n`` vertices of a regular polygon inscribed in the circle of ``radius`` around ``(cx, cy)``."""
    return [
        (cx + radius * math.cos(angle + 2 * math.pi * i / n), cy + radius * math.sin(angle + 2 * math.pi * i / n))
        for i in range(n)
    ]


def muted_background(size: int, rng: random.Random) -> Image.Image:
    """A ``size x size`` muted textured ground: a base colour, then (half the time) stripes and 3-8
    blotches, all of saturation below ``BACKGROUND_MAX_SATURATION``."""
    from PIL import Image, ImageDraw

    def muted(max_s: float) -> tuple[int, int, int]:
        return rgb(rng.random(), rng.uniform(0.0, max_s), rng.uniform(0.35, 0.85))

    image = Image.new("RGB", (size, size), muted(0.12))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:  # stripes
        width = rng.randint(max(2, size // 24), max(3, size // 8))
        colour = muted(BACKGROUND_MAX_SATURATION - 0.02)
        angle = rng.uniform(0, math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        for offset in range(-2 * size, 2 * size, 2 * width):
            cx, cy = size / 2 + offset * -dy, size / 2 + offset * dx
            a = (cx - 2 * size * dx, cy - 2 * size * dy)
            b = (cx + 2 * size * dx, cy + 2 * size * dy)
            draw.line([a, b], fill=colour, width=width)
    for _ in range(rng.randint(3, 8)):  # blotches
        r = rng.uniform(size / 16, size / 5)
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=muted(BACKGROUND_MAX_SATURATION - 0.02))
    return image


def place_object(
    rng: random.Random,
    size: int,
    r_min: float,
    r_max: float,
    placed: list[tuple[float, float, float]],
    tries: int = 200,
) -> tuple[float, float, float] | None:
    """A bounding circle ``(cx, cy, r)`` inside the ``size``-sided image, ``r`` in ``[r_min, r_max]``,
    more than 2 px away from every circle in ``placed`` (which it is appended to), or ``None`` when
    ``tries`` draws found no room (the scene then has one object fewer)."""
    for _ in range(tries):
        r = rng.uniform(r_min, r_max)
        cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
        if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
            placed.append((cx, cy, r))
            return cx, cy, r
    return None


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as lossless PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
