"""mIoU from a confusion matrix (mmseg's ``mean_iou`` semantics), exact in integer counts.

Pixels whose ground truth is ``ignore_index`` (255) are skipped; a class's IoU is
``TP / (TP + FP + FN)``; classes that appear neither in a ground truth nor in a prediction of the
evaluated set have no IoU (NaN) and are left out of the mean, as mmseg does. A class's accuracy
is ``TP / (TP + FN)`` (NaN, and out of ``mAcc``, where it has no ground-truth pixel); ``aAcc`` is
all correct pixels over all labelled pixels. Counts are summed over the whole dataset before any
division (mmseg's ``total_area_*``), so the result does not depend on how images are split over
processes.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Accumulates ``counts[gt, pred]`` (int64) over images; ``update(pred, gt)`` with ``[H, W]`` label maps."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        pred = torch.as_tensor(pred).to("cpu", torch.int64)
        gt = torch.as_tensor(gt).to("cpu", torch.int64)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
        keep = gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        k = self.num_classes
        for name, t in (("ground truth", gt), ("prediction", pred)):
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
                bad = int(t.max()) if int(t.max()) >= k else int(t.min())
                raise ValueError(
                    f"{name} holds label {bad}, outside 0..{k - 1} (and not ignore_index {self.ignore_index})"
                )
        self.counts += torch.bincount(gt * k + pred, minlength=k * k).view(k, k)

    def iou(self) -> list[float]:
        """Per-class IoU (NaN where the class never occurs in ground truth or prediction)."""
        tp = self.counts.diag()
        union = self.counts.sum(0) + self.counts.sum(1) - tp
        return [float(t) / float(u) if u > 0 else math.nan for t, u in zip(tp.tolist(), union.tolist(), strict=True)]

    def miou(self) -> float:
        values = [v for v in self.iou() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def class_accuracy(self) -> list[float]:
        """Per-class accuracy ``TP / (TP + FN)`` (NaN where the class has no ground-truth pixel)."""
        tp = self.counts.diag().tolist()
        label = self.counts.sum(1).tolist()
        return [float(t) / float(n) if n > 0 else math.nan for t, n in zip(tp, label, strict=True)]

    def mean_accuracy(self) -> float:
        values = [v for v in self.class_accuracy() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def pixel_accuracy(self) -> float:
        total = int(self.counts.sum())
        return float(self.counts.diag().sum()) / total if total else math.nan
