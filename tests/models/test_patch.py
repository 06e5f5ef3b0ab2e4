"""apply_groupvit_fast: patching built Hugging Face, NVlabs-style and groupvit_fast GroupViT instances.

Oracles: the unpatched Hugging Face model; for NVlabs-style modules, small modules written here
from the NVlabs formulas (class names and attributes as in NVlabs' ``models/group_vit.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groupvit_fast import GroupViT, apply_groupvit_fast
from groupvit_fast.ops import backend_usage
from groupvit_fast.patch import revert_groupvit_fast
from groupvit_small import hf_small_config, random_text
from tolerances import assert_close_to_scale


def _calls() -> int:
    return sum(backend_usage().values())


def _hf_model():
    from transformers import GroupViTModel

    torch.manual_seed(0)
    return GroupViTModel(hf_small_config()).eval()


def _hf_outputs(model, images, text):
    out = model(input_ids=text, pixel_values=images, output_segmentation=True, output_attentions=True, return_dict=True)
    return {
        "logits": out.logits_per_image,
        "seg": out.segmentation_logits,
        "img": out.image_embeds,
        "txt": out.text_embeds,
        "groupings": out.vision_model_output.attentions,
    }


def test_hf_groupvit_outputs_unchanged_and_fast_path_runs():
    model = _hf_model()
    images, text = torch.randn(2, 3, 64, 64), random_text(3)
    with torch.no_grad():
        ref = _hf_outputs(model, images, text)
    patched = apply_groupvit_fast(model)
    assert patched == {
        "transformers.GroupViTAttention": 7,
        "transformers.GroupViTStage": 2,
        "transformers.GroupViTAssignAttention": 2,
    }
    before = _calls()
    with torch.no_grad():
        out = _hf_outputs(model, images, text)
    assert _calls() - before == 2  # both grouping blocks went through groupvit_fast.ops.assign_attention
    for key in ("logits", "seg"):
        torch.testing.assert_close(out[key], ref[key], atol=1e-4, rtol=1e-5)
    for key in ("img", "txt"):
        assert_close_to_scale(out[key], ref[key])
    assert [g.shape for g in out["groupings"]] == [(2, 8, 16), (2, 4, 8)]
    for a, b in zip(out["groupings"], ref["groupings"], strict=True):
        assert_close_to_scale(a, b)
    # features only (no grouping maps asked for) also take the fast path
    before = _calls()
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=images).pooler_output
    assert _calls() - before == 2
    assert_close_to_scale(F.normalize(feats, dim=-1), ref["img"])


def test_hf_gradients_unchanged_in_eval_and_training_runs():
    ref_model, model = _hf_model(), _hf_model()
    apply_groupvit_fast(model)
    images, text = torch.randn(3, 3, 64, 64), random_text(3)
    for m in (ref_model, model):
        m(input_ids=text, pixel_values=images, return_loss=True).loss.backward()
    num = den = 0.0
    for p, q in zip(ref_model.parameters(), model.parameters(), strict=True):
        if p.grad is None:
            continue
        num += (p.grad - q.grad).square().sum().item()
        den += p.grad.square().sum().item()
    assert math.sqrt(num / den) < 1e-4
    # training mode: Gumbel assignment from groupvit_fast's generator; finite loss and gradients
    model.train()
    model.zero_grad()
    before = _calls()
    loss = model(input_ids=text, pixel_values=images, return_loss=True).loss
    loss.backward()
    assert _calls() - before == 2 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_revert_restores_hf_forward():
    model = _hf_model()
    images = torch.randn(1, 3, 64, 64)
    apply_groupvit_fast(model)
    assert revert_groupvit_fast(model) == 11
    before = _calls()
    with torch.no_grad():
        model.get_image_features(pixel_values=images)
    assert _calls() == before
    assert "forward" not in vars(model.vision_model.encoder.stages[0].downsample.assign)


# ---- NVlabs-style modules (written from the NVlabs formulas) -----------------------------------


def _hard_softmax(logits, dim):
    soft = logits.softmax(dim)
    hard = torch.zeros_like(logits).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class AssignAttention(nn.Module):
    """NVlabs' assignment attention (eval: hard argmax over groups, straight-through)."""

    def __init__(self, dim, num_heads=1):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_drop, self.proj, self.proj_drop = nn.Dropout(0.0), nn.Linear(dim, dim), nn.Dropout(0.0)
        self.hard, self.gumbel, self.gumbel_tau, self.sum_assign, self.assign_eps = True, True, 1.0, False, 1.0

    def forward(self, query, key=None, *, value=None, return_attn=False):
        b, g, c = query.shape
        key = query if key is None else key
        value = key if value is None else value
        h = self.num_heads
        q = self.q_proj(query).view(b, g, h, c // h).transpose(1, 2)
        k = self.k_proj(key).view(b, -1, h, c // h).transpose(1, 2)
        v = self.v_proj(value).view(b, -1, h, c // h).transpose(1, 2)
        raw = q @ k.transpose(-2, -1) * self.scale
        attn = _hard_softmax(raw, dim=-2)
        attn_dict = {"hard": attn.clone(), "soft": raw.softmax(dim=-2)} if return_attn else None
        attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
        out = (attn @ v).transpose(1, 2).reshape(b, g, c)
        return self.proj(out), attn_dict


class Attention(nn.Module):
    """NVlabs' multi-head attention with a fused qkv projection."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale, self.qkv_fuse = num_heads, (dim // num_heads) ** -0.5, True
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop, self.proj, self.proj_drop = nn.Dropout(0.0), nn.Linear(dim, dim), nn.Dropout(0.0)

    def forward(self, query, key=None, *, value=None, mask=None):
        b, n, c = query.shape
        q, k, v = self.qkv(query).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TinyNVlabsGrouping(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention(32, 4)
        self.assign = AssignAttention(32)

    def forward(self, x, groups):
        x = x + self.attn(x)
        return self.assign(groups, x, return_attn=True)


def test_nvlabs_style_instance_patched():
    torch.manual_seed(0)
    model = TinyNVlabsGrouping().eval()
    x = torch.randn(2, 20, 32, requires_grad=True)
    groups = torch.randn(2, 5, 32)
    ref_out, ref_attn = model(x, groups)
    (ref_grad,) = torch.autograd.grad(ref_out.square().sum(), x)
    assert apply_groupvit_fast(model) == {"nvlabs.Attention": 1, "nvlabs.AssignAttention": 1}
    before = _calls()
    out, attn = model(x, groups)
    assert _calls() - before == 1
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert_close_to_scale(attn["soft"], ref_attn["soft"])
    assert torch.equal(attn["hard"], ref_attn["hard"].detach())
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)
    # re-applying only switches backends
    apply_groupvit_fast(model, assign_backend="reference")
    before = backend_usage().get("reference", 0)
    model(x, groups)
    assert backend_usage().get("reference", 0) == before + 1
    assert revert_groupvit_fast(model) == 2


def test_groupvit_fast_model_backends_are_set():
    model = GroupViT(
        img_size=64,
        embed_dim=64,
        num_heads=[2, 2, 2],
        depths=[1, 1, 1],
        num_group_tokens=[8, 4, 0],
        num_output_groups=[8, 4],
    ).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(images)
    patched = apply_groupvit_fast(model, attn_backend="explicit", assign_backend="reference")
    assert patched["groupvit_fast.AssignAttention"] == 2
    assert all(b.attn.attn_backend == "explicit" for b in model.layers[0].blocks)
    before = backend_usage().get("reference", 0)
    with torch.no_grad():
        torch.testing.assert_close(model(images), ref, atol=1e-5, rtol=1e-5)
    assert backend_usage().get("reference", 0) == before + 2


def test_nothing_to_patch_and_bad_backend():
    with pytest.raises(ValueError, match="no GroupViT"):
        apply_groupvit_fast(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="attn_backend"):
        apply_groupvit_fast(TinyNVlabsGrouping(), attn_backend="flash9000")
