"""The scenes generator: masks are what was drawn, captions name exactly the drawn objects, the held-out
split never reaches the training shards, a seed fixes everything, bad arguments are one-line errors,
and the shards' nouns reach the multi-label prompts without a tagger
(docs/training.md, "Scenes: segmentation from captions")."""

from __future__ import annotations

import colorsys
import glob
import hashlib
import io
import json
import os
import random
import re

import numpy as np
import pytest

from groupvit_fast.datasets.scenes import (
    BACKGROUND_MAX_SATURATION,
    OBJECT_MIN_SATURATION,
    SCENE_CLASSES,
    SCENE_NOUNS,
    SceneSpec,
    draw_scene,
    write_scene_eval,
    write_scene_shards,
    write_scenes,
)

SEEDS = list(range(40))


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64) / 255
    mx, mn = rgb.max(-1), rgb.min(-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_mask_is_exactly_what_was_drawn(seed):
    from PIL import Image, ImageDraw

    scene = draw_scene(random.Random(seed))
    image = np.asarray(scene.image)
    size = image.shape[0]
    assert 64 <= size <= 128 and image.shape == (size, size, 3) and scene.mask.shape == (size, size)
    assert 1 <= len(scene.objects) <= 3
    expected = Image.new("L", (size, size), 0)
    for obj in scene.objects:  # the objects never overlap, so painting order does not matter
        ImageDraw.Draw(expected).polygon(obj.polygon, fill=obj.label)
        assert SCENE_CLASSES[obj.label] == obj.noun
    np.testing.assert_array_equal(scene.mask, np.asarray(expected))
    for obj in scene.objects:
        inside = scene.mask == obj.label
        assert inside.sum() > 0.01 * size * size  # large enough to be seen at 64 px
        assert (image[inside] == np.asarray(obj.colour, dtype=np.uint8)).all()  # one flat fill colour
    assert set(np.unique(scene.mask).tolist()) == {0, *[o.label for o in scene.objects]}


@pytest.mark.parametrize("seed", SEEDS)
def test_background_never_has_an_objects_colour(seed):
    scene = draw_scene(random.Random(seed))
    sat = _saturation(np.asarray(scene.image))
    # 8-bit rounding moves a saturation by at most 1/255 of the value's scale; 0.01 covers it
    assert sat[scene.mask == 0].max() <= BACKGROUND_MAX_SATURATION + 0.01
    assert sat[scene.mask > 0].min() >= OBJECT_MIN_SATURATION


def test_object_hues_follow_the_vocabulary():
    hues = {noun: [] for noun in SCENE_NOUNS}
    for seed in range(300):
        for obj in draw_scene(random.Random(seed)).objects:
            hues[obj.noun].append(colorsys.rgb_to_hsv(*(c / 255 for c in obj.colour)))
    expected_hue = {"apple": 0.0, "lemon": 0.15, "leaf": 0.33, "box": 0.078, "ball": 0.61, "star": 0.09}
    for noun, values in hues.items():
        assert len(values) > 20, noun
        h = np.asarray([v[0] for v in values])
        dist = np.abs((h - expected_hue[noun] + 0.5) % 1.0 - 0.5)
        assert dist.max() < 0.03, noun  # hue jitter is +-0.02, plus 8-bit rounding
    # brown (box) and orange (star) are told apart by brightness
    assert max(v[2] for v in hues["box"]) < min(v[2] for v in hues["star"])


@pytest.mark.parametrize("seed", SEEDS)
def test_caption_names_exactly_the_drawn_nouns(seed):
    scene = draw_scene(random.Random(seed))
    words = re.findall(r"[a-z]+", scene.caption)
    named = [w for w in words if w in SCENE_NOUNS]
    assert sorted(named) == sorted(o.noun for o in scene.objects) == sorted(scene.nouns)
    assert len(set(named)) == len(named)


def test_scenes_vary():
    scenes = [draw_scene(random.Random(seed)) for seed in range(200)]
    assert len({s.image.size for s in scenes}) > 30
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert len({s.caption for s in scenes}) > 150
    assert len({re.sub("|".join(SCENE_NOUNS), "X", s.caption) for s in scenes}) > 20  # sentence shapes
    counts = {noun: sum(noun in s.nouns for s in scenes) for noun in SCENE_NOUNS}
    assert min(counts.values()) > 40


@pytest.mark.parametrize("spec", [SceneSpec(64, 64, 3, 3), SceneSpec(128, 128, 1, 1), SceneSpec(96, 112, 2, 3)])
def test_spec_bounds_sizes_and_counts(spec):
    for seed in range(30):
        scene = draw_scene(random.Random(seed), spec)
        assert spec.min_size <= scene.image.size[0] <= spec.max_size
        assert spec.min_objects <= len(scene.objects) <= spec.max_objects


def _shard_records(folder: str) -> list[dict]:
    from webdataset.tariterators import tarfile_samples

    out = []
    for shard in sorted(glob.glob(os.path.join(folder, "*.tar"))):
        out += list(tarfile_samples([{"url": shard}]))
    return out


def _pixels_hash(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return hashlib.sha1(np.asarray(im.convert("RGB")).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("webdataset")
    out = str(tmp_path_factory.mktemp("scenes"))
    write_scenes(out, train_length=96, num_shards=3, eval_count=24, seed=5)
    return out


def test_training_shards_hold_images_captions_and_nouns_but_no_masks(written):
    records = _shard_records(os.path.join(written, "train"))
    assert len(records) == 96
    for rec in records:
        assert set(rec) - {"__key__", "__url__", "__local_path__"} == {"png", "txt", "json"}
        meta = json.loads(rec["json"])
        assert meta["caption"] == rec["txt"].decode()
        assert sorted(meta["nouns"]) == sorted(w for w in re.findall(r"[a-z]+", meta["caption"]) if w in SCENE_NOUNS)


def test_held_out_split_never_reaches_the_training_shards(written):
    train = {_pixels_hash(rec["png"]) for rec in _shard_records(os.path.join(written, "train"))}
    held_out = sorted(glob.glob(os.path.join(written, "eval", "images", "*.png")))
    assert len(held_out) == 24
    for path in held_out:
        with open(path, "rb") as f:
            assert _pixels_hash(f.read()) not in train, path
    # nothing of the held-out split lies among the shards
    assert not glob.glob(os.path.join(written, "train", "*.png"))
    assert sorted(os.listdir(os.path.join(written, "eval"))) == ["captions.jsonl", "images", "masks"]


def test_held_out_masks_are_label_pngs_of_the_image_size(written):
    from PIL import Image

    lines = [json.loads(line) for line in open(os.path.join(written, "eval", "captions.jsonl"), encoding="utf-8")]
    assert len(lines) == 24
    for line in lines:
        image = Image.open(os.path.join(written, "eval", "images", line["stem"] + ".png"))
        mask = Image.open(os.path.join(written, "eval", "masks", line["stem"] + ".png"))
        assert mask.mode == "L" and mask.size == image.size
        labels = set(np.unique(np.asarray(mask)).tolist())
        assert labels == {0, *[SCENE_CLASSES.index(n) for n in line["nouns"]]}


def test_a_seed_fixes_every_scene(tmp_path):
    pytest.importorskip("webdataset")
    a, b, c = (str(tmp_path / n) for n in "abc")
    write_scene_shards(a, 2, 10, seed=1)
    write_scene_shards(b, 2, 10, seed=1)
    write_scene_shards(c, 2, 10, seed=2)
    strip = [{k: v for k, v in r.items() if k != "__url__"} for r in _shard_records(a)]
    assert strip == [{k: v for k, v in r.items() if k != "__url__"} for r in _shard_records(b)]
    assert [r["png"] for r in _shard_records(a)] != [r["png"] for r in _shard_records(c)]
    write_scene_eval(a + "e", 4, seed=1)
    write_scene_eval(b + "e", 4, seed=1)
    for sub in ("images", "masks"):
        for name in os.listdir(os.path.join(a + "e", sub)):
            with open(os.path.join(a + "e", sub, name), "rb") as fa, open(os.path.join(b + "e", sub, name), "rb") as fb:
                assert fa.read() == fb.read()


@pytest.mark.parametrize(
    "argv, culprit",
    [
        (["--min-size", "100", "--max-size", "80"], "min_size <= max_size"),
        (["--min-size", "16"], "32 <= min_size"),
        (["--max-objects", "4"], "min <= max <= 3"),
        (["--min-objects", "3", "--max-objects", "2"], "min <= max <= 3"),
        (["--train-length", "4", "--shards", "8"], "4 scene(s) for 8 shard(s)"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, culprit):
    from groupvit_fast.cli import main

    out = tmp_path / "out"
    assert main(["prepare-data", "scenes", "--out", str(out), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and culprit in err, err
    assert not out.exists()  # checked before anything is written


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    from groupvit_fast.cli import main

    target = tmp_path / "file"
    target.write_text("x")
    assert main(["prepare-data", "scenes", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a folder" in err


def test_prepare_data_scenes_command(tmp_path, capsys):
    pytest.importorskip("webdataset")
    from groupvit_fast.cli import main

    out = tmp_path / "sc"
    assert (
        main(
            [
                "prepare-data",
                "scenes",
                "--out",
                str(out),
                "--train-length",
                "8",
                "--shards",
                "2",
                "--eval-count",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(os.listdir(out / "train")) == ["scenes-000000.tar", "scenes-000001.tar"]
    assert len(os.listdir(out / "eval" / "masks")) == 3


class _NoTagger:
    def tag(self, tokens):
        raise AssertionError("the tagger must not be used when the sample carries its nouns")


def test_carried_nouns_become_the_prompts_without_a_tagger():
    from groupvit_fast.train.prompts import TextTransform

    transform = TextTransform(context_length=16, multi_label=3, tagger=_NoTagger(), tokenizer=lambda t, n: t)
    texts = transform.texts("a photo of an apple next to a box", random.Random(0), nouns=["apple", "box"])
    assert texts[0] == "a photo of an apple next to a box"
    prompted = sorted(noun for noun in ("apple", "box") for t in texts[1:3] if re.search(rf"\b{noun}\b", t))
    assert prompted == ["apple", "box"]
    assert texts[3] == texts[0]  # two nouns for three places: the caption fills the third


def test_scene_shards_feed_multi_label_training_batches_without_a_tagger(written, tmp_path):
    pytest.importorskip("timm")
    from groupvit_fast.train import load_config
    from groupvit_fast.train.data import TrainData
    from groupvit_fast.train.prompts import TextTransform

    seen = []

    def tokenizer(texts, n):
        seen.append(list(texts))
        import torch

        return torch.zeros(len(texts), n, dtype=torch.long)

    cfg = load_config(
        "scenes",
        [
            f"data.dataset.meta.scenes.path={written}",
            "data.dataset.meta.scenes.length=96",
            "data.dataset.meta.scenes.prefix=scenes-{000000..000002}.tar",
            "data.batch_size=8",
            "data.num_workers=0",
            "data.img_aug.img_size=32",
        ],
        output=str(tmp_path / "run"),
    )
    data = TrainData(cfg, 0, 1, text_transform=TextTransform(16, 3, tagger=_NoTagger(), tokenizer=tokenizer))
    batch = next(iter(data.loader(0)))
    assert batch["text"].shape == (8, 4, 16) and batch["image"].shape == (8, 3, 32, 32)
    for texts in seen:
        nouns = [w for w in re.findall(r"[a-z]+", texts[0]) if w in SCENE_NOUNS]
        for prompt in texts[1:]:
            assert prompt == texts[0] or any(re.search(rf"\b{n}\b", prompt) for n in nouns)
    # the default transform needs no tagger either: scenes carry their nouns
    TrainData(cfg, 0, 1)
