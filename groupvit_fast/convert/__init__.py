"""Weight formats: NVlabs GroupViT <-> Hugging Face ``transformers`` GroupViT.

``hf_to_nvlabs(state_dict)`` / ``nvlabs_to_hf(state_dict)`` convert the vision encoder
(``GroupViTVisionModel``, keys ``vision_model.*``) to and from ``groupvit_fast.GroupViT`` keys.
"""

from .vision import HF_VISION_PREFIX, hf_vision_to_nvlabs, nvlabs_vision_to_hf

hf_to_nvlabs = hf_vision_to_nvlabs
nvlabs_to_hf = nvlabs_vision_to_hf

__all__ = ["hf_to_nvlabs", "nvlabs_to_hf", "hf_vision_to_nvlabs", "nvlabs_vision_to_hf", "HF_VISION_PREFIX"]
