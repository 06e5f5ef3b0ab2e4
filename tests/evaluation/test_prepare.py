"""``prepare-data``: PASCAL Context from a tiny Detail json, COCO-Object from tiny COCO-Stuff PNGs."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from groupvit_fast.cli import main
from groupvit_fast.evaluation.prepare import coco_object_labels, decode_rle


def rle_runs(mask):
    """Column-major runs of 0s and 1s, starting with 0s (COCO's uncompressed RLE)."""
    flat = mask.T.ravel()
    runs, current, n = [], 0, 0
    for v in flat:
        if v == current:
            n += 1
        else:
            runs.append(n)
            current, n = v, 1
    runs.append(n)
    return runs


def rle_string(runs):
    """COCO's compressed counts, written from the format: deltas from the 4th run, 5-bit groups + 48."""
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + 48 + (0x20 if more else 0)))
            if not more:
                break
    return "".join(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("compressed", [False, True])
def test_rle_decodes_what_was_encoded(seed, compressed):
    rng = np.random.default_rng(seed)
    mask = (rng.random((13, 70)) < [0.1, 0.5, 0.9][seed]).astype(np.uint8)  # long and short runs
    runs = rle_runs(mask)
    rle = {"size": [13, 70], "counts": rle_string(runs) if compressed else runs}
    assert np.array_equal(decode_rle(rle), mask)


def _context_tree(tmp_path, annotations, images):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    (base / "JPEGImages").mkdir(parents=True)
    js = tmp_path / "trainval_merged.json"
    js.write_text(json.dumps({"images": images, "annos_segmentation": annotations}))
    return tmp_path / "VOCdevkit", js, base


def _ann(image_id, category_id, mask, compressed=True):
    runs = rle_runs(mask)
    return {
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": list(mask.shape), "counts": rle_string(runs) if compressed else runs},
    }


def test_context_masks_and_splits(tmp_path, capsys):
    h, w = 6, 8
    a = np.zeros((h, w), np.uint8)
    a[:3] = 1
    b = np.zeros((h, w), np.uint8)
    b[:, :4] = 1  # painted after a: wins where they overlap
    c = np.zeros((h, w), np.uint8)
    c[5, 7] = 1
    images = [
        {"image_id": 2008000001, "file_name": "2008_000001.jpg", "height": h, "width": w, "phase": "train"},
        {"image_id": 2008000002, "file_name": "2008_000002.jpg", "height": h, "width": w, "phase": "val"},
        {"image_id": 2008000003, "file_name": "2008_000003.jpg", "height": h, "width": w, "phase": "train"},
    ]
    anns = [_ann(2008000001, 2, a), _ann(2008000001, 115, b, compressed=False), _ann(2008000002, 458, c)]
    devkit, js, base = _context_tree(tmp_path, anns, images)
    assert main(["prepare-data", "context", "--devkit", str(devkit), "--json", str(js), "--quiet"]) == 0
    out = base / "SegmentationClassContext"
    # sorted Detail ids: 0 -> 0, 2 -> 1, 115 -> 24 (the 25th smallest), 458 (the largest) -> 59
    expected = np.zeros((h, w), np.uint8)
    expected[:3] = 1
    expected[:, :4] = 24
    assert np.array_equal(np.array(Image.open(out / "2008_000001.png")), expected)
    expected2 = np.zeros((h, w), np.uint8)
    expected2[5, 7] = 59
    assert np.array_equal(np.array(Image.open(out / "2008_000002.png")), expected2)
    assert not np.array(Image.open(out / "2008_000003.png")).any()  # no annotation: all background
    splits = base / "ImageSets" / "SegmentationContext"
    assert (splits / "train.txt").read_text() == "2008_000001\n2008_000003\n"
    assert (splits / "val.txt").read_text() == "2008_000002\n"


def test_context_unknown_category_stops_before_the_split_files(tmp_path, capsys):
    m = np.ones((4, 4), np.uint8)
    images = [{"image_id": 1, "file_name": "2008_000009.jpg", "height": 4, "width": 4, "phase": "val"}]
    devkit, js, base = _context_tree(tmp_path, [_ann(1, 3, m)], images)
    assert main(["prepare-data", "context", "--devkit", str(devkit), "--json", str(js), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "2008_000009.jpg" in err and "[3]" in err and len(err.splitlines()) == 1
    assert not (base / "ImageSets").exists()


def test_coco_object_mapping_by_hand():
    # stuffthingmaps value = COCO id - 1: person (id 1) -> 1, car (id 3) -> 3, stop sign (id 13, the 12th thing)
    # -> 12, toothbrush (id 90, the 80th) -> 80; stuff 91..181 -> 0; 255 stays
    stuff = np.array([[0, 2, 12, 89], [91, 181, 255, 0]], np.uint8)
    assert coco_object_labels(stuff, "x").tolist() == [[1, 3, 12, 80], [0, 0, 255, 1]]
    with pytest.raises(ValueError, match=r"x: values \[11\]"):  # id 12 is one of COCO's unused ids
        coco_object_labels(np.array([[11]], np.uint8), "x")


def test_coco_object_cli(tmp_path, capsys):
    src = tmp_path / "stuffthingmaps_trainval2017" / "val2017"
    src.mkdir(parents=True)
    Image.fromarray(np.array([[0, 91], [255, 2]], np.uint8), mode="L").save(src / "000000000139.png")
    assert (
        main(["prepare-data", "coco-object", "--stuff-dir", str(src), "--out-root", str(tmp_path / "coco"), "--quiet"])
        == 0
    )
    out = tmp_path / "coco" / "annotations" / "val2017" / "000000000139_instanceTrainIds.png"
    assert np.array(Image.open(out)).tolist() == [[1, 0], [255, 3]]
    assert (
        main(
            ["prepare-data", "coco-object", "--stuff-dir", str(tmp_path / "nope"), "--out-root", str(tmp_path / "coco")]
        )
        == 1
    )
    assert "nope: no such folder" in capsys.readouterr().err
    assert sorted(os.listdir(out.parent)) == [out.name]
