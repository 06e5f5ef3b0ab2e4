"""The shapes generator: masks are exactly what was drawn, ring holes show the ground, colour never names
the class (a per-pixel colour rule scores at chance, while on ``scenes`` the same rule labels nearly
every object pixel), captions name exactly the drawn shapes, the held-out split never draws from a
training stream, the label order is the documented one, and the recipe tests at the faithful miniature
(docs/training.md, "Shapes: grouping where colour does not name the class")."""

from __future__ import annotations

import colorsys
import glob
import hashlib
import io
import math
import os
import random
import re

import numpy as np
import pytest

from groupvit_fast.datasets.canvas import BACKGROUND_MAX_SATURATION
from groupvit_fast.datasets.scenes import SceneSpec, draw_scene
from groupvit_fast.datasets.shapes import (
    EVAL_SPEC,
    PALETTE,
    SHAPE_CLASSES,
    SHAPE_NOUNS,
    ShapeSpec,
    draw_shapes,
    shape_outline,
    write_shapes,
)

SEEDS = list(range(30))


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64) / 255
    mx, mn = rgb.max(-1), rgb.min(-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)


def test_label_order_is_background_then_the_six_shapes():
    from groupvit_fast.evaluation.datasets import get_preset

    assert SHAPE_CLASSES == ("background", "disc", "square", "triangle", "star", "cross", "ring")
    assert get_preset("shapes").class_names == SHAPE_CLASSES


@pytest.mark.parametrize("seed", SEEDS)
def test_mask_is_exactly_what_was_drawn(seed):
    from PIL import Image, ImageDraw

    scene = draw_shapes(random.Random(seed), EVAL_SPEC)
    image, ground = np.asarray(scene.image), np.asarray(scene.ground)
    size = image.shape[0]
    assert size == 128 and scene.mask.shape == (size, size) and 1 <= len(scene.objects) <= 3
    # an independent raster of the drawn outlines: each filled with its label, a ring's hole cut back to 0
    expected = Image.new("L", (size, size), 0)
    for obj in scene.objects:  # the objects never overlap, so painting order does not matter
        outline, *holes = shape_outline(obj.noun, *obj.circle, obj.angle)
        ImageDraw.Draw(expected).polygon(outline, fill=obj.label)
        for hole in holes:
            ImageDraw.Draw(expected).polygon(hole, fill=0)
    np.testing.assert_array_equal(scene.mask, np.asarray(expected))
    for obj in scene.objects:
        assert SHAPE_CLASSES[obj.label] == obj.noun
        inside = scene.mask == obj.label
        assert inside.sum() > 0.01 * size * size
        assert (image[inside] == np.asarray(obj.colour, dtype=np.uint8)).all()  # one flat colour
        cx, cy, r = obj.circle
        ys, xs = np.nonzero(inside)
        assert np.hypot(xs + 0.5 - cx, ys + 0.5 - cy).max() <= r + 1.5  # within its bounding circle
    background = scene.mask == 0
    np.testing.assert_array_equal(image[background], ground[background])  # the ground, untouched
    assert set(np.unique(scene.mask).tolist()) == {0, *[o.label for o in scene.objects]}


@pytest.mark.parametrize("seed", SEEDS)
def test_every_painted_pixel_is_labelled(seed):
    scene = draw_shapes(random.Random(seed), EVAL_SPEC)
    changed = (np.asarray(scene.image) != np.asarray(scene.ground)).any(-1)
    # a pixel that differs from the ground is an object's pixel (an object colour may equal the ground's
    # by chance, never the other way round)
    assert (scene.mask[changed] > 0).all()


def test_ring_holes_show_the_ground():
    seen = 0
    for seed in range(200):
        scene = draw_shapes(random.Random(seed), EVAL_SPEC)
        image, ground = np.asarray(scene.image), np.asarray(scene.ground)
        for obj in scene.objects:
            if obj.noun != "ring":
                continue
            cx, cy, r = obj.circle
            hole = np.hypot(*np.meshgrid(np.arange(128) + 0.5 - cx, np.arange(128) + 0.5 - cy)) < 0.5 * r - 1.5
            band = np.abs(np.hypot(*np.meshgrid(np.arange(128) + 0.5 - cx, np.arange(128) + 0.5 - cy)) - 0.75 * r) < 1
            assert hole.sum() > 20
            assert (scene.mask[hole] == 0).all()
            np.testing.assert_array_equal(image[hole], ground[hole])
            assert (scene.mask[band] == obj.label).all()
            seen += 1
    assert seen > 20


def test_the_hole_is_cut_from_the_ring_outline_only():
    outline = shape_outline("ring", 50, 50, 20, 0.3)
    assert len(outline) == 2 and max(math.hypot(x - 50, y - 50) for x, y in outline[1]) == pytest.approx(10)
    for noun in SHAPE_NOUNS:
        polys = shape_outline(noun, 50, 50, 20, 1.1)
        assert len(polys) == (2 if noun == "ring" else 1)
        assert max(math.hypot(x - 50, y - 50) for x, y in polys[0]) == pytest.approx(20)
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shape_outline("hexagon", 0, 0, 1, 0)


@pytest.mark.parametrize("seed", SEEDS[:10])
def test_the_ground_is_muted_and_the_objects_saturated(seed):
    scene = draw_shapes(random.Random(seed), EVAL_SPEC)
    sat = _saturation(np.asarray(scene.image))
    # shading rounds to 8 bits: dark ground pixels can gain a little saturation
    assert sat[scene.mask == 0].max() <= BACKGROUND_MAX_SATURATION + 0.02
    assert sat[scene.mask > 0].min() >= 0.6


def _object_pixels(draw, spec, seeds) -> tuple[np.ndarray, np.ndarray]:
    """Every object pixel's (hue bin, value bin) and its class, over the scenes of ``seeds``."""
    colours, labels = [], []
    for seed in seeds:
        scene = draw(random.Random(seed), spec)
        image = np.asarray(scene.image).reshape(-1, 3) / 255.0
        mask = scene.mask.reshape(-1)
        keep = mask > 0
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in image[keep]])
        colours.append(np.minimum((hsv[:, 0] * 36).astype(int), 35) * 4 + np.minimum((hsv[:, 2] * 4).astype(int), 3))
        labels.append(mask[keep])
    return np.concatenate(colours), np.concatenate(labels)


def _colour_rule_accuracy(draw, spec) -> tuple[float, float]:
    """A per-pixel colour rule fitted on one stream of scenes (each of 144 hue x value bins -> its
    majority class), scored on another: its accuracy on object pixels, and that of the best rule that
    ignores colour (the majority class)."""
    fit_c, fit_l = _object_pixels(draw, spec, range(0, 300))
    test_c, test_l = _object_pixels(draw, spec, range(1000, 1300))
    counts = np.zeros((144, 7), dtype=np.int64)
    np.add.at(counts, (fit_c, fit_l), 1)
    prior = np.bincount(fit_l, minlength=7).argmax()
    rule = np.where(counts.sum(1) > 0, counts.argmax(1), prior)
    return float((rule[test_c] == test_l).mean()), float((test_l == prior).mean())


def test_colour_never_names_the_class():
    rule, blind = _colour_rule_accuracy(draw_shapes, ShapeSpec(min_size=64, max_size=64))
    assert rule <= blind + 0.05, (rule, blind)  # chance: no better than ignoring colour
    assert rule < 0.3


def test_the_colour_rule_would_see_a_colour_coded_vocabulary():
    # the same rule on `scenes`, where each class has its own colour: the test above can fail
    rule, blind = _colour_rule_accuracy(draw_scene, SceneSpec(min_size=64, max_size=64))
    assert rule >= 0.85 and rule >= blind + 0.5, (rule, blind)


def test_every_colour_paints_every_shape():
    pairs = set()
    for seed in range(400):
        pairs |= {(o.colour_name, o.noun) for o in draw_shapes(random.Random(seed)).objects}
    assert pairs == {(c, s) for c in PALETTE for s in SHAPE_NOUNS}


@pytest.mark.parametrize("seed", SEEDS)
def test_caption_names_exactly_the_drawn_shapes_and_their_colours(seed):
    scene = draw_shapes(random.Random(seed))
    words = re.findall(r"[a-z]+", scene.caption)
    assert sorted(w for w in words if w in SHAPE_NOUNS) == sorted(o.noun for o in scene.objects)
    assert scene.nouns == [o.noun for o in scene.objects]
    for obj in scene.objects:
        assert f"{obj.colour_name} {obj.noun}" in scene.caption


def test_colour_words_can_be_left_out():
    spec = ShapeSpec(colour_words=0.0)
    for seed in SEEDS:
        caption = draw_shapes(random.Random(seed), spec).caption
        assert not any(re.search(rf"\b{c}\b", caption) for c in PALETTE), caption


@pytest.mark.parametrize(
    "spec, culprit",
    [
        (ShapeSpec(min_radius=0.3, max_radius=0.2), "min_radius"),
        (ShapeSpec(max_radius=0.5), "max_radius"),
        (ShapeSpec(colour_words=1.5), "colour_words"),
        (ShapeSpec(max_objects=4), "objects per scene"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, culprit):
    with pytest.raises(ValueError, match=culprit):
        spec.check()


def test_training_objects_can_be_bigger():
    spec = ShapeSpec(64, 64, 1, 1, 0.25, 0.3)
    radii = [o.circle[2] / 64 for s in SEEDS for o in draw_shapes(random.Random(s), spec).objects]
    assert min(radii) >= 0.25 and max(radii) <= 0.3


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("webdataset")
    out = tmp_path_factory.mktemp("shapes")
    # both splits of one spec: were they to share streams, they would share scenes
    write_shapes(str(out), train_length=60, num_shards=2, eval_count=40, seed=5, spec=EVAL_SPEC)
    return str(out)


def test_held_out_split_never_draws_from_a_training_stream(written):
    import tarfile

    from PIL import Image

    train = set()
    for shard in sorted(glob.glob(os.path.join(written, "train", "shapes-*.tar"))):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png"):
                    image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                    train.add(hashlib.sha256(np.asarray(image).tobytes()).hexdigest())
    assert len(train) == 60
    held = set()
    for path in sorted(glob.glob(os.path.join(written, "eval", "images", "*.png"))):
        held.add(hashlib.sha256(np.asarray(Image.open(path).convert("RGB")).tobytes()).hexdigest())
    assert len(held) == 40 and not held & train
    # by construction: each split draws from streams keyed by its own name
    from groupvit_fast.datasets.writers import stream

    first = draw_shapes(stream("shapes", "eval", 5, 0), EVAL_SPEC)
    stored = Image.open(os.path.join(written, "eval", "images", "shape_00000.png")).convert("RGB")
    np.testing.assert_array_equal(np.asarray(first.image), np.asarray(stored))


def test_held_out_masks_are_label_pngs_of_128_px(written):
    from PIL import Image

    masks = sorted(glob.glob(os.path.join(written, "eval", "masks", "*.png")))
    assert len(masks) == 40
    for path in masks:
        with Image.open(path) as m:
            assert m.mode == "L" and m.size == (128, 128)
            assert set(np.unique(np.asarray(m)).tolist()) <= set(range(7))


def test_prepare_data_shapes_command(tmp_path, capsys):
    pytest.importorskip("webdataset")
    from groupvit_fast.cli import main

    out = tmp_path / "sh"
    argv = ["prepare-data", "shapes", "--out", str(out), "--train-length", "8", "--shards", "2"]
    assert main([*argv, "--eval-count", "3", "--quiet"]) == 0
    assert sorted(os.listdir(out / "train")) == ["shapes-000000.tar", "shapes-000001.tar"]
    assert len(os.listdir(out / "eval" / "masks")) == 3
    assert main(["prepare-data", "shapes", "--out", str(tmp_path / "bad"), "--max-radius", "0.5", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "max_radius" in err and len(err.strip().splitlines()) == 1


def test_the_recipe_tests_at_the_faithful_miniature(tmp_path):
    pytest.importorskip("omegaconf")
    from groupvit_fast.train import load_config

    cfg = load_config("shapes", [], output=str(tmp_path))
    r = cfg.model.img_encoder.img_size
    seg = cfg.evaluate.seg
    assert seg.dataset == "shapes" and list(cfg.data.dataset.train) == ["shapes"]
    # NVlabs: trained at 224, tested at a 448 px short side with 448 px windows at stride 224
    assert (seg.short_side, seg.crop_size, seg.stride) == (2 * r, 2 * r, r)


def test_shape_shards_feed_multi_label_training_batches(written, tmp_path):
    pytest.importorskip("timm")
    from groupvit_fast.train import load_config
    from groupvit_fast.train.data import TrainData
    from groupvit_fast.train.prompts import TextTransform

    seen = []

    def tokenizer(texts, n):
        import torch

        seen.append(list(texts))
        return torch.zeros(len(texts), n, dtype=torch.long)

    class _NoTagger:
        def tag(self, tokens):
            raise AssertionError("shapes carry their nouns")

    cfg = load_config(
        "shapes",
        [
            f"data.dataset.meta.shapes.path={written}",
            "data.dataset.meta.shapes.length=60",
            "data.dataset.meta.shapes.prefix=shapes-{000000..000001}.tar",
            "data.batch_size=8",
            "data.num_workers=0",
        ],
        output=str(tmp_path / "run"),
    )
    data = TrainData(cfg, 0, 1, text_transform=TextTransform(16, 3, tagger=_NoTagger(), tokenizer=tokenizer))
    batch = next(iter(data.loader(0)))
    assert batch["text"].shape == (8, 4, 16) and batch["image"].shape == (8, 3, 64, 64)
    for texts in seen:
        nouns = [w for w in re.findall(r"[a-z]+", texts[0]) if w in SHAPE_NOUNS]
        assert nouns
        for prompt in texts[1:]:
            assert prompt == texts[0] or any(re.search(rf"\b{n}\b", prompt) for n in nouns)


def test_a_wrongly_named_shapes_prefix_is_one_line(tmp_path):
    pytest.importorskip("timm")
    from groupvit_fast.train import load_config
    from groupvit_fast.train.data import TrainData

    cfg = load_config(
        "shapes",
        ["data.dataset.meta.shapes.prefix=scenes-{000000..000001}.tar", "data.num_workers=0"],
        output=str(tmp_path / "run"),
    )
    with pytest.raises(ValueError, match="generated shapes are named 'shapes-"):
        TrainData(cfg, 0, 1)
