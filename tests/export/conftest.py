"""Fixtures of tests/export: small models exported once per session (exporting is the slow part)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="the export tests need the 'export' extra (onnx, onnxscript, onnxruntime)")

from export_cases import (  # noqa: E402
    CLASSES,
    TEST_TIME,
    TRAINED_CLASSES,
    small_export_config,
    small_model,
    train_tiny,
)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """A checkpoint of the small random model (our ``.pth``, with its config)."""
    from groupvit_fast.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    save_checkpoint(small_model(), str(path), config=small_export_config())
    return str(path)


@pytest.fixture(scope="session")
def small(tmp_path_factory, small_checkpoint):
    """``(model, export folder)`` of the small random model, soft maps, with ``CLASSES`` stored: exported by
    the command line from ``small_checkpoint`` (the API path is ``small_hard``'s)."""
    out = tmp_path_factory.mktemp("onnx-small") / "onnx"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TEST_TIME.items() if v is not None]
    _export_cli(small_checkpoint, out, CLASSES, *flags)
    return small_model(), str(out)


def _export_cli(checkpoint: str, out, classes: list[str], *flags: str) -> None:
    from groupvit_fast.cli import main

    argv = ["export", "onnx", "--checkpoint", checkpoint, "--out", str(out), "--classes", ",".join(classes)]
    assert main([*argv, *flags]) == 0


@pytest.fixture(scope="session")
def small_hard(tmp_path_factory):
    """The same model exported with ``assignment='hard'``."""
    from groupvit_fast.export import export_onnx

    model = small_model()
    out = tmp_path_factory.mktemp("onnx-small-hard")
    export_onnx(model, str(out), classes=CLASSES, test_time=TEST_TIME, assignment="hard")
    return model, str(out)


#: the trained model's first and last logged losses must differ by at least this (measured 3.0 -> 1.8 over the
#: first and last four of 16 steps); 0.5 is far above the step-to-step noise of a model that does not learn
MIN_LOSS_DROP = 0.5


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """``{"checkpoint", "losses"}``: the small model trained by the project's training loop (``train_tiny``), its
    training checkpoint (weights and the training config, whose ``evaluate.seg`` holds ``TRAINED_TEST_TIME``).

    Proves the model is trained, so that no test on it can pass on random weights: the contrastive loss of the
    last four steps is at least ``MIN_LOSS_DROP`` below the first four's and below chance (ln 16, batches of 16),
    and nine parameters in ten differ from the initial weights the loop drew from its seed."""
    import math

    import torch

    for module in ("webdataset", "timm", "omegaconf"):
        pytest.importorskip(module, reason="training the tiny model needs the 'train' extra")
    from groupvit_fast.checkpoint import load_checkpoint

    path, losses, initial = train_tiny(str(tmp_path_factory.mktemp("trained")))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print(f"trained tiny model: loss of the first 4 steps {first:.3f}, of the last 4 {last:.3f}")
    assert last < first - MIN_LOSS_DROP and last < math.log(16), losses
    trained = load_checkpoint(path).model
    params = [k for k, _ in trained.named_parameters()]
    still = [k for k in params if torch.equal(initial[k], trained.state_dict()[k])]
    print(f"trained tiny model: {len(params) - len(still)} of {len(params)} parameters moved from the initial ones")
    assert len(still) <= len(params) // 10, f"{len(still)} of {len(params)} parameters kept their initial values"
    return {"checkpoint": path, "losses": losses}


def _trained(tmp_path_factory, trained_checkpoint, assign: str):
    """``(model, export folder)``: the trained checkpoint exported by the command line with its own test time
    (no flags: the checkpoint's ``evaluate.seg``), ``TRAINED_CLASSES`` stored, and the model it holds."""
    from groupvit_fast.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp(f"onnx-trained-{assign}") / "onnx"
    _export_cli(trained_checkpoint["checkpoint"], out, TRAINED_CLASSES, "--assign", assign)
    return load_checkpoint(trained_checkpoint["checkpoint"]).model.eval(), str(out)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, trained_checkpoint):
    return _trained(tmp_path_factory, trained_checkpoint, "soft")


@pytest.fixture(scope="session")
def trained_hard(tmp_path_factory, trained_checkpoint):
    return _trained(tmp_path_factory, trained_checkpoint, "hard")
