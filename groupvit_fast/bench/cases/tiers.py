"""The tiers: which cases run on which device at which size (``gpu``, ``gpu-quick``, ``cpu``,
``cpu-quick``, ``smoke``), and the one ``groupvit-fast bench`` picks. A tier names its device and
timing budget; its cases are each family's cases for the tier's name (``Family.cases``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .family import families
from .op import CPU_BATCH


@dataclass(frozen=True)
class Tier:
    """The cases one run measures on ``device``, and how long each measurement takes."""

    name: str
    device: str
    #: seconds of timed calls per measurement, and the bounds on their number
    budget_s: float
    min_reps: int
    max_reps: int
    notes: tuple[str, ...] = field(default=())

    @property
    def cases(self) -> dict[str, tuple[Any, ...]]:
        """``family name -> its cases in this tier``, in family order (families without any left out)."""
        found = {name: family.cases.get(self.name, ()) for name, family in families().items()}
        return {name: cases for name, cases in found.items() if cases}

    def items(
        self, pattern: str | None = None, dtypes: tuple[str, ...] | None = None, only: tuple[str, ...] | None = None
    ) -> Iterator[tuple[Any, str]]:
        """``(case, impl)`` pairs in run order, filtered by a regex over ``"<case id>/<impl>"``, by
        dtype (``bf16`` also selects ``bf16-autocast`` cases) and by family name (``only``)."""
        regex = re.compile(pattern) if pattern else None
        for name, cases in self.cases.items():
            if only and name not in only:
                continue
            for case in cases:
                if dtypes and case.dtype.split("-")[0] not in dtypes:
                    continue
                for impl in case.impls:
                    if regex is None or regex.search(f"{case.id}/{impl}"):
                        yield case, impl


_NOTE_CPU_COMPILE = (
    "torch.compile baselines on the CPU: the op only at stage0-224 (each compile takes about 10 s on "
    "2 cores) and the training steps (the compile falls in the warm-up); compiled models are "
    "GPU-only (compiling GroupViT on 2 CPU cores takes minutes per case)."
)
_NOTE_GPU_MODEL_COMPILE = (
    "Compiled models only at B=64: each compile takes about a minute, and "
    "torch.compile recompiles for every batch size."
)
_SCALED_NOTE = (
    "CPU op shapes are docs/benchmarks.md's with the batch scaled down (column B; `scaled from` names "
    "the documented shape): " + ", ".join(f"{k} B={v}" for k, v in CPU_BATCH.items()) + "."
)

TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("gpu", "cuda", budget_s=0.4, min_reps=5, max_reps=300, notes=(_NOTE_GPU_MODEL_COMPILE,)),
        Tier(
            "gpu-quick",
            "cuda",
            budget_s=0.25,
            min_reps=5,
            max_reps=200,
            notes=(
                "Quick subset: stage-0 op shapes, eval and train, bf16; models and pipelines at one batch size "
                "each, without compile.",
            ),
        ),
        Tier("cpu", "cpu", budget_s=2.0, min_reps=5, max_reps=50, notes=(_SCALED_NOTE, _NOTE_CPU_COMPILE)),
        Tier(
            "cpu-quick",
            "cpu",
            budget_s=0.5,
            min_reps=3,
            max_reps=20,
            notes=(
                _SCALED_NOTE,
                "Quick subset: stage0-224 eval/train, GroupViT-S eval, one segmentation image, the "
                "small training step, eval cls; no compiled baselines.",
            ),
        ),
        Tier(
            "smoke",
            "cpu",
            budget_s=0.02,
            min_reps=2,
            max_reps=5,
            notes=(
                "Smoke tier: every spec shape at B=1 and a tiny GroupViT; it checks the harness, its numbers mean "
                "little.",
            ),
        ),
    )
}


def tier_for(device: str, *, quick: bool = False, smoke: bool = False) -> Tier:
    """The tier ``groupvit-fast bench`` runs for ``device`` ("cuda" or "cpu")."""
    if smoke:
        return TIERS["smoke"]
    base = "gpu" if device == "cuda" else "cpu"
    return TIERS[f"{base}-quick" if quick else base]
