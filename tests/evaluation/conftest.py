"""Fixtures of tests/evaluation: a tiny GroupViT and its checkpoint; this folder's helpers importable."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from eval_data import EVAL_CONFIG  # noqa: E402


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
