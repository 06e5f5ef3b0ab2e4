"""Builds the host emulation of the CUDA kernels (csrc/cuda/emulation/): the unchanged
csrc/cuda/assign_attention_kernels.cu compiled as C++ with emulated threads and blocks, exposed as
``torch.ops.groupvit_fast_cuda_emulation``. It needs a host C++ compiler and ninja, not the built
extension nor a GPU.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil

import torch

from groupvit_fast.ops import USABLE, Availability
from paths import CSRC

ENTRY = CSRC / "cuda" / "emulation" / "emulated_ops.cpp"


def _sources_digest() -> str:
    # every header the entry point may include: torch caches builds by name, not by included headers.
    # The torch version is part of it: torch's build folder is per Python and CUDA version only, and
    # torch releases lock it differently (2.14 leaves its lock file behind, which 2.11's waits on for
    # ever), so two torch versions must never share one folder.
    files = sorted(p for p in CSRC.rglob("*") if p.suffix in (".h", ".cu", ".cpp", ".cuh"))
    content = b"".join(p.read_bytes() for p in files) + torch.__version__.encode()
    return hashlib.sha256(content).hexdigest()[:12]


@functools.cache
def build() -> tuple[object | None, Availability]:
    """``(torch.ops.groupvit_fast_cuda_emulation or None, availability)``, built once per process."""
    from torch.utils import cpp_extension

    if not ENTRY.exists():
        return None, Availability("absent", f"{ENTRY} is not next to the tests (installed package)")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return None, Availability("absent", f"no host C++ compiler ({compiler!r} not on PATH)")
    if not cpp_extension.is_ninja_available():
        return None, Availability("absent", "ninja is not installed (pip install ninja)")
    try:
        cpp_extension.load(
            name=f"gvf_cuda_emulation_{_sources_digest()}",
            sources=[str(ENTRY)],
            extra_include_paths=[str(CSRC)],
            extra_cflags=["-O2"],
            is_python_module=False,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as err:  # a compiler is there: the sources do not build
        return None, Availability("broken", f"the CUDA emulation does not build: {str(err)[-2000:]}")
    return torch.ops.groupvit_fast_cuda_emulation, USABLE
