"""The markdown report of the Triton kernels' compile check: per launch its registers, spills, shared
memory, occupancy, MMA lowering and static memory traffic against the floor, and the same resource
table for the CUDA C++ kernels (benchmarks/results/triton-compile/).

    python -m groupvit_fast.tools.compile_check --json results.json
    python -m groupvit_fast.tools.kernel_report results.json report.md [--no-cuda]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys

from .kernel_traffic import H100_BYTES_PER_S, estimate


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _config(r: dict) -> str:
    c, o = r["constexprs"], r["options"]
    tiles = "/".join(str(c[k]) for k in ("BLOCK_N", "BLOCK_DV", "BLOCK_DK") if k in c)
    return f"{tiles + ' ' if tiles else ''}w{o.get('num_warps', 4)} s{o.get('num_stages', '-')}"


def resource_table(results: list[dict]) -> list[str]:
    lines = [
        "| launch | tiles N/DV/DK, warps, stages | regs | spill st/ld B | shared KiB | warps/SM | MMA dots | PTX MMA |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        e = r["extra"]
        if r["status"] != "ok":
            lines.append(f"| {r['group']} | {_config(r)} | {r['status']}: {r.get('error') or ''} | | | | | |")
            continue
        lines.append(
            f"| {r['group']} | {_config(r)} | {e.get('registers', '?')} | {e.get('spill_stores', '?')}/"
            f"{e.get('spill_loads', '?')} | {r['shared_bytes'] / 1024:.0f} | {e.get('resident_warps', '?')} | "
            f"{e.get('mma_dots', 0)}/{e.get('dots', 0)} | {e.get('mma_ptx', 0)} |"
        )
    return lines


def traffic_table(results: list[dict], batch: int) -> list[str]:
    from .compile_check import _ELEM, MODES, SHAPES

    shapes = {s[0]: s[1:] for s in SHAPES}
    lines = [
        f"| launch (B={batch}) | floor MB | floor us (H100, 3.35 TB/s) | extra MB | total / floor "
        "| what moves beyond the floor |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    seen = set()
    for r in results:
        if r["kernel"] not in ("fwd", "bwd") or r["arch"] != 90:
            continue
        mode = r["group"].rsplit("/", 1)[1]
        key = (r["kernel"], r["shape"], r["dtype"], mode)
        if key in seen or mode not in MODES:
            continue
        seen.add(key)
        g, n, d, h = shapes[r["shape"]]
        c = r["constexprs"]
        kw = dict(batch=batch, groups=g, tokens=n, head_dim=d, heads=h, elem=_ELEM[r["dtype"]])
        kw.update(block_n=c["BLOCK_N"], block_dv=c["BLOCK_DV"], noise_tensor=bool(c.get("HAS_NOISE")))
        launches = [estimate(r["kernel"], return_attn=bool(c.get("RETURN_ATTN")), **kw)]
        if r["kernel"] == "bwd" and not c.get("SUM_ASSIGN"):
            launches.insert(0, estimate("bwd_preprocess", **kw))
        for t in launches:
            floor_us = t.floor / H100_BYTES_PER_S * 1e6
            lines.append(
                f"| {t.launch}/{r['shape']}/{r['dtype']}/{mode} | {t.floor / 1e6:.1f} | {floor_us:.0f} | "
                f"{(t.total - t.floor) / 1e6:.1f} | {t.ratio:.2f} | {t.why()} |"
            )
    return lines


def cuda_table(archs=(80, 90)) -> list[str]:
    from .cuda_resources import CUDA_WARPS, cuda_resources

    lines = [
        f"| CUDA C++ kernel | arch | regs | spill st/ld B | static shared B "
        f"| warps/SM ({CUDA_WARPS} warps/block, static shared) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for arch in archs:
        for row in cuda_resources(arch):
            lines.append(
                f"| {row['kernel']} | sm_{arch} | {row['registers']} | {row['spill_stores']}/{row['spill_loads']} | "
                f"{row['static_shared']} | {row['resident_warps']} |"
            )
    return lines


def markdown(results, triton_version: str, seconds: float, failures: list[str], cuda: bool = True) -> str:
    """The whole report; ``results`` are Variants or their dicts (``--json``)."""
    from dataclasses import asdict, is_dataclass

    from .compile_check import SPILL_BUDGET, TRAFFIC_BATCH

    rows = [asdict(r) if is_dataclass(r) else r for r in results]
    ok = [r for r in rows if r["status"] == "ok" and "spill_stores" in r["extra"]]
    worst = {}
    for r in ok:
        key = r["dtype"]
        worst[key] = max(worst.get(key, 0), r["extra"]["spill_stores"], r["extra"]["spill_loads"])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Triton kernels compiled ahead of time for sm_80 / sm_90 (no GPU)",
        "",
        f"- Date: {now}; kernels as of commit `{_commit()}`",
        f"- Machine: {platform.processor() or platform.machine()}, no GPU; triton {triton_version} (its bundled "
        "ptxas), Triton's own ptxas invocation (-v log)",
        f"- Compile time: {seconds:.0f} s for {len(rows)} launch configs",
        "- What it is: code generation at each launch's specialization (Triton's rule: ints equal to 1 are "
        "constants, multiples of 16 and pointers 16-divisible), shared memory, registers and spills per "
        "thread, dot lowering, occupancy, and a static traffic estimate. No kernel ran and nothing was timed: "
        "not measured on a GPU yet.",
        f"- Spill budget (bytes per thread): {SPILL_BUDGET}; worst found: {worst}",
        f"- Failures: {len(failures)}" + ("".join(f"\n  - {f}" for f in failures)),
        "",
        "## Resources per launch and config",
        "",
        "Each row is one config the autotuner may pick for the launch (group = kernel/shape/dtype/target/mode). "
        "warps/SM: resident warps per SM from registers and shared memory (CUDA occupancy rule).",
        "",
        *resource_table(rows),
        "",
        "## Memory traffic against the floor",
        "",
        "Floor: every input read once and every output written once. Extra: what the tiling reads again "
        "(logits recomputed per head-dim tile, q re-read per token block); these re-reads are issued by "
        "programs running side by side and are L2-sized, so the first GPU run should find each launch near "
        "its floor time. One token range per program (the batch fills the GPU), so no atomics and no "
        "finalize pass; a launch split over token ranges (small batches) adds the fp32 workspace.",
        "",
        *traffic_table(rows, TRAFFIC_BATCH),
        "",
    ]
    if cuda:
        out += ["## CUDA C++ kernels (nvcc -Xptxas -v)", "", *cuda_table(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m groupvit_fast.tools.kernel_report", description=__doc__)
    parser.add_argument(
        "results",
        nargs="+",
        help="JSON written by compile_check --json (a later file's groups replace "
        "an earlier one's: a rerun of some modes)",
    )
    parser.add_argument("report", help="markdown file to write")
    parser.add_argument("--no-cuda", action="store_true", help="leave out the CUDA C++ table (no nvcc)")
    parser.add_argument("--merged-json", help="also write the merged results to this JSON file")
    args = parser.parse_args(argv)
    from groupvit_fast.common.files import atomic_write

    from .compile_check import Variant, _write_text, failures

    merged: dict[str, list[dict]] = {}
    seconds = 0.0
    for path in args.results:
        with open(path) as f:
            data = json.load(f)
        seconds += data.get("seconds", 0.0)
        fresh: dict[str, list[dict]] = {}
        for r in data["results"]:
            fresh.setdefault(r["group"], []).append(r)
        merged.update(fresh)
    rows = [r for group in merged.values() for r in group]
    bad = failures([Variant(**r) for r in rows])
    text = markdown(rows, data["triton"], seconds, bad, not args.no_cuda)
    if args.merged_json:
        payload = {"triton": data["triton"], "seconds": seconds, "results": rows, "failures": bad}
        atomic_write(args.merged_json, lambda tmp: _write_text(tmp, json.dumps(payload, indent=1)))

    atomic_write(args.report, lambda tmp: _write_text(tmp, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
