"""A short shapes run, end to end, on the real training loop (docs/training.md, "Shapes: grouping where
colour does not name the class"): the `shapes` recipe for 64 steps of 32 on 1,024 generated scenes, no
warm-up, scored on 32 held-out scenes at the recipe's test time (the faithful miniature: 128 px short
side, one 128 px window) against the same architecture untrained (seed 0). It must show:

* the loss falls (both terms: the caption contrastive loss and the multi-label noun loss);
* the first grouping stage still separates the scene: its oracle grouping (each group painted with its
  majority class) stays far above all background, with at least MIN_GROUPS groups in use. No bound
  relative to the untrained model is asserted: a short run does not lift the grouping above it, and
  where it lands below depends on the noise stream (stage 1 50.7 against 51.7 untrained in
  benchmarks/results/shapes-grouping/; 41.2 with the same seed once the op also drew its Philox offset
  from the generator); stage 2 collapses (2.7 of 8 groups);
* the label order: the scores name the seven classes in the masks' order (background, disc, square,
  triangle, star, cross, ring), and the all-background prediction scores exactly the masks' background
  IoU over the classes present.

No recognition or mIoU bound is asserted: a run this short recognises no shape (top class drawn in
0.28 of the scenes, as untrained). The mutations these catch are listed in tests/README.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("webdataset")
pytest.importorskip("timm")

STEPS = 64
BATCH = 32
TRAIN_SCENES = 1024
EVAL_SCENES = 32


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    from groupvit_fast.datasets.shapes import write_shapes
    from groupvit_fast.train import load_config
    from groupvit_fast.train.loop import Trainer

    root = tmp_path_factory.mktemp("shapes-short")
    data = str(root / "shapes")
    write_shapes(data, train_length=TRAIN_SCENES, num_shards=2, eval_count=EVAL_SCENES, seed=0)
    cfg = load_config(
        "shapes",
        [
            f"data.dataset.meta.shapes.path={data}",
            f"data.dataset.meta.shapes.length={TRAIN_SCENES}",
            "data.dataset.meta.shapes.prefix=shapes-{000000..000001}.tar",
            f"data.batch_size={BATCH}",
            "data.num_workers=0",
            "train.epochs=2",
            "train.warmup_epochs=0",
            f"train.max_steps={STEPS}",
            "print_freq=1",
        ],
        output=str(root / "run"),
    )
    trainer = Trainer(cfg, quiet=True, device="cpu")
    trainer.run()
    with open(root / "run" / "metrics.jsonl", encoding="utf-8") as f:
        metrics = [row for row in map(json.loads, f) if "loss" in row]
    return {"model": trainer.model, "config": cfg, "eval": data + "/eval", "metrics": metrics}


@pytest.fixture(scope="module")
def held_out_scores(short_run):
    from groupvit_fast.evaluation.emergence import scene_emergence
    from groupvit_fast.models.registry import build_model

    seg = short_run["config"].evaluate.seg
    tt = {"short_side": seg.short_side, "crop_size": seg.crop_size, "stride": seg.stride, "bg_thresh": seg.bg_thresh}
    trained = scene_emergence(short_run["model"], short_run["eval"], dataset="shapes", **tt)
    torch.manual_seed(0)
    untrained = scene_emergence(build_model(short_run["config"].model), short_run["eval"], dataset="shapes", **tt)
    return trained, untrained


def test_the_loss_falls(short_run):
    rows = short_run["metrics"]
    assert len(rows) >= STEPS // 2
    for key in ("loss", "multi_label_loss"):
        first = np.mean([r[key] for r in rows[:8]])
        last = np.mean([r[key] for r in rows[-8:]])
        print(f"{key}: first 8 logged steps {first:.3f}, last 8 {last:.3f}")  # shown by pytest -rP
        assert last < first - 0.1, (key, first, last)


MIN_GROUPS = 4.0  # of 16 at stage 1 (measured 8.3; untrained 11.7)


def test_the_first_stage_still_separates_the_scene(held_out_scores):
    trained, untrained = held_out_scores
    oracle = [(t, u) for t, u in zip(trained["oracle_grouping_mIoU"], untrained["oracle_grouping_mIoU"], strict=True)]
    groups = [(t["mean"], u["mean"]) for t, u in zip(trained["groups"], untrained["groups"], strict=True)]
    top1 = (trained["image_top1_present"], untrained["image_top1_present"])
    for stage, ((ot, ou), (gt, gu)) in enumerate(zip(oracle, groups, strict=True), start=1):  # shown by pytest -rP
        print(
            f"stage {stage}: oracle grouping trained {ot:.1f}, untrained {ou:.1f}; groups {gt:.2f}, untrained {gu:.2f}"
        )
    print(f"image top class drawn: trained {top1[0]:.2f}, untrained {top1[1]:.2f}")
    print(f"mIoU: trained {trained['mIoU']:.1f}, untrained {untrained['mIoU']:.1f}")
    assert oracle[0][0] >= 2 * trained["all_background_mIoU"], (oracle, trained["all_background_mIoU"])
    assert groups[0][0] >= MIN_GROUPS, groups


def test_scores_follow_the_masks_label_order(held_out_scores, short_run):
    from groupvit_fast.datasets.shapes import SHAPE_CLASSES
    from groupvit_fast.evaluation.datasets import find_samples
    from groupvit_fast.segmentation.io import load_label_mask

    trained, _ = held_out_scores
    assert list(trained["per_class"]) == list(SHAPE_CLASSES)
    # all background: IoU of class 0 is the background's share of the pixels, every drawn shape's 0
    masks = [load_label_mask(s.mask) for s in find_samples("shapes", short_run["eval"])]
    background = sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)
    present = len(set(torch.cat([m.unique() for m in masks]).tolist()))
    assert trained["all_background_mIoU"] == pytest.approx(100 * background / present, rel=1e-9)
