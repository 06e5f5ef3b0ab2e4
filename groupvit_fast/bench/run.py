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
from .timing import L2Flush, copy_bandwidth, matmul_throughput, measure_interleaved, peak_memory, saved_bytes

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from .cases.tiers import Tier

__all__ = ["SCHEMA_VERSION", "run_tier"]

#: 1: sections ``op`` and ``model`` (segmentation rows in ``model``); 2: one section per family
#: measured (``op``, ``model``, ``segment``, ``train``, ``eval``, ...), named in ``meta["families"]``.
SCHEMA_VERSION = 2


def _progress(total: int, enabled: bool):
    from tqdm import tqdm  # a core dependency

    if not enabled:

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
    stats: dict[str, Any] = {
        "peak_mem_bytes": peak_memory(runner.fn, device),
        "saved_bytes": None,
        "saved_extra_bytes": None,
    }
    if runner.forward_for_saved is not None:
        stats["saved_bytes"], stats["saved_extra_bytes"] = saved_bytes(runner.forward_for_saved, runner.owned_storages)
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


def _add_ratios(
    records: list[dict[str, Any]],
    key_fields: tuple[str, ...],
    ref_impl: str,
    compiled_impl: str,
    dtype_field: str = "dtype",
) -> None:
    """Speed-ups as ratios of medians within this run: vs the eager reference, vs the compiled
    reference, and (for a lower-precision dtype) vs the same implementation in fp32."""
    by_key = {(tuple(r[f] for f in key_fields), r["impl"]): r for r in records}
    for r in records:
        key = tuple(r[f] for f in key_fields)
        for name, other in (
            ("speedup_vs_reference", by_key.get((key, ref_impl))),
            ("speedup_vs_compiled", by_key.get((key, compiled_impl))),
        ):
            r[name] = other["median_ms"] / r["median_ms"] if other else None
        fp32_key = tuple("fp32" if f == dtype_field else r[f] for f in key_fields)
        fp32 = by_key.get((fp32_key, r["impl"])) if r[dtype_field] != "fp32" else None
        r["speedup_vs_fp32"] = fp32["median_ms"] / r["median_ms"] if fp32 else None


def run_tier(
    tier: Tier,
    *,  # noqa: C901  (filters, budget and per-case errors of one measuring loop)
    pattern: str | None = None,
    dtypes: tuple[str, ...] | None = None,
    only: tuple[str, ...] | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every (case, implementation) of ``tier`` (of the families ``only``, default all);
    returns the report's JSON object: ``meta`` (the header), ``notes``, ``impl_info``, one list of
    records per family measured (keyed by its name) and ``skipped``."""
    device = tier.device
    started = time.perf_counter()
    meta = environment(device)
    meta["tier"] = tier.name
    meta["copy_bandwidth_gbs"] = copy_bandwidth(device)
    meta["matmul_gflops"] = matmul_throughput(device)
    flush = L2Flush(device)
    items = list(tier.items(pattern, dtypes, only))
    families = cases.families()
    measured = [name for name in families if any(case.id.split("/", 1)[0] == name for case, _ in items)]
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in measured}
    skipped: list[dict[str, Any]] = []
    context = cases.BuildContext(device, meta)
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
                runners[case, impl] = cases.family_of(case).build(case, impl, context)
            except Exception as err:  # noqa: BLE001
                skipped.append({"case": case.id, "impl": impl, "reason": _why(err)})
        timings = measure_interleaved(
            {key: r.fn for key, r in runners.items()},
            device,
            budget_s=tier.budget_s,
            min_reps=tier.min_reps,
            max_reps=tier.max_reps,
            flush=flush,
        )
        for (case, impl), runner in runners.items():
            stats = timings[case, impl]
            family = cases.family_of(case)
            try:
                if isinstance(stats, Exception):
                    raise stats
                stats = {**stats, **_memory(runner, device)}
                records[family.name].append(family.record(case, impl, stats, runner, context))
            except Exception as err:  # noqa: BLE001
                skipped.append({"case": case.id, "impl": impl, "reason": _why(err)})
        runners = timings = None
        _free(device)
        bar.update(len(group))
    bar.close()
    context = None
    for name, family_records in records.items():
        family = families[name]
        _add_ratios(family_records, family.ratio_keys, family.reference_impl, family.compiled_impl)

    notes = list(tier.notes)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        notes.insert(
            0, "TRITON_INTERPRET is set: Triton kernels ran in the CPU interpreter; their timings mean nothing."
        )
    if device != "cuda":
        notes.insert(
            0,
            "GPU cases were NOT run: this is a CPU run"
            + (" (no CUDA device is visible)." if not torch.cuda.is_available() else "."),
        )
        notes.append(
            "CPU timings on a shared machine are noisy: compare ratios within this run only; the load "
            "average at start and end is in the header."
        )
    notes += cases.NOT_MEASURED
    meta["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta["duration_s"] = round(time.perf_counter() - started, 1)
    meta["filter"], meta["dtypes"] = pattern, list(dtypes) if dtypes else None
    meta["only"] = list(only) if only else None
    meta["families"] = measured
    return {
        "schema_version": SCHEMA_VERSION,
        "meta": meta,
        "notes": notes,
        "impl_info": {name: families[name].impl_info for name in measured},
        **records,
        "skipped": skipped,
    }
