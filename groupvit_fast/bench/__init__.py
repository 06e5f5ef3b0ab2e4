"""``groupvit-fast bench`` (also ``python -m groupvit_fast.bench``): the one benchmark harness of
groupvit_fast. It measures everything against its baselines and writes a report.

It runs the cases of ``groupvit_fast.bench.cases`` (installed with the package; the pytest-benchmark
suites in ``benchmarks/`` run the same cases with the same runners), family by family (``op``,
``model``, ``segment``, ``train``, ``eval``: docs/benchmarks.md, "Case families"), for one device, and
writes ``<out>/<device>[-quick|-smoke][-<families>]-<date>.{md,json,png}``:

* at the top: device, versions (torch, triton, CUDA, driver), date, git commit, CPU, threads,
  machine load;
* per op case (shape x mode x dtype x implementation): median time and IQR, speed-up against
  the eager reference and against ``torch.compile(reference)``, achieved bandwidth over the
  minimum bytes the op must move and, on a GPU, the fraction of the roofline floor (bytes /
  time / device copy bandwidth measured in the same run), peak memory, bytes saved for backward
  and the error against a float64 reference;
* per model or pipeline case (GroupViT eval forward and training step, zero-shot segmentation, the
  training pipeline's step and loader, ``eval seg`` and ``eval cls``): images/s, speed-ups, peak
  memory, saved bytes, error against the reference;
* a PNG of speed-up against N for the stage-0 shapes.

Timing rules: see ``timing`` (warm-up, CUDA events and an L2 flush on a GPU, interleaved calls).
All comparisons are ratios within one run.

Options: ``--quick`` (a subset), ``--smoke`` (tiny CPU cases: CI), ``--device``, ``--dtype``,
``--only FAMILY`` (repeatable), ``--filter REGEX`` (over ``<case id>/<impl>``, e.g.
``'stage0-224/train.*(reference|cpu)'``), ``--threads``, ``--out DIR``, ``--max-minutes`` (skip the
rest, and say so, past a time budget), ``--list``, ``--render JSON`` (re-write the markdown and the
PNG from a JSON report, e.g. where matplotlib is missing).

The package, one job per module: ``cases`` (what is measured, by family, and the runners),
``timing`` (time, memory, bandwidth, error of one call), ``environment`` (the report's header),
``run`` (one tier to a JSON report), ``report`` (markdown and PNG), ``__main__`` (the command line).
"""

from __future__ import annotations

from .environment import environment
from .report import render_markdown, write_report
from .run import run_tier
from .timing import copy_bandwidth, measure_interleaved, measure_time, peak_memory, saved_bytes

__all__ = [
    "copy_bandwidth",
    "environment",
    "main",
    "measure_interleaved",
    "measure_time",
    "peak_memory",
    "render_markdown",
    "run_tier",
    "saved_bytes",
    "write_report",
]


def main(argv: list[str] | None = None) -> int:
    """The command line (``groupvit-fast bench`` calls this); returns the exit status.

    ``__main__`` is imported here, at the call, not at the top: importing it with the package
    would make ``python -m groupvit_fast.bench`` find it already loaded and warn (runpy).
    """
    from .__main__ import main as cli_main

    return cli_main(argv)
