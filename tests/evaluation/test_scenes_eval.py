"""The held-out scenes as an evaluation dataset, and test-time settings taken from the checkpoint's
training config (docs/segmentation.md, "Test-time settings from the checkpoint"): a recipe trained at
64 px is cut into its own windows by `eval seg` and `segment`, flags override, others keep NVlabs' 448."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from eval_data import EVAL_CONFIG

SCENE_NAMES = ["background", "apple", "lemon", "leaf", "box", "ball", "star"]


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    from groupvit_fast.datasets.scenes import write_scene_eval

    root = tmp_path_factory.mktemp("scenes")
    write_scene_eval(str(root / "eval"), 6, seed=3)
    return str(root)


def _checkpoint(path, model, seg: dict | None) -> str:
    config = {"model": EVAL_CONFIG}
    if seg is not None:
        config["evaluate"] = {"seg": seg}
    torch.save({"model": model.state_dict(), "config": config, "step": 7}, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpt_64(tmp_path_factory, eval_model):
    # what the scenes recipe's checkpoint carries (train.loop writes the resolved config)
    seg = {"dataset": "scenes", "short_side": 64, "crop_size": 64, "stride": 32, "bg_thresh": 0.4}
    return _checkpoint(tmp_path_factory.mktemp("c") / "c64.pth", eval_model, seg)


@pytest.fixture(scope="module")
def ckpt_plain(tmp_path_factory, eval_model):
    # a training config that leaves the test-time keys at 0 ("not set"), as NVlabs' recipes do
    seg = {"dataset": "", "short_side": 0, "crop_size": 0, "stride": 0, "bg_thresh": 0.0}
    return _checkpoint(tmp_path_factory.mktemp("c") / "plain.pth", eval_model, seg)


class _CropSpy:
    """Records the spatial sizes the image encoder is called with."""

    def __init__(self, monkeypatch):
        from groupvit_fast.models.group_vit import GroupViT

        self.sizes = set()
        original = GroupViT.forward

        def forward(module, x, *args, **kwargs):
            self.sizes.add(tuple(x.shape[-2:]))
            return original(module, x, *args, **kwargs)

        monkeypatch.setattr(GroupViT, "forward", forward)


def _segment(images: str, checkpoint: str, out, *flags: str, gt: str | None = None) -> dict:
    """``groupvit-fast segment`` on the scenes' classes, CPU, no overlays; returns its summary.json."""
    from groupvit_fast.cli import main

    argv = ["segment", images, "--classes", *SCENE_NAMES, "--checkpoint", checkpoint, "--out", str(out)]
    argv += ["--gt", gt] if gt else []
    assert main([*argv, "--device", "cpu", "--quiet", "--no-overlay", *flags]) == 0
    return json.loads((out / "summary.json").read_text())


def _eval_seg_scenes(scenes_root: str, checkpoint: str, out, *flags: str) -> dict:
    """``groupvit-fast eval seg --dataset scenes`` on CPU without loader workers; returns scenes.json."""
    from groupvit_fast.cli import main

    argv = ["eval", "seg", "--dataset", "scenes", "--data-root", scenes_root, "--checkpoint", checkpoint]
    assert main([*argv, "--out", str(out), "--workers", "0", "--device", "cpu", "--quiet", *flags]) == 0
    return json.loads((out / "scenes.json").read_text())


def test_the_scenes_layout_is_found_at_either_level(scenes_root):
    from groupvit_fast.evaluation.datasets import find_samples

    top = find_samples("scenes", scenes_root)
    assert len(top) == 6 and top == find_samples("scenes", os.path.join(scenes_root, "eval"))
    assert all(os.path.basename(s.image) == os.path.basename(s.mask) for s in top)


def test_a_missing_mask_is_one_line(tmp_path):
    from groupvit_fast.datasets.scenes import write_scene_eval
    from groupvit_fast.evaluation.datasets import find_samples

    write_scene_eval(str(tmp_path / "eval"), 2, seed=0)
    os.remove(tmp_path / "eval" / "masks" / "scene_00001.png")
    with pytest.raises(ValueError, match="scene_00001.png: no such mask file"):
        find_samples("scenes", str(tmp_path))


@pytest.mark.parametrize(
    "flags, expected, source",
    [
        ([], {"short_side": 64, "crop_size": 64, "stride": 32}, "checkpoint"),
        (
            ["--short-side", "96", "--crop-size", "48", "--stride", "24"],
            {"short_side": 96, "crop_size": 48, "stride": 24},
            "override",
        ),
    ],
)
def test_segment_takes_resolution_and_window_from_the_checkpoint(
    ckpt_64, scenes_root, tmp_path, monkeypatch, capsys, flags, expected, source
):
    spy = _CropSpy(monkeypatch)
    images, masks = (os.path.join(scenes_root, "eval", sub) for sub in ("images", "masks"))
    summary = _segment(images, ckpt_64, tmp_path / "out", *flags, gt=masks)
    assert {k: summary["test_time"][k] for k in expected} == expected
    assert set(summary["test_time"]["source"].values()) >= {source}
    assert summary["background_threshold"] == 0.4  # from the checkpoint: no --bg-thresh given
    crop = expected["crop_size"]
    # images of 64-128 px become short side `short_side`; every window is at most `crop` square
    assert spy.sizes and all(max(s) <= crop for s in spy.sizes)
    assert (crop, crop) in spy.sizes or all(min(s) == expected["short_side"] for s in spy.sizes)
    assert summary["miou"] is not None


def test_segment_without_settings_in_the_checkpoint_keeps_nvlabs_windows(
    ckpt_plain, scenes_root, tmp_path, monkeypatch
):
    spy = _CropSpy(monkeypatch)
    image = os.path.join(scenes_root, "eval", "images", "scene_00000.png")
    summary = _segment(image, ckpt_plain, tmp_path / "out", "--bg-thresh", "0.7")
    assert summary["test_time"]["short_side"] == 448 and summary["test_time"]["crop_size"] == 448
    assert summary["background_threshold"] == 0.7
    assert spy.sizes == {(448, 448)}


@pytest.mark.parametrize("flags, crop, thresh", [([], 64, 0.4), (["--crop-size", "32", "--bg-thresh", "0.6"], 32, 0.6)])
def test_eval_seg_scenes_uses_the_checkpoint_settings(ckpt_64, scenes_root, tmp_path, monkeypatch, flags, crop, thresh):
    spy = _CropSpy(monkeypatch)
    result = _eval_seg_scenes(scenes_root, ckpt_64, tmp_path / "ev", *flags)
    assert result["settings"]["crop"] == crop and result["settings"]["bg_thresh"] == thresh
    assert result["settings"]["img_scale"][1] == 64 and result["num_images"] == 6
    assert spy.sizes == {(crop, crop)}


def test_eval_seg_scenes_defaults_to_the_presets_64_px(ckpt_plain, scenes_root, tmp_path, monkeypatch):
    spy = _CropSpy(monkeypatch)
    result = _eval_seg_scenes(scenes_root, ckpt_plain, tmp_path / "ev")
    assert result["settings"]["crop"] == 64 and result["settings"]["bg_thresh"] == 0.5
    assert spy.sizes == {(64, 64)}


def test_bad_test_time_flags_are_usage_errors(ckpt_64, scenes_root, tmp_path, capsys):
    from groupvit_fast.cli import main

    with pytest.raises(SystemExit) as err:
        main(["segment", scenes_root, "--classes", *SCENE_NAMES, "--checkpoint", ckpt_64, "--crop-size", "0"])
    assert err.value.code == 2 and "--crop-size" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                os.path.join(scenes_root, "eval", "images"),
                "--classes",
                *SCENE_NAMES,
                "--checkpoint",
                ckpt_64,
                "--bg-thresh",
                "1.5",
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--bg-thresh" in err


def test_scene_emergence_baselines_count_as_eval_seg_does(eval_model, scenes_root):
    import torch.nn.functional as F

    from groupvit_fast.evaluation.datasets import find_samples
    from groupvit_fast.evaluation.emergence import scene_emergence
    from groupvit_fast.evaluation.segmentation import evaluate_segmentation
    from groupvit_fast.segmentation.classes import ClassSet
    from groupvit_fast.segmentation.inference import GroupViTSegmenter, preprocess_image
    from groupvit_fast.segmentation.io import load_image, load_label_mask
    from groupvit_fast.segmentation.metrics import ConfusionMatrix

    root = scenes_root + "/eval"
    result = scene_emergence(eval_model, root, bg_thresh=0.5)
    # the segments' mIoU is eval seg's at the same (the preset's) settings
    seg = evaluate_segmentation(eval_model, dataset="scenes", data_root=scenes_root, num_workers=0, progress=False)
    assert result["settings"]["short_side"] == seg["settings"]["img_scale"][1] == 64
    assert result["mIoU"] == pytest.approx(seg["mIoU"], abs=1e-9)
    # "no grouping": the whole image's top zero-shot class (its pooled embedding, computed here directly)
    # painted on the foreground of the segmenter's own prediction
    segmenter = GroupViTSegmenter(
        eval_model, ClassSet(tuple(SCENE_NAMES), 0.5), crop_size=64, stride=32, short_side=64, max_long_side=128
    )
    text = segmenter.text_embedding().float()
    expected = ConfusionMatrix(len(SCENE_NAMES))
    eval_model.eval()
    with torch.no_grad():
        for sample in find_samples("scenes", root):
            raw, mask = load_image(sample.image), load_label_mask(sample.mask)
            x = preprocess_image(raw, 64, 128)[None]
            assert x.shape[-2:] == (64, 64)  # square scenes: the whole image is the window
            embedding = F.normalize(eval_model.img_projector(eval_model.img_encoder(x)).float(), dim=-1)
            label = int((embedding @ text.t()).argmax()) + 1
            pred = segmenter.predict([raw])[0].cpu()
            expected.update(torch.where(pred > 0, label, 0), mask)
    assert result["no_grouping_mIoU"] == pytest.approx(100 * expected.miou(), abs=1e-9)
    masks = [
        load_label_mask(os.path.join(scenes_root, "eval", "masks", f)).numpy()
        for f in sorted(os.listdir(os.path.join(scenes_root, "eval", "masks")))
    ]
    labels = np.concatenate([m.ravel() for m in masks])
    # all background: IoU of background = its pixel share, every drawn class IoU 0, the rest left out
    present = np.unique(labels)
    expected = 100 * (labels == 0).mean() / len(present)
    assert result["all_background_mIoU"] == pytest.approx(expected, rel=1e-12)
    assert [g["of"] for g in result["groups"]] == EVAL_CONFIG["img_encoder"]["num_output_groups"]
    for stage in result["groups"]:
        assert 1 <= stage["min"] <= stage["mean"] <= stage["max"] <= stage["of"]


@pytest.mark.parametrize(
    "winners, expected", [([0, 0, 0, 0], 1), ([0, 1, 0, 1], 2), ([3, 2, 1, 0], 4), ([2, 2, 2, 1], 2)]
)
def test_group_usage_counts_the_groups_that_win_a_token(winners, expected):
    from groupvit_fast.evaluation.emergence import group_usage

    logits = torch.full((1, 1, 5, 4), -3.0)  # [B, 1, G, N]
    for token, group in enumerate(winners):
        logits[0, 0, group, token] = 3.0
    soft = logits.softmax(dim=2)
    counts = group_usage([{"soft": soft, "hard": soft}, None])
    assert len(counts) == 1 and counts[0].tolist() == [expected]


def _emergence(*argv: str) -> int:
    from groupvit_fast.cli import main

    return main(["eval", "emergence", *argv])


def test_emergence_command_writes_the_report_and_the_picture(ckpt_64, scenes_root, tmp_path, monkeypatch):
    from PIL import Image

    from groupvit_fast.common.files import atomic_write
    from groupvit_fast.evaluation.emergence import figure
    from groupvit_fast.segmentation import io

    written = []

    def recording_write(path, write, **kwargs):
        written.append(os.path.basename(path))
        return atomic_write(path, write, **kwargs)

    for module in (io, figure):  # every writer of the command goes through atomic_write
        monkeypatch.setattr(module, "atomic_write", recording_write)
    out = tmp_path / "report"
    argv = ["--checkpoint", ckpt_64, "--data-root", scenes_root, "--out", str(out)]
    assert _emergence(*argv, "--figure-count", "3") == 0
    assert sorted(written) == ["emergence.json", "emergence.png"]
    report = json.loads((out / "emergence.json").read_text())
    assert report["test_time"] == {"short_side": 64, "crop_size": 64, "stride": 32, "bg_thresh": 0.4}
    assert set(report["test_time_source"].values()) == {"checkpoint"}
    assert set(report) >= {"trained", "untrained"} and report["step"] == 7
    for key in ("trained", "untrained"):
        assert report[key]["num_images"] == 6 and report[key]["settings"]["bg_thresh"] == 0.4
    with Image.open(out / "emergence.png") as png:  # 5 panels of 96 px, a 14 px header, 3 rows
        assert png.size == (5 * 96, 14 + 3 * 96)


def _one_hot_maps(ids: list[int], groups: int) -> torch.Tensor:
    """``[1, 1, groups, len(ids)]`` hard map sending input ``i`` to group ``ids[i]``."""
    maps = torch.zeros(1, 1, groups, len(ids))
    maps[0, 0, ids, torch.arange(len(ids))] = 1.0
    return maps


def test_oracle_grouping_paints_each_chained_group_with_its_majority_class():
    from groupvit_fast.evaluation.emergence import oracle_groupings

    # a 2 x 2 patch grid over an 8 x 8 mask: class 1 fills the top-left patch and one pixel row of the
    # top-right patch, class 2 the bottom-right patch, background (0) the rest
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:4, :4] = 1
    mask[0, 4:] = 1
    mask[4:, 4:] = 2
    mask[7, 7] = 255  # ignored: votes for nothing
    stage1 = _one_hot_maps([2, 0, 3, 1], 4)  # every patch its own group, numbered out of order
    stage2 = _one_hot_maps([0, 1, 0, 1], 2)  # stage-1 groups 0 and 2 (top row), 1 and 3 (bottom row)
    first, second = oracle_groupings([{"hard": stage1}, {"hard": stage2}, None], [mask], num_classes=3)
    expected1 = torch.zeros(8, 8, dtype=torch.long)
    expected1[:4, :4] = 1  # the top-right patch is mostly background (3 rows of 4)
    expected1[4:, 4:] = 2
    assert torch.equal(first[0], expected1)
    expected2 = torch.zeros(8, 8, dtype=torch.long)
    expected2[:4] = 1  # 16 + 4 class-1 pixels against 12 background ones
    assert torch.equal(second[0], expected2)  # bottom row: 16 background, 15 counted class-2 pixels


def test_scene_emergence_reports_grouping_quality_within_the_patch_grid(eval_model, scenes_root):
    from groupvit_fast.evaluation.emergence import scene_emergence

    result = scene_emergence(eval_model, scenes_root + "/eval", bg_thresh=0.5)
    assert len(result["oracle_grouping_mIoU"]) == len(result["groups"])
    assert all(0 <= v <= 100 for v in result["oracle_grouping_mIoU"])
    assert 0 < result["patch_grid_mIoU"] <= 100


def test_image_level_measures_come_from_the_window_size_and_the_grid_from_the_test_resolution(eval_model, scenes_root):
    # enlarging the image at test time (short side 128 under 64 px windows) changes the windows the
    # prediction sees, not the model's own view of the whole scene: the image-level class, the group
    # usage and the oracle grouping stay those of one pass at 64 px; the patch grid doubles per side
    from groupvit_fast.evaluation.emergence import scene_emergence

    native = scene_emergence(eval_model, scenes_root + "/eval", short_side=64, crop_size=64, stride=32)
    enlarged = scene_emergence(eval_model, scenes_root + "/eval", short_side=128, crop_size=64, stride=32)
    for key in ("groups", "image_top1_present", "oracle_grouping_mIoU"):
        assert enlarged[key] == native[key], key
    assert enlarged["patch_grid_mIoU"] > native["patch_grid_mIoU"]
    assert enlarged["settings"]["short_side"] == 128
    # one window per (square) scene: the class of the window is the class of the image
    assert native["window_no_grouping_mIoU"] == native["no_grouping_mIoU"]
    for key in ("window_no_grouping_mIoU", "window_classifier_mIoU"):
        assert 0 <= enlarged[key] <= 100, key


@pytest.mark.parametrize("bg_thresh", [0.0, 0.3, 1.0])
def test_the_window_classifier_of_one_window_paints_the_image_class_or_nothing(eval_model, scenes_root, bg_thresh):
    # at the recipe's native settings a square scene is one window: the grouping-free baseline paints
    # the whole scene with the image's zero-shot class where that class's probability reaches the
    # threshold, and background elsewhere (computed here from the pooled embedding directly)
    import torch.nn.functional as F

    from groupvit_fast.evaluation.datasets import find_samples
    from groupvit_fast.evaluation.emergence import scene_emergence
    from groupvit_fast.segmentation.classes import ClassSet
    from groupvit_fast.segmentation.inference import GroupViTSegmenter, preprocess_image
    from groupvit_fast.segmentation.io import load_image, load_label_mask
    from groupvit_fast.segmentation.metrics import ConfusionMatrix

    root = scenes_root + "/eval"
    result = scene_emergence(eval_model, root, short_side=64, crop_size=64, stride=32, bg_thresh=bg_thresh)
    text = GroupViTSegmenter(eval_model, ClassSet(tuple(SCENE_NAMES), 0.5)).text_embedding().float()
    scale = eval_model.logit_scale.detach().exp().clamp(max=100)
    expected = ConfusionMatrix(len(SCENE_NAMES))
    eval_model.eval()
    with torch.no_grad():
        for sample in find_samples("scenes", root):
            x = preprocess_image(load_image(sample.image), 64, 128)[None]
            assert x.shape[-2:] == (64, 64)
            embedding = F.normalize(eval_model.img_projector(eval_model.img_encoder(x)).float(), dim=-1)
            best, label = (embedding @ text.t() * scale).softmax(dim=-1)[0].max(dim=0)
            mask = load_label_mask(sample.mask)
            expected.update(torch.full_like(mask, int(label) + 1 if best >= bg_thresh else 0), mask)
    assert result["window_classifier_mIoU"] == pytest.approx(100 * expected.miou(), abs=1e-9)


def test_emergence_command_flags_override_the_checkpoint_settings(ckpt_64, scenes_root, tmp_path):
    out = tmp_path / "report"
    argv = ["--checkpoint", ckpt_64, "--data-root", scenes_root, "--out", str(out), "--figure-count", "1"]
    assert _emergence(*argv, "--short-side", "96", "--stride", "16", "--max-images", "2") == 0
    report = json.loads((out / "emergence.json").read_text())
    # the flags win, the rest comes from the checkpoint (crop 64, threshold 0.4)
    assert report["test_time"] == {"short_side": 96, "crop_size": 64, "stride": 16, "bg_thresh": 0.4}
    assert report["trained"]["settings"]["short_side"] == 96


@pytest.mark.parametrize("flag", ["--short-side", "--crop-size", "--stride"])
def test_emergence_command_refuses_a_non_positive_setting(ckpt_64, scenes_root, tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _emergence("--checkpoint", ckpt_64, "--data-root", scenes_root, "--out", str(tmp_path), flag, "0")
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]


def test_eval_help_names_every_dataset_preset(capsys):
    # `eval --help` lists what `eval seg --dataset` accepts (scenes included), from the preset table
    from groupvit_fast.cli import main
    from groupvit_fast.evaluation.datasets import DATASETS

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at hyphens
    seg_help = text[text.index(" seg ") : text.index(" cls ")]
    assert all(name in seg_help for name in DATASETS), seg_help


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from groupvit_fast.datasets.shapes import write_shape_eval

    root = tmp_path_factory.mktemp("shapes")
    write_shape_eval(str(root / "eval"), 4, seed=3)
    return str(root)


def test_eval_seg_shapes_defaults_to_the_faithful_miniature(ckpt_plain, shapes_root, tmp_path, monkeypatch):
    # a checkpoint without test-time settings gets the preset's: 128 px short side, one 128 px window
    from groupvit_fast.cli import main

    spy = _CropSpy(monkeypatch)
    argv = ["eval", "seg", "--dataset", "shapes", "--data-root", shapes_root, "--checkpoint", ckpt_plain]
    out = tmp_path / "ev"
    assert main([*argv, "--out", str(out), "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    result = json.loads((out / "shapes.json").read_text())
    assert result["settings"]["crop"] == 128 and result["settings"]["img_scale"][1] == 128
    assert result["num_images"] == 4 and spy.sizes == {(128, 128)}


def test_emergence_command_scores_shapes(ckpt_plain, shapes_root, tmp_path):
    from groupvit_fast.cli import main
    from groupvit_fast.datasets.shapes import SHAPE_CLASSES

    out = tmp_path / "report"
    argv = ["eval", "emergence", "--checkpoint", ckpt_plain, "--data-root", shapes_root, "--out", str(out)]
    argv += ["--dataset", "shapes"]
    assert main([*argv, "--short-side", "128", "--crop-size", "128", "--stride", "64", "--figure-count", "2"]) == 0
    report = json.loads((out / "emergence.json").read_text())
    for key in ("trained", "untrained"):
        assert list(report[key]["per_class"]) == list(SHAPE_CLASSES) and report[key]["num_images"] == 4
        assert report[key]["settings"]["dataset"] == "shapes"
    assert (out / "emergence.png").is_file()
