"""The report: markdown tables, the speed-up plot (PNG) and the JSON, written side by side."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .cases.family import Family, families
from .cases.op import speedup_ceilings
from .cases.segment import SEGMENT_NOTE
from .environment import device_slug

__all__ = ["plot", "render_markdown", "write_report"]


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


def render_markdown(report: dict[str, Any], png_name: str | None = None) -> str:
    meta, v = report["meta"], report["meta"]["versions"]
    lines = [f"# groupvit_fast benchmarks: {meta['device_name']} ({meta['tier']} tier)", ""]
    lines += [
        f"- Device: **{meta['device_name']}**"
        + (
            f", {meta.get('device_memory_gib')} GiB, {meta.get('sm_count')} SMs"
            if meta["device"] == "cuda"
            else f", {meta['cpu_threads']} torch threads of {meta['os_cpus']} CPUs"
        ),
        (
            f"- Versions: torch {v['torch']}, triton {v['triton']}, CUDA {v['cuda']}, driver {v['driver']}, "
            f"Python {v['python']}, transformers {v['transformers']}, groupvit_fast {v['groupvit_fast']}"
        ),
        f"- Date: {meta['date']}; git commit: `{meta['git_commit']}`"
        + (" (with uncommitted changes)" if meta.get("git_dirty") else ""),
        (
            f"- Measured copy bandwidth: {meta['copy_bandwidth_gbs']:.1f} GB/s; load average at start / end: "
            f"{_fmt((meta.get('loadavg_start') or [None])[0], '.2f')} / "
            f"{_fmt((meta.get('loadavg_end') or [None])[0], '.2f')}; run time {meta['duration_s']} s"
            + (
                f"; measured fp32 matmul rate (1024 x 1024 `torch.mm`): {meta['matmul_gflops']:.0f} GFLOP/s"
                if meta.get("matmul_gflops")
                else ""
            )
        ),
        "- Backends: " + "; ".join(f"`{k}` {s}" for k, s in meta["backends"].items()),
    ]
    if meta.get("filter") or meta.get("dtypes") or meta.get("only"):
        lines.append(
            "- Selection: "
            + (f"families {', '.join(meta['only'])}; " if meta.get("only") else "")
            + f"filter `{meta.get('filter')}`, dtypes {meta.get('dtypes')}"
        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]

    known = families()
    # schema 1 (before the families): the sections op and model, segmentation rows in model
    for name in meta.get("families") or ("op", "model"):
        family = known.get(name)
        if (family.table if family else "throughput") == "op":
            lines += _op_section(report, meta)
        else:
            lines += _throughput_section(report, name, family)

    if report["skipped"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{s['case']}/{s['impl']}`: {s['reason']}" for s in report["skipped"]]
    if png_name:
        lines += ["", "## Speed-up against N (stage-0 shapes)", "", f"![speed-up vs N]({png_name})"]
    return "\n".join(lines) + "\n"


def _op_section(report: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = ["", "## Assignment attention op", ""]
    if report.get("op"):
        gpu = meta["device"] == "cuda"
        floor = any(r.get("roofline_fraction") for r in report["op"])  # GPU; CPU reports since the compute floor
        header = (
            [
                "shape",
                "B",
                "G",
                "N",
                "C",
                "h",
                "mode",
                "dtype",
                "impl",
                "median ms",
                "IQR ms",
                "min ms",
                "vs ref",
                "vs compiled",
                "vs fp32",
                "GB/s",
            ]
            + (["floor ms", "% floor"] if floor else [])
            + ["peak MB", "saved MB (extra)", "rel err"]
        )
        rows = []
        for r in report["op"]:
            shape = r["shape"] + (" *" if r["scaled_from"] else "")
            rows.append(
                [
                    shape,
                    str(r["B"]),
                    str(r["G"]),
                    str(r["N"]),
                    str(r["C"]),
                    str(r["heads"]),
                    r["mode"],
                    r["dtype"],
                    r["impl"],
                    _fmt(r["median_ms"], ".4g"),
                    _fmt(r["iqr_ms"], ".2g"),
                    _fmt(r["min_ms"], ".4g"),
                    _fmt(r["speedup_vs_reference"], ".2f", "x"),
                    _fmt(r["speedup_vs_compiled"], ".2f", "x"),
                    _fmt(r["speedup_vs_fp32"], ".2f", "x"),
                    _fmt(r["achieved_gbs"], ".1f"),
                ]
                + (
                    [
                        _fmt(r.get("floor_ms"), ".3g"),
                        _fmt(r.get("roofline_fraction") and 100 * r["roofline_fraction"], ".0f", "%"),
                    ]
                    if floor
                    else []
                )
                + [_mb(r["peak_mem_bytes"]), _saved(r), _fmt(r.get("rel_error"), ".1e")]
            )
        lines += _table(header, rows)
        lines += [
            "",
            "`*`: batch scaled down from the shape of the same name in docs/benchmarks.md. "
            "GB/s: the minimum bytes the op must move (forward: q, k, v read and out written; backward also "
            "out, dO read and dq, dk, dv written) over the median time. "
            + (
                "floor ms: the roofline floor, those bytes at the measured copy bandwidth; % floor: floor over "
                "the median time. "
                if floor and gpu
                else ""
            )
            + (
                "floor ms: the compute floor, the matmul FLOPs a fused kernel under the memory contract cannot "
                "avoid (hard mode: 2 BGNC forward, 8 BGNC more in backward, which recomputes the logits; "
                "soft mode adds the R v and R^T dO products) at the fp32 matmul rate measured in this run; "
                "% floor: floor over the median time. "
                if floor and not gpu
                else ""
            )
            + "vs ref / vs compiled: median of the eager reference / of torch.compile(reference) over this "
            "median. saved: unique storages autograd keeps for backward (extra: without the inputs). "
            "rel err: max over out (and dq, dk, dv in train) of ||x - x64|| / ||x64|| against the float64 "
            "reference; in hard mode a low-precision argmax flip shows up here as a large error.",
        ]
        lines += speedup_ceilings(report["op"])
    else:
        lines.append("No op case was measured.")
    return lines


def _throughput_section(report: dict[str, Any], name: str, family: Family | None) -> list[str]:
    """The images/s table of a model or pipeline family (``family`` None: one this code does not know)."""
    records = report.get(name) or []
    lines = ["", f"## {family.title if family else name}", ""]
    if records:
        header = [
            "model",
            "task",
            "B",
            "dtype",
            "impl",
            "assign backend",
            "median ms",
            "IQR ms",
            "min ms",
            "images/s",
            "vs ref",
            "vs compiled ref",
            "vs fp32",
            "peak MB",
            "saved MB (extra)",
            "rel err",
        ]
        rows = [
            [
                r["config"],
                r["task"],
                str(r["batch"]),
                r["dtype"],
                r["impl"],
                r["backend"] or "-",
                _fmt(r["median_ms"], ".4g"),
                _fmt(r["iqr_ms"], ".2g"),
                _fmt(r["min_ms"], ".4g"),
                _fmt(r["images_per_s"], ".1f"),
                _fmt(r["speedup_vs_reference"], ".2f", "x"),
                _fmt(r["speedup_vs_compiled"], ".2f", "x"),
                _fmt(r["speedup_vs_fp32"], ".2f", "x"),
                _mb(r["peak_mem_bytes"]),
                _saved(r),
                _fmt(r["rel_error"], ".1e"),
            ]
            for r in records
        ]
        lines += _table(header, rows)
        note = family.note if family else ""
        if name == "model" and any(r["task"] == "segment" for r in records):  # schema 1: segmentation in here
            note += " " + SEGMENT_NOTE
        info = (report.get("impl_info") or {}).get(name) or {}
        implementations = "Implementations: " + "; ".join(f"`{k}` {v}" for k, v in info.items()) + "."
        lines += ["", " ".join(text for text in (note, implementations if info else "") if text)]
        if family and family.summary:
            lines += family.summary(records)
    else:
        lines.append(f"No {name} case was measured.")
    return lines


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
    records = [r for r in report.get("op", []) if r["shape"] in stage0 and r["impl"] != "reference"]
    modes = [m for m in ("eval", "train", "soft") if any(r["mode"] == m for r in report.get("op", []))] or ["eval"]
    names = sorted({f"{r['impl']} {r['dtype']}" for r in records})
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}  # one colour per line in every panel
    fig, axes = plt.subplots(2, len(modes), figsize=(4.5 * len(modes), 7), squeeze=False)
    for col, mode in enumerate(modes):
        for row, (key, label, baseline) in enumerate(
            (
                ("speedup_vs_reference", "speed-up vs eager reference", "reference"),
                ("speedup_vs_compiled", "speed-up vs torch.compile(reference)", "compiled"),
            )
        ):
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
    fig.suptitle(
        f"groupvit_fast assign_attention, stage-0 shapes (G=64, C=384), {meta['device_name']}, {meta['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None) -> dict[str, Path]:
    """Writes ``<stem>.json``, ``<stem>.png`` (if matplotlib is there) and ``<stem>.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if stem is None:  # <device>[-quick|-smoke][-<families>]-<date>
        tier, only = report["meta"]["tier"], report["meta"].get("only")
        suffix = "" if tier in ("gpu", "cpu") else f"-{tier.removeprefix('gpu-').removeprefix('cpu-')}"
        suffix += f"-{'-'.join(only)}" if only else ""
        stem = f"{device_slug(report['meta'])}{suffix}-{report['meta']['date'][:10]}"
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    note = (
        "No plot: matplotlib is not installed here; re-render with `python -m groupvit_fast.bench "
        "--render <json>` where it is."
    )
    report["notes"] = [n for n in report["notes"] if n != note]
    if not report.get("op"):  # the plot is of the op's speed-ups: nothing to draw
        del paths["png"]
    elif not plot(report, paths["png"]):
        report["notes"].append(note)
        del paths["png"]
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["md"].write_text(render_markdown(report, paths["png"].name if "png" in paths else None))
    return paths
