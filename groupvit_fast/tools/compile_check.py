"""Ahead-of-time compilation of the Triton kernels for NVIDIA GPUs, on a machine without one.

Triton's interpreter (``TRITON_INTERPRET=1``, how CPU-only CI runs the kernels) executes their
semantics with numpy but never lowers them, so what only code generation checks goes unseen there:
layouts and ``tl.dot`` operand rules, shared memory, the PTX itself. This module compiles every
kernel through Triton's real NVIDIA back end (TTIR -> TTGIR -> LLVM -> PTX -> cubin with ptxas) for
sm_80 and sm_90, at the launch parameters the launchers choose for the benchmark shapes of
docs/benchmarks.md, for every autotuning config the pruner keeps, and compares each kernel's shared
memory with the target's per-block limit. Each kernel's registers and spills (``ptxas -v`` on its
PTX) are reported too: without a GPU, no timing says which spilling config wins, so they are
information, not a verdict.

A config that needs more shared memory than the target has is what the autotuner skips on a GPU;
any other compile error would abort the autotuner, so it fails the check. So does a (kernel, shape,
dtype, target) for which no config fits. It needs triton with its NVIDIA back end (ptxas ships with
triton), not a GPU, not a CUDA driver, and must run with ``TRITON_INTERPRET`` unset (the kernels are
decorated for the interpreter otherwise).

    python -m groupvit_fast.tools.compile_check            # all targets and shapes
    python -m groupvit_fast.tools.compile_check --arch 90 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

#: Opt-in dynamic shared memory per block (CUDA programming guide, "Compute capabilities").
SHARED_LIMIT_BYTES = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}

#: (name, G, N, D, H) of docs/benchmarks.md's op shapes (the batch does not change the code).
SHAPES = (
    ("stage0-224", 64, 196, 384, 1),
    ("stage1-224", 8, 64, 384, 1),
    ("stage0-448", 64, 784, 384, 1),
    ("stage0-896", 64, 3136, 384, 1),
    ("wide", 64, 1024, 768, 1),
    ("multihead", 64, 196, 64, 6),
)

_PTR_IN = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


@dataclass
class Variant:
    """One compilation: a kernel at one set of constexprs, launch options, input dtype and target."""

    kernel: str
    shape: str
    dtype: str
    arch: int
    constexprs: dict
    options: dict
    group: str  # variants of one group are alternative autotuning configs of one launch
    status: str = "pending"  # ok | shared-memory | error
    shared_bytes: int | None = None
    seconds: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _module():
    from groupvit_fast.kernels import assign_attention as module

    if module.INTERPRET:
        raise RuntimeError(
            "TRITON_INTERPRET is set: the kernels were decorated for the interpreter; "
            "run the compile check with TRITON_INTERPRET unset"
        )
    return module


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    """Triton types for the kernel's arguments: data pointers in the input dtype, fp32 buffers
    (r, delta, noise, workspaces), i32 sizes and strides, i64 seed and offset, fp32 scalars."""
    fp32_buffers = {"noise_ptr", "ws_ptr", "r_ptr", "delta_ptr", "dq_ws_ptr"}
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in fp32_buffers else _PTR_IN[dtype]
        elif name in ("seed", "offset"):
            sig[name] = "i64"
        elif name in ("scale", "tau", "eps"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


#: The other constexpr branches (each its own compiled kernel), beside training's hard + Gumbel:
#: eval, soft assignment, a given noise tensor, sum_assign, and the attention maps segmentation reads.
MODE_VARIANTS = {
    "eval": {"GUMBEL": False},
    "soft": {"HARD": False, "GUMBEL": False},
    "noise-tensor": {"HAS_NOISE": True},
    "sum-assign": {"SUM_ASSIGN": True},
    "return-attn": {"GUMBEL": False, "RETURN_ATTN": True},  # forward only
}


#: Every input dtype the kernels take: under TRITON_INTERPRET the tests run another ``tl.dot`` branch for
#: bf16/fp16 (``_WIDEN_DOT`` in kernels/assign_attention.py), so only this compile sees the GPU's branch.
DTYPES = ("bf16", "fp16", "fp32")


def variants(  # noqa: C901  (the selection rules of the docstring, one condition each, kept side by side)
    archs=(80, 90),
    dtypes=DTYPES,
    all_configs_for=("stage0-224",),
    modes_for=("stage0-224", "stage0-448"),
) -> list[Variant]:
    """The compilations of the check. Training mode (hard + Gumbel) everywhere: every kept
    autotuning config for the shapes in ``all_configs_for`` on the newest target in bf16 (the
    spec's GPU dtype), the first kept config elsewhere (what a GPU tries first). The other modes
    (``MODE_VARIANTS``) with the first config, bf16, on the newest target, for ``modes_for``."""
    import torch
    import triton

    m = _module()
    cpu = torch.device("cpu")  # _block_n only asks the device for its SM count when N needs several blocks
    configs = [triton.Config({"BLOCK_D": bd}, num_warps=w, num_stages=s) for bd, w, s in m._CONFIGS]
    newest = max(archs)
    out: list[Variant] = []
    seen = set()

    def add(kernel, shape, dtype, arch, constexprs, options, group):
        key = (kernel, dtype, arch, tuple(sorted(constexprs.items())), tuple(sorted(options.items())))
        if key not in seen:
            seen.add(key)
            out.append(Variant(kernel, shape, dtype, arch, constexprs, options, group))

    for shape, g, n, d, h in SHAPES:
        g_pad = max(16, triton.next_power_of_2(g))
        for kernel, tile in (("fwd", m._FWD_TILE), ("bwd", m._BWD_TILE)):
            block = m._block_n(g_pad, n, h, tile, cpu)
            single = triton.cdiv(n, block) == 1
            kept = m._prune(configs, {"D": d, "G_PAD": g_pad, "BLOCK_N": block})
            for dtype in dtypes:
                for arch in archs:
                    chosen = kept if (shape in all_configs_for and arch == newest and dtype == "bf16") else kept[:1]
                    for cfg in chosen:
                        flags = {
                            "G_PAD": g_pad,
                            "BLOCK_N": block,
                            "BLOCK_D": cfg.kwargs["BLOCK_D"],
                            "HARD": True,
                            "GUMBEL": True,
                            "HAS_NOISE": False,
                            "SUM_ASSIGN": False,
                            "SINGLE": single,
                            "FP32": dtype == "fp32",
                        }
                        if kernel == "fwd":
                            flags["RETURN_ATTN"] = False
                        options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
                        add(kernel, shape, dtype, arch, flags, options, f"{kernel}/{shape}/{dtype}/sm_{arch}")
                        if shape in modes_for and arch == newest and dtype == dtypes[0] and cfg is kept[0]:
                            for mode, override in MODE_VARIANTS.items():
                                if "RETURN_ATTN" in override and kernel != "fwd":
                                    continue
                                add(
                                    kernel,
                                    shape,
                                    dtype,
                                    arch,
                                    {**flags, **override},
                                    options,
                                    f"{kernel}/{shape}/{dtype}/sm_{arch}/{mode}",
                                )
            if kernel == "fwd" and not single:
                c = d * h
                for arch in archs:
                    add(
                        "fwd_finalize",
                        shape,
                        dtypes[0],
                        arch,
                        {"SUM_ASSIGN": False, "BLOCK_C": min(1024, triton.next_power_of_2(c))},
                        {"num_warps": 4},
                        f"fwd_finalize/{shape}/sm_{arch}",
                    )
        for arch in archs:
            add(
                "bwd_preprocess",
                shape,
                dtypes[0],
                arch,
                {"G_PAD": g_pad, "BLOCK_D": min(64, max(16, triton.next_power_of_2(d)))},
                {"num_warps": 4},
                f"bwd_preprocess/{shape}/sm_{arch}",
            )
    for arch in archs:
        for uniform in (False, True):
            add(
                "gumbel_noise",
                "-",
                "fp32",
                arch,
                {"UNIFORM": uniform, "BLOCK": 1024},
                {"num_warps": 4},
                f"gumbel_noise/uniform={uniform}/sm_{arch}",
            )
    return out


_KERNELS = {
    "fwd": "_assign_fwd_kernel",
    "bwd": "_assign_bwd_kernel",
    "fwd_finalize": "_assign_fwd_finalize_kernel",
    "bwd_preprocess": "_assign_bwd_preprocess_kernel",
    "gumbel_noise": "_gumbel_noise_kernel",
}


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\w+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas(report: str) -> dict[str, dict[str, int]]:
    """``{kernel: {"registers", "stack", "spill_stores", "spill_loads"}}`` from the output of
    ``ptxas -v`` (also through ``nvcc -Xptxas -v``; tests/test_cuda_compile.py reads the CUDA C++
    kernels' report with it)."""
    kernels: dict[str, dict[str, int]] = {}
    current = None
    for line in report.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            current = kernels.setdefault(m.group(1), {})
        elif current is not None and (m := _PTXAS_FRAME.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := _PTXAS_REGISTERS.search(line)):
            current["registers"] = int(m.group(1))
    return kernels


def _ptxas_resources(ptx: str, arch: int) -> dict:
    """Registers and spills of the kernel, from ``ptxas -v`` on its PTX (the compile itself keeps no
    such report; on a GPU Triton reads it back from the loaded module)."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    target = re.search(r"^\.target\s+(\w+)", ptx, re.MULTILINE)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [
                get_ptxas(arch).path,
                "-v",
                f"--gpu-name={target.group(1) if target else f'sm_{arch}'}",
                path,
                "-o",
                os.path.join(tmp, "kernel.cubin"),
            ],
            capture_output=True,
            text=True,
        )
    entries = list(parse_ptxas(proc.stdout + proc.stderr).values())  # one entry: the kernel
    return entries[0] if entries else {}


def compile_variant(v: Variant) -> Variant:
    """Compiles ``v`` to a cubin and fills in its status, shared memory and time."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(_module(), _KERNELS[v.kernel])
    started = time.perf_counter()
    try:
        src = ASTSource(fn=fn, signature=_signature(fn, v.dtype, v.constexprs), constexprs=dict(v.constexprs))
        compiled = triton.compile(src, target=GPUTarget("cuda", v.arch, 32), options=dict(v.options))
        v.shared_bytes = int(compiled.metadata.shared)
        v.extra["cubin_bytes"] = len(compiled.asm["cubin"])
        v.extra.update(_ptxas_resources(compiled.asm["ptx"], v.arch))
        limit = SHARED_LIMIT_BYTES.get(v.arch)
        v.status = "shared-memory" if limit is not None and v.shared_bytes > limit else "ok"
    except Exception as err:  # noqa: BLE001 - reported per variant, the check goes on
        v.status, v.error = "error", f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
    v.seconds = round(time.perf_counter() - started, 2)
    return v


def failures(results: list[Variant]) -> list[str]:
    """Compile errors, and groups in which no config fits the target's shared memory."""
    bad = [f"{v.group} {v.options}: {v.error}" for v in results if v.status == "error"]
    groups: dict[str, list[Variant]] = {}
    for v in results:
        groups.setdefault(v.group, []).append(v)
    for name, members in groups.items():
        if not any(v.status == "ok" for v in members) and not any(v.status == "error" for v in members):
            bad.append(f"{name}: no config fits in {SHARED_LIMIT_BYTES[members[0].arch]} bytes of shared memory")
    return bad


def _print_row(i: int, total: int, v: Variant) -> None:
    shared = "-" if v.shared_bytes is None else f"{v.shared_bytes / 1024:.0f} KiB"
    regs = (
        f", {v.extra['registers']} registers, {v.extra.get('spill_stores', '?')} B spilled"
        if "registers" in v.extra
        else ""
    )
    print(
        f"[{i}/{total}] {v.status:13s} {v.group:36s} {v.options} shared {shared}{regs} ({v.seconds}s)"
        + (f"\n    {v.error}" if v.error else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m groupvit_fast.tools.compile_check",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arch",
        type=int,
        nargs="+",
        default=[80, 90],
        choices=sorted(SHARED_LIMIT_BYTES),
        help="compute capabilities to compile for (default: 80 90)",
    )
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=sorted(_PTR_IN))
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="compiler processes (default: the CPU count, at most 4)",
    )
    args = parser.parse_args(argv)

    import triton

    todo = variants(tuple(args.arch), tuple(args.dtype))
    print(
        f"triton {triton.__version__}: compiling {len(todo)} kernel variants for "
        f"{', '.join(f'sm_{a}' for a in args.arch)} in {args.jobs} processes (no GPU needed)",
        flush=True,
    )
    results = []
    # LLVM and ptxas are single-threaded: one process per core, spawned (not forked: triton state).
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = pool.map(compile_variant, todo) if args.jobs > 1 else map(compile_variant, todo)
        for i, v in enumerate(done, 1):
            results.append(v)
            _print_row(i, len(todo), v)
    bad = failures(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"triton": triton.__version__, "results": [asdict(v) for v in results], "failures": bad}, f, indent=1
            )
    print(
        "FAILED:\n  " + "\n  ".join(bad)
        if bad
        else f"all {len(results)} variants compiled; every launch has a config that fits the target's shared memory"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
