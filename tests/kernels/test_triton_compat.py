"""The Triton work-arounds (groupvit_fast.kernels.triton_compat): installed on the releases that need them
only, doing what the newer release does, and gone from view once no supported release needs them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from groupvit_fast.kernels.triton_compat import interpreter_index_fix, needs_interpreter_index_fix


@pytest.mark.parametrize(
    "version, needed", [("3.6.0", True), ("3.6.1", True), ("3.7.0", False), ("3.8.0", False), ("4.0.0", False)]
)
def test_the_index_fix_is_for_triton_3_6_only(version, needed):
    assert needs_interpreter_index_fix(version) is needed


class _Scope:
    """What the interpreter's ``_patch_lang_tensor`` is handed: ``set_attr(obj, name, value)``."""

    def __init__(self):
        self.attrs = {}

    def set_attr(self, obj, name, value):
        self.attrs[name] = value


def test_the_index_fix_squeezes_a_one_element_array_and_keeps_the_original_patches():
    calls = []
    interpreter = types.ModuleType("interpreter")
    interpreter._patch_lang_tensor = lambda tensor, scope: calls.append(tensor)
    interpreter_index_fix(interpreter)
    interpreter_index_fix(interpreter)  # installed once: no second wrapper
    scope = _Scope()
    interpreter._patch_lang_tensor("t", scope)
    assert calls == ["t"]  # 3.6's own patches still run, once
    fake = types.SimpleNamespace(handle=types.SimpleNamespace(data=np.array([7], dtype=np.int32)))
    index = scope.attrs["__index__"](fake)
    assert index == 7 and type(index) is int  # what range(0, D, BLOCK_D) needs of a runtime scalar


def test_what_the_fix_works_around():
    # numpy >= 2.4 refuses int() of a 1-element 1-D array: what triton 3.6's interpreter does
    if tuple(int(x) for x in np.__version__.split(".")[:2]) < (2, 4):
        pytest.skip(f"numpy {np.__version__} still converts 1-D arrays")
    with pytest.raises(TypeError):
        int(np.array([7]))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="not available: triton is not installed")
def test_the_interpreter_gets_exactly_the_fixes_its_release_needs():
    # a fresh process: TRITON_INTERPRET must be set before triton is imported
    code = (
        "import json, triton; from groupvit_fast.kernels import assign_attention as a; "
        "from triton.runtime import interpreter as i; "
        "print(json.dumps([triton.__version__, a.INTERPRET, list(a.INTERPRETER_FIXES), "
        "getattr(i._patch_lang_tensor, '_groupvit_fast_index_fix', False)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TRITON_INTERPRET": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    version, interpreting, fixes, wrapped = json.loads(out.stdout.strip().splitlines()[-1])
    needed = needs_interpreter_index_fix(version)
    assert interpreting is True
    assert fixes == (["interpreter_index_fix"] if needed else []) and wrapped is needed
