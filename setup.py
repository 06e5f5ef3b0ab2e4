"""Build groupvit_fast: the Python package, the Triton kernels and the C++/CUDA extension.

    pip install --no-build-isolation -e .

builds ``groupvit_fast._C`` from csrc/ against the installed torch (as FlashAttention and
torchvision do: hence ``--no-build-isolation``). With a CPU-only torch only the CPU kernels are
compiled; with a CUDA torch and nvcc the CUDA kernels too. Environment:

* ``MAX_JOBS``: parallel compile jobs (ninja), default: the number of cores.
* ``TORCH_CUDA_ARCH_LIST``: CUDA archs, default: those of the visible GPUs, else ``8.0;9.0``.
* ``GROUPVIT_FAST_BUILD_CUDA=0``: skip the CUDA kernels even with a CUDA torch.
* ``GROUPVIT_FAST_SKIP_EXTENSION=1``: build no extension at all (pure-Python install).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()
BUILD_INFO = Path("groupvit_fast") / "_build_info.json"


def _nvidia_include_dirs() -> list[str]:
    """CUDA headers that ship in pip wheels (ATen/cuda/CUDAContext.h pulls in cusparse.h)."""
    dirs = []
    for entry in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cusparse/include", "nvidia/cublas/include"):
            candidate = Path(entry) / sub
            if candidate.is_dir():
                dirs.append(str(candidate))
    return sorted(set(dirs))


def _extensions():
    if os.environ.get("GROUPVIT_FAST_SKIP_EXTENSION", "0") not in ("", "0"):
        print("groupvit_fast: GROUPVIT_FAST_SKIP_EXTENSION set: building no C++ extension")
        return [], {}, None
    if not os.environ.get("CUDA_HOME") and Path("/usr/local/cuda/bin/nvcc").exists():
        # torch guesses CUDA_HOME from `which nvcc`; with nvcc linked into /usr/local/bin it picks
        # /usr/local, where libcudart is missing. The toolkit's own folder is the right answer.
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cpu_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    cpu_sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    cuda_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.c*"))
    if not cpu_sources:
        print("groupvit_fast: no C++ sources in csrc/: building no extension")
        return [], {}, None

    want_cuda = os.environ.get("GROUPVIT_FAST_BUILD_CUDA", "1") not in ("", "0")
    with_cuda = bool(want_cuda and torch.version.cuda and CUDA_HOME and cuda_sources)
    if not with_cuda:
        why = (
            "GROUPVIT_FAST_BUILD_CUDA=0"
            if not want_cuda
            else "torch is a CPU-only build"
            if not torch.version.cuda
            else "no CUDA toolkit found (set CUDA_HOME)"
            if not CUDA_HOME
            else "no CUDA sources"
        )
        print(f"groupvit_fast: skipping the CUDA kernels ({why}); building the CPU kernels only")

    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        archs = set()
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                archs.add(f"{major}.{minor}")
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(sorted(archs)) or "8.0;9.0"
        print(f"groupvit_fast: TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")

    cxx_flags = ["-O3", "-fopenmp"]  # the C++ standard comes from torch (C++20 for torch >= 2.13)
    define_macros = [("WITH_CUDA", None)] if with_cuda else []
    if with_cuda:
        ext = CUDAExtension(
            "groupvit_fast._C",
            sources=cpu_sources + cuda_sources,
            include_dirs=[str(ROOT / "csrc")] + _nvidia_include_dirs(),
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "groupvit_fast._C",
            sources=cpu_sources,
            include_dirs=[str(ROOT / "csrc")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    info = {
        "torch_version": torch.__version__,
        "with_cuda": with_cuda,
        "cuda_version": torch.version.cuda,
        "cuda_archs": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
    }

    class BuildExtensionWithInfo(BuildExtension.with_options(use_ninja=True)):
        """Records the torch the extension is built against, so a mismatch is caught at import."""

        def run(self):
            super().run()
            text = json.dumps(info, indent=1) + "\n"
            (ROOT / BUILD_INFO).write_text(text)  # editable installs read it from the source tree
            built = Path(self.build_lib) / BUILD_INFO
            if built.parent.is_dir():
                built.write_text(text)

    return [ext], {"build_ext": BuildExtensionWithInfo}, info


ext_modules, cmdclass, _info = _extensions()

# Name, version, dependencies, extras, packages and the console script live in pyproject.toml.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
