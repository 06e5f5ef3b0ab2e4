"""The Triton kernels compile for real NVIDIA targets (sm_80, sm_90) without register spills and with
every half-precision dot on tensor cores, checked without a GPU (docs/assign_op.md, "Triton kernels").

Triton's interpreter, which runs the kernel tests on CPU-only machines, never lowers the kernels:
layouts, ``tl.dot`` lowering, shared memory, registers and PTX are only checked by compiling them.
``groupvit_fast.tools.compile_check --quick`` does that through Triton's NVIDIA back end (ptxas ships
with triton) at each launch's specialization, for every mode, every autotuning config the pruner keeps,
both targets, bf16 and fp32, at GroupViT-S's two stages (224 px); the full run (every shape, fp16 too)
writes the committed report. It runs in a subprocess because the kernels in this process may be
decorated for the interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from groupvit_fast.tools.compile_check import (
    MODES,
    SHARED_LIMIT_BYTES,
    SPILL_BUDGET,
    Variant,
    dot_lowering,
    failures,
    resource_failures,
)
from groupvit_fast.tools.occupancy import resident_warps
from requirements import requires

pytestmark = requires("triton-aot")

_ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "groupvit_fast.tools.compile_check", "--quick", "--json", str(out)],
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_every_kernel_compiles_without_spills_and_with_mma(compiled):
    proc, report = compiled
    assert report["failures"] == [], report["failures"][:20]
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = report["results"]
    assert results and all(r["status"] == "ok" for r in results)
    kernels = {(r["kernel"], r["arch"]) for r in results}
    for kernel in ("fwd", "bwd", "fwd_finalize", "bwd_preprocess", "gumbel_noise"):
        assert {(kernel, 80), (kernel, 90)} <= kernels, kernel
    for r in results:
        e = r["extra"]
        assert max(e["spill_stores"], e["spill_loads"]) <= SPILL_BUDGET[r["dtype"]], r["group"]
        if r["kernel"] in ("fwd", "bwd") and r["dtype"] != "fp32":
            assert e["dots"] == e["mma_dots"] > 0 and e["mma_ptx"] > 0, r["group"]
        assert e["resident_warps"] >= r["options"]["num_warps"], r["group"]  # at least one block fits
    # every mode of both main kernels, at least two configs per launch (the autotuner has a choice)
    for kernel in ("fwd", "bwd"):
        for mode in MODES:
            if mode == "return-attn" and kernel == "bwd":
                continue
            for arch in (80, 90):
                members = [r for r in results if r["group"] == f"{kernel}/stage0-224/bf16/sm_{arch}/{mode}"]
                assert len(members) >= 2, (kernel, mode, arch)


def test_launches_compile_at_their_specialization(compiled):
    """Unit channel strides are constants and the divisible sizes carry tt.divisibility, as in a launch:
    without them ptxas sees an address per element and the kernels spill where no launch does."""
    _, report = compiled
    fwd = next(r for r in report["results"] if r["group"] == "fwd/stage0-224/bf16/sm_90/train")
    assert fwd["constexprs"]["stride_kc"] == 1 and fwd["constexprs"]["stride_qc"] == 1
    assert "stride_kn" in fwd["extra"]["attrs"] and "N" not in fwd["extra"]["attrs"]  # N = 196


def test_shared_memory_is_within_the_target_limits(compiled):
    _, report = compiled
    for r in report["results"]:
        if r["status"] == "ok":
            assert 0 <= r["shared_bytes"] <= SHARED_LIMIT_BYTES[r["arch"]], r


def _variant(group, status, arch=90, dtype="bf16", **extra):
    v = Variant("fwd", "stage0-224", dtype, arch, {}, {"num_warps": 4}, group)
    v.status = status
    v.error = "CompilationError: boom" if status == "error" else None
    v.extra.update(extra)
    return v


_CLEAN = dict(registers=200, spill_stores=0, spill_loads=0, dots=2, mma_dots=2, mma_ptx=40)


@pytest.mark.parametrize(
    "statuses, failing",
    [
        (["ok", "shared-memory"], False),  # the autotuner skips the config that does not fit
        (["shared-memory", "shared-memory"], True),  # nothing fits: the launch would fail on the GPU
        (["ok", "error"], True),  # a compile error aborts the autotuner
    ],
)
def test_failures_are_reported(statuses, failing):
    results = [_variant("fwd/x/bf16/sm_90/train", s, **_CLEAN) for s in statuses]
    assert bool(failures(results)) == failing


@pytest.mark.parametrize(
    "dtype, extra, failing",
    [
        ("bf16", {}, False),
        ("bf16", {"spill_stores": 4, "spill_loads": 4}, True),  # any spill in half precision
        ("fp16", {"spill_loads": 8}, True),
        ("fp32", {"spill_stores": 128, "spill_loads": 128}, False),  # fp32's budget
        ("fp32", {"spill_stores": 132}, True),
        ("bf16", {"mma_dots": 1}, True),  # one dot on FMA units
        ("bf16", {"mma_ptx": 0}, True),  # no MMA instruction in the PTX
        ("fp32", {"mma_dots": 0, "mma_ptx": 0}, False),  # fp32's exact dots are FMA by design
    ],
)
def test_spills_and_missing_mma_fail_the_check(dtype, extra, failing):
    v = _variant(f"fwd/x/{dtype}/sm_90/train", "ok", dtype=dtype, **{**_CLEAN, **extra})
    assert bool(resource_failures(v)) == failing
    assert bool(failures([v, _variant(f"fwd/x/{dtype}/sm_90/train", "ok", dtype=dtype, **_CLEAN)])) == failing


def test_dot_lowering_reads_the_ttgir():
    ttgir = (
        "    %12 = tt.dot %a, %b, %c, inputPrecision = tf32 : tensor<64x32xbf16, #ttg.dot_op<{opIdx = 0, parent = "
        "#mma}>> * tensor<32x64xbf16, #ttg.dot_op<{opIdx = 1, parent = #mma}>> -> tensor<64x64xf32, #mma>\n"
        "    %13 = tt.dot %d, %e, %f : tensor<64x16xf32, #blocked1> * tensor<16x64xf32, #blocked2> "
        "-> tensor<64x64xf32, #blocked>\n"
        "    %14 = ttng.warp_group_dot %g, %h, %i {isAsync = true} : !ttg.memdesc<64x64xbf16, #shared, #smem> * "
        "!ttg.memdesc<64x128xbf16, #shared1, #smem> -> tensor<64x128xf32, #mma1>\n"
    )
    assert dot_lowering(ttgir, "mma.sync.aligned.m16n8k16 x;\nwgmma.mma_async.sync y;") == {
        "dots": 3,
        "mma_dots": 2,
        "mma_ptx": 2,
    }


def test_occupancy_follows_the_cuda_rule():
    assert resident_warps(80, 255, 24 * 1024, 4) == 8  # 255 -> 256 regs x 128 threads: 2 blocks of 64 Ki
    assert resident_warps(90, 128, 0, 4) == 16
    assert resident_warps(80, 32, 100 * 1024, 4) == 4  # shared memory: one 100 KiB block per 164 KiB SM
    assert resident_warps(90, 32, 0, 4) == 64  # the 64-warp cap


def test_a_spilling_tile_is_caught():
    """The mutation the check exists for: the forward's old 64 x 256 logits tile at 4 warps, compiled at
    the launch's specialization, spills and fails the check (a real ptxas report, not a synthetic one)."""
    code = (
        "from groupvit_fast.tools import compile_check as c\n"
        "v = [v for v in c.variants(archs=(90,), dtypes=('bf16',), shapes=('stage0-224',), modes=('train',))"
        " if v.kernel == 'fwd'][0]\n"
        "v.constexprs.update(BLOCK_N=256, BLOCK_DV=128)\n"
        "r = c.compile_variant(v)\n"
        "print(r.status, r.extra.get('spill_stores'), c.resource_failures(r))\n"
        "raise SystemExit(0 if r.status == 'ok' and c.resource_failures(r) else 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
