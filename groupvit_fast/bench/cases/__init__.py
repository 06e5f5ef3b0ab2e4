"""The benchmark cases of groupvit_fast, defined once (docs/benchmarks.md) and installed with the
package: ``python -m groupvit_fast.bench`` and the pytest-benchmark suites in ``benchmarks/``
both read them from here.

* ``op``: the op shapes of docs/benchmarks.md (``SHAPES``, ``groupvit_fast.ops.AssignShape`` by name), the
  modes (``MODES``: eval, train, soft), the implementations compared (``reference``,
  ``compiled`` = ``torch.compile`` of it, and each backend of ours), the op's minimum bytes and
  matmul FLOPs, and its runners;
* ``model``: GroupViT-S eval forward and training step (HF ``transformers`` for eval too) and the
  image-text model's training step, with the ``ModelBank`` that gives them one set of weights;
* ``segment``: zero-shot segmentation, the reference pipeline against ``GroupViTSegmenter``;
* ``tiers``: ``gpu`` (the spec's sizes), ``gpu-quick``, ``cpu`` (scaled-down batches, including
  the issue-#6 CPU cases), ``cpu-quick`` and ``smoke`` (tiny, for CI);
* ``runner``: what a runner is (one case x one implementation -> a zero-argument call to time).
"""

from .model import (
    IMAGE_TEXT_CONFIGS,
    MODEL_CONFIGS,
    MODEL_IMPL_INFO,
    NOT_MEASURED,
    ModelBank,
    ModelCase,
    build_model_runner,
    hf_config,
)
from .op import (
    DTYPES,
    MODES,
    OP_BASELINES,
    OP_IMPL_INFO,
    OUR_BACKENDS,
    SHAPE_WHERE,
    SHAPES,
    STAGE0,
    Mode,
    OpCase,
    build_op_runner,
    flops,
    fused_flops,
    min_bytes,
    op_function,
    op_inputs,
    op_outputs,
)
from .runner import Runner, fresh_compile, impl_unavailable
from .segment import SEGMENT_IMPLS, VOC_CLASSES, SegmentBank, SegmentCase, build_segment_runner
from .tiers import CPU_BATCH, SEGMENT_CASES, SMOKE_BATCH, TIERS, Tier, tier_for

__all__ = [
    "CPU_BATCH", "DTYPES", "IMAGE_TEXT_CONFIGS", "MODEL_CONFIGS", "MODEL_IMPL_INFO", "MODES", "NOT_MEASURED",
    "OP_BASELINES", "OP_IMPL_INFO", "OUR_BACKENDS", "SEGMENT_CASES", "SEGMENT_IMPLS", "SHAPES", "SHAPE_WHERE",
    "SMOKE_BATCH", "STAGE0", "TIERS", "VOC_CLASSES", "Mode", "ModelBank", "ModelCase", "OpCase", "Runner",
    "SegmentBank", "SegmentCase", "Tier", "build_model_runner", "build_op_runner", "build_segment_runner", "flops",
    "fresh_compile", "fused_flops", "hf_config", "impl_unavailable", "min_bytes", "op_function", "op_inputs",
    "op_outputs", "tier_for",
]
