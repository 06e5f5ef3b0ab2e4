"""Two measures of the shapes report that ``scene_emergence`` does not give.

* ``saturation_no_grouping``: no grouping, no model segments: the image's top zero-shot class (its pooled
  embedding, one pass over the whole image at the window size) painted on every pixel whose saturation
  exceeds 0.4 (the ground's is below 0.18, every object's above 0.6), background elsewhere: what the
  image-level classifier gives with a figure/ground split that colour alone provides;
* ``groups_on_three_object_scenes``: per grouping stage, the mean number of groups that win at least one
  token (hard assignment, eval mode) over the held-out scenes that hold three objects.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from groupvit_fast.datasets.shapes import SHAPE_CLASSES
from groupvit_fast.evaluation.datasets import find_samples
from groupvit_fast.evaluation.emergence import group_usage
from groupvit_fast.segmentation.classes import ClassSet
from groupvit_fast.segmentation.inference import GroupViTSegmenter, preprocess_image
from groupvit_fast.segmentation.io import load_image, load_label_mask
from groupvit_fast.segmentation.metrics import ConfusionMatrix


def _whole(raw: torch.Tensor, side: int) -> torch.Tensor:
    x = preprocess_image(raw, side, 2 * side)[None]
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def _saturation(raw: torch.Tensor) -> torch.Tensor:
    rgb = raw.float() / 255
    mx, mn = rgb.max(0).values, rgb.min(0).values
    return torch.where(mx > 0, (mx - mn) / mx.clamp_min(1e-12), torch.zeros_like(mx))


@torch.no_grad()
def saturation_no_grouping(model, data_root: str, *, short_side: int, crop_size: int, stride: int, bg_thresh: float):
    """mIoU (percent, 7 classes) of the image's top class on the saturated pixels."""
    model.eval()
    segmenter = GroupViTSegmenter(
        model,
        ClassSet(SHAPE_CLASSES, bg_thresh),
        bg_thresh=bg_thresh,
        crop_size=crop_size,
        stride=stride,
        short_side=short_side,
        max_long_side=2 * short_side,
    )
    text = segmenter.text_embedding().float()
    cm = ConfusionMatrix(len(SHAPE_CLASSES))
    for sample in find_samples("shapes", data_root):
        raw, mask = load_image(sample.image), load_label_mask(sample.mask)
        image = F.normalize(model.img_projector(model.img_encoder(_whole(raw, crop_size))).float(), dim=-1)
        label = int((image @ text.t()).argmax()) + 1
        cm.update(torch.where(_saturation(raw) > 0.4, label, 0), mask)
    return 100.0 * cm.miou()


@torch.no_grad()
def groups_on_three_object_scenes(model, data_root: str, side: int) -> list[float]:
    """Per stage, the mean number of groups in use over the 3-object held-out scenes."""
    model.eval()
    base = data_root if os.path.isfile(os.path.join(data_root, "captions.jsonl")) else os.path.join(data_root, "eval")
    with open(os.path.join(base, "captions.jsonl"), encoding="utf-8") as f:
        three = {row["stem"] for row in map(json.loads, f) if len(row["nouns"]) == 3}
    images = [s.image for s in find_samples("shapes", data_root) if os.path.basename(s.image)[:-4] in three]
    batch = torch.cat([_whole(load_image(p), side) for p in images])
    outs = model.img_encoder(batch, return_attn=True, as_dict=True)
    return [float(u.float().mean()) for u in group_usage(outs["attn_dicts"])] + [float(len(images))]
