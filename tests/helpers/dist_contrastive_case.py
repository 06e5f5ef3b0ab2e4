"""The seeded model and data shared by the distributed loss test and its worker processes."""

from __future__ import annotations

import torch

from groupvit_fast import build_model
from groupvit_small import random_text, small_config

BATCH = 6  # global batch; 3 per rank with 2 ranks
MULTI_LABEL = 2


def build_case() -> dict:
    torch.manual_seed(0)
    model = build_model(small_config(multi_label=MULTI_LABEL, sync_bn=False)).eval()
    with torch.no_grad():  # distinct temperatures so that both scales matter
        model.logit_scale.fill_(2.3)
        model.multi_label_logit_scale.fill_(1.7)
        for m in model.modules():  # non-trivial BatchNorm running statistics
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, 64, 64, generator=g)
    texts = torch.stack([random_text(1 + MULTI_LABEL, generator=g) for _ in range(BATCH)])  # [B, 1+M, L]
    return {
        "model": model,
        "images": images,
        "texts": texts,
        "image_x": torch.randn(BATCH, 32, generator=g),
        "text_x": torch.randn(BATCH, 32, generator=g),
        "prompt_x": torch.randn(BATCH, MULTI_LABEL, 32, generator=g),
    }


def feature_losses(model, feats: dict) -> dict:
    return {
        "loss": model.loss(feats["image_x"], feats["text_x"]),
        "multi_label_loss": model.multi_label_loss(feats["image_x"].unsqueeze(1), feats["prompt_x"]),
    }


def model_losses(model, images, texts) -> dict:
    # eval mode: BatchNorm uses its running statistics and the assignment is the deterministic
    # argmax, so one process on the whole batch and two on halves compute the same function
    return model.forward_train(images, texts)
