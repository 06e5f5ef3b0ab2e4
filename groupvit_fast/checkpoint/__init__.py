"""Loading and saving GroupViT weights safely (docs/groupvit.md, "Checkpoints").

Formats read (told apart by their content, not their file name):

* NVlabs training checkpoints (``.pth``: a dict with ``model``, ``optimizer``, ``lr_scheduler``,
  ``epoch``, ``config`` as an OmegaConf object, ...), read with ``torch.load(weights_only=True)``
  plus exactly the allow-list such a file needs (``OMEGACONF_SAFE_GLOBALS``: OmegaConf's
  ``DictConfig``, ``ListConfig``, ``AnyNode``, ``Metadata``, ``ContainerMetadata``, ``typing.Any``,
  ``collections.defaultdict`` and the builtins ``dict``, ``list``, ``int``, ``float``) when
  omegaconf is installed. Nothing else is unpickled unless the caller opts in with
  ``trust_pickle=True`` (full pickle: only for files you trust);
* plain state dicts (``torch.save(model.state_dict())``, optionally under ``state_dict``/``model``,
  optionally with DDP's ``module.`` prefix), NVlabs or Hugging Face keys;
* safetensors files (ours carry the model config in their metadata; HF ``model.safetensors``).

Hugging Face ``GroupViTModel`` / ``GroupViTVisionModel`` weights are converted to NVlabs keys
(``groupvit_fast.convert``). Loading into a model checks every key and shape first and then loads
everything at once: a wrong or incomplete file raises ``ValueError`` and leaves the model as it was.

One module per job: ``formats`` (sniffing the format, reading PyTorch and safetensors files safely),
``read`` (``read_checkpoint``, the ``Checkpoint`` record), ``infer`` (``infer_config``,
``complete_from_hf``), ``load`` (``load_checkpoint``) and ``save`` (``save_checkpoint``,
``save_safetensors``); everything public is importable from ``groupvit_fast.checkpoint`` as before.
"""

from __future__ import annotations

from .formats import omegaconf_safe_globals
from .infer import complete_from_hf, infer_config
from .load import load_checkpoint
from .read import Checkpoint, config_test_time, read_checkpoint
from .save import save_checkpoint, save_safetensors

__all__ = [
    "Checkpoint",
    "read_checkpoint",
    "config_test_time",
    "load_checkpoint",
    "save_safetensors",
    "save_checkpoint",
    "infer_config",
    "omegaconf_safe_globals",
    "complete_from_hf",
]
