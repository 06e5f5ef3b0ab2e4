"""The Hugging Face config of an NVlabs model config (groupvit_fast/convert/hf_config.py), built in one place
for the conversion, the benchmark cases and the tests.

Oracles: transformers' own defaults (GroupViT-S) and ``load_state_dict(strict=True)`` of converted weights
into the HF model the config describes (a wrong width, depth, head count, group count, patch or image
size, or projection size is a missing, unexpected or mis-shaped key).
"""

from __future__ import annotations

import pytest
import torch

from groupvit_fast import build_model
from groupvit_fast.convert import nvlabs_full_to_hf, nvlabs_to_hf
from groupvit_fast.convert.hf_config import hf_groupvit_config, hf_vision_config
from tolerances import assert_close_to_scale

transformers = pytest.importorskip("transformers")

FIELDS = (
    "hidden_size",
    "intermediate_size",
    "depths",
    "num_hidden_layers",
    "num_attention_heads",
    "num_group_tokens",
    "num_output_groups",
    "image_size",
    "patch_size",
    "num_channels",
)


def test_groupvit_s_is_transformers_default_vision_config():
    ours, theirs = hf_vision_config({}).to_dict(), transformers.GroupViTVisionConfig().to_dict()
    assert {k: ours[k] for k in FIELDS} == {k: theirs[k] for k in FIELDS}


# odd sizes on purpose: 96 channels of 3 heads, stages of 2, 1 and 1 blocks, 6 -> 3 groups, 8 px patches
VARIANT = {
    "type": "MultiLabelContrastive",
    "img_encoder": {
        "type": "GroupViT",
        "img_size": 48,
        "patch_size": 8,
        "embed_dim": 96,
        "num_heads": [3, 3, 3],
        "depths": [2, 1, 1],
        "num_group_tokens": [6, 3, 0],
        "num_output_groups": [6, 3],
        "drop_path_rate": 0.0,
    },
    "text_encoder": {"type": "TextTransformer", "context_length": 12, "width": 128, "layers": 1, "vocab_size": 77},
    "output_dim": 24,
    "proj_num_layers": 2,
    "proj_inner_dim": 40,
    "multi_label": 0,
}


def test_converted_weights_fill_the_model_the_config_describes():
    torch.manual_seed(0)
    ours = build_model(VARIANT).eval()
    hf = transformers.GroupViTModel(hf_groupvit_config(VARIANT)).eval()
    hf.load_state_dict(nvlabs_full_to_hf(ours.state_dict()), strict=True)
    assert hf.config.text_config.num_attention_heads == 2  # NVlabs: width // 64
    vision = transformers.GroupViTVisionModel(hf_vision_config(VARIANT["img_encoder"])).eval()
    vision.load_state_dict(nvlabs_to_hf(ours.img_encoder.state_dict()), strict=True)
    with torch.no_grad():
        x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
        assert_close_to_scale(ours.encode_image(x), hf.get_image_features(pixel_values=x).pooler_output)


def test_stages_with_different_head_counts_are_refused_by_name():
    with pytest.raises(ValueError, match="num_heads"):
        hf_vision_config({"num_heads": [6, 6, 12]})
