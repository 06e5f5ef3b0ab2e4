"""One rank of tests/train/test_fsdp.py, run by torchrun: ``fsdp_train_worker.py SHARDS OUTPUT STRATEGY MAX_STEPS``.

Trains the training tests' model (tests/train/conftest.py) on the synthetic shards through
``groupvit_fast.train.train`` with ``train.strategy=STRATEGY`` for ``MAX_STEPS`` steps, resuming
from ``OUTPUT``'s latest checkpoint when there is one (``--resume auto``).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import _make_config, word_tokenize  # noqa: E402


def main(shards: str, output: str, strategy: str, max_steps: int) -> None:
    import torch

    from groupvit_fast.train import train
    from groupvit_fast.train.distributed import cleanup
    from groupvit_fast.train.prompts import TextTransform

    torch.set_num_threads(1)
    # 128 samples, 16 per rank on 2 ranks: 4 steps an epoch, 2 epochs
    cfg = _make_config(
        output,
        shards,
        **{"train.strategy": strategy, "train.max_steps": max_steps, "data.dataset.meta.synthetic.length": 128},
    )
    try:
        train(
            cfg,
            resume="auto",
            device="cpu",
            quiet=True,
            text_transform=TextTransform(context_length=8, multi_label=0, tokenizer=word_tokenize),
        )
    finally:  # as `groupvit-fast train` does: a live gloo group at exit can abort a rank
        cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
