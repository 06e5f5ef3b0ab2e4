"""Where GroupViT-S eval forward time goes on the CPU, ours against the reference formulation.

    python benchmarks/cpu_model_profile.py          # -> benchmarks/results/cpu-isa/cpu-model-profile-<date>.md

``torch.profiler`` (CPU activities) over a few eval forwards at B=8, fp32, of the reference model
(``GroupViT(attn_backend="explicit", assign_backend="reference")``, NVlabs' formulation, eager) and of
ours (defaults: SDPA attention, ``assign_backend="auto"`` = the ``cpu`` backend), with the same weights
and images. Self CPU time is grouped into what the model does (linear layers, attention, assignment
attention, norms, activations, the rest), so the report shows which part our kernels change and
which part bounds the whole-model speed-up (Amdahl: the unchanged share caps it;
docs/cpu_backend.md, "Speed"). The profiler's own overhead inflates small ops alike in both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from groupvit_fast.bench.cases.model import ModelBank, ModelCase, build_model_runner
from groupvit_fast.bench.environment import environment
from groupvit_fast.common.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]

#: op-name fragments -> the part of the model they belong to (first match wins)
PARTS = (
    ("assignment attention", ("groupvit_fast::", "assign_attention")),
    ("linear layers (GEMM)", ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::bmm")),
    ("attention (SDPA / softmax)", ("scaled_dot_product", "flash_attention", "aten::_softmax", "aten::baddbmm")),
    ("norms", ("layer_norm", "batch_norm")),
    ("activations", ("gelu",)),
    ("copies / layout", ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat", "aten::to", "aten::_to_copy")),
)


def part_of(name: str) -> str:
    for part, keys in PARTS:
        if any(k in name for k in keys):
            return part
    return "other element-wise / bookkeeping"


def profile_impl(runner, reps: int) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    runner.fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(reps):
            runner.fn()
        wall = (time.perf_counter() - start) / reps
    parts: dict[str, float] = defaultdict(float)
    ops = []
    for evt in prof.key_averages():
        self_ms = evt.self_cpu_time_total / 1e3 / reps
        parts[part_of(evt.key)] += self_ms
        ops.append((evt.key, self_ms))
    ops.sort(key=lambda kv: -kv[1])
    return wall * 1e3, dict(parts), ops[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu-isa")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    meta = environment("cpu")
    bank = ModelBank("groupvit-s", "cpu")
    case = ModelCase("groupvit-s", "eval", 8, "fp32", ())
    results = {impl: profile_impl(build_model_runner(case, impl, bank), args.reps) for impl in ("reference", "ours")}
    v = meta["versions"]
    lines = [
        f"# GroupViT-S eval forward (B=8, fp32) on the CPU: where the time goes ({meta['cpu']})",
        "",
        f"- Device: **{meta['cpu']}**, {meta['cpu_threads']} torch threads of {meta['os_cpus']} CPUs",
        f"- Versions: torch {v['torch']}, Python {v['python']}, groupvit_fast {v['groupvit_fast']}",
        f"- Date: {meta['date']}; git commit: `{meta['git_commit']}`; load average at start "
        f"{', '.join(f'{x:.2f}' for x in meta['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- torch.profiler, CPU activities, {args.reps} forwards each after one warm-up; self CPU time per "
        "forward (summed over threads, so it can exceed the wall time).",
        "",
        "| part | reference ms | share | ours ms | share |",
        "| --- | --- | --- | --- | --- |",
    ]
    totals = {impl: sum(r[1].values()) for impl, r in results.items()}
    names = sorted({p for r in results.values() for p in r[1]}, key=lambda p: -results["reference"][1].get(p, 0.0))
    for part in names:
        cells = []
        for impl in ("reference", "ours"):
            ms = results[impl][1].get(part, 0.0)
            cells += [f"{ms:.1f}", f"{100 * ms / totals[impl]:.1f} %"]
        lines.append(f"| {part} | {' | '.join(cells)} |")
    walls = [results[impl][0] for impl in ("reference", "ours")]
    lines.append(f"| **total self CPU** | {totals['reference']:.1f} | | {totals['ours']:.1f} | |")
    lines.append(f"| wall time per forward (under the profiler) | {walls[0]:.1f} | | {walls[1]:.1f} | |")
    ref_parts = results["reference"][1]
    changed = sum(ref_parts.get(p, 0.0) for p in ("assignment attention", "attention (SDPA / softmax)"))
    unchanged = totals["reference"] - changed
    lines += [
        "",
        f"Amdahl bound: the parts our kernels replace (assignment attention and attention) are "
        f"{100 * changed / totals['reference']:.1f} % of the reference's self CPU time; with those parts "
        f"free, the whole forward could run at most {totals['reference'] / max(unchanged, 1e-9):.2f}x the "
        "reference here.",
        "",
    ]
    for impl in ("reference", "ours"):
        lines += [f"Top ops, {impl} (self CPU ms per forward):", "", "| op | ms |", "| --- | --- |"]
        lines += [f"| `{name}` | {ms:.1f} |" for name, ms in results[impl][2]]
        lines.append("")
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu-model-profile-{time.strftime('%Y-%m-%d')}.md"
    atomic_write(str(path), lambda tmp: Path(tmp).write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
