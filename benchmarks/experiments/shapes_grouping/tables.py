"""The shapes report's table from ``probes.jsonl``: ``python tables.py OUT/probes.jsonl``.

One row per lever: its seeds, the mean (and per-seed) held-out measures at the recipe's test time.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _fmt(values: list[float], digits: int = 1) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def main() -> None:
    rows = defaultdict(list)
    with open(sys.argv[1], encoding="utf-8") as f:
        for row in map(json.loads, f):
            rows[row["name"]].append(row)
    print(
        "| run | seeds | caption loss first -> last 8 steps | multi-label loss "
        "| oracle grouping stage 1 / 2 (untrained) "
        "| groups in use stage 1 / 2 of 16 / 8 (untrained) | image top class drawn | mIoU | train CPU s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in rows.items():
        t = [r["trained"] for r in runs]
        u = runs[0]["untrained"]
        print(
            f"| {name} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {_fmt([r['loss_first8'] for r in runs], 2)} -> {_fmt([r['loss_last8'] for r in runs], 2)} "
            f"| {_fmt([r['ml_first8'] for r in runs], 2)} -> {_fmt([r['ml_last8'] for r in runs], 2)} "
            f"| {_fmt([x['oracle_grouping_mIoU'][0] for x in t])} / {_fmt([x['oracle_grouping_mIoU'][1] for x in t])} "
            f"({u['oracle_grouping_mIoU'][0]:.1f} / {u['oracle_grouping_mIoU'][1]:.1f}) "
            f"| {_fmt([x['groups'][0] for x in t])} / {_fmt([x['groups'][1] for x in t])} "
            f"({u['groups'][0]:.1f} / {u['groups'][1]:.1f}) "
            f"| {_fmt([x['image_top1_present'] for x in t], 2)} (untrained {u['image_top1_present']:.2f}) "
            f"| {_fmt([x['mIoU'] for x in t])} (untrained {u['mIoU']:.1f}) "
            f"| {_fmt([r['train_cpu_s'] for r in runs], 0)} |"
        )


if __name__ == "__main__":
    main()
