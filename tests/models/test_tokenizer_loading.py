"""groupvit_fast.tokenizer loads open_clip's tokenizer module by file path (its docstring says why): the
fast path must hold for the installed open_clip_torch, so a release that moves or changes that file fails
here instead of silently costing the package import on every call."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None, reason="not available: open_clip_torch is not installed"
)


def test_the_tokenizer_module_loads_by_path_without_the_package():
    # a fresh process: whether open_clip's __init__ ran is a property of the whole process
    code = (
        "import json, sys; from groupvit_fast.tokenizer import _load_open_clip_tokenizer_module as load; "
        "m = load(); print(json.dumps([m.__name__, 'open_clip' in sys.modules, hasattr(m, 'SimpleTokenizer')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    name, package_imported, has_tokenizer = json.loads(out.stdout.strip().splitlines()[-1])
    assert name == "groupvit_fast._open_clip_tokenizer", f"the fallback import ran ({name})"
    assert not package_imported, "open_clip/__init__.py ran"
    assert has_tokenizer


def test_the_path_loaded_tokenizer_is_open_clips_own():
    import open_clip.tokenizer as public

    from groupvit_fast.tokenizer import _load_open_clip_tokenizer_module

    fast = _load_open_clip_tokenizer_module()
    text = "a photo of a traffic light, isn't it?"
    assert fast.SimpleTokenizer().encode(text) == public.SimpleTokenizer().encode(text)
