"""``python -m groupvit_fast.bench``: measure groupvit_fast against its baselines and write a report.

Runs the cases of ``benchmarks/cases.py`` (the same definitions the pytest-benchmark suites use)
for one device and writes ``<out>/<device>-<date>.{md,json,png}``:

* at the top: device, versions (torch, triton, CUDA, driver), date, git commit, machine load;
* per op case (shape x mode x dtype x implementation): median time and IQR, speed-up against
  the eager reference and against ``torch.compile(reference)``, achieved bandwidth over the
  minimum bytes the op must move and, on a GPU, the fraction of the roofline floor (bytes /
  time / device copy bandwidth measured in the same run), peak memory, bytes saved for backward
  and the error against a float64 reference;
* per model case (GroupViT eval forward and training step, the image-text model's training
  step): images/s, speed-ups, peak memory, saved bytes, error against the fp32 reference model;
* a PNG of speed-up against N for the stage-0 shapes.

Timing rules (docs/benchmarks.md): warm-up calls first; on a GPU every call is timed with CUDA
events around it and the L2 cache is flushed before it (so the memory-bound kernels are not
flattered); on the CPU ``time.perf_counter`` around each call. The number of calls fills a time
budget per measurement, and the implementations and dtypes of one problem take turns call by
call (``measure_interleaved``), so a change of machine load hits them alike. All comparisons
are ratios within one run.

Options: ``--quick`` (a subset), ``--smoke`` (tiny CPU cases: CI), ``--device``, ``--dtype``,
``--filter REGEX`` (over ``<case id>/<impl>``, e.g. ``'stage0-224/train.*(reference|cpu)'``),
``--out DIR``, ``--max-minutes`` (skip the rest, and say so, past a time budget), ``--render
JSON`` (re-write the markdown and the PNG from a JSON report, e.g. where matplotlib is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["copy_bandwidth", "environment", "load_cases", "main", "measure_interleaved", "measure_time", "peak_memory",
           "render_markdown", "run_tier", "saved_bytes", "write_report"]

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES_FILE = REPO_ROOT / "benchmarks" / "cases.py"
_CASES_MODULE = "groupvit_fast_benchmark_cases"
SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------
# The case definitions
# --------------------------------------------------------------------------------------------


def load_cases(path: str | os.PathLike | None = None):
    """The module ``benchmarks/cases.py``, loaded by path (it is not part of the installed package:
    the benchmarks live in the source tree) and registered once in ``sys.modules``."""
    if _CASES_MODULE in sys.modules:
        return sys.modules[_CASES_MODULE]
    path = Path(path or os.environ.get("GROUPVIT_FAST_BENCH_CASES", CASES_FILE))
    if not path.is_file():
        raise SystemExit(f"groupvit_fast.bench: the benchmark cases {path} are not there; run from a source checkout "
                         "of groupvit_fast (pip install -e .) or set GROUPVIT_FAST_BENCH_CASES")
    spec = importlib.util.spec_from_file_location(_CASES_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_CASES_MODULE] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_CASES_MODULE]
        raise
    return module


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _stats(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(1e3 * s for s in seconds)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1, "min_ms": ms[0],
            "reps": len(ms)}


class _L2Flush:
    """Overwrites a buffer larger than the L2 cache (50 MB on H100) before each timed GPU call."""

    def __init__(self, device: str):
        self.buffer = torch.empty(256 * 2**20, dtype=torch.int8, device=device) if device == "cuda" else None

    def __call__(self) -> None:
        if self.buffer is not None:
            self.buffer.zero_()


def measure_interleaved(fns: dict[Any, Callable[[], Any]], device: str, *, budget_s: float = 0.5, min_reps: int = 5,
                        max_reps: int = 200, warmup_s: float | None = None,
                        flush: _L2Flush | None = None) -> dict[Any, dict[str, Any] | Exception]:
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
    flush = flush or _L2Flush(device)
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


def measure_time(fn: Callable[[], Any], device: str, **kwargs) -> dict[str, Any]:
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
    stats = measure_time(lambda: dst.copy_(src), device, budget_s=0.3, min_reps=5, max_reps=50,
                         flush=_L2Flush("cpu"))
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
    for a, b in zip(got, want):
        a, b = a.detach().double(), b.detach().double()
        denom = b.norm().item() or 1.0
        worst = max(worst, (a - b).norm().item() / denom)
    return worst


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    """Installed version, read from the package metadata (importing transformers takes seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    """Device, versions, date, git commit and machine load, for the top of a report."""
    from . import __version__
    from .ops import backend_table

    meta: dict[str, Any] = {
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),  # noqa: UP017 (Python 3.10)
        "git_commit": _run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])),
        "versions": {
            "groupvit_fast": __version__, "torch": torch.__version__, "triton": _version("triton"),
            "cuda": torch.version.cuda, "driver": None, "python": platform.python_version(),
            "transformers": _version("transformers"),
        },
        "cpu": _cpu_name(), "cpu_threads": torch.get_num_threads(), "os_cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backends": {name: status for name, _devices, status in backend_table()},
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta["device_name"] = props.name
        meta["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        meta["sm_count"] = props.multi_processor_count
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        if driver is None:
            try:
                driver = Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
            except (OSError, IndexError):
                driver = None
        meta["versions"]["driver"] = driver.splitlines()[0] if driver else None
    else:
        meta["device_name"] = meta["cpu"]
    return meta


def device_slug(meta: dict[str, Any]) -> str:
    if meta["device"] != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", meta["device_name"].lower()).strip("-")


# --------------------------------------------------------------------------------------------
# Running a tier
# --------------------------------------------------------------------------------------------


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not enabled:
        class _Quiet:
            def update(self, n=1):
                pass

            def set_description_str(self, s):
                pass

            def close(self):
                pass

            @staticmethod
            def write(s):
                print(s, file=sys.stderr)

        return _Quiet()
    return tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _memory(runner, device: str) -> dict[str, Any]:
    stats: dict[str, Any] = {"peak_mem_bytes": peak_memory(runner.fn, device), "saved_bytes": None,
                             "saved_extra_bytes": None}
    if runner.forward_for_saved is not None:
        stats["saved_bytes"], stats["saved_extra_bytes"] = saved_bytes(runner.forward_for_saved,
                                                                       runner.owned_storages)
    return stats


def _why(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"failed: {type(err).__name__}: {text}"[:300]


def _comparison_groups(items):
    """``[[(case, impl), ...], ...]``: the items measured together (interleaved), in the order of
    their first appearance. A group is one problem (``case.group``: shape, batch and mode, or
    model, task and batch) in every dtype and implementation, so that the speed-ups against the
    reference, the compiled reference and fp32 are all ratios of interleaved measurements."""
    groups: dict[str, list] = {}
    for case, impl in items:
        groups.setdefault(case.group, []).append((case, impl))
    return list(groups.values())


def _op_record(cases, case, impl, stats, runner, copy_bw, device, matmul_gflops=None) -> dict[str, Any]:
    s = case.shape
    record = {"kind": "op", "case": case.id, "shape": s.name, "scaled_from": case.scaled_from, "B": s.batch,
              "G": s.groups, "N": s.tokens, "C": s.channels, "heads": s.heads, "mode": case.mode.name,
              "dtype": case.dtype, "impl": impl, "backend": runner.backend, **stats}
    seconds = stats["median_ms"] / 1e3
    record["min_bytes"] = s.min_bytes(case.mode, case.torch_dtype)
    record["achieved_gbs"] = record["min_bytes"] / seconds / 1e9
    record["tflops"] = s.flops(case.mode) / seconds / 1e12
    # The floor. GPU: the roofline of docs/benchmarks.md, min bytes / measured copy bandwidth. CPU:
    # these shapes are compute-bound (about 48 FLOP/byte against about 10 for a CPU), so the floor is
    # the matmul work a fused kernel cannot avoid (OpShape.fused_flops) at the fp32 matmul rate
    # measured in the same run: no kernel under the memory contract can be faster than that.
    if device == "cuda":
        record["floor_kind"] = "bandwidth"
        record["floor_ms"] = record["min_bytes"] / (copy_bw * 1e9) * 1e3
    elif matmul_gflops:
        record["floor_kind"] = "compute"
        record["fused_flops"] = s.fused_flops(case.mode)
        record["floor_ms"] = record["fused_flops"] / (matmul_gflops * 1e9) * 1e3
    else:
        record["floor_kind"] = record["floor_ms"] = None
    record["roofline_fraction"] = record["floor_ms"] / stats["median_ms"] if record["floor_ms"] else None
    record["rel_error"] = None
    if runner.outputs is not None:  # (not for compiled: another signature, another compile)
        try:
            want = cases.op_outputs(case, "reference", device, compute_dtype=torch.float64)
            record["rel_error"] = rel_error(runner.outputs(), want)
            record["error_vs"] = "float64 reference, same inputs and noise"
        except Exception as err:  # noqa: BLE001 - a failing check must not lose the timing
            record["error_note"] = f"{type(err).__name__}: {err}"
    return record


def _model_record(case, impl, stats, runner, bank) -> dict[str, Any]:
    record = {"kind": "model", "case": case.id, "config": case.config, "task": case.task, "batch": case.batch,
              "dtype": case.dtype, "impl": impl, "backend": runner.backend, **stats}
    record["images_per_s"] = case.batch / (stats["median_ms"] / 1e3)
    record["rel_error"] = None
    if runner.error is not None:  # segmentation: label disagreement with the reference pipeline
        record["rel_error"] = runner.error()
        record["error_vs"] = runner.error_vs
    elif runner.outputs is not None:
        record["rel_error"] = rel_error(runner.outputs(), [bank.reference_output(case.batch)])
        record["error_vs"] = "fp32 eager reference model, same weights and images"
    return record


def _add_ratios(records: list[dict[str, Any]], key_fields: tuple[str, ...], ref_impl: str, compiled_impl: str,
                dtype_field: str = "dtype") -> None:
    """Speed-ups as ratios of medians within this run: vs the eager reference, vs the compiled
    reference, and (for a lower-precision dtype) vs the same implementation in fp32."""
    by_key = {(tuple(r[f] for f in key_fields), r["impl"]): r for r in records}
    for r in records:
        key = tuple(r[f] for f in key_fields)
        for name, other in (("speedup_vs_reference", by_key.get((key, ref_impl))),
                            ("speedup_vs_compiled", by_key.get((key, compiled_impl)))):
            r[name] = other["median_ms"] / r["median_ms"] if other else None
        fp32_key = tuple("fp32" if f == dtype_field else r[f] for f in key_fields)
        fp32 = by_key.get((fp32_key, r["impl"])) if r[dtype_field] != "fp32" else None
        r["speedup_vs_fp32"] = fp32["median_ms"] / r["median_ms"] if fp32 else None


def run_tier(tier, *, pattern: str | None = None, dtypes: tuple[str, ...] | None = None,
             max_minutes: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every (case, implementation) of ``tier``; returns the report's JSON object."""
    cases = load_cases()
    device = tier.device
    started = time.perf_counter()
    meta = environment(device)
    meta["tier"] = tier.name
    meta["copy_bandwidth_gbs"] = copy_bandwidth(device)
    meta["matmul_gflops"] = matmul_throughput(device)
    flush = _L2Flush(device)
    items = list(tier.items(pattern, dtypes))
    op_records, model_records, skipped = [], [], []
    banks: dict[str, Any] = {}
    bar = _progress(len(items), progress)
    for group in _comparison_groups(items):
        bar.set_description_str(group[0][0].group)
        runners = {}
        for case, impl in group:
            why = cases.impl_unavailable(impl, device)
            if why is None and max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
                why = f"time budget of {max_minutes:g} min spent"
            if why is not None:
                skipped.append({"case": case.id, "impl": impl, "reason": why})
                continue
            try:  # out of memory, a backend refusing a shape...: record it, go on
                if case.id.startswith("op/"):
                    runners[case, impl] = cases.build_op_runner(case, impl, device)
                else:
                    if case.config not in banks:
                        banks[case.config] = cases.ModelBank(case.config, device)
                    if case.id.startswith("segment/"):
                        if case.id not in banks:
                            banks[case.id] = cases.SegmentBank(case, banks[case.config])
                        runners[case, impl] = cases.build_segment_runner(case, impl, banks[case.id])
                    else:
                        runners[case, impl] = cases.build_model_runner(case, impl, banks[case.config])
            except Exception as err:  # noqa: BLE001
                skipped.append({"case": case.id, "impl": impl, "reason": _why(err)})
        timings = measure_interleaved({key: r.fn for key, r in runners.items()}, device, budget_s=tier.budget_s,
                                      min_reps=tier.min_reps, max_reps=tier.max_reps, flush=flush)
        for (case, impl), runner in runners.items():
            stats = timings[case, impl]
            try:
                if isinstance(stats, Exception):
                    raise stats
                stats = {**stats, **_memory(runner, device)}
                if case.id.startswith("op/"):
                    op_records.append(_op_record(cases, case, impl, stats, runner, meta["copy_bandwidth_gbs"],
                                                 device, meta["matmul_gflops"]))
                else:
                    model_records.append(_model_record(case, impl, stats, runner, banks[case.config]))
            except Exception as err:  # noqa: BLE001
                skipped.append({"case": case.id, "impl": impl, "reason": _why(err)})
        runners = timings = None
        _free(device)
        bar.update(len(group))
    bar.close()
    _add_ratios(op_records, ("shape", "B", "mode", "dtype"), "reference", "compiled")
    _add_ratios(model_records, ("config", "task", "batch", "dtype"), "reference", "reference-compiled")

    notes = list(tier.notes)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        notes.insert(0, "TRITON_INTERPRET is set: Triton kernels ran in the CPU interpreter; their timings mean "
                        "nothing.")
    if device != "cuda":
        notes.insert(0, "GPU cases were NOT run: this is a CPU run" +
                     (" (no CUDA device is visible)." if not torch.cuda.is_available() else "."))
        notes.append("CPU timings on a shared machine are noisy: compare ratios within this run only; the load "
                     "average at start and end is in the header.")
    notes += cases.NOT_MEASURED
    meta["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta["duration_s"] = round(time.perf_counter() - started, 1)
    meta["filter"], meta["dtypes"] = pattern, list(dtypes) if dtypes else None
    return {"schema_version": SCHEMA_VERSION, "meta": meta, "notes": notes, "impl_info": {
        "op": cases.OP_IMPL_INFO, "model": cases.MODEL_IMPL_INFO}, "op": op_records, "model": model_records,
        "skipped": skipped}


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _fmt(value, spec: str = ".3g", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def _mb(value) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _saved(r: dict[str, Any]) -> str:
    """The "saved MB (extra)" cell."""
    return "-" if r["saved_bytes"] is None else f"{_mb(r['saved_bytes'])} ({_mb(r['saved_extra_bytes'])})"


def _ceilings(records: list[dict[str, Any]]) -> list[str]:
    """For each case with a compute floor and a reference row: the largest speed-up over the eager
    reference that any kernel under the memory contract could reach on this machine."""
    out = []
    for r in records:
        if r["impl"] == "reference" and r.get("floor_kind") == "compute" and r.get("floor_ms"):
            out.append(f"- {r['shape']} {r['mode']} {r['dtype']} (B={r['B']}): reference {r['median_ms']:.3g} ms, "
                       f"compute floor {r['floor_ms']:.3g} ms: at most {r['median_ms'] / r['floor_ms']:.2f}x "
                       "faster than the reference, before any non-matmul work (softmax, noise, memory traffic)")
    return ["", "Speed-up ceilings (compute floor):", ""] + out if out else []


def render_markdown(report: dict[str, Any], png_name: str | None = None) -> str:
    meta, v = report["meta"], report["meta"]["versions"]
    lines = [f"# groupvit_fast benchmarks: {meta['device_name']} ({meta['tier']} tier)", ""]
    lines += [
        f"- Device: **{meta['device_name']}**" + (f", {meta.get('device_memory_gib')} GiB, {meta.get('sm_count')} SMs"
                                                  if meta["device"] == "cuda" else
                                                  f", {meta['cpu_threads']} torch threads of {meta['os_cpus']} CPUs"),
        (f"- Versions: torch {v['torch']}, triton {v['triton']}, CUDA {v['cuda']}, driver {v['driver']}, "
         f"Python {v['python']}, transformers {v['transformers']}, groupvit_fast {v['groupvit_fast']}"),
        f"- Date: {meta['date']}; git commit: `{meta['git_commit']}`" + (" (with uncommitted changes)"
                                                                          if meta.get("git_dirty") else ""),
        (f"- Measured copy bandwidth: {meta['copy_bandwidth_gbs']:.1f} GB/s; load average at start / end: "
         f"{_fmt((meta.get('loadavg_start') or [None])[0], '.2f')} / "
         f"{_fmt((meta.get('loadavg_end') or [None])[0], '.2f')}; run time {meta['duration_s']} s"
         + (f"; measured fp32 matmul rate (1024 x 1024 `torch.mm`): {meta['matmul_gflops']:.0f} GFLOP/s"
            if meta.get("matmul_gflops") else "")),
        "- Backends: " + "; ".join(f"`{k}` {s}" for k, s in meta["backends"].items()),
    ]
    if meta.get("filter") or meta.get("dtypes"):
        lines.append(f"- Selection: filter `{meta.get('filter')}`, dtypes {meta.get('dtypes')}")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]

    lines += ["", "## Assignment attention op", ""]
    if report["op"]:
        gpu = meta["device"] == "cuda"
        floor = any(r.get("roofline_fraction") for r in report["op"])  # GPU; CPU reports since the compute floor
        header = ["shape", "B", "G", "N", "C", "h", "mode", "dtype", "impl", "median ms", "IQR ms", "min ms", "vs ref",
                  "vs compiled", "vs fp32", "GB/s"] + (["floor ms", "% floor"] if floor else []) + \
            ["peak MB", "saved MB (extra)", "rel err"]
        rows = []
        for r in report["op"]:
            shape = r["shape"] + (" *" if r["scaled_from"] else "")
            rows.append([shape, str(r["B"]), str(r["G"]), str(r["N"]), str(r["C"]), str(r["heads"]), r["mode"],
                         r["dtype"], r["impl"], _fmt(r["median_ms"], ".4g"), _fmt(r["iqr_ms"], ".2g"),
                         _fmt(r["min_ms"], ".4g"), _fmt(r["speedup_vs_reference"], ".2f", "x"),
                         _fmt(r["speedup_vs_compiled"], ".2f", "x"),
                         _fmt(r["speedup_vs_fp32"], ".2f", "x"), _fmt(r["achieved_gbs"], ".1f")] +
                        ([_fmt(r.get("floor_ms"), ".3g"),
                          _fmt(r.get("roofline_fraction") and 100 * r["roofline_fraction"], ".0f", "%")]
                         if floor else []) +
                        [_mb(r["peak_mem_bytes"]),
                         _saved(r), _fmt(r.get("rel_error"), ".1e")])
        lines += _table(header, rows)
        lines += ["", "`*`: batch scaled down from the spec's shape of the same name. "
                  "GB/s: the minimum bytes the op must move (forward: q, k, v read and out written; backward also "
                  "out, dO read and dq, dk, dv written) over the median time. "
                  + ("floor ms: the roofline floor, those bytes at the measured copy bandwidth; % floor: floor over "
                     "the median time. " if floor and gpu else "")
                  + ("floor ms: the compute floor, the matmul FLOPs a fused kernel under the memory contract cannot "
                     "avoid (hard mode: 2 BGNC forward, 8 BGNC more in backward, which recomputes the logits; "
                     "soft mode adds the R v and R^T dO products) at the fp32 matmul rate measured in this run; "
                     "% floor: floor over the median time. " if floor and not gpu else "")
                  + "vs ref / vs compiled: median of the eager reference / of torch.compile(reference) over this "
                  "median. saved: unique storages autograd keeps for backward (extra: without the inputs). "
                  "rel err: max over out (and dq, dk, dv in train) of ||x - x64|| / ||x64|| against the float64 "
                  "reference; in hard mode a low-precision argmax flip shows up here as a large error."]
        lines += _ceilings(report["op"])
    else:
        lines.append("No op case was measured.")

    lines += ["", "## Models", ""]
    if report["model"]:
        header = ["model", "task", "B", "dtype", "impl", "assign backend", "median ms", "IQR ms", "min ms", "images/s",
                  "vs ref",
                  "vs compiled ref", "vs fp32", "peak MB", "saved MB (extra)", "rel err"]
        rows = [[r["config"], r["task"], str(r["batch"]), r["dtype"], r["impl"], r["backend"] or "-",
                 _fmt(r["median_ms"], ".4g"), _fmt(r["iqr_ms"], ".2g"), _fmt(r["min_ms"], ".4g"),
                 _fmt(r["images_per_s"], ".1f"),
                 _fmt(r["speedup_vs_reference"], ".2f", "x"), _fmt(r["speedup_vs_compiled"], ".2f", "x"),
                 _fmt(r["speedup_vs_fp32"], ".2f", "x"), _mb(r["peak_mem_bytes"]),
                 _saved(r),
                 _fmt(r["rel_error"], ".1e")] for r in report["model"]]
        lines += _table(header, rows)
        lines += ["", "eval: forward without grad; train: forward + backward + AdamW step (peak memory after the "
                  "optimizer state exists). rel err: ||x - x_ref|| / ||x_ref|| of the image embedding against the "
                  "fp32 eager reference model with the same weights and images. segment: zero-shot segmentation "
                  "of B random images (448 px slide inference; smoke: 64 px), `reference` the step-by-step path of "
                  "groupvit_fast.reference.segmentation (one crop at a time, the encoder twice per crop) with the "
                  "reference model, `ours` GroupViTSegmenter with our model; its rel err is the fraction of pixels "
                  "labelled differently from the reference. Implementations: "
                  + "; ".join(f"`{k}` {v}" for k, v in report["impl_info"]["model"].items()) + "."]
    else:
        lines.append("No model case was measured.")

    if report["skipped"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{s['case']}/{s['impl']}`: {s['reason']}" for s in report["skipped"]]
    if png_name:
        lines += ["", "## Speed-up against N (stage-0 shapes)", "", f"![speed-up vs N]({png_name})"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    """Speed-up (vs reference, top; vs compiled reference, bottom) against N for the stage-0 shapes,
    one column per mode. Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    stage0 = ("stage0-224", "stage0-448", "stage0-896")
    records = [r for r in report["op"] if r["shape"] in stage0 and r["impl"] != "reference"]
    modes = [m for m in ("eval", "train", "soft") if any(r["mode"] == m for r in report["op"])] or ["eval"]
    names = sorted({f"{r['impl']} {r['dtype']}" for r in records})
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}  # one colour per line in every panel
    fig, axes = plt.subplots(2, len(modes), figsize=(4.5 * len(modes), 7), squeeze=False)
    for col, mode in enumerate(modes):
        for row, (key, label, baseline) in enumerate((
                ("speedup_vs_reference", "speed-up vs eager reference", "reference"),
                ("speedup_vs_compiled", "speed-up vs torch.compile(reference)", "compiled"))):
            ax = axes[row][col]
            lines = {}
            for r in records:
                if r["mode"] == mode and r[key] is not None and r["impl"] != baseline:
                    lines.setdefault(f"{r['impl']} {r['dtype']}", []).append((r["N"], r[key]))
            for name, points in sorted(lines.items()):
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name, color=colors[name])
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks([196, 784, 3136], labels=["196", "784", "3136"])
            ax.set_xlim(150, 4000)
            ax.set_ylim(bottom=0)
            ax.set_title(f"{mode}: {label}", fontsize=9)
            ax.set_xlabel("N (image tokens)")
            ax.set_ylabel("speed-up (x)")
            if lines:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
    meta = report["meta"]
    fig.suptitle(f"groupvit_fast assign_attention, stage-0 shapes (G=64, C=384), {meta['device_name']}, "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None) -> dict[str, Path]:
    """Writes ``<stem>.json``, ``<stem>.png`` (if matplotlib is there) and ``<stem>.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if stem is None:
        tier = report["meta"]["tier"]
        suffix = "" if tier in ("gpu", "cpu") else f"-{tier.removeprefix('gpu-').removeprefix('cpu-')}"
        stem = f"{device_slug(report['meta'])}{suffix}-{report['meta']['date'][:10]}"
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    note = ("No plot: matplotlib is not installed here; re-render with `python -m groupvit_fast.bench "
            "--render <json>` where it is.")
    report["notes"] = [n for n in report["notes"] if n != note]
    if not plot(report, paths["png"]):
        report["notes"].append(note)
        del paths["png"]
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["md"].write_text(render_markdown(report, paths["png"].name if "png" in paths else None))
    return paths


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _default_out() -> Path:
    return REPO_ROOT / "benchmarks" / "results" if (REPO_ROOT / "benchmarks").is_dir() else Path("benchmark-results")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m groupvit_fast.bench",
        description="Measure groupvit_fast against its baselines (eager reference, torch.compile of it, Hugging "
                    "Face) and write <device>-<date>.{md,json,png}. The cases are those of benchmarks/cases.py.")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="cuda if a GPU is visible, else cpu (default: auto)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a quick subset of the cases")
    size.add_argument("--smoke", action="store_true", help="tiny CPU cases that only check the harness (CI)")
    parser.add_argument("--dtype", action="append", choices=("fp32", "bf16", "fp16"),
                        help="only these dtypes (repeatable; bf16 selects the bf16-autocast model cases)")
    parser.add_argument("--filter", metavar="REGEX", help="only the items whose '<case id>/<impl>' matches, e.g. "
                        "'stage0-224/train' or 'model/.*/(ours|reference)$'")
    parser.add_argument("--out", metavar="DIR", help=f"where the report goes (default: {_default_out()})")
    parser.add_argument("--max-minutes", type=float, help="skip (and list) the items left after this many minutes")
    parser.add_argument("--list", action="store_true", help="list the selected items and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--render", metavar="JSON", help="re-write the markdown and PNG of a JSON report and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        report = json.loads(Path(args.render).read_text())
        paths = write_report(report, args.out or Path(args.render).parent, Path(args.render).stem)
        print("\n".join(str(p) for p in paths.values()))
        return 0

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("groupvit_fast.bench: --device cuda, but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.smoke and device == "cuda":
        print("groupvit_fast.bench: --smoke is a CPU tier; use --quick on a GPU", file=sys.stderr)
        return 2
    cases = load_cases()
    tier = cases.tier_for(device, quick=args.quick, smoke=args.smoke)
    dtypes = tuple(args.dtype) if args.dtype else None
    if args.list:
        for case, impl in tier.items(args.filter, dtypes):
            print(f"{case.id}/{impl}")
        return 0
    if device == "cpu" and not args.smoke:
        print("groupvit_fast.bench: no GPU in use: running the CPU cases only; the GPU cases are not run.",
              file=sys.stderr)
    report = run_tier(tier, pattern=args.filter, dtypes=dtypes, max_minutes=args.max_minutes,
                      progress=not args.no_progress)
    paths = write_report(report, args.out or _default_out())
    measured = len(report["op"]) + len(report["model"])
    print(f"groupvit_fast.bench: {measured} measured, {len(report['skipped'])} not measured, "
          f"{report['meta']['duration_s']} s")
    print("\n".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
