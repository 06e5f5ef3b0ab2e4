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

from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
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


#: module classes timed as a whole (wall time, forward hooks); they do not nest in one another
MODULE_PARTS = {
    "AssignAttention": "assignment attention (module: q/k/v/out projections + the op)",
    "Attention": "self / cross attention (module: projections + attention)",
    "Mlp": "MLPs (linear layers + GELU)",
    "MixerMlp": "MLPs (linear layers + GELU)",
    "LayerNorm": "LayerNorms",
}


def module_times(runner, reps: int) -> tuple[float, dict[str, float]]:
    """Wall ms per forward of each MODULE_PARTS part (global module hooks while it runs), and of the
    whole forward."""
    parts: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}

    def pre(mod, _args):
        if type(mod).__name__ in MODULE_PARTS:
            starts[id(mod)] = time.perf_counter()

    def post(mod, _args, _out):
        if id(mod) in starts:
            parts[MODULE_PARTS[type(mod).__name__]] += time.perf_counter() - starts.pop(id(mod))

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        runner.fn()  # warm-up
        parts.clear()
        start = time.perf_counter()
        for _ in range(reps):
            runner.fn()
        total = (time.perf_counter() - start) / reps * 1e3
    finally:
        for handle in handles:
            handle.remove()
    return total, {part: sec * 1e3 / reps for part, sec in parts.items()}


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
    runners = {impl: build_model_runner(case, impl, bank) for impl in ("reference", "ours")}
    modules = {impl: module_times(runners[impl], args.reps) for impl in runners}
    results = {impl: profile_impl(runners[impl], args.reps) for impl in runners}
    v = meta["versions"]
    lines = [
        f"# GroupViT-S eval forward (B=8, fp32) on the CPU: where the time goes ({meta['cpu']})",
        "",
        f"- Device: **{meta['cpu']}**, {meta['cpu_threads']} torch threads of {meta['os_cpus']} CPUs",
        f"- Versions: torch {v['torch']}, Python {v['python']}, groupvit_fast {v['groupvit_fast']}",
        f"- Date: {meta['date']}; git commit: `{meta['git_commit']}`; load average at start "
        f"{', '.join(f'{x:.2f}' for x in meta['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- {args.reps} forwards per table after one warm-up. Modules: wall time per forward inside each "
        "module class (forward hooks). Ops: torch.profiler self CPU time per forward (summed over "
        "threads), grouped by op name.",
        "",
        "## By module (wall ms per forward)",
        "",
        "| part | reference ms | share | ours ms | share |",
        "| --- | --- | --- | --- | --- |",
    ]
    for impl in modules:
        total, parts = modules[impl]
        parts["the rest (patch embedding, grouping block MLPs outside Mlp, glue)"] = total - sum(parts.values())
    names = list(dict.fromkeys(p for impl in modules for p in modules[impl][1]))
    for part in names:
        cells = []
        for impl in ("reference", "ours"):
            total, parts = modules[impl]
            cells += [f"{parts.get(part, 0.0):.1f}", f"{100 * parts.get(part, 0.0) / total:.1f} %"]
        lines.append(f"| {part} | {' | '.join(cells)} |")
    lines.append(f"| **forward** | {modules['reference'][0]:.1f} | | {modules['ours'][0]:.1f} | |")
    ref_total, ref_parts = modules["reference"]
    changed = sum(ms for part, ms in ref_parts.items() if "attention" in part)
    lines += [
        "",
        f"Amdahl: the modules our kernels change (assignment attention and attention) take "
        f"{100 * changed / ref_total:.1f} % of the reference's forward here; if they cost nothing, the "
        f"forward would run at most {ref_total / max(ref_total - changed, 1e-9):.2f}x the reference. The "
        "rest (MLPs, LayerNorms, patch embedding) is the same code in both. The modules include their "
        "linear projections, which ours runs too, so the real bound is lower. The two columns are measured "
        "one after the other, not interleaved: on a loaded machine compare shares within a column, not "
        "times across columns (the MLPs, the same code in both, show how far the load swung).",
        "",
        "## By op (self CPU ms per forward, torch.profiler)",
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
    lines += [
        "",
        "The op-name grouping cannot tell the reference's assignment attention (plain `bmm`, `softmax`, "
        "copies) from the other layers' ops: use the module table for that.",
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
