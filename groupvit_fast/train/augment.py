"""Training image augmentation from the config's ``data.img_aug`` section, built by timm.

``deit_aug: true`` is DeiT's recipe (NVlabs' default): random resized crop (``img_scale``),
horizontal flip, colour jitter, RandAugment (``auto_augment``), random erasing (``re_*``) and
ImageNet mean/std normalisation, all from ``timm.data.create_transform``. ``deit_aug: false`` keeps
only the crop, the flip and the normalisation (timm's same transform with the rest switched off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["build_train_transform"]


def build_train_transform(img_aug: Mapping[str, Any]) -> Callable:
    """A ``PIL.Image -> FloatTensor [3, img_size, img_size]`` training transform."""
    try:
        from timm.data import create_transform
    except ImportError:
        raise RuntimeError("training augmentation needs timm (pip install timm)") from None
    deit = bool(img_aug["deit_aug"])
    return create_transform(
        input_size=int(img_aug["img_size"]),
        is_training=True,
        scale=tuple(img_aug["img_scale"]),
        interpolation=img_aug["interpolation"],
        color_jitter=float(img_aug["color_jitter"]) if deit else None,
        auto_augment=img_aug["auto_augment"] if deit else None,
        re_prob=float(img_aug["re_prob"]) if deit else 0.0,
        re_mode=img_aug["re_mode"],
        re_count=int(img_aug["re_count"]),
    )
