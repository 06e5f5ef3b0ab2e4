"""The emergence report's measures (``scene_emergence``; what each one means: the package docstring)."""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from ...segmentation.classes import ClassSet
from ...segmentation.inference import GroupViTSegmenter, image_class_probs, patch_grid, preprocess_image
from ...segmentation.io import load_image, load_label_mask
from ...segmentation.metrics import ConfusionMatrix
from ...segmentation.test_time import TestTimeSettings, resolve_test_time
from ..datasets import find_samples, get_preset

__all__ = [
    "scene_emergence",
    "emergence_settings",
    "group_usage",
    "chained_group_ids",
    "oracle_groupings",
    "whole_images",
]


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


def _majority_paint(groups: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``groups [h, w]`` (ids) upsampled (nearest) to ``mask``'s size, each id painted with the
    ground-truth class most of its pixels have."""
    ids = F.interpolate(groups[None, None].float(), size=tuple(mask.shape), mode="nearest")[0, 0].long()
    labelled = mask < num_classes  # an ignore label (255) votes for nothing
    counts = torch.zeros(int(ids.max()) + 1, num_classes, dtype=torch.long)
    counts.index_put_(
        (ids[labelled], mask[labelled].long()), torch.ones(int(labelled.sum()), dtype=torch.long), accumulate=True
    )
    return counts.argmax(dim=1)[ids]


@torch.no_grad()
def chained_group_ids(attn_dicts: list[dict | None]) -> list[torch.Tensor]:
    """Per grouping stage, ``[B, N]``: the group of each of the ``N`` patches under the stage's hard
    assignment, stages chained (a stage-2 group holds the patches of its stage-1 groups)."""
    chained, out = None, []
    for attn in attn_dicts:
        if attn is None:
            continue
        step = attn["hard"][:, 0].transpose(1, 2).float().cpu()  # [B, N_in, G]
        chained = step if chained is None else chained @ step  # [B, N patches, G]
        out.append(chained.argmax(dim=-1))
    return out


@torch.no_grad()
def oracle_groupings(
    attn_dicts: list[dict | None], masks: list[torch.Tensor], num_classes: int
) -> list[list[torch.Tensor]]:
    """Per grouping stage, per image, the prediction that paints each group of the chained hard
    assignment with its majority ground-truth class (``oracle_grouping_mIoU`` in the module docstring).
    The encoder's input is square, so its ``N`` patches form a ``sqrt(N)``-sided grid."""
    out = []
    for ids in chained_group_ids(attn_dicts):
        side = math.isqrt(ids.shape[-1])
        out.append(
            [_majority_paint(g, m, num_classes) for g, m in zip(ids.reshape(-1, side, side), masks, strict=True)]
        )
    return out


class _SegmentsAndWindowClasses(GroupViTSegmenter):
    """The segmenter's class scores, followed by each window's image-level class probabilities spread
    over the window (``window_no_grouping_mIoU``, ``window_classifier_mIoU`` in the module
    docstring), from the same encoder pass: ``[B, num_classes + K, h, w]``."""

    @torch.no_grad()
    def crop_scores(self, crops: torch.Tensor) -> torch.Tensor:
        scores, image_x = self.crop_scores_and_image_embedding(crops)
        probs = image_class_probs(image_x, self.text_embedding(), self.model.logit_scale).to(scores.dtype)
        return torch.cat([scores, probs[:, :, None, None].expand(-1, -1, *scores.shape[-2:])], dim=1)


def whole_images(raws: list[torch.Tensor], side: int) -> torch.Tensor:
    """``[B, 3, side, side]``: each whole image (``uint8 [3, H, W]``) normalised and resized to the window
    size ``side`` (the resolution the model was trained at)."""
    resized = [preprocess_image(r, side, 2 * side)[None] for r in raws]
    return torch.cat([F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False) for t in resized])


def emergence_settings(
    dataset: str = "scenes",
    *,
    short_side: int | None = None,
    crop_size: int | None = None,
    stride: int | None = None,
    bg_thresh: float | None = None,
    checkpoint: dict | None = None,
) -> TestTimeSettings:
    """The test-time settings of the report: each argument given, else the checkpoint's (``checkpoint``:
    ``Checkpoint.meta['test_time']``), else ``dataset``'s preset (``resolve_test_time``). ``ValueError``
    when the result has no background threshold: every baseline of the report paints background."""
    given = {"short_side": short_side, "crop_size": crop_size, "stride": stride, "bg_thresh": bg_thresh}
    tt = resolve_test_time(get_preset(dataset).test_time, checkpoint=checkpoint, overrides=given)
    if tt.bg_thresh is None:
        raise ValueError(f"{dataset} has no background class: the emergence report needs one (give bg_thresh)")
    return tt


@torch.no_grad()
def scene_emergence(
    model: nn.Module,
    data_root: str,
    *,
    dataset: str = "scenes",
    short_side: int | None = None,
    crop_size: int | None = None,
    stride: int | None = None,
    bg_thresh: float | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    assignment: str = "soft",
    topk: int = 5,
) -> dict:
    """Scores of ``model`` on the held-out scenes under ``data_root`` (see the package docstring).

    ``dataset``: the preset whose layout, classes and test time apply (``evaluation.presets.DATASETS``);
    ``short_side`` / ``crop_size`` / ``stride`` / ``bg_thresh``: the test-time settings, the preset's
    where ``None`` (the scenes preset: 64 px, the resolution the recipe trains at; the recipe's own
    checkpoint carries 448 px, which ``groupvit-fast eval emergence`` applies: ``emergence_settings``);
    ``max_images``: the first N only; ``assignment`` and ``topk`` as in ``GroupViTSegmenter``.
    Returns ``{'mIoU', 'no_grouping_mIoU', 'window_no_grouping_mIoU', 'window_classifier_mIoU',
    'all_background_mIoU', 'per_class', 'groups', 'image_top1_present', 'oracle_grouping_mIoU',
    'patch_grid_mIoU', 'num_images', 'seconds', 'settings'}``.
    """
    tt = emergence_settings(dataset, short_side=short_side, crop_size=crop_size, stride=stride, bg_thresh=bg_thresh)
    names = get_preset(dataset).class_names
    samples = find_samples(dataset, data_root)
    if max_images is not None:
        samples = samples[:max_images]
    classes = ClassSet(names, tt.bg_thresh)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        # one encoder pass per window for the segments and the grouping-free window baselines
        segmenter = _SegmentsAndWindowClasses(
            model,
            classes,
            bg_thresh=tt.bg_thresh,
            **tt.windows(),
            assignment=assignment,
            crop_batch_size=batch_size,
            topk=topk,
        )
        text = segmenter.text_embedding()  # [K - 1, C]: the classes besides background
        k = len(names)
        ours, no_group, window_no_group, window_alone, all_bg, grid = (ConfusionMatrix(k) for _ in range(6))
        oracle: list[ConfusionMatrix] = []
        usage: list[list[torch.Tensor]] = []
        present = 0
        device = segmenter.device
        for first in range(0, len(samples), batch_size):
            chunk = samples[first : first + batch_size]
            raws = [load_image(s.image) for s in chunk]
            masks = [load_label_mask(s.mask) for s in chunk]
            both = segmenter.predict_scores(raws)  # the k segment scores, then the window probabilities
            scores = [b[:k] for b in both]
            window_probs = [b[k:].cpu() for b in both]  # [K, H, W] each
            # one pass over each whole image at the window size (the resolution the model was
            # trained at): the image-level class, the group usage and the oracle grouping
            batch = whole_images(raws, tt.crop_size).to(device)
            outs = model.img_encoder(batch, return_attn=True, return_feat=True, as_dict=True)
            image = F.normalize(model.img_projector(outs["x"]).float(), dim=-1)
            top = (image @ text.float().t()).argmax(dim=-1) + 1  # label of the top class (background is 0)
            usage.append(group_usage(outs["attn_dicts"]))
            for stage, preds in enumerate(oracle_groupings(outs["attn_dicts"], masks, k)):
                if len(oracle) <= stage:
                    oracle.append(ConfusionMatrix(k))
                for pred, mask in zip(preds, masks, strict=True):
                    oracle[stage].update(pred, mask)
            # the patch grid the windows see: that of the image resized to short_side
            side_patches = patch_grid(model, tt.short_side, tt.short_side)[0]
            for mask in masks:
                patches = torch.arange(side_patches * side_patches).reshape(side_patches, side_patches)
                grid.update(_majority_paint(patches, mask, k), mask)
            for score, mask, label, probs in zip(scores, masks, top.tolist(), window_probs, strict=True):
                pred = score.argmax(dim=0).cpu()
                ours.update(pred, mask)
                no_group.update(torch.where(pred > 0, label, 0), mask)
                best, window_label = probs.max(dim=0)
                window_no_group.update(torch.where(pred > 0, window_label + 1, 0), mask)
                window_alone.update(torch.where(best >= tt.bg_thresh, window_label + 1, 0), mask)
                all_bg.update(torch.zeros_like(mask), mask)
                present += bool((mask == label).any())
        stages = [torch.cat([u[i] for u in usage]).float() for i in range(len(usage[0]))] if usage else []
        available = [attn["soft"].shape[2] for attn in outs["attn_dicts"] if attn is not None] if usage else []
    finally:
        model.train(was_training)
    per_class = {name: _pct(v) for name, v in zip(names, ours.iou(), strict=True)}
    return {
        "mIoU": _pct(ours.miou()),
        "no_grouping_mIoU": _pct(no_group.miou()),
        "window_no_grouping_mIoU": _pct(window_no_group.miou()),
        "window_classifier_mIoU": _pct(window_alone.miou()),
        "all_background_mIoU": _pct(all_bg.miou()),
        "per_class": per_class,
        "groups": [
            {"mean": float(s.mean()), "min": int(s.min()), "max": int(s.max()), "of": g}
            for s, g in zip(stages, available, strict=True)
        ],
        "image_top1_present": present / max(1, len(samples)),
        "oracle_grouping_mIoU": [_pct(cm.miou()) for cm in oracle],
        "patch_grid_mIoU": _pct(grid.miou()),
        "num_images": len(samples),
        "seconds": time.perf_counter() - start,
        "settings": {
            **tt.as_dict(),
            "assignment": assignment,
            "topk": topk,
            "data_root": os.fspath(data_root),
            "dataset": dataset,
        },
    }
