"""The gradient-caching table and plot from a ``python -m groupvit_fast.bench`` JSON report.

    python benchmarks/grad_cache_report.py REPORT.json OUT_DIR

Reads the report's ``ours`` and ``ours-gc<C>`` training steps of one image-text model
(groupvit_fast/bench/cases/grad_cache.py) and writes ``OUT_DIR/grad-cache.md`` (per batch: peak
memory and median step time of the plain step and of each chunk size, their ratios, and the
memory against the plain step of one chunk) and ``OUT_DIR/grad-cache.png`` (peak memory and step
time against the batch). docs/training.md quotes the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from groupvit_fast.bench.cases.grad_cache import grad_cache_chunk


def _rows(report: dict) -> tuple[str, dict[tuple[int, str], dict]]:
    records = [
        r for r in report["model"] if r["task"] == "train" and (r["impl"] == "ours" or grad_cache_chunk(r["impl"]))
    ]
    configs = sorted({r["config"] for r in records if grad_cache_chunk(r["impl"])})
    if len(configs) != 1:
        raise SystemExit(f"expected the grad-cache cases of one model in the report, found {configs or 'none'}")
    return configs[0], {(r["batch"], r["impl"]): r for r in records if r["config"] == configs[0]}


def table(report: dict) -> str:
    config, by = _rows(report)
    meta, v = report["meta"], report["meta"]["versions"]
    load = " / ".join(
        f"{x:.1f}" if isinstance(x, (int, float)) else "?"
        for x in ((meta.get("loadavg_start") or [None])[0], (meta.get("loadavg_end") or [None])[0])
    )
    lines = [
        f"# Gradient caching: peak memory and step time ({config}, {meta['device_name']})",
        "",
        f"- Device: {meta['device_name']}, {meta.get('cpu_threads')} torch thread(s); load average at start / "
        f"end {load}",
        f"- Versions: torch {v['torch']}, Python {v['python']}, groupvit_fast {v['groupvit_fast']}; git "
        f"`{meta['git_commit']}`",
        f"- Date: {meta['date']}; dtype fp32; one AdamW step per call (plain: `ours`; chunked: `ours-gc<C>`, "
        "groupvit_fast.train.grad_cache)",
        "- Peak memory: growth of PyTorch's CPU allocator during one step, from torch's profiler "
        "(groupvit_fast.bench.timing.peak_memory; on a GPU `max_memory_allocated`). Time: median of the "
        "interleaved repetitions.",
        "",
    ]
    chunks = sorted({grad_cache_chunk(i) for _, i in by if grad_cache_chunk(i)})
    lines += [
        "| batch | step | peak MB | vs plain | vs one chunk's plain step | median ms | vs plain | "
        "vs k plain steps of one chunk |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for batch in sorted({b for b, _ in by}):
        plain = by.get((batch, "ours"))
        for impl in ["ours", *(f"ours-gc{c}" for c in chunks)]:
            r = by.get((batch, impl))
            if r is None:
                continue
            chunk = grad_cache_chunk(impl)
            one = by.get((chunk, "ours")) if chunk else None
            mem, ms = r["peak_mem_bytes"] / 1e6, r["median_ms"]
            lines.append(
                "| "
                + " | ".join(
                    [
                        str(batch),
                        f"chunks of {chunk}" if chunk else "plain",
                        f"{mem:.1f}",
                        f"{r['peak_mem_bytes'] / plain['peak_mem_bytes']:.2f}x" if chunk and plain else "-",
                        f"{r['peak_mem_bytes'] / one['peak_mem_bytes']:.2f}x" if one else "-",
                        f"{ms:.0f}",
                        f"{ms / plain['median_ms']:.2f}x" if chunk and plain else "-",
                        f"{ms / (batch // chunk * one['median_ms']):.2f}x" if one else "-",
                    ]
                )
                + " |"
            )
    lines += [
        "",
        "vs one chunk's plain step: peak memory over the plain step's at the chunk's batch (the goal: flat "
        "in the batch, within 1.2x of that plus the cache). vs k plain steps of one chunk: time over k = batch / "
        "chunk plain steps at the chunk's batch, which separates the second encoder forward from the cost of "
        "running the encoders on smaller batches.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    config, by = _rows(report)
    impls = sorted({i for _, i in by}, key=lambda i: grad_cache_chunk(i) or 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for impl in impls:
        points = sorted((b, r) for (b, i), r in by.items() if i == impl)
        label = f"chunks of {grad_cache_chunk(impl)}" if grad_cache_chunk(impl) else "plain step"
        axes[0].plot([b for b, _ in points], [r["peak_mem_bytes"] / 1e6 for _, r in points], marker="o", label=label)
        axes[1].plot([b for b, _ in points], [r["median_ms"] for _, r in points], marker="o", label=label)
    for ax, what in zip(axes, ("peak memory of a step (MB)", "median step time (ms)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (the contrastive batch)")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    meta = report["meta"]
    fig.suptitle(
        f"gradient caching, {config} training step, fp32, {meta['device_name']}, {meta['date'][:10]}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    report = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "grad-cache.md").write_text(table(report))
    print(out / "grad-cache.md")
    if plot(report, out / "grad-cache.png"):
        print(out / "grad-cache.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
