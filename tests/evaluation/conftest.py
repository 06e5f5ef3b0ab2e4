"""Fixtures of tests/evaluation: a tiny GroupViT and its checkpoint (data writers: tests/helpers/eval_data.py)."""

import pytest
import torch

from eval_data import EVAL_CONFIG


@pytest.fixture(scope="session")
def eval_model():
    from groupvit_fast import build_model

    torch.manual_seed(0)
    return build_model(EVAL_CONFIG).eval()


@pytest.fixture(scope="session")
def eval_checkpoint(tmp_path_factory, eval_model):
    from groupvit_fast.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(eval_model, path, config=EVAL_CONFIG)
    return str(path)
