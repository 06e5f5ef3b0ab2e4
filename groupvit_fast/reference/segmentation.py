"""Step-by-step zero-shot segmentation, written from docs/segmentation.md (the oracle and the
benchmark baseline of ``groupvit_fast.segmentation``).

One crop at a time, and per crop the image encoder runs twice, as NVlabs' ``GroupViTSegInference``
does: once for the grouping maps (``return_attn``), once for the segment features
(``encode_image(return_feat=True)``). Nothing here imports ``groupvit_fast.segmentation``: the
resize, the windows and the per-crop math are written again from the spec (and mmseg/mmcv's
``slide_inference`` / ``rescale_size``), so that the fast pipeline is checked against an
independent path. The model (a ``MultiLabelContrastive``-like image-text model) and the
normalised class text embeddings are inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["reference_crop_scores", "reference_preprocess", "reference_windows", "reference_segment_scores"]

# mmseg's img_norm_cfg for GroupViT (RGB, 0..255)
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)


def reference_crop_scores(
    softs: Sequence[torch.Tensor],
    feat: torch.Tensor,
    x: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    crop_hw: tuple[int, int],
    grid_hw: tuple[int, int],
    with_bg: bool,
    bg_thresh: float,
) -> torch.Tensor:
    """Per-crop steps 2-6 of the spec, literally, for ONE crop: ``softs`` the grouping blocks'
    soft maps ``[G_i, N_i]`` in stage order (or their hard maps, for the hard-assignment ablation),
    ``feat [G, C]`` and ``x [C]`` projected segment and image features, ``text [K, C]`` normalised.
    Returns ``[(1 +) K, h, w]`` class scores."""
    maps = softs[0].T  # step 2: [N, G_0] ...
    for soft in softs[1:]:
        maps = maps @ soft.T  # ... times [G_{i-1}, G_i]: patch -> final segment
    g = maps.shape[1]
    grid = maps.T.reshape(1, g, *grid_hw)  # step 3
    resized = F.interpolate(grid, size=crop_hw, mode="bilinear", align_corners=False)[0]  # [G, h, w]
    onehot = F.one_hot(resized.argmax(dim=0), num_classes=g).float()  # [h, w, G]
    segfeat = F.normalize(feat, dim=-1)  # step 4
    imgfeat = F.normalize(x, dim=-1)
    scale = min(math.exp(float(logit_scale)), 100.0)  # step 5
    a = scale * segfeat @ text.T  # [G, K]
    p = a.softmax(dim=-1)
    image_scores = (scale * imgfeat @ text.T).softmax(dim=-1)
    top5 = image_scores.topk(min(5, text.shape[0])).indices.tolist()
    masked = torch.full_like(a, float("-inf"))
    masked[:, top5] = a[:, top5]
    matrix = masked.softmax(dim=-1) * p  # [G, K]
    fg = onehot @ matrix  # step 6: [h, w, K]
    if not with_bg:
        return fg.permute(2, 0, 1)
    thresh = min(bg_thresh, matrix.max().item())
    bg = (fg.max(dim=-1).values < thresh).float()
    return torch.cat([bg[None], fg.permute(2, 0, 1)])


def reference_preprocess(image: torch.Tensor, short_side: int = 448, max_long_side: int = 2048) -> torch.Tensor:
    """``[3, H, W]`` RGB in 0..255 -> normalised ``[3, h, w]``: mmcv's keep-ratio rescale to
    ``img_scale=(max_long_side, short_side)`` (sizes rounded half up), bilinear resize of the
    uint8 image (rounded back to 8 bits), then ``(x - mean) / std``."""
    t = image.float()
    h, w = t.shape[-2:]
    scale = min(max_long_side / max(h, w), short_side / min(h, w))
    size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    if size != (h, w):
        t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0].round().clamp(0, 255)
    mean = torch.tensor(_MEAN, device=t.device)[:, None, None]
    std = torch.tensor(_STD, device=t.device)[:, None, None]
    return (t - mean) / std


def reference_windows(h: int, w: int, crop: int = 448, stride: int = 224) -> Iterator[tuple[int, int, int, int]]:
    """mmseg's ``slide_inference`` windows ``(y1, y2, x1, x2)``: a grid of stride ``stride``, the
    last window of each row and column moved back inside the image."""
    for hi in range(max(h - crop + stride - 1, 0) // stride + 1):
        for wi in range(max(w - crop + stride - 1, 0) // stride + 1):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            yield max(y2 - crop, 0), y2, max(x2 - crop, 0), x2


@torch.no_grad()
def reference_segment_scores(
    model: nn.Module,
    image: torch.Tensor,
    text: torch.Tensor,
    *,
    with_bg: bool,
    bg_thresh: float,
    crop: int = 448,
    stride: int = 224,
    short_side: int = 448,
    max_long_side: int = 2048,
    patch_size: int = 16,
    assignment: str = "soft",
) -> torch.Tensor:
    """The whole-image protocol step by step: ``[(1 +) K, H, W]`` averaged class scores of one
    ``[3, H, W]`` image (0..255) at its original size; its argmax is the label map.

    ``model`` is in eval mode (the caller's job); ``text [K, C]`` are the normalised embeddings of
    the non-background classes; ``assignment`` names the maps taken from each grouping block
    (``'soft'``, NVlabs' protocol, or ``'hard'``)."""
    if assignment not in ("soft", "hard"):
        raise ValueError(f"assignment must be 'soft' or 'hard', got {assignment!r}")
    device = next(model.parameters()).device
    t = reference_preprocess(image.to(device), short_side, max_long_side)
    h, w = t.shape[-2:]
    total = torch.zeros(text.shape[0] + with_bg, h, w, device=device)
    count = torch.zeros(1, h, w, device=device)
    text = text.to(device).float()
    for y1, y2, x1, x2 in reference_windows(h, w, crop, stride):
        c = t[None, :, y1:y2, x1:x2]
        # the encoder twice, as NVlabs: maps from one pass, features from another
        attn = model.img_encoder(c, return_attn=True, as_dict=True)["attn_dicts"]
        feat_x, feat = model.encode_image(c, return_feat=True)
        softs = [a[assignment][0, 0].float() for a in attn if a is not None]
        grid = ((y2 - y1) // patch_size, (x2 - x1) // patch_size)
        total[:, y1:y2, x1:x2] += reference_crop_scores(
            softs,
            feat[0].float(),
            feat_x[0].float(),
            text,
            model.logit_scale,
            (y2 - y1, x2 - x1),
            grid,
            with_bg,
            bg_thresh,
        )
        count[:, y1:y2, x1:x2] += 1
    return F.interpolate((total / count)[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
