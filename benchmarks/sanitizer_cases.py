"""A few small assign_attention calls per GPU backend, for ``compute-sanitizer`` (memcheck, racecheck).

    compute-sanitizer --tool memcheck --error-exitcode 3 python benchmarks/sanitizer_cases.py
    python benchmarks/sanitizer_cases.py --backend cuda --list

Each case runs the forward (and in train mode the backward) of one backend on small inputs
that reach the kernels' edge paths: sizes that are not multiples of any block (G=5, N=37,
C=24), G=1, N=1, several heads, a strided (non-contiguous) q, bf16/fp16, ``return_attn`` and the
training mode with in-kernel Philox noise. fp32 results are compared with the reference backend
(same seed, hence the same noise), so a kernel that reads garbage fails here too, not only
under the sanitizer. Exit status: 0 all passed, 1 a case failed, 2 no GPU backend is usable.

Run it with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` under memcheck (gpu_check.sh does): PyTorch's
caching allocator hands out slices of larger blocks, and an out-of-bounds access that stays
inside a block is invisible to memcheck otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from groupvit_fast.ops import BACKENDS, AssignShape, assign_attention


@dataclass(frozen=True)
class Case:
    """One sanitizer call: the op's shape, dtype and mode, and the input layout it exercises."""

    name: str
    shape: AssignShape
    dtype: torch.dtype = torch.float32
    mode: str = "eval"  # eval | train | soft
    strided_q: bool = False
    return_attn: bool = False


CASES = (
    Case("odd-eval", AssignShape(2, 5, 37, 24)),
    Case("odd-train", AssignShape(2, 5, 37, 24), mode="train"),
    Case("odd-soft-attn", AssignShape(2, 5, 37, 24), mode="soft", return_attn=True),
    Case("one-group", AssignShape(1, 1, 17, 8), mode="train"),
    Case("one-token", AssignShape(3, 7, 1, 16), mode="train"),
    Case("heads-fp16", AssignShape(2, 8, 64, 48, heads=6), dtype=torch.float16, mode="train"),
    Case("strided-q", AssignShape(2, 9, 50, 32), mode="train", strided_q=True),
    Case("stage0-bf16", AssignShape(1, 64, 196, 384), dtype=torch.bfloat16, mode="train", return_attn=True),
    Case("stage1", AssignShape(2, 8, 64, 384), mode="train"),
)


def gpu_backends() -> dict[str, str | None]:
    """Each GPU backend and why it cannot run (None: usable)."""
    out = {}
    for name, backend in BACKENDS.items():
        if "cuda" in backend.devices:
            reason = backend.unavailable_reason()
            if reason is None and not torch.cuda.is_available():
                reason = "no CUDA device is visible"
            out[name] = reason
    return out


def _inputs(case: Case, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def make(*shape):
        return torch.randn(*shape, generator=gen, device="cuda").to(case.dtype)

    s = case.shape
    if case.strided_q:
        q = make(s.batch, 2 * s.groups, s.channels)[:, ::2]  # every other group: a strided view
    else:
        q = make(s.batch, s.groups, s.channels)
    k, v = make(s.batch, s.tokens, s.channels), make(s.batch, s.tokens, s.channels)
    return q, k, v


def _call(case: Case, backend: str):
    q, k, v = _inputs(case)
    train = case.mode == "train"
    if train:
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    result = assign_attention(
        q,
        k,
        v,
        num_heads=case.shape.heads,
        hard=case.mode != "soft",
        gumbel=train,
        seed=1234,
        return_attn=case.return_attn,
        backend=backend,
    )
    out, attn = result if case.return_attn else (result, None)
    tensors = [out]
    if attn is not None:
        tensors += [attn["hard"], attn["soft"]]
    if train:
        grad_out = torch.randn(out.shape, generator=torch.Generator(device="cuda").manual_seed(5), device="cuda")
        tensors += list(torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype)))
    torch.cuda.synchronize()
    return [t.detach().float() for t in tensors]


def run_case(case: Case, backend: str) -> str | None:
    """Runs one case; returns None on success, else what went wrong."""
    try:
        got = _call(case, backend)
    except Exception as err:  # noqa: BLE001 - any failure of a case is reported, the others still run
        return f"{type(err).__name__}: {err}"
    if not all(bool(t.isfinite().all()) for t in got):
        return "non-finite values"
    if case.dtype == torch.float32:
        want = _call(case, "reference")
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            err = (a - b).abs().max().item()
            if err > 1e-3 * (1 + b.abs().max().item()):
                return f"output {i} differs from the reference by {err:.3g}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", help="GPU backend(s) to run (default: every usable one)")
    parser.add_argument("--case", action="append", help="only these case names")
    parser.add_argument("--list", action="store_true", help="list backends and cases, run nothing")
    args = parser.parse_args(argv)
    status = gpu_backends()
    backends = args.backend or [name for name, reason in status.items() if reason is None]
    cases = [c for c in CASES if not args.case or c.name in args.case]
    if args.list:
        for name, reason in status.items():
            print(f"backend {name}: {'usable' if reason is None else reason}")
        for c in cases:
            print(
                f"case {c.name}: {c.shape.dims()} {c.dtype} {c.mode}"
                + (" strided q" if c.strided_q else "")
                + (" return_attn" if c.return_attn else "")
            )
        return 0
    if not backends:
        print("sanitizer_cases: no GPU backend is usable: " + "; ".join(f"{n}: {r}" for n, r in status.items()))
        return 2
    failures = 0
    for backend in backends:
        if status.get(backend):
            print(f"FAIL {backend}: not usable: {status[backend]}")
            failures += 1
            continue
        for case in cases:
            start = time.perf_counter()
            problem = run_case(case, backend)
            took = time.perf_counter() - start
            print(
                f"{'ok  ' if problem is None else 'FAIL'} {backend} {case.name} ({took:.1f} s)"
                + ("" if problem is None else f": {problem}"),
                flush=True,
            )
            failures += problem is not None
    print(f"sanitizer_cases: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
