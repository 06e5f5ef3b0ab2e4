"""The command line: ``groupvit-fast bench`` and ``python -m groupvit_fast.bench`` (same options)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import cases
from .environment import REPO_ROOT
from .report import write_report
from .run import run_tier


def _default_out() -> Path:
    """``benchmarks/results`` of the source checkout, else ``./benchmark-results`` (an installed wheel)."""
    return REPO_ROOT / "benchmarks" / "results" if (REPO_ROOT / "benchmarks").is_dir() else Path("benchmark-results")


def build_parser() -> argparse.ArgumentParser:
    names = tuple(cases.families())
    parser = argparse.ArgumentParser(
        prog="groupvit-fast bench",
        description="Measure groupvit_fast against its baselines (eager reference, torch.compile of it, Hugging "
        "Face) and write <device>-<date>.{md,json,png}. The cases are those of groupvit_fast.bench.cases, "
        f"in families: {', '.join(names)}.",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help="cuda if a GPU is visible, else cpu (default: auto)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a quick subset of the cases")
    size.add_argument("--smoke", action="store_true", help="tiny CPU cases that only check the harness (CI)")
    parser.add_argument(
        "--dtype",
        action="append",
        choices=("fp32", "bf16", "fp16"),
        help="only these dtypes (repeatable; bf16 selects the bf16-autocast model cases)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="FAMILY",
        help=f"only the cases of this family (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--filter",
        metavar="REGEX",
        help="only the items whose '<case id>/<impl>' matches, e.g. 'stage0-224/train' or 'model/.*/(ours|reference)$'",
    )
    parser.add_argument("--out", metavar="DIR", help=f"where the report goes (default: {_default_out()})")
    parser.add_argument("--max-minutes", type=float, help="skip (and list) the items left after this many minutes")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch intra-op threads (default: torch's); on a CPU shared with other jobs 1 gives "
        "steadier timings (the header records the count)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the selected items and exit (also --device cuda "
        "where no GPU is visible: what a GPU run would measure)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--render", metavar="JSON", help="re-write the markdown and PNG of a JSON report and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` (default: ``sys.argv[1:]``), runs or lists the tier, or re-renders a report;
    returns the exit status (2: the device asked for is not there)."""
    args = build_parser().parse_args(argv)
    if args.render:
        report = json.loads(Path(args.render).read_text())
        paths = write_report(report, args.out or Path(args.render).parent, Path(args.render).stem)
        print("\n".join(str(p) for p in paths.values()))
        return 0

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # listing needs no GPU: the GPU check's plan lists what its bench stage measures on any machine
    if device == "cuda" and not torch.cuda.is_available() and not args.list:
        print("groupvit_fast.bench: --device cuda, but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.smoke and device == "cuda":
        print("groupvit_fast.bench: --smoke is a CPU tier; use --quick on a GPU", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"groupvit_fast.bench: --threads must be at least 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    tier = cases.tier_for(device, quick=args.quick, smoke=args.smoke)
    dtypes = tuple(args.dtype) if args.dtype else None
    only = tuple(dict.fromkeys(args.only)) if args.only else None
    if args.list:
        for case, impl in tier.items(args.filter, dtypes, only):
            print(f"{case.id}/{impl}")
        return 0
    if device == "cpu" and not args.smoke:
        print(
            "groupvit_fast.bench: no GPU in use: running the CPU cases only; the GPU cases are not run.",
            file=sys.stderr,
        )
    report = run_tier(
        tier, pattern=args.filter, dtypes=dtypes, only=only, max_minutes=args.max_minutes, progress=not args.no_progress
    )
    paths = write_report(report, args.out or _default_out())
    measured = sum(len(report[name]) for name in report["meta"]["families"])
    print(
        f"groupvit_fast.bench: {measured} measured, {len(report['skipped'])} not measured, "
        f"{report['meta']['duration_s']} s"
    )
    print("\n".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
