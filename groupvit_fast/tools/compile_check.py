"""Ahead-of-time compilation of the Triton kernels for NVIDIA GPUs, on a machine without one.

Triton's interpreter (``TRITON_INTERPRET=1``, how CPU-only CI runs the kernels) executes their
semantics with numpy but never lowers them, so what only code generation shows goes unseen there:
layouts, ``tl.dot`` lowering, shared memory, registers, the PTX itself. This module compiles every
kernel through Triton's real NVIDIA back end (TTIR -> TTGIR -> LLVM -> PTX -> cubin with ptxas) for
sm_80 and sm_90, at the launch parameters and argument specialization the launchers produce for the
shapes of ``SHAPES``, in every mode of ``MODES``, for every autotuning config the pruner keeps (docs/
assign_op.md, "Triton kernels"). It fails on:

* a compile error (it would abort the autotuner), or a launch for which no config fits the target's
  shared memory (a config that does not fit is what the autotuner skips);
* a register spill beyond ``SPILL_BUDGET`` in any config (Triton's own ptxas -v log): none in bf16
  and fp16, 128 B per thread in fp32;
* a half-precision ``tl.dot`` that did not lower to tensor-core MMA (TTGIR layout and PTX).

It records each config's occupancy (resident warps per SM); ``kernel_report`` (run on the ``--json``
output) adds the static traffic estimate and the CUDA C++ kernels' table. It needs triton with its NVIDIA
back end (ptxas ships with triton), not a GPU, and must run with ``TRITON_INTERPRET`` unset.

    python -m groupvit_fast.tools.compile_check --quick       # CI: GroupViT-S's two stages, bf16
    python -m groupvit_fast.tools.compile_check --json r.json   # everything (kernel_report r.json r.md: the report)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from groupvit_fast.common.files import atomic_write

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


#: Every mode the op offers, as the constexprs that select it (each its own compiled kernel): training's
#: hard assignment with in-kernel Gumbel noise, eval, soft assignment, a given noise tensor, sum_assign,
#: and the attention maps segmentation reads (forward only).
MODES = {
    "train": {},
    "eval": {"GUMBEL": False},
    "soft": {"HARD": False, "GUMBEL": False},
    "noise-tensor": {"HAS_NOISE": True},
    "sum-assign": {"SUM_ASSIGN": True},
    "return-attn": {"GUMBEL": False, "RETURN_ATTN": True},
}


#: Every input dtype the kernels take: under TRITON_INTERPRET the tests run another ``tl.dot`` branch for
#: bf16/fp16 (``_WIDEN_DOT`` in kernels/assign_attention.py), so only this compile sees the GPU's branch.
DTYPES = ("bf16", "fp16", "fp32")
_ELEM = {"bf16": 2, "fp16": 2, "fp32": 4}

#: Spill budget in bytes per thread (spill stores and loads each): none in half precision, where the
#: kernels must run at the memory floor; a little for fp32, whose exact dots run on FMA units.
SPILL_BUDGET = {"bf16": 0, "fp16": 0, "fp32": 128}

#: Batch of the traffic estimate (GroupViT-S training's per-GPU batch of docs/benchmarks.md).
TRAFFIC_BATCH = 256


def launch_ints(kernel: str, g: int, n: int, d: int, h: int) -> dict[str, int]:
    """The integer arguments of a launch on contiguous tensors (q, dO [B, G, C]; k, v [B, N, C])."""
    c = d * h
    ints = {"G": g, "N": n, "D": d, "H": h}
    if kernel in ("fwd", "bwd", "bwd_preprocess"):
        for name, rows in (("q", g), ("k", n), ("v", n), ("d", g), ("o", g)):
            ints.update({f"stride_{name}b": rows * c, f"stride_{name}{'g' if rows == g else 'n'}": c})
            ints[f"stride_{name}c"] = 1
    if kernel == "fwd_finalize":
        ints["C"] = c
    if kernel == "gumbel_noise":
        ints["total"] = TRAFFIC_BATCH * h * g * n
    return ints


def specialization(fn, ints: dict[str, int]) -> tuple[dict, dict]:
    """(constexprs, attrs) Triton's launcher derives from the argument values (triton.runtime.jit): an
    int equal to 1 becomes the constant 1, an int divisible by 16 and every (16-aligned) pointer get
    ``tt.divisibility = 16``, except the arguments the kernel marks ``do_not_specialize``. Compiling
    without them would check a kernel no launch runs (unknown strides: no vector loads, an address
    per element, and spills a real launch does not have)."""
    skip = set(getattr(_module(), "_RUNTIME_INTS", ()))
    constexprs, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in skip:
            continue
        if name.endswith("_ptr") or ints.get(name, 1) % 16 == 0 and name in ints:
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif ints.get(name) == 1:
            constexprs[name] = 1
    return constexprs, attrs


def variants(archs=(80, 90), dtypes=DTYPES, shapes=None, modes=None) -> list[Variant]:  # noqa: C901
    """Every compilation a GPU may run at the shapes of ``SHAPES``: the forward and the backward in
    every mode of ``MODES``, every dtype, every target, at every autotuning config the pruner keeps
    for the launch (each one the autotuner may pick), and the helper kernels. Launches that compile
    to the same kernel (same constexprs, specialization and options) are compiled once."""
    import triton

    m = _module()
    configs = [triton.Config({"BLOCK_DK": bd}, num_warps=w, num_stages=s) for bd, w, s in m._CONFIGS]
    out: list[Variant] = []

    def add(kernel, shape, dtype, arch, constexprs, options, group, ints):
        fn = getattr(m, _KERNELS[kernel])
        spec_consts, attrs = specialization(fn, ints)
        v = Variant(kernel, shape, dtype, arch, {**constexprs, **spec_consts}, options, group)
        v.extra["attrs"] = sorted(fn.arg_names[i[0]] for i in attrs)
        out.append(v)

    for shape, g, n, d, h in SHAPES:
        if shapes and shape not in shapes:
            continue
        g_pad = max(16, triton.next_power_of_2(g))
        for kernel in ("fwd", "bwd"):
            ints = launch_ints(kernel, g, n, d, h)
            for dtype in dtypes:
                fp32 = dtype == "fp32"
                kept = m._prune(configs, {"D": d, "FP32": fp32})
                for arch in archs:
                    for mode, override in MODES.items():
                        if (modes and mode not in modes) or ("RETURN_ATTN" in override and kernel != "fwd"):
                            continue
                        extra_tile = "RETURN_ATTN" in override or "HAS_NOISE" in override
                        block_n, block_dv = m._tiles(kernel, g_pad, n, d, fp32, extra_tile)
                        for cfg in kept:
                            flags = {
                                "G_PAD": g_pad,
                                "BLOCK_N": block_n,
                                "BLOCK_DV": block_dv,
                                "BLOCK_DK": cfg.kwargs["BLOCK_DK"],
                                "HARD": True,
                                "GUMBEL": True,
                                "HAS_NOISE": False,
                                "SUM_ASSIGN": False,
                                "FP32": fp32,
                            }
                            if kernel == "fwd":
                                flags["RETURN_ATTN"] = False
                            flags.update(override)
                            options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
                            group = f"{kernel}/{shape}/{dtype}/sm_{arch}/{mode}"
                            add(kernel, shape, dtype, arch, flags, options, group, ints)
        c = d * h
        for dtype in dtypes:
            for arch in archs:
                add(
                    "fwd_finalize",
                    shape,
                    dtype,
                    arch,
                    {"SUM_ASSIGN": False, "BLOCK_C": min(1024, triton.next_power_of_2(c))},
                    {"num_warps": 4},
                    f"fwd_finalize/{shape}/{dtype}/sm_{arch}",
                    launch_ints("fwd_finalize", g, n, d, h),
                )
                add(
                    "bwd_preprocess",
                    shape,
                    dtype,
                    arch,
                    {"G_PAD": g_pad, "BLOCK_D": min(64, max(16, triton.next_power_of_2(d)))},
                    {"num_warps": 4},
                    f"bwd_preprocess/{shape}/{dtype}/sm_{arch}",
                    launch_ints("bwd_preprocess", g, n, d, h),
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
                launch_ints("gumbel_noise", 64, 196, 384, 1),
            )
    return out


def compile_key(v: Variant) -> tuple:
    """Variants with equal keys compile to the same kernel."""
    return (
        v.kernel,
        v.dtype,
        v.arch,
        tuple(sorted(v.constexprs.items())),
        tuple(sorted(v.options.items())),
        tuple(v.extra.get("attrs", ())),
    )


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


_DOT = re.compile(r"^\s*%\S+ = (tt\.dot|ttng\.warp_group_dot) .*-> tensor<[^>]*?, #(\w+)>", re.MULTILINE)


def dot_lowering(ttgir: str, ptx: str) -> dict[str, int]:
    """How the kernel's ``tl.dot``s lowered: ``dots`` in the TTGIR, ``mma_dots`` among them with an MMA
    result layout (``#mma*``: mma.sync; ``ttng.warp_group_dot``: wgmma), and the PTX's MMA instructions."""
    dots = _DOT.findall(ttgir)
    return {
        "dots": len(dots),
        "mma_dots": sum(op == "ttng.warp_group_dot" or layout.startswith("mma") for op, layout in dots),
        "mma_ptx": ptx.count("mma.sync.aligned") + ptx.count("wgmma.mma_async"),
    }


@contextlib.contextmanager
def _ptxas_log():
    """Makes triton compile afresh (no cache hit: ptxas must run) and print ptxas' -v log."""
    from triton import knobs

    saved = (knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile)
    knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = True, True
    try:
        yield
    finally:
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = saved


def compile_variant(v: Variant) -> Variant:
    """Compiles ``v`` to a cubin with the launch's specialization and fills in its status, shared memory,
    registers and spills (ptxas -v), the lowering of its dots, its occupancy and the time."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .occupancy import resident_warps

    fn = getattr(_module(), _KERNELS[v.kernel])
    started = time.perf_counter()
    try:
        attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in v.extra.get("attrs", ())}
        sig = _signature(fn, v.dtype, v.constexprs)
        src = ASTSource(fn=fn, signature=sig, constexprs=dict(v.constexprs), attrs=attrs)
        log = io.StringIO()
        with _ptxas_log(), contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", v.arch, 32), options=dict(v.options))
        v.shared_bytes = int(compiled.metadata.shared)
        v.extra["cubin_bytes"] = len(compiled.asm["cubin"])
        # Triton's own ptxas run (its flags, e.g. --regAllocOptLevel=2); ptxas -v again where no log came
        report = list(parse_ptxas(log.getvalue()).values())
        v.extra.update(report[0] if report else _ptxas_resources(compiled.asm["ptx"], v.arch))
        v.extra.update(dot_lowering(compiled.asm["ttgir"], compiled.asm["ptx"]))
        if "registers" in v.extra:
            v.extra["resident_warps"] = resident_warps(
                v.arch, v.extra["registers"], v.shared_bytes, int(v.options.get("num_warps", 4))
            )
        limit = SHARED_LIMIT_BYTES.get(v.arch)
        v.status = "shared-memory" if limit is not None and v.shared_bytes > limit else "ok"
    except Exception as err:  # noqa: BLE001 - reported per variant, the check goes on
        v.status, v.error = "error", f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
    v.seconds = round(time.perf_counter() - started, 2)
    return v


def resource_failures(v: Variant) -> list[str]:
    """What makes a compiled variant unfit for a GPU: spills beyond ``SPILL_BUDGET`` (every config the
    autotuner may pick runs at the launch's speed, so each one counts), no ptxas report, or a
    half-precision ``tl.dot`` that did not lower to tensor-core MMA instructions."""
    if v.status != "ok":
        return []
    name = f"{v.group} {v.options}"
    if "spill_stores" not in v.extra:
        return [f"{name}: no ptxas register report"]
    bad = []
    budget = SPILL_BUDGET[v.dtype] if v.kernel in ("fwd", "bwd") else 0
    spilled = max(v.extra["spill_stores"], v.extra["spill_loads"])
    if spilled > budget:
        bad.append(
            f"{name}: {v.extra['spill_stores']} B spill stores, {v.extra['spill_loads']} B spill loads "
            f"per thread (budget {budget} B)"
        )
    if (
        v.dtype != "fp32"
        and v.extra.get("dots", 0)
        and (v.extra["mma_dots"] < v.extra["dots"] or v.extra["mma_ptx"] == 0)
    ):
        bad.append(f"{name}: {v.extra['dots'] - v.extra['mma_dots']} of {v.extra['dots']} dots without MMA")
    return bad


def failures(results: list[Variant]) -> list[str]:
    """Compile errors, groups in which no config fits the target's shared memory, and every variant
    that spills or misses MMA (``resource_failures``)."""
    bad = [f"{v.group} {v.options}: {v.error}" for v in results if v.status == "error"]
    groups: dict[str, list[Variant]] = {}
    for v in results:
        groups.setdefault(v.group, []).append(v)
        bad += resource_failures(v)
    for name, members in groups.items():
        if not any(v.status == "ok" for v in members) and not any(v.status == "error" for v in members):
            bad.append(f"{name}: no config fits in {SHARED_LIMIT_BYTES[members[0].arch]} bytes of shared memory")
    return bad


def _print_row(i: int, total: int, v: Variant) -> None:
    shared = "-" if v.shared_bytes is None else f"{v.shared_bytes / 1024:.0f} KiB"
    e = v.extra
    regs = (
        f", {e['registers']} regs, {e.get('spill_stores', '?')}/{e.get('spill_loads', '?')} B spilled, "
        f"{e.get('mma_dots', 0)}/{e.get('dots', 0)} MMA dots, {e.get('resident_warps', '?')} warps/SM"
        if "registers" in e
        else ""
    )
    print(
        f"[{i}/{total}] {v.status:13s} {v.group:40s} {v.options} shared {shared}{regs} ({v.seconds}s)"
        + (f"\n    {v.error}" if v.error else ""),
        flush=True,
    )


def run(todo: list[Variant], jobs: int, show=_print_row) -> list[Variant]:
    """Compiles each distinct kernel of ``todo`` once (``compile_key``) and gives every variant its result."""
    unique: dict[tuple, Variant] = {}
    for v in todo:
        unique.setdefault(compile_key(v), v)
    firsts = list(unique.values())
    done = []
    # LLVM and ptxas are single-threaded: one process per core, spawned (not forked: triton state).
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        compiled = pool.map(compile_variant, firsts) if jobs > 1 else map(compile_variant, firsts)
        for i, v in enumerate(compiled, 1):
            done.append(v)
            show(i, len(firsts), v)
    by_key = {compile_key(v): v for v in done}
    results, timed = [], set()
    for v in todo:
        key = compile_key(v)
        r = by_key[key]
        seconds = r.seconds if key not in timed else 0.0  # the time counts once, on the first launch using it
        timed.add(key)
        results.append(
            Variant(
                v.kernel,
                v.shape,
                v.dtype,
                v.arch,
                v.constexprs,
                v.options,
                v.group,
                r.status,
                r.shared_bytes,
                seconds,
                r.error,
                dict(r.extra),
            )  # fmt: skip
        )
    return results


#: The subset CI compiles on every run (``--quick``, about a third of the full run): every mode, config,
#: kernel and target of GroupViT-S's two stages at 224 px (G=64 with N=196, not a multiple of 16, and
#: G=8), in bf16, the training dtype. The full run adds fp16, fp32 and the other shapes.
QUICK = {"shapes": ("stage0-224", "stage1-224"), "dtypes": ("bf16",)}


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
    parser.add_argument("--shape", nargs="+", choices=[s[0] for s in SHAPES], help="default: every shape")
    parser.add_argument("--mode", nargs="+", choices=sorted(MODES), help="default: every mode")
    parser.add_argument("--kernel", nargs="+", choices=sorted(_KERNELS), help="default: every kernel")
    parser.add_argument("--quick", action="store_true", help=f"CI's subset: shapes {', '.join(QUICK['shapes'])}")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="compiler processes (default: the CPU count, at most 4)",
    )
    args = parser.parse_args(argv)

    import triton

    shapes = QUICK["shapes"] if args.quick else args.shape
    dtypes = QUICK["dtypes"] if args.quick else args.dtype
    todo = variants(tuple(args.arch), tuple(dtypes), shapes=shapes, modes=args.mode)
    todo = [v for v in todo if not args.kernel or v.kernel in args.kernel]
    distinct = len({compile_key(v) for v in todo})
    print(
        f"triton {triton.__version__}: {len(todo)} kernel variants ({distinct} distinct) for "
        f"{', '.join(f'sm_{a}' for a in args.arch)} in {args.jobs} processes (no GPU needed)",
        flush=True,
    )
    started = time.perf_counter()
    results = run(todo, args.jobs)
    elapsed = time.perf_counter() - started
    bad = failures(results)
    if args.json:
        payload = {
            "triton": triton.__version__,
            "seconds": round(elapsed, 1),
            "results": [asdict(v) for v in results],
            "failures": bad,
        }
        atomic_write(args.json, lambda tmp: _write_text(tmp, json.dumps(payload, indent=1)))
    print(
        "FAILED:\n  " + "\n  ".join(bad)
        if bad
        else f"all {len(results)} variants compiled without spills beyond the budget, every half-precision dot "
        f"on MMA, every launch with a config that fits the target's shared memory ({elapsed:.0f} s)"
    )
    return 1 if bad else 0


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
