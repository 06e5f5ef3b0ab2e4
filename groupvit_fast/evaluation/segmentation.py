"""Zero-shot mIoU of a GroupViT on a benchmark dataset (``groupvit-fast eval seg``).

The protocol of NVlabs' evaluation (docs/evaluation.md): keep-ratio resize to the preset's scale,
no flip, 448x448 windows at stride 224, prompt "a photo of a {}.", soft grouping maps
(``assignment='hard'`` for the ablation), image-level top-5 class filter, background where the
best score is below ``min(bg_thresh, max affinity)``.
The per-crop and per-image work is ``groupvit_fast.segmentation.GroupViTSegmenter`` (one encoder
pass per crop, crops of several images batched); this module feeds it a dataset: DataLoader
workers decode and resize, each rank takes a disjoint slice, and the confusion matrix is summed
over ranks, so every rank returns the single-process numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..common.precision import autocast_dtype as parse_autocast
from ..segmentation.classes import ClassSet
from ..segmentation.inference import GroupViTSegmenter, check_assignment
from ..segmentation.metrics import ConfusionMatrix
from ..segmentation.test_time import resolve_test_time
from ..segmentation.text import TextEmbeddingCache, class_text_embeddings
from .datasets import IGNORE_INDEX, DatasetPreset, SegmentationSamples, check_sizes, find_samples, get_preset
from .distributed import all_gather_errors, all_reduce_sum, compute_once_and_broadcast, rank_and_world, rank_slice

__all__ = ["evaluate_segmentation", "segmentation_metrics", "SEG_OPTIONS"]

#: keyword options of ``evaluate_segmentation`` besides the named ones, with their defaults
SEG_OPTIONS = {
    "split": "val",
    "templates": "simple",
    "crop_batch_size": 8,
    "autocast": None,
    "max_images": None,
    "keep_predictions": 0,
    "assignment": "soft",
    "short_side": None,
    "crop_size": None,
    "stride": None,
}


def segmentation_metrics(confusion: ConfusionMatrix, class_names: tuple[str, ...]) -> dict:
    """mmseg's summary in percent: ``mIoU``, ``mAcc``, ``aAcc`` and ``per_class`` ``{name: {IoU, Acc}}``
    (``None`` where a class has no union / no ground truth, and such classes out of the means)."""

    def pct(v: float) -> float | None:
        return None if math.isnan(v) else 100.0 * v

    per_class = {
        name: {"IoU": pct(iou), "Acc": pct(acc)}
        for name, iou, acc in zip(class_names, confusion.iou(), confusion.class_accuracy(), strict=True)
    }
    return {
        "mIoU": pct(confusion.miou()),
        "mAcc": pct(confusion.mean_accuracy()),
        "aAcc": pct(confusion.pixel_accuracy()),
        "per_class": per_class,
    }


def _collate(batch: list[dict]) -> list[dict]:
    return batch  # images differ in size: the segmenter batches crops, not images


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode and resize; the main process keeps the cores for the model


def _with_test_time(preset: DatasetPreset, bg_thresh: float | None, opts: dict[str, Any]) -> DatasetPreset:
    """``preset`` at the test-time settings that ``bg_thresh`` and ``opts`` set, the preset's elsewhere
    (``segmentation.test_time.resolve_test_time``); a bad value is a one-line ``ValueError`` naming it."""
    given = {key: opts[key] for key in ("short_side", "crop_size", "stride")}
    tt = resolve_test_time(preset.test_time, overrides={**given, "bg_thresh": bg_thresh})
    return dataclasses.replace(
        preset,
        short_side=tt.short_side,
        max_long_side=tt.max_long_side,
        crop=tt.crop_size,
        stride=tt.stride,
        bg_thresh=tt.bg_thresh,
    )


def evaluate_segmentation(
    model: nn.Module,
    *,
    dataset: str,
    data_root: str,
    bg_thresh: float | None = None,
    topk: int = 5,
    batch_size: int = 4,
    num_workers: int = 2,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> dict:
    """Zero-shot mIoU of ``model`` (a ``MultiLabelContrastive``) on ``dataset``'s validation split.

    ``dataset``: a name of ``evaluation.presets.DATASETS`` (``voc``, ``context``, ``coco-object``,
    ``ade20k``, ``cityscapes``, ``scenes``; layouts in docs/evaluation.md) under ``data_root``;
    ``bg_thresh``: the preset's when ``None``; ``topk``: classes kept by the image-level filter;
    ``batch_size`` images per step (their crops go through the encoder ``crop_batch_size`` at a time).
    ``options``: ``split`` ('val'), ``templates`` ('simple'), ``crop_batch_size`` (8), ``autocast``
    (None | 'bf16' | 'fp16'), ``max_images`` (evaluate the first N only), ``keep_predictions`` (return
    the label maps ``[H, W]`` of the first N images of rank 0, with their images, under
    ``'predictions'``), ``assignment`` (``'soft'``, NVlabs' protocol, or ``'hard'``: compose the grouping
    blocks' one-hot maps; docs/segmentation.md), ``short_side`` / ``crop_size`` / ``stride`` (the
    preset's when ``None``: a recipe trained at 64 px is scored at its own resolution; resolved by
    ``segmentation.test_time.resolve_test_time``, docs/segmentation.md, "Test-time settings from the
    checkpoint").

    Returns ``{'mIoU', 'mAcc', 'aAcc'}`` (percent), ``'per_class'`` ``{name: {'IoU', 'Acc'}}``,
    ``'num_images'``, ``'dataset'``, ``'settings'``, ``'seconds'``, ``'images_per_s'``; identical on
    every rank and to a single process. All inputs are checked before the model runs
    (``ValueError`` naming the file); a bad mask found while decoding stops every rank with its name.
    """
    unknown = sorted(set(options) - set(SEG_OPTIONS))
    if unknown:
        raise TypeError(
            f"evaluate_segmentation got unknown option(s) {', '.join(unknown)}; known: {', '.join(SEG_OPTIONS)}"
        )
    opts = {**SEG_OPTIONS, **options}
    for name, value in (("batch_size", batch_size), ("topk", topk), ("crop_batch_size", opts["crop_batch_size"])):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    check_assignment(opts["assignment"])
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
    preset = _with_test_time(get_preset(dataset), bg_thresh, opts)
    thresh = preset.bg_thresh
    samples = find_samples(preset.name, data_root, opts["split"])
    if opts["max_images"] is not None:
        samples = samples[: int(opts["max_images"])]
    check_sizes(samples)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    autocast_dtype = parse_autocast(opts["autocast"], device, fp16_needs_cuda=True)
    class_set = ClassSet(preset.class_names, thresh if thresh is not None else 0.95)

    rank, world = rank_and_world()
    was_training = model.training
    model.eval()
    try:
        text = compute_once_and_broadcast(lambda: class_text_embeddings(model, class_set.text_names, opts["templates"]))
        cache = TextEmbeddingCache()
        cache.put(model, class_set.text_names, opts["templates"], text.to(device))
        segmenter = GroupViTSegmenter(
            model,
            class_set,
            templates=opts["templates"],
            crop_size=preset.crop,
            stride=preset.stride,
            short_side=preset.short_side,
            max_long_side=preset.max_long_side,
            crop_batch_size=opts["crop_batch_size"],
            text_cache=cache,
            autocast_dtype=autocast_dtype,
            topk=topk,
            assignment=opts["assignment"],
        )
        keep = int(opts["keep_predictions"]) if rank == 0 else 0
        data = SegmentationSamples(samples, preset, rank_slice(len(samples), rank, world), keep_raw=keep > 0)
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
            worker_init_fn=_worker_init if num_workers else None,
            persistent_workers=False,
        )
        confusion, kept, error, start = ConfusionMatrix(len(preset.class_names)), [], None, time.perf_counter()
        bar = _progress(len(samples), progress and rank == 0, f"eval seg {preset.name}")
        with bar:
            for batch in loader:
                error = next((item["error"] for item in batch if "error" in item), None)
                if error is not None:
                    break
                scores = segmenter.predict_scores([item["image"] for item in batch], preprocessed=True)
                for item, score in zip(batch, scores, strict=True):
                    mask = item["mask"]
                    # mmseg resizes the averaged scores to the original size before the argmax
                    score = F.interpolate(score[None], size=tuple(mask.shape), mode="bilinear", align_corners=False)[0]
                    pred = score.argmax(dim=0).cpu()
                    confusion.update(pred, mask)
                    if len(kept) < keep:
                        kept.append({"image": samples[item["index"]].image, "raw": item["raw"], "pred": pred})
                bar.update(len(batch) * world)
        error = all_gather_errors(error)
        if error is not None:
            raise ValueError(error)
        confusion.counts = all_reduce_sum(confusion.counts)
        seconds = time.perf_counter() - start
    finally:
        model.train(was_training)
    result = {
        "dataset": preset.name,
        **segmentation_metrics(confusion, preset.class_names),
        "num_images": len(samples),
        "seconds": seconds,
        "images_per_s": len(samples) / max(seconds, 1e-9),
        "settings": {
            "bg_thresh": thresh,
            "topk": topk,
            "assignment": opts["assignment"],
            "templates": opts["templates"],
            "img_scale": [preset.max_long_side, preset.short_side],
            "crop": preset.crop,
            "stride": preset.stride,
            "autocast": str(autocast_dtype) if autocast_dtype else None,
            "ignore_index": IGNORE_INDEX,
            "world_size": world,
            "split": opts["split"],
        },
    }
    if keep:
        result["predictions"] = kept
    return result


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


class _NoBar(contextlib.nullcontext):
    def update(self, n: int) -> None:
        pass
