"""``eval seg`` end to end on tiny datasets, against the step-by-step reference pipeline."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eval_data import SIZES, make_layout
from groupvit_fast.cli import main
from groupvit_fast.evaluation import evaluate_segmentation
from groupvit_fast.evaluation.datasets import get_preset
from groupvit_fast.reference.segmentation import reference_segment_scores

pytest.importorskip("open_clip", reason="the prompts need open_clip_torch's tokenizer")


def direct_text(model, names, template="a photo of a {}."):
    from groupvit_fast import tokenize

    with torch.no_grad():
        emb = model.encode_text(tokenize([template.format(n) for n in names], context_length=77))
    return F.normalize(emb, dim=-1)  # one template: the mean is the embedding itself


def oracle_counts(model, dataset, pairs, bg_thresh=None, assignment="soft"):
    """Confusion matrix of the reference pipeline, counted with numpy (255 skipped)."""
    preset = get_preset(dataset)
    with_bg = preset.bg_thresh is not None
    names = preset.class_names[1:] if with_bg else preset.class_names
    text = direct_text(model, names)
    k = len(preset.class_names)
    counts = np.zeros((k, k), dtype=np.int64)
    for img_path, mask_path in pairs:
        image = torch.from_numpy(np.array(Image.open(img_path).convert("RGB"))).permute(2, 0, 1)
        scores = reference_segment_scores(
            model,
            image,
            text,
            with_bg=with_bg,
            bg_thresh=bg_thresh if bg_thresh is not None else (preset.bg_thresh or 0),
            assignment=assignment,
        )
        pred = scores.argmax(0).numpy()
        gt = np.array(Image.open(mask_path)).astype(np.int64)
        if preset.reduce_zero_label:
            gt = np.where(gt == 0, 255, gt - 1)
        keep = gt != 255
        np.add.at(counts, (gt[keep], pred[keep]), 1)
    return counts


def iou_from(counts):
    tp = np.diag(counts).astype(float)
    union = counts.sum(0) + counts.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


@pytest.mark.parametrize("dataset, sizes", [("voc", SIZES[:2]), ("ade20k", SIZES[2:])])
def test_api_matches_the_reference_pipeline(tmp_path, eval_model, dataset, sizes):
    # the reference runs the encoder twice per crop, one crop at a time: few images keep this quick
    pairs = make_layout(str(tmp_path), dataset, sizes=sizes)
    result = evaluate_segmentation(
        eval_model,
        dataset=dataset,
        data_root=str(tmp_path),
        num_workers=0,
        batch_size=2,
        progress=False,
        crop_batch_size=3,
    )
    counts = oracle_counts(eval_model, dataset, pairs)
    iou = iou_from(counts)
    names = get_preset(dataset).class_names
    for name, value in zip(names, iou, strict=True):
        got = result["per_class"][name]["IoU"]
        # same math in float32 on both paths: only an argmax tie could move a pixel, none occurs here
        assert (got is None and np.isnan(value)) or got == pytest.approx(100 * value, abs=1e-6), name
    assert result["mIoU"] == pytest.approx(100 * np.nanmean(iou), abs=1e-6)
    assert result["aAcc"] == pytest.approx(100 * np.trace(counts) / counts.sum(), abs=1e-6)
    assert result["num_images"] == len(pairs)


def test_bg_thresh_and_topk_are_options(tmp_path, eval_model):
    pairs = make_layout(str(tmp_path), "voc", sizes=SIZES[1:])
    low = evaluate_segmentation(
        eval_model, dataset="voc", data_root=str(tmp_path), bg_thresh=0.0, num_workers=0, progress=False
    )
    counts = oracle_counts(eval_model, "voc", pairs, bg_thresh=0.0)
    assert low["mIoU"] == pytest.approx(100 * np.nanmean(iou_from(counts)), abs=1e-6)
    assert low["settings"]["bg_thresh"] == 0.0
    # threshold 0: no score is below it, so no pixel is predicted background
    assert low["per_class"]["background"]["Acc"] in (0.0, None)
    one = evaluate_segmentation(
        eval_model,
        dataset="voc",
        data_root=str(tmp_path),
        bg_thresh=0.0,
        topk=1,
        num_workers=0,
        progress=False,
        keep_predictions=3,
    )
    # the 32x32 image is one 448x448 window: with one class kept, one class is predicted
    square = [p["pred"] for p in one["predictions"] if p["image"].endswith("2007_000001.jpg")][0]
    assert one["settings"]["topk"] == 1 and len(torch.unique(square)) == 1


def test_cli_writes_json_and_markdown(tmp_path, eval_checkpoint, eval_model, capsys):
    make_layout(str(tmp_path / "data"), "coco-object")
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "seg",
            "--dataset",
            "coco-object",
            "--data-root",
            str(tmp_path / "data"),
            "--checkpoint",
            eval_checkpoint,
            "--out",
            str(out),
            "--workers",
            "1",
            "--quiet",
            "--bg-thresh",
            "0.1",
            "--overlays",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    report = json.loads((out / "coco-object.json").read_text())
    direct = evaluate_segmentation(
        eval_model,
        dataset="coco-object",
        data_root=str(tmp_path / "data"),
        bg_thresh=0.1,
        num_workers=0,
        progress=False,
    )
    assert report["mIoU"] == pytest.approx(direct["mIoU"], abs=1e-9)
    assert report["per_class"] == direct["per_class"]
    md = (out / "coco-object.md").read_text()
    assert md.startswith("# coco-object: mIoU") and "| person |" in md
    assert len(os.listdir(out / "coco-object_overlays")) == 2
    assert "mIoU" in capsys.readouterr().out


def test_cli_assign_hard_matches_the_reference_and_is_reported(tmp_path, eval_checkpoint, eval_model):
    pairs = make_layout(str(tmp_path / "data"), "voc", sizes=SIZES[:2])
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "seg",
            "--dataset",
            "voc",
            "--data-root",
            str(tmp_path / "data"),
            "--checkpoint",
            eval_checkpoint,
            "--out",
            str(out),
            "--workers",
            "0",
            "--quiet",
            "--bg-thresh",
            "0.0",
            "--assign",
            "hard",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    report = json.loads((out / "voc.json").read_text())
    assert report["settings"]["assignment"] == "hard"
    assert "assignment=hard" in (out / "voc.md").read_text()
    # the numbers are those of the step-by-step pipeline composing the blocks' hard maps ...
    hard = iou_from(oracle_counts(eval_model, "voc", pairs, bg_thresh=0.0, assignment="hard"))
    for name, value in zip(get_preset("voc").class_names, hard, strict=True):
        got = report["per_class"][name]["IoU"]
        assert (got is None and np.isnan(value)) or got == pytest.approx(100 * value, abs=1e-6), name
    # ... which differ from the soft maps' here, so an ignored flag could not pass the check above
    soft = iou_from(oracle_counts(eval_model, "voc", pairs, bg_thresh=0.0))
    assert not np.allclose(np.nan_to_num(hard, nan=-1), np.nan_to_num(soft, nan=-1))
    default = evaluate_segmentation(
        eval_model, dataset="voc", data_root=str(tmp_path / "data"), bg_thresh=0.0, num_workers=0, progress=False
    )
    assert default["settings"]["assignment"] == "soft"


def test_bad_assign_value_is_one_error_line(tmp_path, eval_checkpoint, eval_model, capsys):
    make_layout(str(tmp_path / "data"), "voc")
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "eval",
                "seg",
                "--dataset",
                "voc",
                "--data-root",
                str(tmp_path / "data"),
                "--checkpoint",
                eval_checkpoint,
                "--out",
                str(tmp_path / "out"),
                "--assign",
                "argmax",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    # argparse's usage error: the usage, then one line naming the option and its choices
    assert exit_.value.code == 2 and err[-1].startswith("groupvit-fast eval seg: error: argument --assign")
    assert "'argmax'" in err[-1] and "soft" in err[-1] and "hard" in err[-1]
    assert not (tmp_path / "out").exists()
    # the API refuses it before reading the data or running the model
    with pytest.raises(ValueError, match="^assignment must be one of 'soft', 'hard', got 'argmax'$"):
        evaluate_segmentation(eval_model, dataset="voc", data_root=str(tmp_path / "MISSING"), assignment="argmax")


@pytest.mark.parametrize(
    "argv_tail, needle",
    [
        (["--dataset", "voc", "--data-root", "MISSING"], "MISSING: no such folder"),
        (["--dataset", "voc", "--data-root", "DATA", "--checkpoint", "NOCKPT"], "NOCKPT: no such checkpoint file"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, eval_checkpoint, capsys, argv_tail, needle):
    make_layout(str(tmp_path / "DATA"), "voc")
    argv = [
        a.replace("MISSING", str(tmp_path / "MISSING"))
        .replace("DATA", str(tmp_path / "DATA"))
        .replace("NOCKPT", str(tmp_path / "NOCKPT"))
        for a in argv_tail
    ]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", eval_checkpoint]
    rc = main(["eval", "seg", *argv, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_mask_found_while_decoding_stops_with_its_name(tmp_path, eval_checkpoint, capsys):
    pairs = make_layout(str(tmp_path), "voc")
    mask = np.array(Image.open(pairs[2][1]))
    mask[5, 5] = 30
    Image.fromarray(mask, mode="L").save(pairs[2][1])
    rc = main(
        [
            "eval",
            "seg",
            "--dataset",
            "voc",
            "--data-root",
            str(tmp_path),
            "--checkpoint",
            eval_checkpoint,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--workers",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and pairs[2][1] in err and "[30]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "voc.json").exists()


def test_unknown_dataset_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "seg", "--dataset", "kitti", "--data-root", str(tmp_path), "--checkpoint", "x"])
    assert exit_.value.code == 2 and "kitti" in capsys.readouterr().err


def test_unknown_option_is_refused(eval_model, tmp_path):
    with pytest.raises(TypeError, match="unknown option.*flip"):
        evaluate_segmentation(eval_model, dataset="voc", data_root=str(tmp_path), flip=True)
