"""A model config from the weights alone, and what HF weights lack (docs/groupvit.md, "Checkpoints").

``infer_config`` reads every size from the tensor shapes of an NVlabs-keyed state dict;
``complete_from_hf`` adds the one entry Hugging Face weights do not carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..convert import is_nvlabs_full

__all__ = ["complete_from_hf", "infer_config"]


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """A model config (``type`` dicts) that fits an NVlabs-keyed state dict, from its tensor shapes.

    Shapes fix every size except the number of attention heads of the vision encoder, taken as
    ``embed_dim // 64`` (64-channel heads, as GroupViT-S: 384 / 6); the text encoder uses
    ``width // 64`` heads by construction. ``hard_assignment`` is not stored and stays True.
    """
    full = is_nvlabs_full(state_dict)
    prefix = "img_encoder." if full else ""
    vision = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    try:
        patch_w = vision["patch_embed.proj.weight"]  # [C, in_chans, p, p]
        embed_dim, in_chans, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[2]
        num_patches = vision["pos_embed"].shape[1]
        side = int(round(num_patches**0.5))
        stages = sorted({int(k.split(".")[1]) for k in vision if k.startswith("layers.")})
        depths = [len({k.split(".")[3] for k in vision if k.startswith(f"layers.{s}.blocks.")}) for s in stages]
        group_tokens = [
            vision[f"layers.{s}.group_token"].shape[1] if f"layers.{s}.group_token" in vision else 0 for s in stages
        ]
        output_groups = [vision[f"layers.{s}.downsample.mlp_inter.fc2.weight"].shape[0] for s in stages[:-1]]
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"state_dict: cannot infer the GroupViT config ({err!r} missing or malformed)") from None
    img = {
        "type": "GroupViT",
        "img_size": side * patch,
        "patch_size": patch,
        "in_chans": in_chans,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": [max(1, embed_dim // 64)] * len(stages),
        "num_group_tokens": group_tokens,
        "num_output_groups": output_groups,
    }
    if "head.weight" in vision:
        img["num_classes"] = vision["head.weight"].shape[0]
    if not full:
        return img
    try:
        tok = state_dict["text_encoder.token_embedding.weight"]
        ctx = state_dict["text_encoder.positional_embedding"].shape[0]
        layers = len({k.split(".")[3] for k in state_dict if k.startswith("text_encoder.transformer.resblocks.")})
        hidden = sorted(
            int(k.split(".")[2])
            for k in state_dict
            if k.startswith("img_projector.linear_hidden.") and k.endswith(".weight") and state_dict[k].dim() == 3
        )
        out_w = state_dict.get("img_projector.linear_out.weight")
    except KeyError as err:
        raise ValueError(f"state_dict: cannot infer the text encoder config ({err!r} missing)") from None
    cfg = {
        "type": "MultiLabelContrastive",
        "img_encoder": img,
        "text_encoder": {
            "type": "TextTransformer",
            "context_length": ctx,
            "width": tok.shape[1],
            "layers": layers,
            "vocab_size": tok.shape[0],
        },
        # the count of noun prompts is not stored; any M > 0 has the same weights: take the released 3
        "multi_label": 3 if "multi_label_logit_scale" in state_dict else 0,
    }
    if out_w is not None:
        cfg["output_dim"] = out_w.shape[0]
        cfg["proj_num_layers"] = len(hidden) + 1
        if hidden:
            cfg["proj_inner_dim"] = state_dict[f"img_projector.linear_hidden.{hidden[0]}.weight"].shape[0]
    else:
        cfg["proj_num_layers"] = 0
    return cfg


def complete_from_hf(state_dict: dict[str, torch.Tensor], config: Mapping | None) -> list[str]:
    """Add what an NVlabs model of ``config`` has and HF weights lack (in place); returns the added keys.

    That is only ``multi_label_logit_scale`` (a model with ``multi_label > 0`` and its own
    multi-label temperature), set to NVlabs' initial value ``log(1 / contrast_temperature)``.
    """
    if not config or config.get("type") != "MultiLabelContrastive":
        return []
    if config.get("multi_label", 0) <= 0 or config.get("share_temperature", False):
        return []
    if "multi_label_logit_scale" in state_dict:
        return []
    temperature = float(config.get("contrast_temperature", 0.07))
    state_dict["multi_label_logit_scale"] = torch.tensor(math.log(1 / temperature))
    return ["multi_label_logit_scale"]
