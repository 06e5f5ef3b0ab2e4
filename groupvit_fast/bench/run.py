"""Running a tier: every (case, implementation) built, timed interleaved per problem, measured
and recorded; the result is the report's JSON object."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from . import cases
from .environment import environment
from .timing import L2Flush, copy_bandwidth, matmul_throughput, measure_interleaved, peak_memory, rel_error, saved_bytes

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from .cases.tiers import Tier

__all__ = ["SCHEMA_VERSION", "run_tier"]

SCHEMA_VERSION = 1


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


def _op_record(case, impl, stats, runner, copy_bw, device, matmul_gflops=None) -> dict[str, Any]:
    s = case.shape
    record = {"kind": "op", "case": case.id, "shape": case.shape_name, "scaled_from": case.scaled_from, "B": s.batch,
              "G": s.groups, "N": s.tokens, "C": s.channels, "heads": s.heads, "mode": case.mode.name,
              "dtype": case.dtype, "impl": impl, "backend": runner.backend, **stats}
    seconds = stats["median_ms"] / 1e3
    record["min_bytes"] = cases.min_bytes(s, case.mode, case.torch_dtype)
    record["achieved_gbs"] = record["min_bytes"] / seconds / 1e9
    record["tflops"] = cases.flops(s, case.mode) / seconds / 1e12
    # The floor. GPU: the roofline of docs/benchmarks.md, min bytes / measured copy bandwidth. CPU:
    # these shapes are compute-bound (about 48 FLOP/byte against about 10 for a CPU), so the floor is
    # the matmul work a fused kernel cannot avoid (cases.fused_flops) at the fp32 matmul rate
    # measured in the same run: no kernel under the memory contract can be faster than that.
    if device == "cuda":
        record["floor_kind"] = "bandwidth"
        record["floor_ms"] = record["min_bytes"] / (copy_bw * 1e9) * 1e3
    elif matmul_gflops:
        record["floor_kind"] = "compute"
        record["fused_flops"] = cases.fused_flops(s, case.mode)
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


def run_tier(tier: Tier, *,  # noqa: C901  (filters, budget and per-case errors of one measuring loop)
             pattern: str | None = None, dtypes: tuple[str, ...] | None = None,
             max_minutes: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every (case, implementation) of ``tier``; returns the report's JSON object."""
    device = tier.device
    started = time.perf_counter()
    meta = environment(device)
    meta["tier"] = tier.name
    meta["copy_bandwidth_gbs"] = copy_bandwidth(device)
    meta["matmul_gflops"] = matmul_throughput(device)
    flush = L2Flush(device)
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
                    op_records.append(_op_record(case, impl, stats, runner, meta["copy_bandwidth_gbs"],
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
