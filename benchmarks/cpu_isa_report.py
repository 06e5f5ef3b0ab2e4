"""The ``cpu`` backend on each of its instruction-set copies against eager, in one run.

    python benchmarks/cpu_isa_report.py                       # -> benchmarks/results/cpu-isa/
    python benchmarks/cpu_isa_report.py --quick --out /tmp/r  # shorter budgets

One process, the implementations of each case taking turns call by call (``measure_interleaved``),
so a change of load on a shared machine hits them alike: only ratios within this run are compared.
Every kernel copy this CPU can run (``cpu_isas()``: ``avx512``, ``avx2``, ``baseline``) is chosen
per call through ``set_cpu_isa``, so the baseline copy, the proxy for an ARM machine until one is
measured, is timed beside the best copy and beside eager on the same machine (docs/cpu_backend.md,
"Speed"). Cases:

* op: assignment attention at the stage-0 shape (B=16, G=64, N=196, C=384, fp32), train (hard +
  Gumbel, forward + backward) and eval (hard, forward): eager reference formulation vs ``cpu``;
* model: GroupViT-S eval forward B=8, fp32: the reference model (NVlabs' formulation, eager) vs
  ours on each copy; and ours under bf16 autocast (speed-up and error against ours in fp32);
* model: GroupViT-S training step B=2, fp32: reference vs ours on each copy (``--train``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from groupvit_fast.bench.cases.model import ModelBank, ModelCase, build_model_runner
from groupvit_fast.bench.cases.op import CPU_BATCH, MODES, SHAPES, OpCase, build_op_runner
from groupvit_fast.bench.environment import environment
from groupvit_fast.bench.timing import measure_interleaved, rel_error
from groupvit_fast.common.files import atomic_write
from groupvit_fast.ops.backends.native import cpu_isas, extension_facts, set_cpu_isa

ROOT = Path(__file__).resolve().parents[1]
_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """The SIMD flags of /proc/cpuinfo that decide which copy runs (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in _FLAGS if f in have] or sorted(have)[:40]


def on_isa(isa: str, fn):
    """``fn`` run on the kernel copy ``isa`` (set before every call: the copies take turns)."""

    def call():
        set_cpu_isa(isa)
        return fn()

    return call


def time_case(name: str, fns: dict[str, Any], budget_s: float, outputs: dict[str, Any] | None = None) -> dict:
    """Interleaved timings of ``fns`` with each one's speed-up over ``reference`` (and errors)."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {', '.join(fns)}", file=sys.stderr, flush=True)
    stats = measure_interleaved(fns, "cpu", budget_s=budget_s, min_reps=7, max_reps=400)
    rows = {}
    ref = stats.get("reference")
    for impl, s in stats.items():
        if isinstance(s, Exception):
            rows[impl] = {"error": f"{type(s).__name__}: {s}"}
            continue
        row = dict(s)
        if isinstance(ref, dict):
            row["vs_reference"] = ref["median_ms"] / s["median_ms"]
        rows[impl] = row
    for impl, err in (outputs or {}).items():
        rows.setdefault(impl, {})["rel_err"] = err
    return {"case": name, "impls": rows, "loadavg_end": list(os.getloadavg())}


def op_section(isas: list[str], budget_s: float) -> list[dict]:
    results = []
    for mode in ("train", "eval"):
        case = OpCase("stage0-224", SHAPES["stage0-224"].with_batch(CPU_BATCH["stage0-224"]), MODES[mode], "fp32", ())
        ref = build_op_runner(case, "reference", "cpu")
        ours = build_op_runner(case, "cpu", "cpu")
        fns = {"reference": ref.fn} | {f"cpu-{isa}": on_isa(isa, ours.fn) for isa in isas}
        want = [t.double() for t in ref.outputs()] if ref.outputs else None
        errors = {}
        for isa in isas:
            set_cpu_isa(isa)
            errors[f"cpu-{isa}"] = rel_error(ours.outputs(), want) if want else None
        results.append(time_case(case.id, fns, budget_s, errors))
    return results


def model_section(isas: list[str], budget_s: float, train: bool) -> list[dict]:
    bank = ModelBank("groupvit-s", "cpu")
    results = []
    case = ModelCase("groupvit-s", "eval", 8, "fp32", ())
    ref = build_model_runner(case, "reference", bank)
    ours = build_model_runner(case, "ours", bank)
    bf16 = build_model_runner(ModelCase("groupvit-s", "eval", 8, "bf16-autocast", ()), "ours", bank)
    fns = {"reference": ref.fn}
    fns |= {f"ours-{isa}": on_isa(isa, ours.fn) for isa in isas}
    fns |= {f"ours-bf16-autocast-{isa}": on_isa(isa, bf16.fn) for isa in isas[:1]}
    result = time_case(case.id, fns, budget_s)
    want = [bank.reference_output(8).double()]
    for impl in result["impls"]:
        if impl.startswith("ours"):
            set_cpu_isa(impl.rsplit("-", 1)[-1])
            runner = bf16 if "bf16" in impl else ours
            runner.fn()
            result["impls"][impl]["rel_err"] = rel_error(runner.outputs(), want)
    results.append(result)
    if train:
        case = ModelCase("groupvit-s", "train", 2, "fp32", ())
        ref = build_model_runner(case, "reference", bank)
        ours = build_model_runner(case, "ours", bank)
        fns = {"reference": ref.fn} | {f"ours-{isa}": on_isa(isa, ours.fn) for isa in isas}
        results.append(time_case(case.id, fns, budget_s))
    return results


def render(report: dict) -> str:
    meta = report["meta"]
    v = meta["versions"]
    lines = [
        f"# The `cpu` backend per instruction-set copy: {meta['cpu']}",
        "",
        f"- Device: **{meta['cpu']}**, {meta['cpu_threads']} torch threads of {meta['os_cpus']} CPUs; "
        f"SIMD flags: {', '.join(report['cpu_flags']) or '?'}; machine: {report['machine']}",
        f"- Kernel copies this CPU runs: {', '.join(report['isas'])}; extension: `{report['build_info']}`",
        f"- Versions: torch {v['torch']}, Python {v['python']}, groupvit_fast {v['groupvit_fast']}, "
        f"transformers {v['transformers']}",
        f"- Date: {meta['date']}; git commit: `{meta['git_commit']}`"
        + (" (with uncommitted changes)" if meta.get("git_dirty") else ""),
        f"- Load average at start: {', '.join(f'{x:.2f}' for x in meta['loadavg_start'])}; "
        f"run time {report['run_s']:.0f} s",
        "- One process; the implementations of a case take turns call by call. Compare ratios within this report only.",
        "",
        "| case | impl | median ms | IQR ms | min ms | reps | vs reference | rel err | load at end |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in report["cases"]:
        load = ", ".join(f"{x:.2f}" for x in case["loadavg_end"])
        for impl, r in case["impls"].items():
            if "error" in r:
                lines.append(f"| {case['case']} | {impl} | failed: {r['error']} | | | | | | {load} |")
                continue
            vs = f"{r['vs_reference']:.2f}x" if "vs_reference" in r else "-"
            err = f"{r['rel_err']:.1e}" if r.get("rel_err") is not None else "-"
            lines.append(
                f"| {case['case']} | {impl} | {r['median_ms']:.3f} | {r['iqr_ms']:.3g} | {r['min_ms']:.3f} | "
                f"{r['reps']} | {vs} | {err} | {load} |"
            )
    lines += [
        "",
        "Implementations: `reference` the eager original formulation (the op's `reference` backend; the "
        'model `GroupViT(attn_backend="explicit", assign_backend="reference")`); `cpu-<isa>` / '
        "`ours-<isa>` the `cpu` backend (our model: SDPA attention + `cpu` assignment) on that kernel "
        "copy; `ours-bf16-autocast-<isa>` our model under `torch.autocast('cpu', torch.bfloat16)`, its "
        "error against the fp32 reference model. op train: hard + Gumbel noise, forward + backward; op "
        "eval: hard, forward. rel err: ||x - x64|| / ||x64|| against the float64 reference (op), or "
        "against the fp32 reference model's image embedding (model).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu-isa")
    parser.add_argument("--quick", action="store_true", help="short time budgets (a smoke run)")
    parser.add_argument("--train", action="store_true", help="also the GroupViT-S training step at B=2")
    parser.add_argument("--skip-model", action="store_true", help="the op cases only")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()
    isas = cpu_isas()
    if not isas:
        raise SystemExit("the compiled cpu backend is unavailable: build the extension first")
    before = set_cpu_isa("auto")
    report: dict[str, Any] = {
        "meta": environment("cpu"),
        "cpu_flags": cpu_flags(),
        "machine": platform.machine(),
        "isas": isas,
        "build_info": ";".join(f"{k}={v}" for k, v in extension_facts().items()),
        "cases": [],
    }
    budget = 1.0 if args.quick else 6.0
    report["cases"] += op_section(isas, budget)
    if not args.skip_model:
        report["cases"] += model_section(isas, 4 * budget, args.train)
    set_cpu_isa(before)
    report["run_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-isa-{report['machine']}-{time.strftime('%Y-%m-%d')}"
    for suffix, text in ((".json", json.dumps(report, indent=1, default=str) + "\n"), (".md", render(report))):
        atomic_write(str(args.out / f"{stem}{suffix}"), lambda tmp, text=text: Path(tmp).write_text(text))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
