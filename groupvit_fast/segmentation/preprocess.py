"""The whole-image protocol's geometry and pixels (docs/segmentation.md): the test scale, the sliding
windows and the normalised input, as mmseg / mmcv compute them for GroupViT. ``inference`` re-exports
every name, so ``groupvit_fast.segmentation.inference.preprocess_image`` keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image as PILImage

__all__ = ["IMAGENET_MEAN_255", "IMAGENET_STD_255", "preprocess_image", "rescale_size", "sliding_windows"]

#: mmseg's ``img_norm_cfg`` for GroupViT (RGB, 0..255 scale)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


def rescale_size(h: int, w: int, short_side: int = 448, max_long_side: int = 2048) -> tuple[int, int]:
    """mmcv's ``rescale_size`` for ``img_scale=(max_long_side, short_side)`` with ``keep_ratio``."""
    scale = min(max_long_side / max(h, w), short_side / min(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def sliding_windows(h: int, w: int, crop: int = 448, stride: int = 224) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of mmseg's ``slide_inference`` windows over an ``h x w`` image."""
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def preprocess_image(
    image: PILImage | np.ndarray | torch.Tensor, short_side: int = 448, max_long_side: int = 2048
) -> torch.Tensor:
    """RGB image (PIL image, ``uint8 [H, W, 3]`` array, or ``uint8``/float ``[3, H, W]`` tensor in 0..255)
    -> normalised float ``[3, h, w]`` at the test scale.

    Bilinear resize (half-pixel centres, no antialias) rounded to 8 bits, as mmcv's cv2 resize of
    the uint8 image, then ``(x - mean) / std``.
    """
    t = _as_chw_tensor(image).float()
    h, w = t.shape[-2:]
    nh, nw = rescale_size(h, w, short_side, max_long_side)
    if (nh, nw) != (h, w):
        t = F.interpolate(t[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        t = t.round().clamp_(0, 255)
    mean = torch.tensor(IMAGENET_MEAN_255, dtype=t.dtype, device=t.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD_255, dtype=t.dtype, device=t.device)[:, None, None]
    return (t - mean) / std


def _as_chw_tensor(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image
        if t.dim() == 3 and t.shape[0] != 3 and t.shape[-1] == 3:
            t = t.permute(2, 0, 1)
    else:
        import numpy as np  # a core dependency

        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"image must be RGB [H, W, 3], got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W] or [H, W, 3] RGB, got shape {tuple(t.shape)}")
    return t
