"""The memory of GroupViT-S's image-text training step per pair, for the chunk sizes of docs/training.md.

    python benchmarks/grad_cache_memory_estimate.py OUT.md [--batches 4 8]

Measures the peak growth of PyTorch's allocator during one plain AdamW step (after a first step, so the
optimiser state exists) of the released GroupViT-S image-text model (multi_label=3, 77-token texts,
224 px) at two batch sizes, fp32, on this machine's device, with the benchmark harness's
``peak_memory`` (torch's profiler on a CPU, ``max_memory_allocated`` on a GPU), and writes the two
peaks and their slope (memory per pair) with the device, versions and date. docs/training.md turns the
slope into chunk sizes per GPU size: an estimate until a GPU has run the recipe.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from groupvit_fast.bench.cases.model import ModelBank
from groupvit_fast.bench.environment import environment
from groupvit_fast.bench.timing import peak_memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--batches", type=int, nargs=2, default=(4, 8))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    meta = environment(args.device)
    bank = ModelBank("groupvit-s-image-text", args.device)
    model = bank.model("ours").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    peaks = {}
    for batch in args.batches:
        image, text = bank.inputs(batch)

        def step(image=image, text=text):
            optimizer.zero_grad(set_to_none=True)
            loss = sum(value.float() for value in model(image, text).values())
            loss.backward()
            optimizer.step()
            return loss

        step()
        peaks[batch] = peak_memory(step, args.device)
    (small, large), v = args.batches, meta["versions"]
    per_pair = (peaks[large] - peaks[small]) / (large - small)
    params = sum(p.numel() for p in model.parameters())
    lines = [
        "# GroupViT-S image-text training step: memory per pair",
        "",
        f"- Device: {meta['device_name']}; torch {v['torch']}, Python {v['python']}, "
        f"groupvit_fast {v['groupvit_fast']}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; git `{meta['git_commit']}`; load average "
        f"{os.getloadavg()[0]:.1f}",
        "- One plain AdamW step, fp32, after a first step; peak growth of the allocator "
        "(groupvit_fast.bench.timing.peak_memory)",
        "",
        "| batch | peak MB |",
        "| --- | --- |",
        *(f"| {b} | {peaks[b] / 1e6:.1f} |" for b in args.batches),
        "",
        f"Slope: **{per_pair / 1e6:.1f} MB per pair** (fp32 activations of both encoders, 1 image + 4 texts); "
        f"parameters {params / 1e6:.1f} M ({params * 4 / 1e6:.0f} MB in fp32).",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
