"""What the export tests share (tests/export): the small model, its test time and classes, and the parity
check of an exported image graph against PyTorch's ``segment`` path (docs/export.md, "Parity")."""

from __future__ import annotations

#: the small model's test time: 64 px windows at stride 32 on images enlarged to a 96 px short side
TEST_TIME = {"short_side": 96, "crop_size": 64, "stride": 32, "bg_thresh": None}
CLASSES = ["background", "cat", "dog", "car"]

#: fp32 bound on the scores, relative to their largest value (the parity bound of docs/export.md; measured
#: errors are ~1e-6, fp32 round-off through a few layers, tests/README.md "Tolerances")
REL = 1e-4
#: labels may differ only at background-threshold or segment ties, on at most this fraction of pixels
LABEL_MISMATCH = 1e-3
#: (batch, height, width) of the crop-score parity cases: two image sizes, two batch sizes each (patch 16)
PARITY_CROPS = [(1, 64, 64), (3, 64, 64), (1, 96, 128), (2, 96, 128)]


def small_export_config() -> dict:
    """The small image-text model with CLIP's vocabulary (the text graph is fed real token ids)."""
    from groupvit_small import small_config

    return small_config(text_encoder={"vocab_size": 49408})


def small_model(seed: int = 0):
    import torch

    from groupvit_fast import build_model

    torch.manual_seed(seed)
    return build_model(small_export_config()).eval()


def image_session(folder: str):
    """An onnxruntime CPU session of ``folder/image.onnx``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(f"{folder}/image.onnx", options, providers=["CPUExecutionProvider"])


def random_crops(batch: int, h: int, w: int, seed: int):
    """Normalised crops ``[batch, 3, h, w]`` float32."""
    import torch

    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def compare_scores(torch_scores, ort_scores, what: str) -> dict:
    """Scores ``[B, C, H, W]`` within ``REL`` of the largest score on every pixel but the ties; labels equal
    but for the ties. Returns the measured ``max_rel`` error, the fraction of pixels off (``far``) and of labels
    differing (``labels``), and prints them (shown by ``pytest -rP``).

    A tie (the two runs' grouping maps or the background test decided at equal values) gives a pixel another
    segment's row or the background: such pixels are counted, and may be at most ``LABEL_MISMATCH`` of all."""
    import numpy as np

    assert ort_scores.shape == torch_scores.shape, what
    scale = np.abs(torch_scores).max()
    err = np.abs(ort_scores.astype(np.float64) - torch_scores)
    far = (err > REL * scale).any(axis=1)
    differ = torch_scores.argmax(1) != ort_scores.argmax(1)
    near = np.where(far[:, None], 0.0, err).max() / scale if scale else 0.0
    measured = {"max_rel": float(near), "far": float(far.mean()), "labels": float(differ.mean())}
    print(
        f"parity {what}: max error {measured['max_rel']:.1e} of the largest score off ties, "
        f"{far.sum()} of {far.size} pixels on a tie, {differ.sum()} labels differ"
    )
    assert far.mean() <= LABEL_MISMATCH, f"{what}: {far.mean():.3%} of pixels have scores off by more than REL"
    assert differ.mean() <= LABEL_MISMATCH, f"{what}: {differ.mean():.3%} of labels differ"
    assert not (differ & ~far).any(), f"{what}: labels differ where the scores agree"
    return measured


def check_crop_scores(model, folder: str, classes: list[str], assignment: str, batch: int, h: int, w: int) -> dict:
    """The exported image graph in ``folder`` against ``GroupViTSegmenter.crop_scores`` of ``model`` on random
    crops ``[batch, 3, h, w]``: scores by ``compare_scores``, labels the argmax of the scores."""
    import numpy as np

    from groupvit_fast.segmentation import GroupViTSegmenter

    seg = GroupViTSegmenter(model, classes, bg_thresh=0.5, assignment=assignment)
    crops = random_crops(batch, h, w, seed=h * 7 + batch)
    expected = seg.crop_scores(crops).numpy()
    scores, labels = image_session(folder).run(
        None,
        {
            "images": crops.numpy(),
            "text_embeddings": seg.text_embedding().numpy(),
            "bg_thresh": np.asarray(0.5, dtype=np.float32),
        },
    )
    measured = compare_scores(expected, scores, f"{assignment} {batch}x{h}x{w}")
    assert labels.dtype == np.int64 and labels.shape == (batch, h, w)
    np.testing.assert_array_equal(labels, scores.argmax(1))
    return measured


def check_end_to_end(model, folder: str, classes: list[str], images: list, test_time: dict) -> None:
    """The whole protocol (resize, windows, stitch, resize back) of ``OnnxSegmenter`` on ``folder`` against
    ``GroupViTSegmenter.predict_scores`` of ``model`` at ``test_time`` (``short_side``, ``crop_size``, ``stride``),
    on ``uint8 [H, W, 3]`` images, with the runner's background threshold."""
    import torch

    from groupvit_fast.export.runner import OnnxSegmenter
    from groupvit_fast.segmentation import GroupViTSegmenter

    runner = OnnxSegmenter(folder, classes)
    seg = GroupViTSegmenter(
        model,
        classes,
        bg_thresh=runner.class_set.bg_thresh,  # the export's (its checkpoint's) threshold, as segment resolves it
        short_side=test_time["short_side"],
        crop_size=test_time["crop_size"],
        stride=test_time["stride"],
        max_long_side=test_time["short_side"] * 2048 // 448,
    )
    expected = [s.numpy() for s in seg.predict_scores([torch.from_numpy(i) for i in images])]
    got = runner.predict_scores(images)
    for e, g in zip(expected, got, strict=True):
        compare_scores(e[None], g[None], f"end-to-end {classes}")


#: the trained tiny model's classes (names of the generated coloured shapes it learns from captions)
TRAINED_CLASSES = ["background", "red square", "green circle", "blue triangle", "yellow square"]
#: its test time, stored in the training config's evaluate.seg (the export reads it from the checkpoint)
TRAINED_TEST_TIME = {"short_side": 96, "crop_size": 64, "stride": 32, "bg_thresh": 0.5}
#: optimiser steps of 16 generated 64 px images (contrastive chance is ln 16 = 2.77; measured 3.9 -> 1.7)
TRAIN_STEPS = 16


def train_tiny(root: str) -> tuple[str, list[float], dict]:
    """Train the small model (``small_export_config``) for ``TRAIN_STEPS`` steps with the project's training
    loop (the ``tiny`` recipe on generated coloured-shape shards, CLIP's tokenizer) in ``root``; returns the
    training checkpoint's path (``checkpoint.pth``, with its config), the logged losses and the initial weights
    (the model the loop builds from its seed, before the first step)."""
    import json
    import os

    import torch
    from omegaconf import OmegaConf

    from groupvit_fast import build_model
    from groupvit_fast.train import Trainer, load_config
    from groupvit_fast.train.data import write_synthetic_shards

    shards = os.path.join(root, "shards")
    write_synthetic_shards(shards, 2, 256, image_size=64, seed=0)
    opts = {
        "data.dataset.meta.synthetic.path": shards,
        "data.dataset.meta.synthetic.prefix": "synthetic-{000000..000001}.tar",
        "data.dataset.meta.synthetic.length": 256,
        "data.batch_size": 16,
        "data.num_workers": 0,
        "data.shuffle_buffer": 64,
        "data.text_aug.max_seq_len": 16,
        "train.max_steps": TRAIN_STEPS,
        "train.warmup_epochs": 0,
        # 2.5e-4 / 2.5e-5 after the linear scaling by 16 / 4096, as tests/train's runs of this size
        "train.base_lr": 0.064,
        "train.warmup_lr": 0.0064,
        "train.min_lr": 0.0064,
        "print_freq": 1,
        **{f"evaluate.seg.{k}": v for k, v in TRAINED_TEST_TIME.items()},
    }
    cfg = load_config("tiny", [f"{k}={v}" for k, v in opts.items()], output=os.path.join(root, "run"))
    cfg.model = OmegaConf.create(small_export_config())
    torch.manual_seed(int(cfg.train.seed))  # as the loop draws its initial weights
    initial = {k: v.clone() for k, v in build_model(small_export_config()).state_dict().items()}
    Trainer(cfg, quiet=True, device="cpu").run()
    with open(os.path.join(cfg.output, "metrics.jsonl"), encoding="utf-8") as f:
        losses = [row["total_loss"] for row in map(json.loads, f) if "total_loss" in row]
    return os.path.join(cfg.output, "checkpoint.pth"), losses, initial
