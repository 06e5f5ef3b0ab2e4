"""The tiers: which cases run on which device at which size (``gpu``, ``gpu-quick``, ``cpu``,
``cpu-quick``, ``smoke``), and the one ``python -m groupvit_fast.bench`` picks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .grad_cache import grad_cache_impls
from .model import IMAGE_TEXT_CONFIGS, MODEL_CONFIGS, ModelCase
from .op import MODES, OUR_BACKENDS, SHAPES, STAGE0, OpCase
from .segment import SEGMENT_IMPLS, VOC_CLASSES, SegmentCase


@dataclass(frozen=True)
class Tier:
    """The cases one run measures on ``device``, and how long each measurement takes."""

    name: str
    device: str
    op_cases: tuple[OpCase, ...]
    model_cases: tuple[ModelCase, ...]
    #: seconds of timed calls per measurement, and the bounds on their number
    budget_s: float
    min_reps: int
    max_reps: int
    notes: tuple[str, ...] = field(default=())
    segment_cases: tuple[SegmentCase, ...] = field(default=())

    def items(self, pattern: str | None = None,
              dtypes: tuple[str, ...] | None = None) -> Iterator[tuple[OpCase | ModelCase | SegmentCase, str]]:
        """``(case, impl)`` pairs in run order, filtered by a regex over ``"<case id>/<impl>"``
        and by dtype (``bf16`` also selects ``bf16-autocast`` model cases)."""
        regex = re.compile(pattern) if pattern else None
        for case in (*self.op_cases, *self.model_cases, *self.segment_cases):
            if dtypes and case.dtype.split("-")[0] not in dtypes:
                continue
            for impl in case.impls:
                if regex is None or regex.search(f"{case.id}/{impl}"):
                    yield case, impl


def _op_cases(names, modes, dtypes, impls, batches=None, compiled_for=None) -> list[OpCase]:
    """Every shape (SHAPES names) x mode x dtype, with ``batches`` scaling the batch and
    ``compiled_for`` (shape names) limiting the torch.compile baseline to some shapes (its compile
    time is the cost)."""
    cases = []
    for dtype in dtypes:
        for name in names:
            shape = SHAPES[name]
            for mode in modes:
                case_impls = tuple(i for i in impls
                                   if i != "compiled" or compiled_for is None or name in compiled_for)
                scaled = shape.with_batch(batches[name]) if batches else shape
                cases.append(OpCase(name, scaled, MODES[mode], dtype, case_impls,
                                    None if scaled == shape else name))
    return cases


_GPU_OP_IMPLS = ("reference", "compiled", *OUR_BACKENDS["cuda"])
_CPU_OP_IMPLS = ("reference", "compiled", *OUR_BACKENDS["cpu"])
_ALL_MODES = tuple(MODES)

#: CPU batch sizes: about 3k image tokens per call (stage0-224 at B=16 is the issue-#6 case).
CPU_BATCH = {"stage0-224": 16, "stage1-224": 16, "stage0-448": 4, "stage0-896": 1, "wide": 2, "multihead": 8}
SMOKE_BATCH = {name: 1 for name in SHAPES}

_NOTE_CPU_COMPILE = ("torch.compile baselines on the CPU: only for stage0-224 (each compile takes about 10 s on 2 "
                     "cores); the other compiled baselines are GPU-only.")
_NOTE_CPU_MODEL_COMPILE = ("Compiled models are GPU-only: compiling GroupViT on 2 CPU cores takes minutes.")
_NOTE_GPU_MODEL_COMPILE = ("Compiled models only at B=64: each compile takes about a minute, and "
                           "torch.compile recompiles for every batch size.")


#: Zero-shot segmentation per tier: GroupViT-S at 448 px with the 21 VOC classes (one 448 x 448
#: window per image); the smoke tier's tiny model at 64 px (two windows of 64 at stride 32).
SEGMENT_CASES: dict[str, tuple[SegmentCase, ...]] = {
    "gpu": (SegmentCase("groupvit-s-image-text", 8, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
    "gpu-quick": (SegmentCase("groupvit-s-image-text", 4, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
    "cpu": (SegmentCase("groupvit-s-image-text", 2, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
    "cpu-quick": (SegmentCase("groupvit-s-image-text", 1, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
    "smoke": (SegmentCase("groupvit-tiny-image-text", 1, (64, 96), VOC_CLASSES[:4], SEGMENT_IMPLS, crop=64,
                          stride=32, bg_thresh=0.5),),
}


def _tiers() -> dict[str, Tier]:
    gpu_models = []
    for batch in (1, 64, 256):
        compiled = ("reference-compiled", "ours-compiled") if batch == 64 else ()
        gpu_models.append(ModelCase("groupvit-s", "eval", batch, "bf16-autocast",
                                    ("reference", *compiled[:1], "ours", *compiled[1:], "hf")))
    for batch in (1, 64, 256):
        compiled = ("reference-compiled", "ours-compiled") if batch == 64 else ()
        gpu_models.append(ModelCase("groupvit-s", "train", batch, "bf16-autocast",
                                    ("reference", *compiled[:1], "ours", *compiled[1:])))
    gpu_models.append(ModelCase("groupvit-s", "eval", 64, "fp32", ("reference", "ours", "hf")))
    gpu_models.append(ModelCase("groupvit-s", "train", 64, "fp32", ("reference", "ours")))
    gpu_models.append(ModelCase("groupvit-s-image-text", "train", 64, "bf16-autocast", ("reference", "ours")))
    # gradient caching (docs/training.md): GroupViT-S at batch 256, plain and in chunks of 64 (B=64 above: one chunk)
    gpu_models.append(ModelCase("groupvit-s-image-text", "train", 256, "bf16-autocast", ("ours", "ours-gc64")))

    cpu_ops = _op_cases(SHAPES, _ALL_MODES, ("fp32",), _CPU_OP_IMPLS, CPU_BATCH, compiled_for=("stage0-224",))
    # bf16 on the CPU: speed-up and error against fp32 (issue #6), for the headline shape
    cpu_ops += _op_cases(("stage0-224",), ("eval", "train"), ("bf16",), ("reference", "cpu"), CPU_BATCH)
    cpu_models = (
        ModelCase("groupvit-s", "eval", 8, "fp32", ("reference", "ours", "hf")),
        ModelCase("groupvit-s", "eval", 8, "bf16-autocast", ("ours",)),  # vs its fp32 row: speed-up, error
        ModelCase("groupvit-s", "train", 2, "fp32", ("reference", "ours")),
        ModelCase("groupvit-s-image-text", "train", 2, "fp32", ("reference", "ours")),
        # gradient caching (docs/training.md): a small image-text model, so that batch 256 takes seconds
        ModelCase("groupvit-tiny-image-text", "train", 16, "fp32", ("ours",)),  # one chunk's plain step
        *(ModelCase("groupvit-tiny-image-text", "train", b, "fp32", grad_cache_impls(b, (16, 64)))
          for b in (64, 128, 256)),
    )
    scaled_note = ("CPU shapes are docs/benchmarks.md's with the batch scaled down (column B; `scaled from` "
                   "names the documented shape): " + ", ".join(f"{k} B={v}" for k, v in CPU_BATCH.items()) + ".")
    tiers = [
        Tier("gpu", "cuda", tuple(_op_cases(SHAPES, _ALL_MODES, ("bf16", "fp32"), _GPU_OP_IMPLS)),
             tuple(gpu_models), budget_s=0.4, min_reps=5, max_reps=300, notes=(_NOTE_GPU_MODEL_COMPILE,)),
        Tier("gpu-quick", "cuda",
             tuple(_op_cases(STAGE0, ("eval", "train"), ("bf16",), _GPU_OP_IMPLS)),
             (ModelCase("groupvit-s", "eval", 64, "bf16-autocast", ("reference", "ours", "hf")),
              ModelCase("groupvit-s", "train", 64, "bf16-autocast", ("reference", "ours")),
              ModelCase("groupvit-s-image-text", "train", 64, "bf16-autocast", ("reference", "ours", "ours-gc16"))),
             budget_s=0.25, min_reps=5, max_reps=200,
             notes=("Quick subset: stage-0 shapes, eval and train, bf16; models at B=64 without compile.",)),
        Tier("cpu", "cpu", tuple(cpu_ops), cpu_models, budget_s=2.0, min_reps=5, max_reps=50,
             notes=(scaled_note, _NOTE_CPU_COMPILE, _NOTE_CPU_MODEL_COMPILE)),
        Tier("cpu-quick", "cpu",
             tuple(_op_cases(("stage0-224",), ("eval", "train"), ("fp32",), ("reference", "cpu"), CPU_BATCH)),
             (ModelCase("groupvit-s", "eval", 8, "fp32", ("reference", "ours")),),
             budget_s=0.5, min_reps=3, max_reps=20,
             notes=(scaled_note, "Quick subset: stage0-224 eval/train and GroupViT-S eval; no compiled baselines.")),
        Tier("smoke", "cpu", tuple(_op_cases(SHAPES, _ALL_MODES, ("fp32",), ("reference", "cpu"), SMOKE_BATCH)),
             (ModelCase("groupvit-tiny", "eval", 2, "fp32", ("reference", "ours", "hf")),
              ModelCase("groupvit-tiny", "train", 2, "fp32", ("reference", "ours")),
              ModelCase("groupvit-tiny-image-text", "train", 2, "fp32", ("reference", "ours"))),
             budget_s=0.02, min_reps=2, max_reps=5,
             notes=(("Smoke tier: every spec shape at B=1 and a tiny GroupViT; it checks the harness, its "
                     "numbers mean little."),)),
    ]
    known = {*MODEL_CONFIGS, *IMAGE_TEXT_CONFIGS}
    return {t.name: replace(t, model_cases=tuple(c for c in t.model_cases if c.config in known),
                            segment_cases=tuple(c for c in SEGMENT_CASES.get(t.name, ()) if c.config in known))
            for t in tiers}


TIERS: dict[str, Tier] = _tiers()


def tier_for(device: str, *, quick: bool = False, smoke: bool = False) -> Tier:
    """The tier ``python -m groupvit_fast.bench`` runs for ``device`` ("cuda" or "cpu")."""
    if smoke:
        return TIERS["smoke"]
    base = "gpu" if device == "cuda" else "cpu"
    return TIERS[f"{base}-quick" if quick else base]
