"""The CPU op profile script (benchmarks/cpu_op_profile.py) on a tiny time budget: it times every entry
it names (the reference, each kernel copy with and without noise and alone in the forward, the two GEMM
floors) and writes the report with the decomposition per copy. The figures are not checked: only that the
report is whole and that a kernel copy of this CPU is in it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from groupvit_fast.ops.backends.native import cpu_isas


def _script():
    path = Path(__file__).with_name("cpu_op_profile.py")
    spec = importlib.util.spec_from_file_location("cpu_op_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_profile_times_every_entry_and_writes_the_decomposition(tmp_path):
    script = _script()
    assert script.main(["--out", str(tmp_path), "--budget", "0.02"]) == 0
    (report,) = tmp_path.glob("cpu-op-profile-*.md")
    text = report.read_text()
    for name in script.entries():
        assert f"| {name} |" in text, name
    for isa in cpu_isas():
        assert f"- `{isa}`: " in text and "GEMM floor" in text
