"""Without a usable compiled extension, assign_attention on CPU falls back to the reference backend,
says so once in the log, and ``unavailable_reason()`` names the reason (never an import crash)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from groupvit_fast import _extension
from groupvit_fast.ops import assign_attention, backend_usage, dispatch

_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
import torch
import groupvit_fast
from groupvit_fast import _extension
from groupvit_fast.ops import assign_attention, backend_usage, backend_table
q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
out = assign_attention(q, k, v)
json.dump({"usage": backend_usage(), "reason": _extension.unavailable_reason(),
           "table": {name: status for name, _, status in backend_table()},
           "finite": bool(torch.isfinite(out).all())}, sys.stdout)
"""


def test_disabled_extension_falls_back_to_reference_in_a_fresh_process():
    env = dict(os.environ, GROUPVIT_FAST_DISABLE_EXTENSION="1")
    env.pop("GROUPVIT_FAST_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(__file__),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["usage"] == {"reference": 1}
    assert result["finite"]
    assert result["reason"] == "disabled by GROUPVIT_FAST_DISABLE_EXTENSION"
    assert result["table"]["cpu"] == "not available: disabled by GROUPVIT_FAST_DISABLE_EXTENSION"
    # one clear line says which backend ran instead, and why
    assert "falls back to backend 'reference'" in proc.stderr
    assert "cpu: disabled by GROUPVIT_FAST_DISABLE_EXTENSION" in proc.stderr


@pytest.fixture
def fake_build_info(monkeypatch):
    """Replace what setup.py recorded, re-running the (cached) load decision; restored afterwards."""

    def install(info: dict):
        monkeypatch.setattr(_extension, "build_info", lambda: info)
        monkeypatch.setattr(dispatch, "_logged_fallbacks", set())
        monkeypatch.setattr(_extension.load_extension, "_logged", False, raising=False)
        monkeypatch.delenv(_extension.DISABLE_ENV_VAR, raising=False)
        monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
        _extension._load.cache_clear()

    yield install
    _extension._load.cache_clear()


def test_torch_version_mismatch_is_reported_and_falls_back(fake_build_info, caplog):
    fake_build_info({"torch_version": "1.0.0+cpu", "with_cuda": False})
    reason = _extension.unavailable_reason()
    assert reason is not None
    assert "built against torch 1.0.0+cpu" in reason and f"torch {torch.__version__} is running" in reason
    assert "pip install --no-build-isolation -e ." in reason

    before = backend_usage().get("reference", 0)
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    with caplog.at_level(logging.INFO, logger="groupvit_fast"):
        out = assign_attention(q, k, v)
    assert backend_usage().get("reference", 0) == before + 1
    assert torch.isfinite(out).all()
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "falls back to backend 'reference'" in messages and "built against torch 1.0.0+cpu" in messages
    with pytest.raises(ValueError, match="'cpu' cannot run this call: .*built against torch 1.0.0"):
        assign_attention(q, k, v, backend="cpu")


def test_missing_build_record_means_not_built(fake_build_info):
    fake_build_info({})
    reason = _extension.unavailable_reason()
    assert reason is not None and "is not built" in reason
    assert dispatch.BACKENDS["cpu"].unavailable_reason() == reason


def test_cuda_backend_needs_a_cuda_build(fake_build_info):
    fake_build_info({"torch_version": torch.__version__, "with_cuda": False})
    if _extension.load_extension() is None:
        pytest.skip(f"the extension does not load here: {_extension.unavailable_reason()}")
    assert _extension.unavailable_reason() is None
    assert "built without CUDA kernels" in _extension.unavailable_reason(need_cuda=True)
    assert "built without CUDA kernels" in dispatch.BACKENDS["cuda"].unavailable_reason()
