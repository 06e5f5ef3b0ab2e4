"""Each benchmark layout is found and decoded as mmseg reads it; bad folders and masks fail in one line."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from eval_data import SIZES, make_layout, write_mask
from groupvit_fast.evaluation.datasets import (
    DATASETS,
    SegmentationSamples,
    check_sizes,
    find_samples,
    get_preset,
)

LAYOUTS = ["voc", "context", "coco-object", "ade20k", "cityscapes"]


@pytest.mark.parametrize("dataset", LAYOUTS)
def test_layout_gives_every_pair_and_decoded_masks(tmp_path, dataset):
    pairs = make_layout(str(tmp_path), dataset)
    samples = find_samples(dataset, str(tmp_path))
    assert sorted((s.image, s.mask) for s in samples) == sorted(pairs)
    check_sizes(samples)
    data = SegmentationSamples(samples, get_preset(dataset))
    for i, s in enumerate(samples):
        item = data[i]
        stored = np.array(Image.open(s.mask)).astype(np.int64)
        if dataset == "ade20k":  # reduce_zero_label: 0 -> 255, k -> k - 1
            stored = np.where(stored == 0, 255, stored - 1)
        assert torch.equal(item["mask"], torch.from_numpy(stored))
        h, w = stored.shape
        preset = get_preset(dataset)
        scale = min(preset.max_long_side / max(h, w), preset.short_side / min(h, w))
        assert tuple(item["image"].shape) == (3, int(h * scale + 0.5), int(w * scale + 0.5))


@pytest.mark.parametrize(
    "dataset, classes, bg",
    [
        ("voc", 21, 0.95),
        ("context", 60, 0.35),
        ("coco-object", 81, 0.95),
        ("ade20k", 150, None),
        ("cityscapes", 19, None),
    ],
)
def test_presets_match_the_published_protocols(dataset, classes, bg):
    p = DATASETS[dataset]
    assert (len(p.class_names), p.bg_thresh, p.crop, p.stride) == (classes, bg, 448, 224)
    assert p.short_side == (1024 if dataset == "cityscapes" else 448) and p.max_long_side == 2048
    assert (p.class_names[0] == "background") == (bg is not None)


def test_data_root_may_be_the_devkit_or_the_year_folder(tmp_path):
    make_layout(str(tmp_path), "voc")
    a = find_samples("voc", str(tmp_path))
    b = find_samples("voc", str(tmp_path / "VOCdevkit"))
    c = find_samples("voc", str(tmp_path / "VOCdevkit" / "VOC2012"))
    assert a == b == c and len(a) == len(SIZES)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'kitti': use one of voc, context"):
        get_preset("kitti")


@pytest.mark.parametrize(
    "remove, needle",
    [
        ("VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", "val.txt: no such split file"),
        ("VOCdevkit/VOC2012/SegmentationClass", "SegmentationClass: no such folder"),
        ("VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg", "2007_000001.jpg: no such image file"),
        ("VOCdevkit/VOC2012/SegmentationClass/2007_000002.png", "2007_000002.png: no such mask file"),
    ],
)
def test_missing_files_and_folders_are_named(tmp_path, remove, needle):
    import shutil

    make_layout(str(tmp_path), "voc")
    target = tmp_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError, match=needle) as err:
        find_samples("voc", str(tmp_path))
    assert "\n" not in str(err.value)


def test_missing_root(tmp_path):
    with pytest.raises(ValueError, match="nowhere: no such folder"):
        find_samples("coco-object", str(tmp_path / "nowhere"))


def test_mask_of_another_size_is_named_before_decoding(tmp_path):
    pairs = make_layout(str(tmp_path), "voc")
    write_mask(pairs[1][1], np.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"2007_000001.png: mask is 10x10, its image .* is 40x56"):
        check_sizes(find_samples("voc", str(tmp_path)))


@pytest.mark.parametrize("dataset, value", [("voc", 21), ("voc", 254), ("cityscapes", 19), ("ade20k", 151)])
def test_label_values_outside_the_classes(tmp_path, dataset, value):
    pairs = make_layout(str(tmp_path), dataset)
    h, w = SIZES[0]
    mask = np.zeros((h, w))
    mask[3, 3] = value
    write_mask(pairs[0][1], mask)
    samples = find_samples(dataset, str(tmp_path))
    bad = [i for i, s in enumerate(samples) if s.mask == pairs[0][1]][0]
    item = SegmentationSamples(samples, get_preset(dataset))[bad]
    shown = value - 1 if dataset == "ade20k" else value
    assert item["error"].startswith(pairs[0][1]) and f"[{shown}]" in item["error"]


def test_unreadable_image_is_an_error_item(tmp_path):
    pairs = make_layout(str(tmp_path), "coco-object")
    with open(pairs[0][0], "wb") as f:
        f.write(b"not a jpeg")
    item = SegmentationSamples(find_samples("coco-object", str(tmp_path)), get_preset("coco-object"))[0]
    assert item["error"].startswith(pairs[0][0]) and "cannot read image" in item["error"]
    assert not os.path.exists(tmp_path / "eval_out")
