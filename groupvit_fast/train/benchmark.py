"""Training-step benchmark: images/s and peak memory of the full image-text step, and loader throughput.

``python -m groupvit_fast.train.benchmark --out DIR [--batch 8] [--preset small|groupvit-s] ...``
measures one optimiser step (vision + text encoders, multi-label loss, backward, AdamW) for

* ``ours``: the default backends (``attn_backend="sdpa"``, ``assign_backend="auto"``), eager;
* ``original``: NVlabs' formulation (``attn_backend="explicit"``, ``assign_backend="reference"``), eager;
* ``original+compile``: the same under ``torch.compile`` (``--compile``; slow to build on a CPU; a
  compile failure is reported in its row, not raised);

and the data loader's decoded + augmented images/s per worker (DeiT augmentation on synthetic
shards). Each variant runs in its own process (its own peak memory); the variants take turns
``--rounds`` times (docs/training.md, "Benchmark"). It writes ``report.md`` and ``report.json``
with the device, versions, date and commit, and projects the 30-epoch recipe's wall time from the
measured step time (GroupViT-S at the measured batch per process; the recipe's samples are GCC3M +
GCC12M + YFCC14M).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

__all__ = ["measure_step", "measure_loader", "main", "RECIPE_SAMPLES"]

#: GCC3M + GCC12M + YFCC14M (configs/group_vit_gcc_yfcc_30e.yml), 30 epochs.
RECIPE_SAMPLES = 2891445 + 11156203 + 14615499
RECIPE_EPOCHS = 30

VARIANTS = {
    "ours": {"attn_backend": "sdpa", "assign_backend": "auto"},
    "original": {"attn_backend": "explicit", "assign_backend": "reference"},
}


def _model_config(preset: str, variant: dict, multi_label: int) -> dict:
    from ..models.registry import released_config

    cfg = released_config(multi_label=multi_label)
    if preset == "small":  # GroupViT-S's shape at a fraction of its depth and width, for CPUs
        cfg["img_encoder"].update(embed_dim=192, num_heads=[3, 3, 3], depths=[2, 1, 1], img_size=224)
        cfg["text_encoder"].update(layers=2, width=128)
        cfg["output_dim"] = 128
    elif preset != "groupvit-s":
        raise ValueError(f"--preset must be small or groupvit-s, got {preset!r}")
    cfg["img_encoder"].update(attn_backend=variant["attn_backend"], assign_backend=variant["assign_backend"])
    cfg["text_encoder"]["attn_backend"] = variant["attn_backend"]
    return cfg


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_step(preset: str, variant: str, batch: int, *, device: torch.device, compile: bool = False,
                 autocast_dtype: torch.dtype | None = None, warmup: int = 2, iters: int = 5,
                 multi_label: int = 3) -> dict:
    """``{'images_per_s', 'step_ms', 'peak_memory_mb'}`` of the training step (median of ``iters``)."""
    from omegaconf import OmegaConf

    from ..models.registry import build_model
    from .optim import build_optimizer
    from .step import train_step

    torch.manual_seed(0)
    model = build_model(_model_config(preset, VARIANTS[variant], multi_label)).to(device).train()
    context = model.text_encoder.context_length
    train_cfg = OmegaConf.create({"weight_decay": 0.05, "skip_decay_embeddings": False,
                                  "optimizer": {"name": "adamw", "eps": 1e-8, "betas": [0.9, 0.999]}})
    optimizer = build_optimizer(model, train_cfg, lr=1e-4)
    runner = torch.compile(model) if compile else model
    text = torch.randint(1, 49000, (batch, 1 + multi_label, context), device=device)
    text[..., 20] = 49407
    data = [{"image": torch.randn(batch, 3, 224, 224, device=device), "text": text}]
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(runner, data, optimizer, device=device, autocast_dtype=autocast_dtype, scaler=scaler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    return {"images_per_s": batch / step, "step_ms": 1000 * step, "peak_memory_mb": _peak_mb(device)}


def measure_loader(folder: str, batches: int = 6, batch: int = 32, workers: int = 1, samples: int = 512) -> dict:
    """Decoded + DeiT-augmented + tokenised images/s of ``workers`` loader worker(s) on synthetic shards."""
    from .config import load_config
    from .data import TrainData, write_synthetic_shards

    os.makedirs(folder, exist_ok=True)
    if not os.path.isfile(os.path.join(folder, "synthetic-000003.tar")):
        write_synthetic_shards(folder, 4, samples, image_size=256)
    opts = [f"data.dataset.meta.synthetic.path={folder}", "data.dataset.meta.synthetic.prefix="
            "synthetic-{000000..000003}.tar", f"data.dataset.meta.synthetic.length={samples}",
            f"data.batch_size={batch}", f"data.num_workers={workers}", "data.img_aug.deit_aug=true",
            "data.img_aug.img_size=224",
            "data.img_aug.img_scale=[0.08,1.0]", "data.text_aug.max_seq_len=77"]
    cfg = load_config("tiny", opts, output=folder)
    data = TrainData(cfg, 0, 1)
    it = iter(data.loader(0))
    next(it)  # worker start-up and the shuffle buffer's fill
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    return {"images_per_s": batches * batch / elapsed, "workers": workers,
            "images_per_s_per_worker": batches * batch / elapsed / max(1, workers)}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:  # Linux: the CPU's model name ("AMD EPYC ...") says more than the architecture
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} CPU ({os.cpu_count()} cores), {torch.get_num_threads()} thread(s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m groupvit_fast.train.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for report.md and report.json")
    parser.add_argument("--preset", default="small", choices=("small", "groupvit-s"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--compile", action="store_true", help="also time the original under torch.compile")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="the variants take turns this many times")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads per variant (0: torch's default); on a machine shared "
                             "with other jobs 1 gives steady timings, where all cores' OpenMP threads stall "
                             "on each other (measured 5-20x slower steps on a busy 2-core machine)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one variant in this process; prints its JSON row
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None,
             "auto": torch.bfloat16 if device.type == "cuda" else None}[args.dtype]
    cases = {"ours": ("ours", False), "original": ("original", False), "original+compile": ("original", True)}
    if args.only:
        variant, compiled = cases[args.only]
        print(json.dumps(measure_step(args.preset, variant, args.batch, device=device, compile=compiled,
                                      autocast_dtype=dtype, iters=args.iters)))
        return 0
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {}
    errors: dict[str, dict] = {}
    # One process per variant, so that each peak memory is its own; the variants take turns for
    # --rounds rounds, so that a change in the machine's load (a shared machine) falls on all of them
    # rather than on whichever ran during it. Step time: the fastest round's median (other jobs only
    # ever slow a round down).
    for _round in range(args.rounds):
        for name, (_variant, compiled) in cases.items():
            if (compiled and not args.compile) or name in errors:
                continue
            cmd = [sys.executable, "-m", "groupvit_fast.train.benchmark", "--only", name, "--out", args.out,
                   "--preset", args.preset, "--batch", str(args.batch), "--device", args.device,
                   "--dtype", args.dtype, "--iters", str(args.iters), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0:
                runs.setdefault(name, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            elif compiled:  # torch.compile can fail on a device (no compiler, an inductor bug): report it, go on
                tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
                errors[name] = {"error": " / ".join(tail) or f"exit status {done.returncode}"}
            else:
                raise RuntimeError(f"the {name} step failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    rows: dict[str, dict] = {}
    for name in cases:
        if name in errors:
            rows[name] = errors[name]
        elif name in runs:
            step_ms = min(r["step_ms"] for r in runs[name])  # the round least disturbed by other jobs
            rows[name] = {"images_per_s": 1000 * args.batch / step_ms, "step_ms": step_ms,
                          "peak_memory_mb": max(r["peak_memory_mb"] for r in runs[name]),
                          "rounds_step_ms": [r["step_ms"] for r in runs[name]]}
    loader = measure_loader(os.path.join(args.out, "loader_shards"), workers=args.loader_workers)
    step_s = rows["ours"]["step_ms"] / 1000
    steps = RECIPE_SAMPLES // args.batch * RECIPE_EPOCHS
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(), "device": _device_name(device), "torch": torch.__version__,
        "python": platform.python_version(), "load_average_1min_start": load_start,
        "load_average_1min": os.getloadavg()[0], "preset": args.preset,
        "batch": args.batch, "iters": args.iters, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "dtype": args.dtype if dtype is not None or args.dtype != "auto" else "fp32", "step": rows, "loader": loader,
        "projection": {"samples_per_epoch": RECIPE_SAMPLES, "epochs": RECIPE_EPOCHS, "batch_per_process": args.batch,
                       "steps_one_process": steps, "hours_one_process": steps * step_s / 3600,
                       "note": "ours' measured step time x the recipe's steps at this batch on one device of this "
                               "kind; the preset is " + args.preset},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    base = rows["original"]
    compiled_row = rows.get("original+compile", {})
    vs_compile = "images_per_s" in compiled_row
    lines = [f"# Training step benchmark ({args.preset}, batch {args.batch}, {report['dtype']})", "",
             f"{report['date']}, commit {report['commit']}, {report['device']}, torch {report['torch']}, "
             f"Python {report['python']}, load average {load_start:.1f} at the start and "
             f"{report['load_average_1min']:.1f} when it ended "
             f"(a shared machine is slower than its cores suggest)", "",
             "| variant | images/s | step (ms) | peak memory (MiB) | speed vs original | memory vs original |"
             + (" speed vs original+compile | memory vs original+compile |" if vs_compile else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if vs_compile else "")]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error']} |")
            continue
        line = (f"| {name} | {row['images_per_s']:.2f} | {row['step_ms']:.1f} | {row['peak_memory_mb']:.0f} | "
                f"{row['images_per_s'] / base['images_per_s']:.2f}x | "
                f"{row['peak_memory_mb'] / base['peak_memory_mb']:.2f}x |")
        if vs_compile:
            line += (f" {row['images_per_s'] / compiled_row['images_per_s']:.2f}x |"
                     f" {row['peak_memory_mb'] / compiled_row['peak_memory_mb']:.2f}x |")
        lines.append(line)
    if "original+compile" not in rows:
        lines += ["", "torch.compile of the original was not measured (run with `--compile`)."]
    lines += ["", f"Data loader (DeiT augmentation at 224, 77-token text, synthetic 256 px JPEGs): "
                  f"{loader['images_per_s']:.1f} images/s with {loader['workers']} worker(s), "
                  f"{loader['images_per_s_per_worker']:.1f} per worker; the model step consumes "
                  f"{rows['ours']['images_per_s']:.1f} images/s.", "",
              f"Projection: 30 epochs of {RECIPE_SAMPLES:,} samples at batch {args.batch} = {steps:,} steps x "
              f"{step_s * 1000:.0f} ms = {report['projection']['hours_one_process']:,.0f} hours in one process on "
              f"this device with the `{args.preset}` preset (the original: 16 V100 for about 2 days, "
              "GroupViT-S, global batch 4096).",
              "", f"Each variant runs in its own process, {args.iters} timed steps after 2 warm-up steps (for "
                  "original+compile the compilation falls in the warm-up); the variants take turns "
                  f"{args.rounds} time(s) and the step time is the fastest round's median (other jobs only slow a "
                  "round down; per round, ms: "
                  + "; ".join(f"{n} " + ", ".join(f"{t:.0f}" for t in r["rounds_step_ms"])
                              for n, r in rows.items() if "rounds_step_ms" in r) + "). "
                  "Peak memory: on a CPU the process's maximum resident set (model, optimiser and activations "
                  "plus the Python runtime, and for original+compile the compiler's own memory); on CUDA torch's "
                  "peak allocated memory."]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
