"""The benchmark cases of groupvit_fast, defined once (docs/benchmarks.md) and installed with the
package: ``groupvit-fast bench`` and the pytest-benchmark suites in ``benchmarks/`` both read them
from here. One module per case family (``family``: what a family is, and the registry):

* ``op``: the op shapes of docs/benchmarks.md (``SHAPES``, ``groupvit_fast.ops.AssignShape`` by name), the
  modes (``MODES``: eval, train, soft), the implementations compared (``reference``,
  ``compiled`` = ``torch.compile`` of it, and each backend of ours), the op's minimum bytes and
  matmul FLOPs, and its runners;
* ``model``: GroupViT-S eval forward and training step (HF ``transformers`` for eval too) and the
  image-text model's training step, with the ``ModelBank`` that gives them one set of weights;
* ``segment``: zero-shot segmentation, the reference pipeline against ``GroupViTSegmenter``;
* ``train``: the training pipeline's step (``groupvit_fast.train.step``) and its data loader;
* ``eval``: the evaluation pipelines (``eval seg`` at VOC settings, ``eval cls``);
* ``tiers``: ``gpu`` (the spec's sizes), ``gpu-quick``, ``cpu`` (scaled-down batches: the CPU
  tables of the README), ``cpu-quick`` and ``smoke`` (tiny, for CI);
* ``runner``: what a runner is (one case x one implementation -> a zero-argument call to time).
"""

from .family import FAMILY_MODULES, BuildContext, Family, families, family_of, throughput_record
from .model import (
    IMAGE_TEXT_CONFIGS,
    MODEL_CONFIGS,
    MODEL_IMPL_INFO,
    NOT_MEASURED,
    ModelBank,
    ModelCase,
    build_model_runner,
    hf_config,
    model_bank,
)
from .op import (
    CPU_BATCH,
    DTYPES,
    MODES,
    OP_BASELINES,
    OP_IMPL_INFO,
    OUR_BACKENDS,
    SHAPE_WHERE,
    SHAPES,
    SMOKE_BATCH,
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
from .runner import Runner, dispatched_backends, fresh_compile, impl_unavailable
from .segment import SEGMENT_CASES, SEGMENT_IMPLS, VOC_CLASSES, SegmentBank, SegmentCase, build_segment_runner
from .tiers import TIERS, Tier, tier_for

__all__ = [
    "CPU_BATCH",
    "DTYPES",
    "FAMILY_MODULES",
    "IMAGE_TEXT_CONFIGS",
    "MODEL_CONFIGS",
    "MODEL_IMPL_INFO",
    "MODES",
    "NOT_MEASURED",
    "OP_BASELINES",
    "OP_IMPL_INFO",
    "OUR_BACKENDS",
    "SEGMENT_CASES",
    "SEGMENT_IMPLS",
    "SHAPES",
    "SHAPE_WHERE",
    "SMOKE_BATCH",
    "STAGE0",
    "TIERS",
    "VOC_CLASSES",
    "BuildContext",
    "Family",
    "Mode",
    "ModelBank",
    "ModelCase",
    "OpCase",
    "Runner",
    "SegmentBank",
    "SegmentCase",
    "Tier",
    "build_model_runner",
    "build_op_runner",
    "build_segment_runner",
    "dispatched_backends",
    "families",
    "family_of",
    "flops",
    "fresh_compile",
    "fused_flops",
    "hf_config",
    "impl_unavailable",
    "min_bytes",
    "model_bank",
    "op_function",
    "op_inputs",
    "op_outputs",
    "throughput_record",
    "tier_for",
]
