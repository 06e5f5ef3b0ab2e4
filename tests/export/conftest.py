"""Fixtures of tests/export: small models exported once per session (exporting is the slow part)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="the export tests need the 'export' extra (onnx, onnxscript, onnxruntime)")

from export_cases import CLASSES, TEST_TIME, small_export_config, small_model  # noqa: E402


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
    from groupvit_fast.cli import main

    out = tmp_path_factory.mktemp("onnx-small") / "onnx"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TEST_TIME.items() if v is not None]
    argv = ["export", "onnx", "--checkpoint", small_checkpoint, "--out", str(out), "--classes", ",".join(CLASSES)]
    assert main([*argv, *flags]) == 0
    return small_model(), str(out)


@pytest.fixture(scope="session")
def small_hard(tmp_path_factory):
    """The same model exported with ``assignment='hard'``."""
    from groupvit_fast.export import export_onnx

    model = small_model()
    out = tmp_path_factory.mktemp("onnx-small-hard")
    export_onnx(model, str(out), classes=CLASSES, test_time=TEST_TIME, assignment="hard")
    return model, str(out)
