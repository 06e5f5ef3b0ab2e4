"""Build groupvit_fast: the Python package, the Triton kernels and the C++/CUDA extension.

    pip install --no-build-isolation -e .

builds ``groupvit_fast._C`` from csrc/ against the installed torch (as FlashAttention and
torchvision do: hence ``--no-build-isolation``). With a CPU-only torch only the CPU kernels are
compiled; with a CUDA torch and nvcc the CUDA kernels too. Environment:

* ``MAX_JOBS``: parallel compile jobs (ninja), default: the number of cores.
* ``TORCH_CUDA_ARCH_LIST``: CUDA archs, default: those of the visible GPUs, else ``8.0;9.0``.
* ``GROUPVIT_FAST_BUILD_CUDA=0``: skip the CUDA kernels even with a CUDA torch.
* ``GROUPVIT_FAST_SKIP_EXTENSION=1``: build no extension at all (pure-Python install).
* ``CXX`` (and ``CC``, ``LDSHARED``): the compiler, e.g. ``CXX=clang++``; GCC and clang are built
  in CI, on x86-64 and (cross-compiled) aarch64.

OpenMP: where torch threads with OpenMP, ``-fopenmp`` if the compiler has it (``at::parallel_for``
is inline: its threads are compiled into the extension), else a one-thread build with a warning
(Apple's clang without libomp); ``-fopenmp-simd`` for the kernels' ``#pragma omp simd`` needs no
runtime. See docs/cpu_backend.md, "Building".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
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


_OMP_PROBE = """
#include <omp.h>
int main() {
  int n = 0;
#pragma omp parallel
  {
#pragma omp atomic
    n += omp_get_num_threads() > 0;
  }
  return n > 0 ? 0 : 1;
}
"""


def _compiler_accepts(compiler: str, flags: list[str], source: str = "int main() { return 0; }\n") -> bool:
    """Whether ``compiler`` compiles and links ``source`` with ``flags`` (as pybind11's has_flag does)."""
    if shutil.which(compiler.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text(source)
        cmd = compiler.split() + flags + ["-Werror", str(src), "-o", str(Path(tmp) / "probe")]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _cpu_flags(torch) -> tuple[list[str], list[str], str]:
    """``(compile flags, link flags, threading)`` for the C++ compiler torch's BuildExtension runs.

    ``at::parallel_for`` is an inline template: with torch's OpenMP builds (the Linux and macOS
    wheels) its threads are the ``#pragma omp parallel`` compiled into *our* object, so the
    extension needs the compiler's OpenMP (libgomp, the runtime torch itself loads, on Linux)
    or the op silently runs on one thread. Where the compiler has none (Apple's clang without a
    libomp), it still builds, on one thread, and says so; the kernels' ``#pragma omp simd`` needs
    no runtime (``-fopenmp-simd``). docs/cpu_backend.md, "Building".
    """
    if sys.platform == "win32":
        # MSVC: no switch enables `omp simd` alone (/openmp enables all of OpenMP 2.0 and links
        # vcomp), so the pragmas are left to the auto-vectoriser and their warning is silenced.
        return ["/O2", "/openmp", "/wd4068"], [], "openmp"
    compiler = os.environ.get("CXX", "c++")
    flags = ["-O3"]  # the C++ standard comes from torch (C++20 for torch >= 2.13)
    if not torch._C.has_openmp:  # torch's native thread pool: parallel_for needs nothing from us
        omp = []
        threading = "native"
    else:
        candidates = [["-fopenmp"]]
        if sys.platform == "darwin":  # Apple's clang: the driver only passes it through (libomp)
            candidates.append(["-Xpreprocessor", "-fopenmp", "-lomp"])
        omp = next((c for c in candidates if _compiler_accepts(compiler, c, _OMP_PROBE)), None)
        threading = "openmp"
        if omp is None:
            print(
                f"groupvit_fast: WARNING: {compiler} has no usable OpenMP (no omp.h or runtime): the CPU "
                "kernels will run on ONE thread (install libomp / use GCC for threads)"
            )
            omp, threading = [], "serial"
    if not omp:
        if _compiler_accepts(compiler, ["-fopenmp-simd"]):
            omp = ["-fopenmp-simd"]  # `#pragma omp simd` without the OpenMP runtime
        else:
            flags.append("-Wno-unknown-pragmas")
    link = [f for f in omp if f.startswith("-l") or f == "-fopenmp"]
    return flags + [f for f in omp if not f.startswith("-l")], link, threading


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

    cxx_flags, link_flags, threading = _cpu_flags(torch)
    define_macros = [("WITH_CUDA", None)] if with_cuda else []
    if with_cuda:
        ext = CUDAExtension(
            "groupvit_fast._C",
            sources=cpu_sources + cuda_sources,
            include_dirs=[str(ROOT / "csrc")] + _nvidia_include_dirs(),
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            "groupvit_fast._C",
            sources=cpu_sources,
            include_dirs=[str(ROOT / "csrc")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    info = {
        "torch_version": torch.__version__,
        "with_cuda": with_cuda,
        "cuda_version": torch.version.cuda,
        "cuda_archs": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
        "cpu_threading": threading,
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
