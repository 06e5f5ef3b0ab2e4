"""The ``cpu`` backend's instruction-set copies (csrc/cpu/kernel_select.cpp) and its threading.

* Every copy this CPU can run (``avx512``, ``avx2``, ``baseline``) passes the parity tests against
  the float64 oracle: the default copy in test_assign_attention_parity.py itself, every other one
  here, by running that file's ``cpu`` rows with ``GROUPVIT_FAST_CPU_ISA`` set.
* The copies agree with each other in one process (``use_cpu_isa``), fp32 and bf16.
* The selector's errors name the culprit; the choice is restored after ``use_cpu_isa``.
* The extension threads the way setup.py recorded: ``at::parallel_for`` is inline, so a build
  without the compiler's OpenMP runs on one thread, which must be a recorded, logged decision,
  never an accident (docs/cpu_backend.md, "Building").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from assign_cases import relative_error
from groupvit_fast import _extension
from groupvit_fast.ops import assign_attention
from requirements import requires

pytestmark = requires("cpu")

ISAS = ("avx512", "avx2", "baseline")
TESTS = Path(__file__).resolve().parents[1]


def native():
    from groupvit_fast.ops.backends import native

    return native


def _skip_unless_runs(isa: str) -> None:
    runs = native().cpu_isas()
    if isa not in runs:
        pytest.skip(f"this CPU cannot run the {isa} copy (it runs {', '.join(runs)})")


@pytest.mark.parametrize("isa", ISAS)
def test_each_copy_passes_the_parity_tests(isa):
    _skip_unless_runs(isa)
    if isa == native().cpu_isas()[0]:
        pytest.skip(f"{isa} is this CPU's default copy: test_assign_attention_parity.py runs it")
    env = dict(os.environ, GROUPVIT_FAST_CPU_ISA=isa)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cpu"]
    cmd += [str(TESTS / "ops" / "test_assign_attention_parity.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]


def _run_all_modes() -> dict[str, list[torch.Tensor]]:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 40), torch.randn(2, 67, 40), torch.randn(2, 67, 40)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for hard in (True, False):
            leaves = [t.to(dtype).clone().requires_grad_(True) for t in (q, k, v)]
            out = assign_attention(*leaves, num_heads=2, hard=hard, gumbel=True, seed=3, backend="cpu")
            out.backward(torch.ones_like(out))
            results[f"{dtype}-{hard}"] = [t.detach().float() for t in [out] + [x.grad for x in leaves]]
    return results


def test_copies_agree_in_one_process():
    isas = native().cpu_isas()
    assert isas[-1] == "baseline", isas
    with native().use_cpu_isa(isas[0]) as chosen:
        assert chosen == isas[0]
        best = _run_all_modes()
    for isa in isas[1:]:
        with native().use_cpu_isa(isa) as chosen:
            assert chosen == isa
            other = _run_all_modes()
        for key, tensors in best.items():
            tol = 1e-5 if "float32" in key else 2e-2  # bf16: the stores round; fp32 differs in order only
            for a, b in zip(tensors, other[key], strict=True):
                assert relative_error(b, a) <= tol, (isa, key)


def test_use_cpu_isa_restores_the_previous_choice():
    before = native().extension_facts()["cpu_isa"]
    with native().use_cpu_isa("baseline") as chosen:
        assert chosen == "baseline"
        assert native().extension_facts()["cpu_isa"] == "baseline"
    assert native().extension_facts()["cpu_isa"] == before


def test_unknown_or_unrunnable_copy_is_a_one_line_value_error():
    with pytest.raises(ValueError, match="isa='sse9': expected one of auto, baseline, avx2, avx512"):
        native().set_cpu_isa("sse9")
    missing = [isa for isa in ISAS if isa not in native().cpu_isas()]
    for isa in missing:
        with pytest.raises(ValueError, match=f"isa='{isa}': (this CPU lacks|not built)"):
            native().set_cpu_isa(isa)


def test_bad_environment_variable_names_itself():
    script = (
        "import torch\nfrom groupvit_fast.ops import assign_attention\n"
        "q = torch.randn(1, 2, 8)\nassign_attention(q, q.clone(), q.clone(), backend='cpu')\n"
    )
    env = dict(os.environ, GROUPVIT_FAST_CPU_ISA="avx9000")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "GROUPVIT_FAST_CPU_ISA='avx9000': expected one of" in proc.stderr, proc.stderr[-2000:]


def test_threading_is_what_setup_recorded():
    facts = native().extension_facts()
    recorded = _extension.build_info().get("cpu_threading")
    assert recorded is not None, "setup.py records cpu_threading in _build_info.json"
    # "serial" only by setup.py's decision (no OpenMP in the compiler), never by a lost flag.
    assert facts["cpu_threading"] == recorded, (facts, recorded)
    if torch._C.has_openmp:
        assert facts["cpu_threading"] in ("openmp", "serial")
    else:
        assert facts["cpu_threading"] == "native"


def test_a_one_thread_build_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(_extension, "_serial_warned", False)
    with caplog.at_level(logging.WARNING, logger="groupvit_fast"):
        _extension.warn_if_serial({"cpu_threading": "serial"})
        _extension.warn_if_serial({"cpu_threading": "serial"})
        _extension.warn_if_serial({"cpu_threading": "openmp"})
    assert caplog.text.count("ONE thread") == 1, caplog.text
