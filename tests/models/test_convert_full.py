"""Full image-text model conversion: Hugging Face ``GroupViTModel`` <-> NVlabs ``MultiLabelContrastive``.

Oracle: ``transformers.GroupViTModel`` with random weights (small config), whose image and text
embeddings the converted groupvit_fast model must reproduce.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from groupvit_fast import build_model
from groupvit_fast.convert import (
    hf_full_to_nvlabs,
    hf_to_nvlabs,
    hf_vision_to_nvlabs,
    nvlabs_full_to_hf,
    nvlabs_to_hf,
)
from groupvit_small import hf_small_config, random_text, small_config
from tolerances import assert_close_to_scale


def _hf_model():
    from transformers import GroupViTModel

    torch.manual_seed(0)
    hf = GroupViTModel(hf_small_config()).eval()
    with torch.no_grad():  # random BatchNorm statistics and temperature, so that they must carry over
        for m in hf.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
        hf.logit_scale.fill_(3.1)
    return hf


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, 64, 64, generator=g), random_text(4, generator=g)


def test_hf_to_nvlabs_reproduces_image_and_text_embeddings():
    hf = _hf_model()
    ours = build_model(small_config()).eval()
    ours.load_state_dict(hf_to_nvlabs(hf.state_dict()), strict=True)
    images, text = _inputs()
    with torch.no_grad():
        hf_img = F.normalize(hf.get_image_features(pixel_values=images).pooler_output, dim=-1)
        hf_txt = F.normalize(hf.get_text_features(input_ids=text).pooler_output, dim=-1)
        our_img = F.normalize(ours.encode_image(images), dim=-1)
        our_txt = F.normalize(ours.encode_text(text), dim=-1)
        hf_logits = hf(input_ids=text, pixel_values=images).logits_per_image
    assert_close_to_scale(our_img, hf_img)
    assert_close_to_scale(our_txt, hf_txt)
    # HF does not clamp the temperature; 3.1 is below log(100)
    torch.testing.assert_close(ours.logit_scale.exp() * our_img @ our_txt.T, hf_logits, atol=2e-5, rtol=1e-5)


def test_round_trips_are_exact():
    hf = _hf_model()
    hf_sd = hf.state_dict()
    back = nvlabs_to_hf(hf_to_nvlabs(hf_sd))
    assert set(back) == set(hf_sd)
    for key, value in hf_sd.items():
        assert torch.equal(back[key], value), key

    ours = build_model(small_config(multi_label=3))
    nv_sd = ours.state_dict()
    hf_keys = nvlabs_full_to_hf(nv_sd)
    assert "multi_label_logit_scale" not in hf_keys  # no HF counterpart: dropped
    again = hf_full_to_nvlabs(hf_keys)
    assert set(again) == set(nv_sd) - {"multi_label_logit_scale"}
    for key, value in again.items():
        assert torch.equal(value, nv_sd[key]), key
    assert nv_sd["img_projector.linear_hidden.0.weight"].dim() == 3  # Conv1d [out, in, 1]
    assert hf_keys["visual_projection.0.weight"].dim() == 2  # Linear [out, in]


def test_nvlabs_to_hf_loads_strictly_into_transformers_and_matches():
    from transformers import GroupViTModel

    torch.manual_seed(1)
    ours = build_model(small_config()).eval()
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
    hf = GroupViTModel(hf_small_config()).eval()
    hf.load_state_dict(nvlabs_to_hf(ours.state_dict()), strict=True)
    images, text = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            ours.encode_image(images), hf.get_image_features(pixel_values=images).pooler_output, atol=2e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            ours.encode_text(text), hf.get_text_features(input_ids=text).pooler_output, atol=2e-5, rtol=1e-5
        )


def test_dispatch_by_keys_vision_only_still_works():
    from transformers import GroupViTVisionModel

    torch.manual_seed(0)
    vision = GroupViTVisionModel(hf_small_config().vision_config)
    sd = vision.state_dict()
    assert hf_to_nvlabs(sd).keys() == hf_vision_to_nvlabs(sd).keys()
    assert "pos_embed" in hf_to_nvlabs(sd)
    assert set(nvlabs_to_hf(hf_to_nvlabs(sd))) == set(sd)


def test_unmappable_keys_raise():
    hf_sd = _hf_model().state_dict()
    with pytest.raises(ValueError, match="not Hugging Face GroupViTModel"):
        hf_full_to_nvlabs({**hf_sd, "visual_projection.5.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="text"):
        hf_full_to_nvlabs({**hf_sd, "text_model.encoder.extra.weight": torch.zeros(1)})
    qkv_missing = {k: v for k, v in hf_sd.items() if k != "text_model.encoder.layers.0.self_attn.k_proj.weight"}
    with pytest.raises(ValueError, match="q/k/v"):
        hf_full_to_nvlabs(qkv_missing)
    # three-layer projectors have no HF form
    deep = build_model(small_config(proj_num_layers=3)).state_dict()
    with pytest.raises(ValueError, match="2-layer projectors"):
        nvlabs_full_to_hf(deep)
