"""Measurements of one call: time (interleaved, CUDA events or ``perf_counter``), peak memory,
bytes saved for backward, the device's copy bandwidth and matmul rate, and the error against a
reference.

Timing rules (docs/benchmarks.md): warm-up calls first; on a GPU every call is timed with CUDA
events around it and the L2 cache is flushed before it (so the memory-bound kernels are not
flattered); on the CPU ``time.perf_counter`` around each call. The number of calls fills a time
budget per measurement, and the implementations of one problem take turns call by call, so a
change of machine load hits them alike.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "L2Flush",
    "copy_bandwidth",
    "matmul_throughput",
    "measure_interleaved",
    "measure_time",
    "peak_memory",
    "rel_error",
    "saved_bytes",
]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _stats(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(1e3 * s for s in seconds)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "median_ms": statistics.median(ms),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": ms[0],
        "reps": len(ms),
    }


class L2Flush:
    """Overwrites a buffer larger than the L2 cache (50 MB on H100) before each timed GPU call."""

    def __init__(self, device: str):
        self.buffer = torch.empty(256 * 2**20, dtype=torch.int8, device=device) if device == "cuda" else None

    def __call__(self) -> None:
        if self.buffer is not None:
            self.buffer.zero_()


def measure_interleaved(
    fns: dict[Any, Callable[[], Any]],
    device: str,
    *,
    budget_s: float = 0.5,
    min_reps: int = 5,
    max_reps: int = 200,
    warmup_s: float | None = None,
    flush: L2Flush | None = None,
) -> dict[Any, dict[str, Any] | Exception]:
    """Times several implementations of one case, interleaved: ``{name: stats or the exception}``.

    Warm-up per function: one call (which compiles and autotunes what needs it), then at least one
    more and ``warmup_s`` (default: a quarter of the budget) of calls to estimate the time of one.
    Each gets as many timed calls as fill ``budget_s`` (bounded by ``min_reps``, ``max_reps``), and
    the calls alternate between the functions (rotating the order each round), so that a change
    in machine load during the measurement (other jobs on a shared CPU) hits them all alike and
    their ratio stays meaningful. GPU: CUDA events around each call, an L2 flush before it, one
    synchronisation at the end (the host runs ahead: the events time the GPU work). CPU:
    ``time.perf_counter`` around each call. Stats: median, quartiles, IQR and min in ms.
    """
    warmup_s = budget_s / 4 if warmup_s is None else warmup_s
    results: dict[Any, dict[str, Any] | Exception] = {}
    reps: dict[Any, int] = {}
    for name, fn in fns.items():
        try:
            fn()  # may compile or autotune: not part of the estimate
            _sync(device)
            calls, start = 0, time.perf_counter()
            while calls < 1 or time.perf_counter() - start < warmup_s:
                fn()
                _sync(device)
                calls += 1
            per_call = (time.perf_counter() - start) / calls
            reps[name] = int(max(min_reps, min(max_reps, budget_s / max(per_call, 1e-6))))
        except Exception as err:  # noqa: BLE001 - reported per implementation by the caller
            results[name] = err
    flush = flush or L2Flush(device)
    times: dict[Any, list[float]] = {name: [] for name in reps}
    events: list[tuple[Any, Any, Any]] = []
    order = list(reps)
    for round_ in range(max(reps.values(), default=0)):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            if round_ >= reps[name] or name in results:
                continue
            try:
                if device == "cuda":
                    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    flush()
                    begin.record()
                    fns[name]()
                    end.record()
                    events.append((name, begin, end))
                else:
                    t0 = time.perf_counter()
                    fns[name]()
                    times[name].append(time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001
                results[name] = err
    if device == "cuda":
        torch.cuda.synchronize()
        for name, begin, end in events:
            times[name].append(begin.elapsed_time(end) / 1e3)
    for name, seconds in times.items():
        if name not in results:
            results[name] = _stats(seconds)
    return results


def measure_time(fn: Callable[[], Any], device: str, **kwargs: Any) -> dict[str, Any]:
    """``measure_interleaved`` of one function: its stats (raises what ``fn`` raised)."""
    result = measure_interleaved({"fn": fn}, device, **kwargs)["fn"]
    if isinstance(result, Exception):
        raise result
    return result


@contextlib.contextmanager
def _quiet_stderr():
    """Silences file descriptor 2 (the profiler's native code prints start/stop lines there that
    no log level turns off); Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak growth of memory allocated through PyTorch's CPU allocator during ``fn()``.

    No tracemalloc (it sees Python objects, not tensor buffers): the profiler records every
    allocation and free of the c10 CPU allocator with its size; their running sum in time order
    peaks at the answer. Returns None when this torch's profiler does not expose the events.
    """
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
    except AttributeError:
        return None
    sizes = []
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            sizes.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    current = peak = 0
    for _, size in sorted(sizes):
        current += size
        peak = max(peak, current)
    return peak


def peak_memory(fn: Callable[[], Any], device: str) -> int | None:
    """Bytes allocated at the peak of one call of ``fn`` above what was allocated before it:
    ``torch.cuda.max_memory_allocated`` delta on a GPU, the CPU allocator's events on the CPU."""
    if device != "cuda":
        return _cpu_peak_bytes(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del result
    return peak


def saved_bytes(forward: Callable[[], Any], owned: set[int] = frozenset()) -> tuple[int, int]:
    """``(all, extra)``: bytes of the unique storages autograd saves for backward during ``forward()``.

    Every tensor that ``save_for_backward`` (or a built-in op) stores passes through the pack hook
    of ``torch.autograd.graph.saved_tensors_hooks``; views of one buffer count once (unique
    storages). ``extra`` leaves out the storages in ``owned`` (inputs, parameters), which exist
    anyway: it is the memory a training step holds because of the forward.
    """
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    del result
    total = sum(storages.values())
    extra = sum(n for ptr, n in storages.items() if ptr not in owned)
    return total, extra


def copy_bandwidth(device: str, nbytes: int | None = None) -> float:
    """Device copy bandwidth in GB/s: read + write bytes of a large ``copy_`` / median time."""
    nbytes = nbytes or (1 << 30 if device == "cuda" else 1 << 28)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    stats = measure_time(lambda: dst.copy_(src), device, budget_s=0.3, min_reps=5, max_reps=50, flush=L2Flush("cpu"))
    return 2 * nbytes / (stats["median_ms"] / 1e3) / 1e9


def matmul_throughput(device: str, n: int = 1024) -> float | None:
    """fp32 GFLOP/s of a square ``n x n`` ``torch.mm`` (median time), on the CPU only: the compute
    ceiling of the CPU op cases, which are compute-bound (see ``_op_record``)."""
    if device != "cpu":
        return None
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    stats = measure_time(lambda: torch.mm(a, b, out=out), device, budget_s=0.5, min_reps=5, max_reps=50)
    return 2 * n**3 / (stats["median_ms"] / 1e3) / 1e9


def rel_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """max over the tensors of ||got - want|| / ||want|| in float64."""
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        a, b = a.detach().double(), b.detach().double()
        denom = b.norm().item() or 1.0
        worst = max(worst, (a - b).norm().item() / denom)
    return worst
