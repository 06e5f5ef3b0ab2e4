"""Does segmentation emerge? A trained GroupViT against baselines on the held-out scenes, with group usage.

``scene_emergence(model, data_root)`` scores one model on a folder of held-out scenes
(``prepare-data scenes``: ``images/*.png`` + ``masks/*.png``; docs/training.md, "Scenes:
segmentation from captions") at the recipe's test-time settings and returns, besides the
protocol's mIoU (``GroupViTSegmenter``, soft maps, background by threshold):

* ``no_grouping_mIoU``: each image's top zero-shot class (from the pooled image embedding) painted
  on every pixel the same pipeline calls foreground: what the image-level classifier alone gives;
* ``window_no_grouping_mIoU``: the same, with the class of each window instead of the whole image:
  every window's own zero-shot class probabilities (its pooled embedding) spread over the window,
  averaged where windows overlap, the best class painted on the same foreground: what sliding-window
  classification gives without the segments, a baseline that matters once ``short_side`` enlarges
  the scene so much that a window holds only part of it;
* ``window_classifier_mIoU``: those averaged window probabilities alone, with no segment anywhere:
  the best class where its probability reaches ``bg_thresh``, background elsewhere (sliding-window
  zero-shot classification, the foreground included);
* ``all_background_mIoU``: every pixel background;
* ``groups``: per grouping stage, the mean number of groups that receive at least one token of an
  image under the hard (argmax) assignment in eval mode, and the number of groups available: a
  collapsed model routes every token to one or two groups;
* ``image_top1_present``: the fraction of images whose top zero-shot class is drawn in them;
* ``oracle_grouping_mIoU``: per grouping stage, the mIoU when each group of the stage's hard
  assignment (stages chained, so a stage-2 group covers the patches of its stage-1 groups) is
  painted with the ground-truth class most of its pixels have: how well the groups separate the
  classes, whatever the text side says (an upper bound for any labelling of those groups);
* the image-level class, ``groups`` and ``oracle_grouping_mIoU`` come from one pass over each whole
  image resized to the window size (``crop_size``, the resolution the model was trained at), not
  from the windows of the prediction, which at a ``short_side`` above ``crop_size`` each see a
  part of the scene enlarged;
* ``patch_grid_mIoU``: each patch of the grid the windows see (the image resized to ``short_side``,
  in patches) painted with its majority class: the most any grouping of that grid can reach (at
  64 px with 8 px patches, far below 100).

All mIoUs are in percent, over 7 classes (background included), exactly as ``eval seg`` counts.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..segmentation.classes import ClassSet
from ..segmentation.inference import GroupViTSegmenter, image_class_probs, preprocess_image
from ..segmentation.io import load_image, load_label_mask
from ..segmentation.metrics import ConfusionMatrix
from .datasets import find_samples, get_preset

__all__ = ["scene_emergence", "group_usage", "chained_group_ids", "oracle_groupings", "emergence_figure"]


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


def _whole_images(raws: list[torch.Tensor], side: int) -> torch.Tensor:
    """``[B, 3, side, side]``: each whole image normalised and resized to the window size."""
    resized = [preprocess_image(r, side, 2 * side)[None] for r in raws]
    return torch.cat([F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False) for t in resized])


@torch.no_grad()
def scene_emergence(
    model: nn.Module,
    data_root: str,
    *,
    dataset: str = "scenes",
    short_side: int = 64,
    crop_size: int = 64,
    stride: int = 32,
    bg_thresh: float = 0.5,
    max_images: int | None = None,
    batch_size: int = 32,
    assignment: str = "soft",
    topk: int = 5,
) -> dict:
    """Scores of ``model`` on the held-out scenes under ``data_root`` (see the module docstring).

    ``dataset``: ``'scenes'`` or ``'shapes'`` (its preset's classes and layout);
    ``short_side`` / ``crop_size`` / ``stride`` / ``bg_thresh``: the recipe's test-time settings;
    ``max_images``: the first N only; ``assignment`` and ``topk`` as in ``GroupViTSegmenter``.
    Returns ``{'mIoU', 'no_grouping_mIoU', 'window_no_grouping_mIoU', 'window_classifier_mIoU',
    'all_background_mIoU', 'per_class', 'groups', 'image_top1_present', 'oracle_grouping_mIoU',
    'patch_grid_mIoU', 'num_images', 'seconds', 'settings'}``.
    """
    names = get_preset(dataset).class_names
    samples = find_samples(dataset, data_root)
    if max_images is not None:
        samples = samples[:max_images]
    classes = ClassSet(names, bg_thresh)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        # one encoder pass per window for the segments and the grouping-free window baselines
        segmenter = _SegmentsAndWindowClasses(
            model,
            classes,
            bg_thresh=bg_thresh,
            crop_size=crop_size,
            stride=stride,
            short_side=short_side,
            max_long_side=max(short_side, 2 * short_side),
            assignment=assignment,
            crop_batch_size=batch_size,
            topk=topk,
        )
        text = segmenter.text_embedding()  # [6, C]
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
            batch = _whole_images(raws, crop_size).to(device)
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
            side_patches = segmenter._grid(short_side, short_side)[0]
            for mask in masks:
                patches = torch.arange(side_patches * side_patches).reshape(side_patches, side_patches)
                grid.update(_majority_paint(patches, mask, k), mask)
            for score, mask, label, probs in zip(scores, masks, top.tolist(), window_probs, strict=True):
                pred = score.argmax(dim=0).cpu()
                ours.update(pred, mask)
                no_group.update(torch.where(pred > 0, label, 0), mask)
                best, window_label = probs.max(dim=0)
                window_no_group.update(torch.where(pred > 0, window_label + 1, 0), mask)
                window_alone.update(torch.where(best >= bg_thresh, window_label + 1, 0), mask)
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
            "short_side": short_side,
            "crop_size": crop_size,
            "stride": stride,
            "bg_thresh": bg_thresh,
            "assignment": assignment,
            "topk": topk,
            "data_root": os.fspath(data_root),
            "dataset": dataset,
        },
    }


def _palette(n: int, seed: int = 7) -> list[tuple[int, int, int]]:
    import colorsys
    import random

    rng = random.Random(seed)
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618 + rng.random() * 0.05) % 1.0, 0.65, 0.95))
        for i in range(n)
    ]


@torch.no_grad()
def emergence_figure(
    model: nn.Module,
    data_root: str,
    path: str,
    *,
    dataset: str = "scenes",
    count: int = 6,
    cell: int = 96,
    short_side: int = 64,
    crop_size: int = 64,
    stride: int = 32,
    bg_thresh: float = 0.5,
) -> None:
    """A PNG of ``count`` held-out scenes, one row each: the image, the stage-1 groups, the stage-2
    groups (the composed hard maps' argmax, one colour per group, of one pass over the whole image at
    the window size), the prediction and the ground truth
    (label colours of ``segment``'s PNGs), each ``cell`` pixels square (nearest-neighbour)."""
    from PIL import Image, ImageDraw

    from ..segmentation.io import label_palette

    samples = find_samples(dataset, data_root)[:count]
    names = list(get_preset(dataset).class_names)
    labels_rgb = label_palette(names)
    was_training = model.training
    model.eval()
    try:
        segmenter = GroupViTSegmenter(
            model,
            ClassSet(names, bg_thresh),
            bg_thresh=bg_thresh,
            crop_size=crop_size,
            stride=stride,
            short_side=short_side,
            max_long_side=2 * short_side,
        )
        header = 14
        sheet = Image.new("RGB", (5 * cell, header + count * cell), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        for col, title in enumerate(("image", "stage-1 groups", "stage-2 groups", "prediction", "ground truth")):
            draw.text((col * cell + 3, 1), title, fill=(0, 0, 0))
        for row, sample in enumerate(samples):
            raw = load_image(sample.image)
            mask = load_label_mask(sample.mask)
            pred = segmenter.predict([raw])[0].cpu()
            x = _whole_images([raw], crop_size).to(segmenter.device)
            outs = model.img_encoder(x, return_attn=True, as_dict=True)
            grid = segmenter._grid(*x.shape[-2:])
            panels = []
            sizes = [a["hard"].shape[2] for a in outs["attn_dicts"] if a is not None]  # groups per stage
            for ids, num_groups in zip(chained_group_ids(outs["attn_dicts"]), sizes, strict=True):
                groups = ids[0].reshape(grid).numpy()
                colours = _palette(num_groups)
                panels.append(Image.fromarray(np.asarray([[colours[g] for g in r] for r in groups], dtype=np.uint8)))
            image = Image.fromarray(raw.permute(1, 2, 0).numpy())

            def paint(labels: torch.Tensor) -> Image.Image:
                lut = np.asarray(labels_rgb, dtype=np.uint8)
                return Image.fromarray(lut[labels.numpy().clip(0, len(names) - 1)])

            row_panels = [image, *(panels + panels[-1:])[:2], paint(pred), paint(mask)]
            for col, panel in enumerate(row_panels):
                sheet.paste(panel.resize((cell, cell), Image.NEAREST), (col * cell, header + row * cell))
    finally:
        model.train(was_training)
    from ..segmentation.io import atomic_write

    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 1) for v in values]


def main(argv: list[str] | None = None) -> int:
    """``python -m groupvit_fast.evaluation.emergence --checkpoint CKPT --data DIR --out DIR``: the trained
    model, the same architecture untrained (seed 0) and the baselines on the held-out scenes; writes
    ``emergence.json`` and ``emergence.png``. Test-time settings: the checkpoint config's (flags override)."""
    import argparse
    import json
    import sys

    from ..checkpoint import load_checkpoint
    from ..models.registry import build_model

    parser = argparse.ArgumentParser(prog="python -m groupvit_fast.evaluation.emergence")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="held-out scenes (prepare-data scenes' --out or its eval/)")
    parser.add_argument("--dataset", default="scenes", choices=("scenes", "shapes"), help="default: %(default)s")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bg-thresh", type=float)
    for flag in ("--short-side", "--crop-size", "--stride"):
        parser.add_argument(flag, type=int, help="test-time setting (default: the checkpoint config's)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--figure-count", type=int, default=6)
    args = parser.parse_args(argv)
    for name in ("short_side", "crop_size", "stride"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number of pixels, got {value}")
    if not os.path.isfile(args.checkpoint):
        print(f"{parser.prog}: error: {args.checkpoint}: no such checkpoint file", file=sys.stderr)
        return 1
    ckpt = load_checkpoint(args.checkpoint)
    tt = {"short_side": 64, "crop_size": 64, "stride": 32, "bg_thresh": 0.5, **(ckpt.meta.get("test_time") or {})}
    for name in ("short_side", "crop_size", "stride", "bg_thresh"):
        if getattr(args, name) is not None:
            tt[name] = getattr(args, name)
    torch.manual_seed(0)
    untrained = build_model(ckpt.config)
    report = {
        "checkpoint": args.checkpoint,
        "step": ckpt.meta.get("step"),
        "test_time": tt,
        "trained": scene_emergence(ckpt.model, args.data, dataset=args.dataset, max_images=args.max_images, **tt),
        "untrained": scene_emergence(untrained, args.data, dataset=args.dataset, max_images=args.max_images, **tt),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "emergence.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    figure = os.path.join(args.out, "emergence.png")
    emergence_figure(ckpt.model, args.data, figure, dataset=args.dataset, count=args.figure_count, **tt)
    t, u = report["trained"], report["untrained"]
    print(
        f"mIoU trained {t['mIoU']:.1f}, untrained {u['mIoU']:.1f}, no grouping {t['no_grouping_mIoU']:.1f}, "
        f"window class on the segments' foreground {t['window_no_grouping_mIoU']:.1f}, window classifier "
        f"{t['window_classifier_mIoU']:.1f}, all background {t['all_background_mIoU']:.1f}; groups per stage trained "
        f"{[round(g['mean'], 2) for g in t['groups']]}, untrained {[round(g['mean'], 2) for g in u['groups']]}; "
        f"oracle grouping mIoU per stage trained {_rounded(t['oracle_grouping_mIoU'])}, untrained "
        f"{_rounded(u['oracle_grouping_mIoU'])}, patch grid {t['patch_grid_mIoU']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
