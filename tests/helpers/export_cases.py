"""What the export tests share (tests/export): the small model, its test time and classes."""

from __future__ import annotations

#: the small model's test time: 64 px windows at stride 32 on images enlarged to a 96 px short side
TEST_TIME = {"short_side": 96, "crop_size": 64, "stride": 32, "bg_thresh": None}
CLASSES = ["background", "cat", "dog", "car"]


def small_export_config() -> dict:
    """The small image-text model with CLIP's vocabulary (the text graph is fed real token ids)."""
    from groupvit_small import small_config

    return small_config(text_encoder={"vocab_size": 49408})


def small_model(seed: int = 0):
    import torch

    from groupvit_fast import build_model

    torch.manual_seed(seed)
    return build_model(small_export_config()).eval()
