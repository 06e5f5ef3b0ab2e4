"""The whole-image protocol's arithmetic, without torch (docs/segmentation.md; docs/export.md, "The runner"):
the test scale, the sliding windows, how windows are batched, and the pixel normalisation constants.

Both pipelines use this one module: ``GroupViTSegmenter`` (PyTorch) and the onnxruntime runner
(``groupvit_fast.export.runner``, which runs where torch is not installed). It imports the standard library
only.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
    "rescale_size",
    "sliding_windows",
    "windows_by_shape",
]

#: mmseg's ``img_norm_cfg`` for GroupViT (RGB, 0..255 scale)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

Window = tuple[int, int, int, int]


def rescale_size(h: int, w: int, short_side: int = 448, max_long_side: int = 2048) -> tuple[int, int]:
    """mmcv's ``rescale_size`` for ``img_scale=(max_long_side, short_side)`` with ``keep_ratio``."""
    scale = min(max_long_side / max(h, w), short_side / min(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def sliding_windows(h: int, w: int, crop: int = 448, stride: int = 224) -> list[Window]:
    """``(y1, y2, x1, x2)`` of mmseg's ``slide_inference`` windows over an ``h x w`` image."""
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def windows_by_shape(
    sizes: Sequence[tuple[int, int]], crop: int, stride: int, batch: int
) -> list[list[tuple[int, Window]]]:
    """Every window of every image (``sizes``: each image's ``(h, w)`` at the test scale), as batches of at
    most ``batch`` ``(image index, window)`` pairs of one crop shape, so that each batch is one tensor."""
    jobs: dict[tuple[int, int], list[tuple[int, Window]]] = {}
    for idx, (h, w) in enumerate(sizes):
        for win in sliding_windows(h, w, crop, stride):
            jobs.setdefault((win[1] - win[0], win[3] - win[2]), []).append((idx, win))
    return [shape_jobs[i : i + batch] for shape_jobs in jobs.values() for i in range(0, len(shape_jobs), batch)]
