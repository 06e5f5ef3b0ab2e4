"""Does segmentation emerge? A trained GroupViT against baselines on the held-out scenes, with group usage.

``scene_emergence(model, data_root)`` scores one model on a folder of held-out scenes
(``prepare-data scenes``: ``images/*.png`` + ``masks/*.png``; docs/training.md, "Scenes:
segmentation from captions") at the recipe's test-time settings and returns, besides the
protocol's mIoU (``GroupViTSegmenter``, soft maps, background by threshold):

* ``no_grouping_mIoU``: each image's top zero-shot class (from the pooled image embedding) painted
  on every pixel the same pipeline calls foreground: what the image-level classifier alone gives;
* ``all_background_mIoU``: every pixel background;
* ``groups``: per grouping stage, the mean number of groups that receive at least one token of an
  image under the hard (argmax) assignment in eval mode, and the number of groups available: a
  collapsed model routes every token to one or two groups;
* ``image_top1_present``: the fraction of images whose top zero-shot class is drawn in them.

All mIoUs are in percent, over 7 classes (background included), exactly as ``eval seg`` counts.
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..segmentation.classes import ClassSet
from ..segmentation.inference import GroupViTSegmenter, preprocess_image
from ..segmentation.io import load_image, load_label_mask
from ..segmentation.metrics import ConfusionMatrix
from ..train.data.scenes import SCENE_CLASSES
from .datasets import find_samples

__all__ = ["scene_emergence", "group_usage"]


def _pct(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * value


@torch.no_grad()
def group_usage(attn_dicts: list[dict | None]) -> list[torch.Tensor]:
    """Per grouping stage, ``[B]`` counts of groups that get at least one token (argmax over groups of
    the stage's ``soft`` map, which is what the hard assignment takes in eval mode)."""
    out = []
    for attn in attn_dicts:
        if attn is None:
            continue
        soft = attn["soft"][:, 0]  # [B, G, N]
        winners = soft.argmax(dim=1)  # [B, N]
        used = torch.zeros(soft.shape[0], soft.shape[1], dtype=torch.bool, device=soft.device)
        used.scatter_(1, winners, True)
        out.append(used.sum(dim=1))
    return out


@torch.no_grad()
def scene_emergence(model: nn.Module, data_root: str, *, short_side: int = 64, crop_size: int = 64, stride: int = 32,
                    bg_thresh: float = 0.5, max_images: int | None = None, batch_size: int = 32,
                    assignment: str = "soft") -> dict:
    """Scores of ``model`` on the held-out scenes under ``data_root`` (see the module docstring).

    ``short_side`` / ``crop_size`` / ``stride`` / ``bg_thresh``: the recipe's test-time settings;
    ``max_images``: the first N only. Returns ``{'mIoU', 'no_grouping_mIoU', 'all_background_mIoU',
    'per_class', 'groups', 'image_top1_present', 'num_images', 'seconds', 'settings'}``.
    """
    samples = find_samples("scenes", data_root)
    if max_images is not None:
        samples = samples[:max_images]
    classes = ClassSet(SCENE_CLASSES, bg_thresh)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        segmenter = GroupViTSegmenter(model, classes, bg_thresh=bg_thresh, crop_size=crop_size, stride=stride,
                                      short_side=short_side, max_long_side=max(short_side, 2 * short_side),
                                      assignment=assignment, crop_batch_size=batch_size)
        text = segmenter.text_embedding()  # [6, C]
        k = len(SCENE_CLASSES)
        ours, no_group, all_bg = ConfusionMatrix(k), ConfusionMatrix(k), ConfusionMatrix(k)
        usage: list[list[torch.Tensor]] = []
        present = 0
        device = segmenter.device
        for first in range(0, len(samples), batch_size):
            chunk = samples[first:first + batch_size]
            raws = [load_image(s.image) for s in chunk]
            masks = [load_label_mask(s.mask) for s in chunk]
            scores = segmenter.predict_scores(raws)
            # one whole-image pass at the test resolution: the image-level class and the group usage
            resized = [preprocess_image(r, short_side, max(short_side, 2 * short_side)) for r in raws]
            side = min(min(t.shape[-2:]) for t in resized)
            batch = torch.stack([F.interpolate(t[None], size=(side, side), mode="bilinear", align_corners=False)[0]
                                 for t in resized]).to(device)
            outs = model.img_encoder(batch, return_attn=True, return_feat=True, as_dict=True)
            image = F.normalize(model.img_projector(outs["x"]).float(), dim=-1)
            top = (image @ text.float().t()).argmax(dim=-1) + 1  # label of the top class (background is 0)
            usage.append(group_usage(outs["attn_dicts"]))
            for score, mask, label in zip(scores, masks, top.tolist(), strict=True):
                pred = score.argmax(dim=0).cpu()
                ours.update(pred, mask)
                no_group.update(torch.where(pred > 0, label, 0), mask)
                all_bg.update(torch.zeros_like(mask), mask)
                present += bool((mask == label).any())
        stages = [torch.cat([u[i] for u in usage]).float() for i in range(len(usage[0]))] if usage else []
        available = [attn["soft"].shape[2] for attn in outs["attn_dicts"] if attn is not None] if usage else []
    finally:
        model.train(was_training)
    per_class = {name: _pct(v) for name, v in zip(SCENE_CLASSES, ours.iou(), strict=True)}
    return {"mIoU": _pct(ours.miou()), "no_grouping_mIoU": _pct(no_group.miou()),
            "all_background_mIoU": _pct(all_bg.miou()), "per_class": per_class,
            "groups": [{"mean": float(s.mean()), "min": int(s.min()), "max": int(s.max()), "of": g}
                       for s, g in zip(stages, available, strict=True)],
            "image_top1_present": present / max(1, len(samples)), "num_images": len(samples),
            "seconds": time.perf_counter() - start,
            "settings": {"short_side": short_side, "crop_size": crop_size, "stride": stride, "bg_thresh": bg_thresh,
                         "assignment": assignment, "data_root": os.fspath(data_root)}}
