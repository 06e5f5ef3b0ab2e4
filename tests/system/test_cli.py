"""The ``groupvit-fast`` command line: segment, convert, info, bench; errors are one line and exit 1."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from groupvit_fast import build_model
from groupvit_fast.checkpoint import load_checkpoint, save_checkpoint, save_safetensors
from groupvit_fast.cli import main
from groupvit_small import small_config

needs_open_clip = pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None, reason="segmentation prompts need open_clip_torch's tokenizer"
)

# a small model that takes real CLIP token ids (vocabulary 49408)
CLI_CONFIG = small_config(text_encoder={"vocab_size": 49408, "context_length": 77, "layers": 1})


def _png(path, h, w, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(CLI_CONFIG)
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    save_safetensors(model, path)  # carries its config: the CLI needs no --config
    return path


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("groupvit-fast: error:")
    for needle in needles:
        assert needle in err[0]
    return err[0]


@needs_open_clip
def test_segment_image_outputs_and_miou(tmp_path, checkpoint, capsys):
    from PIL import Image

    from groupvit_fast.segmentation import GroupViTSegmenter, load_image

    _png(tmp_path / "img.png", 40, 60, seed=0)
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(tmp_path / "img.png"),
            "--classes",
            "voc",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    label = np.array(Image.open(out / "img_label.png"))
    assert Image.open(out / "img_label.png").mode == "P" and label.shape == (40, 60)
    assert Image.open(out / "img_overlay.png").size == (60, 40)
    record = json.loads((out / "img.json").read_text())
    assert record["classes"][0] == "background" and len(record["classes"]) == 21
    assert sum(record["fractions"].values()) == pytest.approx(1.0)
    # the CLI result is the library's
    model = load_checkpoint(checkpoint).model.eval()
    expected = GroupViTSegmenter(model, "voc").predict([load_image(str(tmp_path / "img.png"))])[0]
    assert np.array_equal(label, expected.numpy())
    # its own label map as ground truth: mIoU 1
    rc = main(
        [
            "segment",
            str(tmp_path / "img.png"),
            "--classes",
            "voc",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "out2"),
            "--gt",
            str(out / "img_label.png"),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["miou"] == 1.0 and summary["pixel_accuracy"] == 1.0
    assert "mIoU 100.00" in capsys.readouterr().out


@needs_open_clip
def test_segment_assign_hard(tmp_path, checkpoint, capsys):
    from PIL import Image

    from groupvit_fast.segmentation import GroupViTSegmenter, load_image

    _png(tmp_path / "img.png", 40, 60, seed=0)
    labels = {}
    for assign in ("soft", "hard"):
        out = tmp_path / assign
        rc = main(
            [
                "segment",
                str(tmp_path / "img.png"),
                "--classes",
                "voc",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out),
                "--quiet",
                "--device",
                "cpu",
                "--no-overlay",
                "--assign",
                assign,
            ]
        )
        assert rc == 0
        assert json.loads((out / "summary.json").read_text())["assignment"] == assign
        labels[assign] = np.array(Image.open(out / "img_label.png"))
    model = load_checkpoint(checkpoint).model.eval()
    expected = GroupViTSegmenter(model, "voc", assignment="hard").predict([load_image(str(tmp_path / "img.png"))])[0]
    assert np.array_equal(labels["hard"], expected.numpy())
    assert not np.array_equal(labels["hard"], labels["soft"])  # the flag reaches the pipeline
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(tmp_path / "img.png"), "--classes", "voc", "--assign", "onehot"])
    assert exit_.value.code == 2 and "argument --assign: invalid choice: 'onehot'" in capsys.readouterr().err


@needs_open_clip
@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_segment_folder_writes_every_readable_image_and_names_each_unreadable_one(tmp_path, checkpoint, capsys, strict):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _png(folder / "a.png", 30, 50, seed=1)
    (folder / "b.jpg").write_bytes(b"not an image")  # in the middle: images after it still count
    _png(folder / "c.png", 50, 30, seed=2)
    (folder / "d.png").write_bytes(b"")
    out = tmp_path / "out"
    argv = ["segment", str(folder), "--classes", "cat", "dog", "grass", "--checkpoint", str(checkpoint)]
    argv += ["--out", str(out), "--batch-size", "1", "--quiet", "--no-overlay", "--device", "cpu"]
    rc = main(argv + (["--strict"] if strict else []))
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert not list(out.glob(".tmp-*"))
    assert not (out / "a_overlay.png").exists()
    if strict:  # stops at the first: what came before it is kept, nothing after it is written
        assert len(err) == 1 and "b.jpg" in err[0] and "cannot read image" in err[0], err
        assert (out / "a_label.png").exists() and not (out / "c_label.png").exists()
        assert not (out / "summary.json").exists()
        return
    # one line per unreadable image, one closing line; every readable image written
    assert len(err) == 3, err
    assert "b.jpg" in err[0] and "d.png" in err[1] and all(line.startswith("groupvit-fast: error: ") for line in err)
    assert "2 of 4 image(s)" in err[2]
    for stem in ("a", "c"):
        assert (out / f"{stem}_label.png").exists() and (out / f"{stem}.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["images"]) == ["a", "c"]
    assert sorted(os.path.basename(p) for p in summary["failed"]) == ["b.jpg", "d.png"]


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--classes", "vco"], ["unknown class preset 'vco'"]),
        (["--classes", "cat", "cat"], ["duplicate class names: cat"]),
    ],
)
def test_segment_rejects_unknown_classes_before_any_work(tmp_path, capsys, argv, needles):
    _png(tmp_path / "img.png", 20, 20, seed=0)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "img.png"), *argv, "--out", str(out)]) == 1
    _one_error_line(capsys, *needles)
    assert not out.exists()


def test_segment_bad_paths(tmp_path, checkpoint, capsys):
    assert main(["segment", str(tmp_path / "nothere.png"), "--classes", "voc"]) == 1
    _one_error_line(capsys, "nothere.png", "no such file")
    _png(tmp_path / "img.png", 20, 20, seed=0)
    assert (
        main(
            [
                "segment",
                str(tmp_path / "img.png"),
                "--classes",
                "voc",
                "--checkpoint",
                str(tmp_path / "missing.pth"),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    _one_error_line(capsys, "missing.pth", "no such file")
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--classes", "voc"]) == 1
    _one_error_line(capsys, "no images")


@needs_open_clip
def test_segment_without_checkpoint_warns_loudly(tmp_path, capsys):
    _png(tmp_path / "img.png", 20, 30, seed=0)
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(CLI_CONFIG))
    rc = main(
        [
            "segment",
            str(tmp_path / "img.png"),
            "--classes",
            "sky,road",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "RANDOM weights" in err and "WARNING" in err
    assert (tmp_path / "out" / "img_label.png").exists()


def test_convert_round_trip_and_no_overwrite(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model(small_config(multi_label=3))
    save_checkpoint(model, tmp_path / "nv.pth")
    assert main(["convert", str(tmp_path / "nv.pth"), str(tmp_path / "hf.safetensors"), "--to", "hf"]) == 0
    assert "multi_label_logit_scale dropped" in capsys.readouterr().out
    from safetensors.torch import load_file

    assert "visual_projection.0.weight" in load_file(str(tmp_path / "hf.safetensors"))
    assert main(["convert", str(tmp_path / "hf.safetensors"), str(tmp_path / "back.pth")]) == 0
    assert "multi_label_logit_scale set to its initial value" in capsys.readouterr().out
    back = load_checkpoint(tmp_path / "back.pth").model  # config travelled along, the NVlabs file is complete
    for key, value in model.state_dict().items():
        if key != "multi_label_logit_scale":
            assert torch.equal(back.state_dict()[key], value), key
    capsys.readouterr()
    before = (tmp_path / "back.pth").read_bytes()
    assert main(["convert", str(tmp_path / "nv.pth"), str(tmp_path / "back.pth")]) == 1
    _one_error_line(capsys, "exists", "--force")
    assert (tmp_path / "back.pth").read_bytes() == before
    assert main(["convert", str(tmp_path / "nv.pth"), str(tmp_path / "back.pth"), "--force"]) == 0
    (tmp_path / "junk.pth").write_bytes(b"junk")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "x.safetensors")]) == 1
    _one_error_line(capsys, "junk.pth", "not a PyTorch checkpoint")
    assert not (tmp_path / "x.safetensors").exists()
    assert main(["convert", str(tmp_path / "nv.pth"), str(tmp_path / "x.onnx")]) == 1
    _one_error_line(capsys, "unknown output format")


def test_info_and_bench_are_dispatched(monkeypatch, capsys):
    assert main(["info"]) == 0
    assert "groupvit_fast" in capsys.readouterr().out
    import groupvit_fast.bench as bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "--device", "cpu", "--help"]) == 0
    assert seen == [["--device", "cpu", "--help"]]


def test_python_m_exit_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "groupvit_fast", "convert", str(tmp_path / "none.pth"), str(tmp_path / "o.pth")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"groupvit-fast: error: {tmp_path / 'none.pth'}: no such file"]


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as err:
        main(["segment"])  # no input, no --classes
    assert err.value.code == 2
