"""GroupViT training on image-text pairs with torch.distributed (docs/training.md).

    from groupvit_fast.train import load_config, train
    cfg = load_config("tiny", ["train.epochs=2"], output="runs/tiny")
    train(cfg)

The layout: ``config`` (YAML recipes, checks), ``data`` (webdataset shards, manifests, synthetic
shapes), ``augment`` (timm), ``prompts`` (NLTK noun prompts), ``optim`` (AdamW groups, schedule),
``step`` (one optimiser step), ``loop`` (the run), ``checkpointing``, ``distributed``, ``run_log``,
``hooks`` (evaluation), ``cli``. The training step's benchmark is the ``train`` family of
``groupvit_fast.bench`` (``groupvit-fast bench --only train``).
"""

from .._extras import require_extra

require_extra("groupvit_fast.train", "train")  # before the modules below import them: one line naming the extra

from .config import load_config  # noqa: E402
from .loop import Trainer, train  # noqa: E402

__all__ = ["load_config", "train", "Trainer"]
