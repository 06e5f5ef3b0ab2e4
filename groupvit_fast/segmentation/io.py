"""Image and result files: reading RGB images and label masks, writing label / overlay PNGs and JSON.

Every writer goes through ``atomic_write`` (``groupvit_fast.common.files``, re-exported here): a file
that exists is either the old one or the complete new one, never a half-written one. The writers take
torch tensors or numpy arrays and import no torch themselves: the onnxruntime runner writes its results
through them where torch is not installed (docs/export.md, "The runner").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..common.files import atomic_write
from .classes import BACKGROUND, pascal_palette

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_image",
    "load_image_array",
    "load_label_mask",
    "load_label_mask_array",
    "save_label_png",
    "save_overlay_png",
    "class_fractions",
    "save_json",
    "label_palette",
    "list_images",
    "atomic_write",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")


def list_images(folder: str) -> list[str]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )


def load_image_array(path: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB (EXIF orientation applied). ``ValueError`` naming the file if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            arr = np.array(img.convert("RGB"))  # a writable copy
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from None
    return np.ascontiguousarray(arr)


def load_image(path: str) -> torch.Tensor:
    """``uint8 [3, H, W]`` RGB (EXIF orientation applied). ``ValueError`` naming the file if unreadable."""
    import torch

    return torch.from_numpy(load_image_array(path)).permute(2, 0, 1).contiguous()


def _as_array(x) -> np.ndarray:
    """A torch tensor (any device) or an array-like as a numpy array."""
    if not isinstance(x, np.ndarray) and hasattr(x, "detach"):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def load_label_mask(path: str) -> torch.Tensor:
    """``int64 [H, W]`` label indices of a single-channel (``L``, ``P``, ``I``) PNG mask."""
    import torch

    return torch.from_numpy(load_label_mask_array(path))


def load_label_mask_array(path: str) -> np.ndarray:
    """``int64 [H, W]`` numpy label indices of a single-channel (``L``, ``P``, ``I``) PNG mask."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{path}: a label mask must be single-channel (mode L/P/I), got mode {img.mode}")
            arr = np.array(img)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot read label mask ({err})") from None
    return arr.astype(np.int64)


def label_palette(class_names: Sequence[str]) -> list[tuple[int, int, int]]:
    """One colour per label: PASCAL colours, black for a background class (label 0 when present)."""
    colors = pascal_palette(256)
    offset = 0 if class_names and class_names[0] == BACKGROUND else 1
    n = len(class_names)
    return [colors[(i + offset) % 256] for i in range(n)]


def save_label_png(path: str, labels: torch.Tensor | np.ndarray, class_names: Sequence[str]) -> None:
    """Label map ``[H, W]`` as an 8-bit palette PNG (16-bit grey PNG past 256 classes)."""
    from PIL import Image

    arr = _as_array(labels).astype(np.int64)
    if len(class_names) <= 256:
        img = Image.fromarray(arr.astype(np.uint8))  # mode L; putpalette turns it into P
        flat = [c for rgb in label_palette(class_names) for c in rgb]
        img.putpalette(flat + [0] * (768 - len(flat)))
    else:
        img = Image.fromarray(arr.astype(np.uint16))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def save_overlay_png(
    path: str,
    image: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
    opacity: float = 0.5,
) -> None:
    """``image`` (``uint8 [3, H, W]``) blended with the label colours; background pixels left as they are."""
    from PIL import Image

    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"opacity must be in (0, 1], got {opacity}")
    img = _as_array(image).transpose(1, 2, 0).astype(np.float32)
    lab = _as_array(labels).astype(np.int64)
    colors = np.asarray(label_palette(class_names), dtype=np.float32)
    color = colors[lab % len(colors)]
    blend = img * (1 - opacity) + color * opacity
    if class_names and class_names[0] == BACKGROUND:
        blend = np.where((lab == 0)[..., None], img, blend)
    out = Image.fromarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8))
    atomic_write(path, lambda tmp: out.save(tmp, format="PNG"))


def class_fractions(labels: torch.Tensor | np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Fraction of pixels per class name (every class listed, in label order)."""
    flat = _as_array(labels).astype(np.int64).ravel()
    counts = np.bincount(flat, minlength=len(class_names))
    total = max(int(flat.size), 1)
    # strict=False: bincount is longer than class_names if labels hold ids past them; those are not listed
    return {name: int(c) / total for name, c in zip(class_names, counts.tolist(), strict=False)}


def save_json(path: str, data: Any) -> None:
    """``data`` as indented JSON at ``path``, written atomically (``atomic_write``)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")

    atomic_write(path, write)
