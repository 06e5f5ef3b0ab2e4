"""Scenes of 1 to 3 shapes in colours every shape shares: grouping where colour does not name the class.

docs/training.md, "Shapes: grouping where colour does not name the class". In ``scenes`` every class
has its own colour, so a per-pixel colour rule labels them; here the class is the outline alone.
Label ``i`` of an evaluation mask is ``SHAPE_CLASSES[i]``:

=====  ==========================================================
label  shape (all inscribed in the object's bounding circle, r)
=====  ==========================================================
0      background: muted, textured, shaded ground
1      disc: the circle itself
2      square: its 4 corners on the circle, rotated
3      triangle: equilateral, its 3 corners on the circle, rotated
4      star: five points at r, inner corners at 0.45 r, rotated
5      cross: a plus sign, arms r long and 0.6 r wide, rotated
6      ring: the disc less a hole of radius 0.5 r that shows the ground
=====  ==========================================================

A scene is ``size x size`` pixels (``size`` drawn from ``[min_size, max_size]``): the muted ground of
``scenes`` (``canvas.muted_background``), shaded by a linear ramp of brightness (x0.7 to x1.0 along a
random direction, which keeps its saturation), and 1 to 3 objects of distinct shapes, bounding-circle
radius ``[min_radius, max_radius]`` of the side, never overlapping (``canvas.place_object``). Each
object is one flat colour: a name drawn from ``PALETTE`` independently of the shape (so colour never
names the class), with saturation and value jitter. Each object is rasterised once as a coverage mask;
the same mask paints the image and the label mask, so both agree pixel for pixel, and a ring's hole is
left out of both (its pixels keep the ground and label 0).

Captions name the drawn shapes in random order, each with its colour when ``colour_words`` (the
probability a caption names colours) says so: "a purple ring and a red star", "a photo of a disc
next to a cross". The nouns (the multi-label prompts' classes) are the shape words.

``write_shapes(out)`` writes ``out/train/shapes-{000000..}.tar`` and ``out/eval/{images,masks}/`` as
``scenes`` does (``writers``), each sample from its own stream, the held-out ones never from a training one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .canvas import muted_background, place_object, regular_polygon, rgb
from .scenes import SceneSpec, listing_caption, with_article
from .writers import write_eval, write_shards, write_splits

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from PIL import Image

__all__ = [
    "SHAPE_CLASSES",
    "SHAPE_NOUNS",
    "PALETTE",
    "ShapeSpec",
    "ShapeObject",
    "ShapeScene",
    "draw_shapes",
    "shape_outline",
    "write_shape_shards",
    "write_shape_eval",
    "write_shapes",
]

#: label order of the evaluation masks: background, then the shapes
SHAPE_CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "star", "cross", "ring")
SHAPE_NOUNS: tuple[str, ...] = SHAPE_CLASSES[1:]

#: colour name -> hue in [0, 1); every shape draws from all of them alike
PALETTE: dict[str, float] = {
    "red": 0.0,
    "orange": 0.075,
    "yellow": 0.15,
    "green": 0.33,
    "blue": 0.61,
    "purple": 0.78,
}
_HUE_JITTER = 0.015
_SATURATION = (0.65, 0.95)
_VALUE = (0.70, 0.95)
_RING_HOLE = 0.5  # the hole's radius, as a fraction of the ring's
_STAR_INNER = 0.45
_CROSS_HALF_WIDTH = 0.3


@dataclass(frozen=True)
class ShapeSpec(SceneSpec):
    """``SceneSpec`` (image side range, objects per scene) plus the objects' bounding-circle radius as
    fractions of the side and the probability that a caption names the colours."""

    min_radius: float = 0.12
    max_radius: float = 0.25
    colour_words: float = 1.0

    def check(self) -> None:
        super().check()
        if not 0.05 <= self.min_radius <= self.max_radius <= 0.3:
            raise ValueError(
                "object radii (fractions of the side) must satisfy 0.05 <= min_radius <= max_radius <= 0.3, "
                f"got {self.min_radius} and {self.max_radius}"
            )
        if not 0.0 <= self.colour_words <= 1.0:
            raise ValueError(f"colour_words is a probability, got {self.colour_words}")


#: the held-out split's default: square scenes of 128 px (one window at the recipe's test time)
EVAL_SPEC = ShapeSpec(min_size=128, max_size=128)


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: its shape (noun), label, colour name, fill colour, bounding circle ``(cx, cy, r)``
    and rotation (radians; ``shape_outline(noun, *circle, angle)`` is its outline)."""

    noun: str
    label: int
    colour_name: str
    colour: tuple[int, int, int]
    circle: tuple[float, float, float]
    angle: float


@dataclass
class ShapeScene:
    """A rendered scene: ``image`` (RGB ``PIL.Image``), ``ground`` (the same scene with no object),
    ``mask`` (``uint8 [H, W]``, labels of ``SHAPE_CLASSES``; zeros unless drawn ``with_mask``), the
    drawn ``objects``, the ``caption`` and its ``nouns`` (the shape words)."""

    image: Image.Image
    ground: Image.Image
    mask: np.ndarray
    objects: list[ShapeObject]
    caption: str
    nouns: list[str] = field(default_factory=list)


def shape_outline(noun: str, cx: float, cy: float, r: float, angle: float) -> list[list[tuple[float, float]]]:
    """The polygons of ``noun`` inside the circle of radius ``r`` around ``(cx, cy)``: the outline, then
    (a ring) the hole, which is cut out of it."""
    if noun in ("disc", "ring"):
        outline = [regular_polygon(cx, cy, r, 64, 0.0)]
        return outline + [regular_polygon(cx, cy, _RING_HOLE * r, 48, 0.0)] if noun == "ring" else outline
    if noun == "square":
        return [regular_polygon(cx, cy, r, 4, angle)]
    if noun == "triangle":
        return [regular_polygon(cx, cy, r, 3, angle)]
    if noun == "star":
        return [
            [
                (cx + rad * math.cos(angle + math.pi * i / 5), cy + rad * math.sin(angle + math.pi * i / 5))
                for i, rad in ((i, r if i % 2 == 0 else _STAR_INNER * r) for i in range(10))
            ]
        ]
    if noun != "cross":
        raise ValueError(f"unknown shape {noun!r}: use one of {', '.join(SHAPE_NOUNS)}")
    w = _CROSS_HALF_WIDTH * r  # a plus sign: 12 corners, arms reaching the circle's radius
    corners = [
        (w, -w),
        (w, -r),
        (-w, -r),
        (-w, -w),
        (-r, -w),
        (-r, w),
        (-w, w),
        (-w, r),
        (w, r),
        (w, w),
        (r, w),
        (r, -w),
    ]
    # the arm tips' corners lie at distance sqrt(r^2 + w^2) > r; scale so they touch the circle
    k = r / math.hypot(r, w)
    ca, sa = math.cos(angle), math.sin(angle)
    return [[(cx + k * (ca * x - sa * y), cy + k * (sa * x + ca * y)) for x, y in corners]]


def _shaded(image: Image.Image, rng: random.Random) -> Image.Image:
    """``image`` times a brightness ramp from x0.7 to x1.0 along a random direction (hue and saturation kept)."""
    from PIL import Image

    size = image.size[0]
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1) - 0.5
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / math.sqrt(0.5)  # in [-1, 1]
    factor = 0.85 + 0.15 * ramp
    arr = np.asarray(image, dtype=np.float32) * factor[..., None]
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="RGB")


def _coverage(size: int, polygons: list[list[tuple[float, float]]]) -> Image.Image:
    """The ``L`` mask (255 inside) of the first polygon less the others."""
    from PIL import Image, ImageDraw

    cover = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(cover)
    draw.polygon(polygons[0], fill=255)
    for hole in polygons[1:]:
        draw.polygon(hole, fill=0)
    return cover


def draw_shapes(rng: random.Random, spec: ShapeSpec = ShapeSpec(), *, with_mask: bool = True) -> ShapeScene:
    """One random shapes scene (see the module docstring); the mask is all zeros unless ``with_mask``.

    Draws, in order: size, object count, the ground, its shading, the shapes, then per object its
    circle, colour name, hue jitter, saturation, value and rotation, then the caption."""
    from PIL import Image

    size = rng.randint(spec.min_size, spec.max_size)
    count = rng.randint(spec.min_objects, spec.max_objects)
    ground = _shaded(muted_background(size, rng), rng)
    image = ground.copy()
    mask_img = Image.new("L", (size, size), 0)
    nouns = rng.sample(SHAPE_NOUNS, count)
    placed: list[tuple[float, float, float]] = []
    objects: list[ShapeObject] = []
    for noun in nouns:
        circle = place_object(rng, size, spec.min_radius * size, spec.max_radius * size, placed)
        if circle is None:  # no room left: one object fewer
            continue
        name = rng.choice(tuple(PALETTE))
        hue = PALETTE[name] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
        colour = rgb(hue, rng.uniform(*_SATURATION), rng.uniform(*_VALUE))
        angle = rng.uniform(0, 2 * math.pi)
        cover = _coverage(size, shape_outline(noun, *circle, angle))
        label = SHAPE_CLASSES.index(noun)
        image.paste(colour, (0, 0, size, size), cover)
        if with_mask:
            mask_img.paste(label, (0, 0, size, size), cover)
        objects.append(ShapeObject(noun, label, name, colour, circle, angle))
    named = rng.random() < spec.colour_words
    phrases = [with_article(f"{o.colour_name} {o.noun}" if named else o.noun) for o in objects]
    mask = np.asarray(mask_img, dtype=np.uint8).copy()
    return ShapeScene(image, ground, mask, objects, listing_caption(phrases, rng), [o.noun for o in objects])


def write_shape_shards(
    folder: str,
    num_shards: int,
    length: int,
    *,
    seed: int = 0,
    spec: ShapeSpec = ShapeSpec(),
    pattern: str = "shapes-{:06d}.tar",
) -> list[str]:
    """``length`` training scenes over ``num_shards`` webdataset shards (``writers.write_shards``: png,
    txt, json with the nouns; no mask); returns their paths."""
    return write_shards(folder, draw_shapes, spec, num_shards, length, name="shapes", seed=seed, pattern=pattern)


def write_shape_eval(folder: str, count: int, *, seed: int = 0, spec: ShapeSpec = EVAL_SPEC) -> list[str]:
    """``count`` held-out scenes as ``folder/images/shape_NNNNN.png`` + ``folder/masks/shape_NNNNN.png``
    (label PNG, values 0..6 as ``SHAPE_CLASSES``) and ``folder/captions.jsonl``; returns the stems."""
    return write_eval(folder, draw_shapes, spec, count, name="shapes", seed=seed, stem="shape")


def write_shapes(
    out: str,
    *,
    train_length: int = 16384,
    num_shards: int = 8,
    eval_count: int = 200,
    seed: int = 0,
    spec: ShapeSpec = ShapeSpec(),
    eval_spec: ShapeSpec = EVAL_SPEC,
) -> dict[str, str]:
    """Both splits under ``out``: ``out/train`` (shards of ``spec``) and ``out/eval`` (``eval_spec``:
    by default 128 px squares). Returns ``{'train': folder, 'eval': folder}``."""
    return write_splits(
        out,
        write_shape_shards,
        write_shape_eval,
        spec,
        eval_spec,
        train_length=train_length,
        num_shards=num_shards,
        eval_count=eval_count,
        seed=seed,
    )
