"""Small GroupViT configurations shared by the image-text model tests (fast on 2 CPU cores).

``small_config()`` is an NVlabs-style model config (``type`` dicts) and ``hf_small_config()`` the
Hugging Face ``GroupViTConfig`` of the same network: 64 channels, one block per stage, 8 -> 4
groups, a 64-wide text encoder (one 64-channel head, as NVlabs' ``heads = width // 64``).
"""

from __future__ import annotations

import copy

SMALL = {
    "type": "MultiLabelContrastive",
    "img_encoder": {
        "type": "GroupViT",
        "img_size": 64,
        "patch_size": 16,
        "embed_dim": 64,
        "num_heads": [2, 2, 2],
        "depths": [1, 1, 1],
        "num_group_tokens": [8, 4, 0],
        "num_output_groups": [8, 4],
        "drop_path_rate": 0.0,
    },
    "text_encoder": {"type": "TextTransformer", "context_length": 16, "width": 64, "layers": 2, "vocab_size": 100},
    "output_dim": 32,
    "proj_num_layers": 2,
    "proj_inner_dim": 128,
    "multi_label": 0,
}


def small_config(**overrides) -> dict:
    cfg = copy.deepcopy(SMALL)
    for key, value in overrides.items():
        if key in ("img_encoder", "text_encoder"):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def hf_small_config():
    """The Hugging Face ``GroupViTConfig`` of ``small_config()`` (``groupvit_fast.convert.hf_config``)."""
    from groupvit_fast.convert.hf_config import hf_groupvit_config

    return hf_groupvit_config(SMALL)


def random_text(batch: int, length: int = 16, eot: int = 99, generator=None):
    """Token ids ``[batch, length]`` in 3..90 with the end-of-text id (the largest) at varying positions."""
    import torch

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (batch, length), generator=g)
    for i in range(batch):
        pos = int(torch.randint(1, length, (1,), generator=g))
        ids[i, pos] = eot
        ids[i, pos + 1 :] = 0
    return ids


def save_nvlabs_training_checkpoint(path, model, config: dict) -> None:
    """An NVlabs training checkpoint of ``model`` (built from the model ``config``) at ``path``: an OmegaConf
    config (read-only, as NVlabs' ``get_config`` leaves it, with its ``multi_label`` interpolation), optimizer,
    scheduler, metrics and epoch, as NVlabs' ``save_checkpoint`` writes them."""
    import pytest
    import torch

    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {
            "data": {"text_aug": {"multi_label": config["multi_label"]}},
            "model": dict(config, multi_label="${data.text_aug.multi_label}"),
            "train": {"epochs": 30, "base_lr": 1.6e-3},
            "model_name": "small",
        }
    )
    omegaconf.OmegaConf.set_struct(cfg, True)
    omegaconf.OmegaConf.set_readonly(cfg, True)
    opt = torch.optim.AdamW(model.parameters())
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "lr_scheduler": {"last_epoch": 4},
            "metrics": {"max_accuracy": 12.5, "max_miou": 30.0},
            "epoch": 4,
            "config": cfg,
            "max_accuracy": 12.5,
            "max_miou": 30.0,
        },
        path,
    )
