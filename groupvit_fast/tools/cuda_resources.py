"""Registers, spills, shared memory and occupancy of the CUDA C++ kernels (csrc/cuda/*.cu), from
``nvcc -Xptxas -v``, for the same report as the Triton kernels (tools: compile_check, kernel_report).

The .cu files are torch-free (CUDA headers only), so nvcc alone compiles them in seconds; no GPU.
Every kernel there runs 256 threads (``kThreads``, 8 warps) per block. Their shared memory is
dynamic, sized by G at launch: the occupancy here counts registers and static shared memory only.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile

from .compile_check import parse_ptxas
from .occupancy import resident_warps

#: Threads per block of every CUDA C++ kernel (``kThreads`` in csrc/cuda/assign_attention_kernels.cu).
CUDA_WARPS = 8

_SMEM = re.compile(
    r"Compiling entry function '(\w+)'[\s\S]*?Used \d+ registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?"
)


_TYPES = {"f": "float", "13__nv_bfloat16": "bf16", "6__half": "fp16"}


def readable(mangled: str) -> str:
    """``forward_kernel<bf16>`` for the mangled name of ``forward_kernel<__nv_bfloat16>`` (no c++filt
    needed): the length-prefixed name that ends in ``_kernel``, and its template argument."""
    for i in range(len(mangled)):  # every start: the length prefix may follow other digits ("...614forward")
        m = re.match(r"(\d{1,2})([A-Za-z_]\w*?_kernel)(?=[IE])", mangled[i:])
        if m and len(m.group(2)) == int(m.group(1)):
            arg = re.match(r"I(\w+?)E", mangled[i + m.end() :])
            return f"{m.group(2)}<{_TYPES.get(arg.group(1), arg.group(1))}>" if arg else m.group(2)
    return mangled


def _csrc() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")


def cuda_resources(arch: int, nvcc: str | None = None) -> list[dict]:
    """One row per kernel of csrc/cuda/*.cu compiled for ``sm_{arch}``: name, registers, spill stores and
    loads, static shared bytes and resident warps per SM."""
    nvcc = nvcc or shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    csrc = _csrc()
    rows = []
    for source in sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu"))):
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [nvcc, "-cubin", f"-arch=sm_{arch}", "-O3", "-std=c++17", "-Xptxas", "-v", f"-I{csrc}", source]
                + ["-o", os.path.join(tmp, "kernels.cubin")],
                capture_output=True,
                text=True,
                timeout=600,
            )
        if proc.returncode:
            raise RuntimeError(f"nvcc failed on {source}: {proc.stderr[-2000:]}")
        log = proc.stdout + proc.stderr
        smem = {m.group(1): int(m.group(2) or 0) for m in _SMEM.finditer(log)}
        for name, info in parse_ptxas(log).items():
            shared = smem.get(name, 0)
            rows.append(
                {
                    "source": os.path.relpath(source, os.path.dirname(csrc)),
                    "kernel": readable(name),
                    "arch": arch,
                    "registers": info.get("registers", 0),
                    "spill_stores": info.get("spill_stores", 0),
                    "spill_loads": info.get("spill_loads", 0),
                    "static_shared": shared,
                    "resident_warps": resident_warps(arch, info.get("registers", 0), shared, CUDA_WARPS),
                }
            )
    return rows
