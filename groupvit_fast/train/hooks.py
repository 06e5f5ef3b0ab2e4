"""The evaluation hook: zero-shot classification and segmentation every ``evaluate.eval_freq`` epochs.

It uses ``groupvit_fast.evaluation`` (``evaluate_classification`` on the config's
``data.dataset.val`` classification shards, ``evaluate_segmentation`` on ``evaluate.seg.dataset`` /
``evaluate.seg.data_root``) when that package is importable. Without it, ``seg`` falls back to the
segmentation pipeline on a folder of images (``evaluate.seg.images``) with ground-truth masks
(``evaluate.seg.gt``, ``<stem>.png``), scored on rank 0. Data the config names but that is absent
is reported when the run starts and that task is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from omegaconf import DictConfig

__all__ = ["EvaluationHook"]


def _evaluation_api():
    try:
        from groupvit_fast.evaluation import evaluate_classification, evaluate_segmentation
    except ImportError:
        return None
    return evaluate_classification, evaluate_segmentation


class EvaluationHook:
    """``hook(model, epoch) -> {'cls/top1': ..., 'seg/mIoU': ...}`` (percent), after training epochs."""

    def __init__(self, cfg: DictConfig, *, is_main: bool, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.freq = int(cfg.evaluate.eval_freq)
        self.is_main = is_main
        self.log = log
        self.tasks = {}
        api = _evaluation_api()
        tasks = list(cfg.evaluate.task)
        unknown = [t for t in tasks if t not in ("cls", "seg")]
        if unknown:
            raise ValueError(f"evaluate.task: unknown task {unknown[0]!r} (known: cls, seg)")
        if "cls" in tasks:
            self._plan_cls(api)
        if "seg" in tasks:
            self._plan_seg(api)

    def _plan_cls(self, api) -> None:
        meta = self.cfg.data.dataset.meta
        sets = [n for n in self.cfg.data.dataset.val if n in meta and meta[n].type == "img_cls_pair"]
        if api is None:
            self.log("evaluate: cls skipped (groupvit_fast.evaluation is not available)")
            return
        for name in sets:
            if not os.path.isdir(meta[name].path):
                self.log(f"evaluate: cls on {name} skipped ({meta[name].path}: no such folder)")
                continue
            data = os.path.join(meta[name].path, meta[name].prefix)
            self.tasks[f"cls/{name}"] = lambda model, data=data: api[0](
                model,
                data,
                templates=self.cfg.evaluate.cls.template,
                batch_size=int(self.cfg.data.batch_size),
                num_workers=int(self.cfg.data.num_workers),
                progress=self.is_main,
            )

    def _plan_seg(self, api) -> None:
        seg = self.cfg.evaluate.seg
        if api is not None and seg.dataset:
            if not os.path.isdir(seg.data_root):
                self.log(f"evaluate: seg skipped (evaluate.seg.data_root {seg.data_root!r}: no such folder)")
                return
            self.tasks[f"seg/{seg.dataset}"] = lambda model: api[1](
                model, dataset=seg.dataset, data_root=seg.data_root, progress=self.is_main
            )
        elif seg.images:
            for key in ("images", "gt"):
                if not os.path.isdir(seg[key]):
                    raise ValueError(f"evaluate.seg.{key}: {seg[key]!r}: no such folder")
            self.tasks["seg/folder"] = self._folder_miou
        else:
            self.log("evaluate: seg skipped (set evaluate.seg.dataset and data_root, or evaluate.seg.images and gt)")

    def _folder_miou(self, model) -> dict:
        from ..segmentation import ConfusionMatrix, GroupViTSegmenter, load_image, load_label_mask, resolve_classes
        from ..segmentation.io import list_images

        seg = self.cfg.evaluate.seg
        names = [c.strip() for c in str(seg.classes).split(",") if c.strip()]
        classes = resolve_classes(names[0] if len(names) == 1 else names)
        segmenter = GroupViTSegmenter(model, classes, templates=seg.template)
        confusion = ConfusionMatrix(len(classes.names))
        images = list_images(seg.images)
        for path in images:
            stem = os.path.splitext(os.path.basename(path))[0]
            mask_path = os.path.join(seg.gt, stem + ".png")
            if not os.path.isfile(mask_path):
                raise ValueError(f"evaluate.seg.gt: no mask {stem}.png for {path}")
            label = segmenter.predict([load_image(path)])[0].cpu()
            confusion.update(label, load_label_mask(mask_path))
        return {"mIoU": 100 * confusion.miou(), "aAcc": 100 * confusion.pixel_accuracy(), "num_images": len(images)}

    def due(self, epoch: int) -> bool:
        """Whether to evaluate after (0-based) ``epoch``."""
        return bool(self.tasks) and self.freq > 0 and (epoch + 1) % self.freq == 0

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict:
        from .distributed import barrier

        was_training = model.training
        model.eval()
        results = {}
        try:
            for name, run in self.tasks.items():
                if name == "seg/folder" and not self.is_main:
                    continue  # scored by rank 0 alone
                out = run(model)
                for key in ("top1", "top5", "mIoU", "aAcc", "mAcc"):
                    if key in out:
                        results[f"{name}/{key}"] = float(out[key])
        finally:
            model.train(was_training)
            barrier()
        return results
