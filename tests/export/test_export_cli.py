"""``groupvit-fast export onnx`` and ``segment --onnx``: the files, the same outputs as ``segment --checkpoint``,
and bad input refused in one line with nothing written (docs/export.md, "Errors")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from export_cases import CLASSES, TEST_TIME, small_export_config
from PIL import Image

from groupvit_fast.cli import main
from groupvit_fast.export.runner import OnnxSegmenter

TT_FLAGS = ["--short-side", "96", "--crop-size", "64", "--stride", "32"]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("groupvit-fast: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for name, shape in (("a.png", (70, 110, 3)), ("b.jpg", (130, 90, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name, quality=95)
    return str(folder)


def test_segment_onnx_writes_what_segment_checkpoint_writes(tmp_path, small, small_checkpoint, images):
    checkpoint, onnx_dir = small_checkpoint, Path(small[1])
    assert sorted(os.listdir(onnx_dir)) == ["export.json", "image.onnx", "text.onnx", "tokenizer.json"]
    config = json.loads((onnx_dir / "export.json").read_text())
    assert len(config["classes"]["embeddings"]) == len(CLASSES) - 1 and config["opset"] == 18
    assert config["test_time"]["crop_size"] == TEST_TIME["crop_size"] and config["source"]["checkpoint"] == checkpoint
    for classes in ([",".join(CLASSES)], ["voc"], ["cat,dog,bird"]):  # stored, preset, open vocabulary
        ref, got = tmp_path / "ref", tmp_path / "got"
        common = [images, "--classes", *classes, *TT_FLAGS, "--quiet"]
        assert main(["segment", *common, "--checkpoint", checkpoint, "--out", str(ref), "--device", "cpu"]) == 0
        assert main(["segment", *common, "--onnx", str(onnx_dir), "--out", str(got)]) == 0
        assert sorted(os.listdir(ref)) == sorted(os.listdir(got))
        for stem in ("a", "b"):
            a = np.asarray(Image.open(ref / f"{stem}_label.png"))
            b = np.asarray(Image.open(got / f"{stem}_label.png"))
            assert (a == b).mean() >= 0.999, stem
            assert (
                Image.open(ref / f"{stem}_label.png").getpalette() == Image.open(got / f"{stem}_label.png").getpalette()
            )
            ref_json, got_json = (
                json.loads((ref / f"{stem}.json").read_text()),
                json.loads((got / f"{stem}.json").read_text()),
            )
            assert ref_json.keys() == got_json.keys() and ref_json["classes"] == got_json["classes"]
        ref_summary, got_summary = (json.loads((d / "summary.json").read_text()) for d in (ref, got))
        assert set(ref_summary) <= set(got_summary)
        for key in ("classes", "background_threshold", "assignment", "checkpoint"):
            assert ref_summary[key] == got_summary[key], key


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--opset", "17"], ["--opset 17", "18"]),
        (["--opset", "99"], ["--opset 99"]),
        (["--classes", "nonexistentpreset"], ["unknown class preset"]),
    ],
    ids=["opset-too-low", "opset-too-high", "bad-classes"],
)
def test_bad_export_requests_are_one_line_and_write_nothing(tmp_path, capsys, argv, needles):
    out = tmp_path / "out"
    assert main(["export", "onnx", "--out", str(out), *argv]) == 1
    _one_line_error(capsys, *needles)
    assert not out.exists()


def test_a_checkpoint_of_unknown_layout_is_refused(tmp_path, capsys):
    path = tmp_path / "weird.pth"
    torch.save({"encoder.layer0.weight": torch.zeros(3, 3)}, path)
    out = tmp_path / "out"
    assert main(["export", "onnx", "--checkpoint", str(path), "--out", str(out)]) == 1
    _one_line_error(capsys, str(path))
    assert not out.exists()


def test_existing_files_are_kept_without_force(tmp_path, capsys):
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(small_export_config()))
    out = tmp_path / "out"
    out.mkdir()
    (out / "export.json").write_text("mine")
    assert main(["export", "onnx", "--config", str(cfg), "--out", str(out)]) == 1
    _one_line_error(capsys, "export.json", "--force")
    assert sorted(os.listdir(out)) == ["export.json"] and (out / "export.json").read_text() == "mine"


def test_embeddings_of_the_wrong_width_and_windows_the_graph_cannot_take(small, capsys, images, tmp_path):
    _, folder = small
    with pytest.raises(ValueError, match=r"text_embeddings must be \[K, D\] = \[3, 32\].*\[3, 5\]"):
        OnnxSegmenter(folder, CLASSES, text_embeddings=np.zeros((3, 5), dtype=np.float32))
    runner = OnnxSegmenter(folder, CLASSES, crop_size=16, stride=16)
    with pytest.raises(ValueError, match="16x16 window is outside the image graph's sizes"):
        runner.predict([np.zeros((20, 20, 3), dtype=np.uint8)])
    out = tmp_path / "seg"
    argv = ["segment", images, "--classes", *CLASSES, "--onnx", folder, "--out", str(out), "--crop-size", "16"]
    assert main(argv) == 1
    _one_line_error(capsys, "outside the image graph's sizes")
    assert not any(name.endswith(".png") for name in os.listdir(out))


def test_a_hard_export_records_its_assignment(small_hard):
    _, folder = small_hard
    assert OnnxSegmenter(folder, CLASSES).config["image_graph"]["assignment"] == "hard"
    assert TEST_TIME["crop_size"] == OnnxSegmenter(folder, CLASSES).crop_size


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--assign", "hard"], "was exported with --assign soft"), (["--templates", "subset"], "other prompt templates")],
    ids=["assign", "templates"],
)
def test_segment_onnx_refuses_settings_fixed_at_export(small, images, tmp_path, capsys, flags, needle):
    _, folder = small
    out = tmp_path / "seg"
    assert main(["segment", images, "--classes", "voc", "--onnx", folder, "--out", str(out), *flags]) == 1
    _one_line_error(capsys, needle)
    assert not out.exists()
