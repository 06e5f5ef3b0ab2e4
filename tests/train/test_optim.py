"""AdamW groups (NVlabs' decay rule) and the per-step schedule against timm's CosineLRScheduler."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from groupvit_fast.train.optim import CosineWarmup, param_groups, scaled_lrs


@pytest.mark.parametrize("total, warmup", [(100, 10), (37, 0), (12, 12)])
def test_schedule_matches_timm(total, warmup):
    timm_scheduler = pytest.importorskip("timm.scheduler")
    params = [torch.nn.Parameter(torch.zeros(1))]
    ours = CosineWarmup(torch.optim.AdamW(params), 1e-3, 1e-6, 1e-5, total, warmup)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    # what NVlabs builds (lr_scheduler.py): timm's cosine, t_in_epochs=False, stepped per iteration
    theirs = timm_scheduler.CosineLRScheduler(
        opt, t_initial=total, lr_min=1e-5, warmup_lr_init=1e-6, warmup_t=warmup, cycle_limit=1, t_in_epochs=False
    )
    for step in range(total + 3):
        theirs.step_update(step)
        assert ours.get_last_lr() == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), step
        ours.step()


def test_schedule_hand_values():
    s = CosineWarmup(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), 1.0, 0.0, 0.0, 10, 2)
    assert [s.lr_at(t) for t in (0, 1)] == [0.0, 0.5]
    assert s.lr_at(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s.lr_at(10) == 0.0


def test_linear_scaling_rule():
    cfg = OmegaConf.create({"base_lr": 1.6e-3, "warmup_lr": 4e-6, "min_lr": 4e-5})
    assert scaled_lrs(cfg, 4096) == pytest.approx((1.6e-3, 4e-6, 4e-5))
    assert scaled_lrs(cfg, 256 * 4 * 2) == pytest.approx((0.8e-3, 2e-6, 2e-5))


@pytest.mark.parametrize("skip_embeddings", [False, True])
def test_decay_groups(skip_embeddings):
    from groupvit_fast import build_model
    from groupvit_fast.models.registry import released_config

    cfg = released_config(multi_label=1)
    cfg["img_encoder"].update(depths=[1, 1, 1], embed_dim=64, num_heads=[1, 1, 1])
    cfg["text_encoder"].update(layers=1, width=64)
    model = build_model(cfg)
    decay, no_decay = param_groups(model.named_parameters(), 0.05, skip_embeddings)
    ids = {id(p) for p in decay["params"]}
    named = dict(model.named_parameters())
    # NVlabs: 1-D and *.bias exempt; 0-D logit scales and 3-D pos_embed / group tokens decayed
    for name in ("logit_scale", "multi_label_logit_scale", "img_encoder.pos_embed", "img_encoder.layers.0.group_token"):
        assert (id(named[name]) in ids) is (not skip_embeddings), name
    for name, p in named.items():
        if p.ndim == 1 or name.endswith(".bias"):
            assert id(p) not in ids, name
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
