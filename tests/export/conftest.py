"""Fixtures of tests/export: small models exported once per session (exporting is the slow part)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="the export tests need the 'export' extra (onnx, onnxscript, onnxruntime)")

from export_cases import CLASSES, TEST_TIME, small_model  # noqa: E402


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """``(model, export folder)`` of the small random model, soft maps, with ``CLASSES`` stored."""
    from groupvit_fast.export import export_onnx

    model = small_model()
    out = tmp_path_factory.mktemp("onnx-small")
    export_onnx(model, str(out), classes=CLASSES, test_time=TEST_TIME)
    return model, str(out)


@pytest.fixture(scope="session")
def small_hard(tmp_path_factory):
    """The same model exported with ``assignment='hard'``."""
    from groupvit_fast.export import export_onnx

    model = small_model()
    out = tmp_path_factory.mktemp("onnx-small-hard")
    export_onnx(model, str(out), classes=CLASSES, test_time=TEST_TIME, assignment="hard")
    return model, str(out)
