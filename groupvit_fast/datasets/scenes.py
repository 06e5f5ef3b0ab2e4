"""Scenes of 1 to 3 coloured objects with captions, for training GroupViT and scoring its segmentation.

The vocabulary (docs/training.md, "Scenes: segmentation from captions") is fixed; the class name
is the noun, and label ``i`` of an evaluation mask is ``SCENE_CLASSES[i]``:

======  ==============================  =====
label   noun: appearance                hue
======  ==============================  =====
0       background (textured, muted)    any, saturation <= 0.18
1       apple: red disc                 ~0 deg
2       lemon: yellow ellipse, 1.5 : 1  ~54 deg
3       leaf: green triangle            ~120 deg
4       box: brown square               ~28 deg, dark
5       ball: blue disc                 ~220 deg
6       star: orange five-pointed star  ~32 deg, bright
======  ==============================  =====

A scene is ``size x size`` pixels (``size`` drawn from ``[min_size, max_size]``): a muted
background (a base grey-ish colour of saturation <= 0.12 with stripes and blotches of saturation
<= 0.18) and 1 to 3 objects of distinct classes, each with its own size, position, rotation and
hue/brightness jitter, never overlapping (their bounding circles are apart). Objects are filled
with one saturated colour (saturation >= 0.55), so no background pixel can be taken for an
object's colour. Each object is rasterised once as a polygon; the same polygon paints the image
and, for the evaluation split, the label mask, so mask and image agree pixel for pixel.

Captions name exactly the drawn objects' nouns, in random order, in one of ``CAPTION_TEMPLATES``
("an apple and a star", "a photo of a ball next to a box", "there is a leaf", ...). Training
shards carry the nouns next to the caption (``<key>.json``: ``{"caption", "nouns"}``), so the
multi-label prompts need no part-of-speech tagger (``prompts.TextTransform``).

``write_scenes(out)`` writes ``out/train/scenes-{000000..}.tar`` (webdataset: ``<key>.png``,
``<key>.txt``, ``<key>.json``; no masks) and ``out/eval/{images,masks}/<stem>.png`` (the held-out
split, drawn from another random stream than the training shards).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .canvas import BACKGROUND_MAX_SATURATION, muted_background, place_object, regular_polygon, rgb
from .writers import write_eval, write_shards, write_splits

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from PIL import Image

__all__ = [
    "SCENE_CLASSES",
    "SCENE_NOUNS",
    "CAPTION_TEMPLATES",
    "SceneObject",
    "Scene",
    "draw_scene",
    "scene_caption",
    "listing_caption",
    "with_article",
    "BACKGROUND_MAX_SATURATION",
    "OBJECT_MIN_SATURATION",
    "write_scene_shards",
    "write_scene_eval",
    "write_scenes",
    "SceneSpec",
]

#: label order of the evaluation masks: background, then the nouns
SCENE_CLASSES: tuple[str, ...] = ("background", "apple", "lemon", "leaf", "box", "ball", "star")
SCENE_NOUNS: tuple[str, ...] = SCENE_CLASSES[1:]

# (hue in [0, 1), saturation range, value range); hue jitter is +-_HUE_JITTER
_COLOURS = {
    "apple": (0.0, (0.75, 0.95), (0.70, 0.95)),
    "lemon": (0.15, (0.75, 0.95), (0.85, 1.0)),
    "leaf": (0.33, (0.65, 0.90), (0.45, 0.75)),
    "box": (0.078, (0.60, 0.80), (0.35, 0.50)),
    "ball": (0.61, (0.70, 0.95), (0.65, 0.95)),
    "star": (0.09, (0.85, 1.0), (0.90, 1.0)),
}
_HUE_JITTER = 0.02
#: objects' saturation bound (>= 0.60 before rounding to 8 bits); the ground's is BACKGROUND_MAX_SATURATION
OBJECT_MIN_SATURATION = 0.55

#: caption templates; ``{}`` is the list of noun phrases ("an apple", "an apple and a star", ...)
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}",
    "there is {}",
    "a picture of {}",
    "an image with {}",
    "{} on the ground",
    "a drawing of {}",
    "look at {}",
    "i see {}",
    "a simple scene with {}",
)
_JOINERS = (" and ", " next to ", " with ", " beside ")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its noun, label, polygon (pixel coordinates) and fill colour."""

    noun: str
    label: int
    polygon: tuple[tuple[float, float], ...]
    colour: tuple[int, int, int]


@dataclass
class Scene:
    """A rendered scene: ``image`` (RGB ``PIL.Image``), ``mask`` (``uint8 [H, W]``, labels of
    ``SCENE_CLASSES``), the drawn ``objects`` and the ``caption``."""

    image: Image.Image
    mask: np.ndarray
    objects: list[SceneObject]
    caption: str
    nouns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SceneSpec:
    """What scenes look like: image side range (pixels) and objects per scene."""

    min_size: int = 64
    max_size: int = 128
    min_objects: int = 1
    max_objects: int = 3

    def check(self) -> None:
        if not 32 <= self.min_size <= self.max_size <= 1024:
            raise ValueError(
                f"scene sizes must satisfy 32 <= min_size <= max_size <= 1024, got {self.min_size} and {self.max_size}"
            )
        if not 1 <= self.min_objects <= self.max_objects <= 3:
            raise ValueError(
                f"objects per scene must satisfy 1 <= min <= max <= 3, got {self.min_objects} and {self.max_objects}"
            )


def _polygon(noun: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The outline of ``noun`` inside the circle of radius ``r`` around ``(cx, cy)``."""
    if noun in ("apple", "ball"):
        return regular_polygon(cx, cy, r, 48, 0.0)
    if noun == "lemon":  # ellipse of axes r and r / 1.5, rotated
        ca, sa = math.cos(angle), math.sin(angle)
        pts = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x, y = r * math.cos(t), r / 1.5 * math.sin(t)
            pts.append((cx + ca * x - sa * y, cy + sa * x + ca * y))
        return pts
    if noun == "leaf":
        return regular_polygon(cx, cy, r, 3, angle)
    if noun == "box":
        return regular_polygon(cx, cy, r, 4, angle)
    # star: 5 outer points at r, 5 inner at 0.45 r
    pts = []
    for i in range(10):
        radius = r if i % 2 == 0 else 0.45 * r
        a = angle + math.pi * i / 5
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


def with_article(words: str) -> str:
    """``'an apple'``, ``'a red star'``: the indefinite article of ``words``' first letter."""
    return ("an " if words[0] in "aeiou" else "a ") + words


def scene_caption(nouns: list[str], rng: random.Random) -> str:
    """A caption naming exactly ``nouns`` (in the given order), e.g. ``'a photo of an apple next to a box'``."""
    return listing_caption([with_article(noun) for noun in nouns], rng)


def listing_caption(phrases: list[str], rng: random.Random) -> str:
    """One of ``CAPTION_TEMPLATES`` around 1-3 noun ``phrases`` joined in the given order."""
    if len(phrases) == 1:
        listed = phrases[0]
    elif len(phrases) == 2:
        listed = phrases[0] + rng.choice(_JOINERS) + phrases[1]
    else:
        listed = rng.choice(
            (
                f"{phrases[0]}, {phrases[1]} and {phrases[2]}",
                f"{phrases[0]}{rng.choice(_JOINERS)}{phrases[1]} and {phrases[2]}",
            )
        )
    return rng.choice(CAPTION_TEMPLATES).format(listed)


def draw_scene(rng: random.Random, spec: SceneSpec = SceneSpec(), *, with_mask: bool = True) -> Scene:
    """One random scene (see the module docstring); the mask is all zeros unless ``with_mask``."""
    from PIL import Image, ImageDraw

    size = rng.randint(spec.min_size, spec.max_size)
    count = rng.randint(spec.min_objects, spec.max_objects)
    image = muted_background(size, rng)
    mask_img = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask_img)
    nouns = rng.sample(SCENE_NOUNS, count)
    # radii as fractions of the side; smaller when there are more objects, so that they fit
    r_max = {1: 0.30, 2: 0.22, 3: 0.18}[count] * size
    r_min = 0.11 * size
    placed: list[tuple[float, float, float]] = []
    objects: list[SceneObject] = []
    for noun in nouns:
        circle = place_object(rng, size, r_min, r_max, placed)
        if circle is None:  # no room left (rare with these radii): draw fewer objects
            continue
        cx, cy, r = circle
        hue, s_range, v_range = _COLOURS[noun]
        colour = rgb(hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER), rng.uniform(*s_range), rng.uniform(*v_range))
        polygon = tuple(_polygon(noun, cx, cy, r, rng.uniform(0, 2 * math.pi)))
        label = SCENE_CLASSES.index(noun)
        draw.polygon(polygon, fill=colour)
        if with_mask:
            draw_mask.polygon(polygon, fill=label)
        objects.append(SceneObject(noun, label, polygon, colour))
    drawn = [o.noun for o in objects]
    return Scene(image, np.asarray(mask_img, dtype=np.uint8).copy(), objects, scene_caption(drawn, rng), drawn)


def write_scene_shards(
    folder: str,
    num_shards: int,
    length: int,
    *,
    seed: int = 0,
    spec: SceneSpec = SceneSpec(),
    pattern: str = "scenes-{:06d}.tar",
) -> list[str]:
    """Write ``length`` training scenes over ``num_shards`` webdataset shards; returns their paths.

    Each record: ``<key>.png`` (the image, lossless), ``<key>.txt`` (the caption) and ``<key>.json``
    (``{"caption", "nouns"}``). No mask is written. Shards appear complete or not at all (``atomic_write``).
    """
    return write_shards(folder, draw_scene, spec, num_shards, length, name="scenes", seed=seed, pattern=pattern)


def write_scene_eval(folder: str, count: int, *, seed: int = 0, spec: SceneSpec = SceneSpec()) -> list[str]:
    """Write ``count`` held-out scenes as ``folder/images/<stem>.png`` + ``folder/masks/<stem>.png``
    (label PNG, values 0..6 as ``SCENE_CLASSES``) and ``folder/captions.jsonl``; returns the stems."""
    return write_eval(folder, draw_scene, spec, count, name="scenes", seed=seed, stem="scene")


def write_scenes(
    out: str,
    *,
    train_length: int = 16384,
    num_shards: int = 8,
    eval_count: int = 200,
    seed: int = 0,
    spec: SceneSpec = SceneSpec(),
    eval_spec: SceneSpec | None = None,
) -> dict[str, str]:
    """Both splits under ``out``: ``out/train`` (shards) and ``out/eval`` (images, masks, captions).

    ``eval_spec`` (default: ``spec``) sets the held-out scenes' sizes and object counts.
    Returns ``{'train': folder, 'eval': folder}``.
    """
    return write_splits(
        out,
        write_scene_shards,
        write_scene_eval,
        spec,
        eval_spec or spec,
        train_length=train_length,
        num_shards=num_shards,
        eval_count=eval_count,
        seed=seed,
    )
