"""The required-backends contract of the test suite: ``GROUPVIT_FAST_REQUIRE``.

A test declares what it needs with ``@pytest.mark.requires(name, ...)`` (or a ``pytest.param`` with
that mark). Before it runs, tests/conftest.py asks :func:`availability` for each name:

* usable: the test runs;
* absent (the machine truly lacks it: no GPU, no nvcc, a package not installed): the test skips,
  with the reason in ``pytest -rs``;
* broken (installed but failing: an import error in our kernels, a stale extension, a compile
  error): the test skips with a reason that starts with ``BROKEN``;

and **fails** instead of skipping, in both cases, when the name is listed in the environment variable
``GROUPVIT_FAST_REQUIRE`` (comma-separated). CI requires everything a CPU machine can run; the GPU
check adds ``triton`` and ``cuda``. So a green run proves that each required backend ran.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest
import torch

from groupvit_fast.ops import BACKENDS, USABLE, Availability

REQUIRE_ENV = "GROUPVIT_FAST_REQUIRE"

#: What each name means; tests/README.md has the same table for people.
NAMES = {
    "cpu": "the cpu backend (compiled C++ extension, csrc/cpu/)",
    "triton-interpret": "the triton backend in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1)",
    "triton": "the triton backend on a CUDA device",
    "cuda": "the cuda backend (compiled CUDA C++, csrc/cuda/) on a CUDA device",
    "cuda-device": "any CUDA device (models and pipelines on the GPU)",
    "cuda-emulation": "the CUDA kernels compiled for the host with emulated threads (needs a C++ compiler, ninja)",
    "nvcc": "nvcc, to compile the CUDA kernels for sm_80/sm_90 and read ptxas' report",
    "triton-aot": "Triton's NVIDIA back end, to compile the Triton kernels ahead of time without a GPU",
}
#: Names that need a GPU: tests requiring them also get the ``gpu`` marker (``pytest -m gpu``).
GPU_NAMES = frozenset({"triton", "cuda", "cuda-device"})


def required() -> frozenset[str]:
    """The names listed in ``GROUPVIT_FAST_REQUIRE``; an unknown name is an error (a typo must not pass)."""
    names = frozenset(n.strip() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip())
    unknown = sorted(names - NAMES.keys())
    if unknown:
        raise ValueError(f"{REQUIRE_ENV}: unknown name(s) {unknown}; known: {sorted(NAMES)}")
    return names


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def nvcc_path() -> str | None:
    """nvcc of CUDA_HOME (default /usr/local/cuda), else the one on PATH, else None."""
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = os.path.join(home, "bin", "nvcc")
    return candidate if os.path.exists(candidate) else shutil.which("nvcc")


def _triton_aot() -> Availability:
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return Availability("absent", f"triton is not installed ({err})")
    try:
        from triton.backends import backends
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as err:
        return Availability("broken", f"this triton's compiler API is not the one compile_check uses ({err})")
    if "nvidia" not in backends:
        return Availability("absent", "this triton has no NVIDIA back end")
    return USABLE


@functools.cache
def availability(name: str) -> Availability:
    """Usable, absent or broken, for one contract name (cached for the session)."""
    if name == "cpu":
        return BACKENDS["cpu"].availability()
    if name == "triton-interpret":
        if not _interpreting():
            return Availability("absent", "TRITON_INTERPRET is not set (a GPU machine runs the kernels natively)")
        return BACKENDS["triton"].availability()
    if name == "triton":
        if _interpreting():
            return Availability("absent", "TRITON_INTERPRET=1: the kernels run in the interpreter, not on a GPU")
        return BACKENDS["triton"].availability()
    if name == "cuda":
        return BACKENDS["cuda"].availability()
    if name == "cuda-device":
        return USABLE if torch.cuda.is_available() else Availability("absent", "no CUDA device is visible")
    if name == "cuda-emulation":
        from cuda_emulation import build

        return build()[1]
    if name == "nvcc":
        return USABLE if nvcc_path() else Availability("absent", "nvcc not found (CUDA_HOME/bin or PATH)")
    if name == "triton-aot":
        return _triton_aot()
    raise ValueError(f"unknown requirement {name!r}; known: {sorted(NAMES)}")


def check(name: str) -> None:
    """Skip (absent / broken) or fail (listed in GROUPVIT_FAST_REQUIRE) unless ``name`` is usable."""
    status = availability(name)
    if status.usable:
        return
    what = f"{name}: {status.describe()}"
    if name in required():
        pytest.fail(f"required by {REQUIRE_ENV} but {what}", pytrace=False)
    pytest.skip(what)


def backend_requirement(backend: str, device: str) -> str | None:
    """The contract name a backend parameter needs on ``device`` (None for the reference)."""
    if backend == "triton":
        return "triton" if device == "cuda" else "triton-interpret"
    if backend in ("cpu", "cuda"):
        return backend
    return None


def requires(*names: str) -> pytest.MarkDecorator:
    """``@requires("cpu")``: the mark tests/conftest.py acts on."""
    for name in names:
        if name not in NAMES:
            raise ValueError(f"unknown requirement {name!r}; known: {sorted(NAMES)}")
    return pytest.mark.requires(*names)
