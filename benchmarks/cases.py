"""The benchmark cases of groupvit_fast, defined once (docs/benchmarks.md).

Both harnesses read this file: the pytest-benchmark suites in ``benchmarks/`` (through
``conftest.py``) and the report generator ``python -m groupvit_fast.bench``. It holds

* ``SHAPES``: the op shapes of docs/benchmarks.md (GroupViT-S unless said), verbatim;
* ``MODES``: eval (hard argmax, no noise, forward), train (hard + Gumbel, forward + backward),
  soft (soft assignment, forward);
* the implementations compared: ``reference`` (NVlabs-faithful pure PyTorch, eager),
  ``compiled`` (``torch.compile`` of that same function), and each backend of ours;
* the model cases (GroupViT-S eval forward and training step; HF ``transformers`` for eval);
* tiers: ``gpu`` (the spec's sizes), ``gpu-quick``, ``cpu`` (scaled-down batches, including the
  issue-#6 CPU cases), ``cpu-quick`` and ``smoke`` (tiny, for CI);
* the runners that turn a case and an implementation into one zero-argument call to time.

The file is loaded by path (``groupvit_fast.bench.load_cases``), never imported as a top-level
module, so nothing here may rely on being importable as ``benchmarks.cases``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from groupvit_fast.ops import BACKENDS, assign_attention

# --------------------------------------------------------------------------------------------
# What is measured
# --------------------------------------------------------------------------------------------

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class OpShape:
    """One assignment-attention problem: q ``[B, G, C]``, k and v ``[B, N, C]``, ``heads`` heads."""

    name: str
    batch: int
    groups: int
    tokens: int
    channels: int
    heads: int
    where: str

    def with_batch(self, batch: int) -> OpShape:
        return replace(self, batch=batch)

    def dims(self) -> str:
        return f"B={self.batch} G={self.groups} N={self.tokens} C={self.channels} h={self.heads}"

    def min_bytes(self, mode: Mode, dtype: torch.dtype) -> int:
        """Bytes the op must move at the least (docs/benchmarks.md, "Roofline").

        Forward: read q, k, v and write out. Backward: read q, k, v, out, dO and write dq, dk, dv.
        ``r`` ([B, h, G] float32) is negligible and left out, as in the spec's 102 MB / 204 MB for
        stage0-224 in bf16.
        """
        size = torch.empty((), dtype=dtype).element_size()
        q = self.batch * self.groups * self.channels * size  # q, out, dq, dO are all [B, G, C]
        kv = self.batch * self.tokens * self.channels * size  # k, v, dk, dv are all [B, N, C]
        forward = 2 * q + 2 * kv
        backward = 3 * q + 2 * kv + q + 2 * kv  # reads q, out, dO, k, v; writes dq, dk, dv
        return forward + (backward if mode.backward else 0)

    def flops(self, mode: Mode) -> int:
        """Matmul FLOPs: forward z = q k^T and out = R v (4 BGNC); backward dR, dv, dz q and dz k
        (8 BGNC), without the recomputation of z a fused backward adds."""
        bgnc = self.batch * self.groups * self.tokens * self.channels
        return 4 * bgnc + (8 * bgnc if mode.backward else 0)

    def fused_flops(self, mode: Mode) -> int:
        """Matmul FLOPs a fused kernel under the memory contract of docs/assign_op.md cannot avoid.

        Forward: z = q k^T (2 BGNC); the merge R v is a GEMM only in soft mode (hard mode: a
        segmented sum of v, O(BNC)). Backward: z again (nothing [B,h,G,N] is saved), dR = dO v^T,
        dq = dz k and dk = dz^T q (8 BGNC); dv = R^T dO is a GEMM only in soft mode (hard: a gather).
        Hard train is therefore 10 BGNC against the eager reference's 12 BGNC.
        """
        bgnc = self.batch * self.groups * self.tokens * self.channels
        soft = 0 if mode.hard else 1
        forward = (2 + 2 * soft) * bgnc
        return forward + ((8 + 2 * soft) * bgnc if mode.backward else 0)


#: docs/benchmarks.md, "Shapes" (keep in this order: the most important first, so a run cut by its
#: time budget drops the least important cases).
SHAPES: tuple[OpShape, ...] = (
    OpShape("stage0-224", 256, 64, 196, 384, 1, "grouping block 0, training at 224 px"),
    OpShape("stage1-224", 256, 8, 64, 384, 1, "grouping block 1"),
    OpShape("stage0-448", 64, 64, 784, 384, 1, "segmentation at 448 px"),
    OpShape("stage0-896", 8, 64, 3136, 384, 1, "large images"),
    OpShape("wide", 64, 64, 1024, 768, 1, "a GroupViT-B-like width"),
    OpShape("multihead", 128, 64, 196, 384, 6, "the op with heads > 1"),
)
SHAPE_BY_NAME = {s.name: s for s in SHAPES}
#: The stage-0 shapes: G = 64, C = 384, one head, N growing with the image size (the plot's x axis).
STAGE0 = ("stage0-224", "stage0-448", "stage0-896")


@dataclass(frozen=True)
class Mode:
    name: str
    hard: bool
    gumbel: bool
    backward: bool
    what: str

    def op_kwargs(self) -> dict[str, Any]:
        return {"hard": self.hard, "gumbel": self.gumbel}


MODES: dict[str, Mode] = {
    "eval": Mode("eval", hard=True, gumbel=False, backward=False, what="hard argmax, no noise, forward"),
    "train": Mode("train", hard=True, gumbel=True, backward=True, what="hard + Gumbel noise, forward + backward"),
    "soft": Mode("soft", hard=False, gumbel=False, backward=False, what="soft assignment, forward"),
}

#: Op implementations: the two baselines, then ours (the names of ``groupvit_fast.ops.BACKENDS``).
OP_BASELINES = ("reference", "compiled")
OUR_BACKENDS = {"cuda": ("triton", "cuda"), "cpu": ("cpu",)}
OP_IMPL_INFO = {
    "reference": "pure PyTorch (NVlabs-faithful), eager, plain autograd",
    "compiled": "torch.compile of the reference function (default mode, static shapes)",
    "triton": "our Triton kernels",
    "cuda": "our CUDA C++ kernels",
    "cpu": "our fused C++ CPU kernels",
}

#: Model implementations. ``reference``: GroupViT(attn_backend="explicit", assign_backend="reference"),
#: the original formulation; ``ours``: the default GroupViT() (SDPA + assign_backend="auto");
#: ``*-compiled``: torch.compile of that module; ``hf``: transformers' GroupViTVisionModel.
MODEL_IMPL_INFO = {  # (image-text models: the same choice for their GroupViT and text encoders)
    "reference": 'GroupViT(attn_backend="explicit", assign_backend="reference"), eager',
    "reference-compiled": "torch.compile of the reference model",
    "ours": 'GroupViT() (attn_backend="sdpa", assign_backend="auto"), eager',
    "ours-compiled": "torch.compile of our model",
    "hf": "transformers GroupViTVisionModel (same weights), eager",
}

#: Vision-encoder configurations (GroupViT keyword arguments): GroupViT-S (the released one,
#: GroupViT's defaults) and a tiny one for the CI smoke tier.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "groupvit-s": {},
    "groupvit-tiny": {"img_size": 64, "embed_dim": 96, "depths": (1, 1, 1), "num_heads": (2, 2, 2),
                      "num_group_tokens": (8, 4, 0), "num_output_groups": (8, 4)},
}


def _image_text_configs() -> dict[str, dict[str, Any]]:
    """Image-text models (``MultiLabelContrastive``, NVlabs config dicts for ``groupvit_fast.models.registry``):
    the released GroupViT-S one (multi_label=3: each image has its caption and 3 noun prompts) and
    a tiny one for the smoke tier."""
    try:
        from groupvit_fast.models.registry import released_config
    except ImportError:  # a checkout without the image-text model: those cases are left out
        return {}
    tiny = {"type": "MultiLabelContrastive", "img_encoder": {"type": "GroupViT", **MODEL_CONFIGS["groupvit-tiny"]},
            "text_encoder": {"type": "TextTransformer", "context_length": 16, "width": 64, "layers": 1,
                             "vocab_size": 1000},
            "output_dim": 32, "proj_inner_dim": 64, "multi_label": 1}
    return {"groupvit-s-image-text": released_config(multi_label=3), "groupvit-tiny-image-text": tiny}


IMAGE_TEXT_CONFIGS = _image_text_configs()

#: What docs/benchmarks.md asks for that no case measures yet (every report lists it).
NOT_MEASURED = [] if IMAGE_TEXT_CONFIGS else [
    "The image-text model (MultiLabelContrastive) is not in this checkout: its training-step and zero-shot "
    "segmentation cases are left out."]


@dataclass(frozen=True)
class OpCase:
    shape: OpShape
    mode: Mode
    dtype: str
    impls: tuple[str, ...]
    #: the spec shape this one is scaled down from (None: the spec's own size)
    scaled_from: str | None = None

    @property
    def id(self) -> str:
        return f"op/{self.shape.name}/{self.mode.name}/{self.dtype}"

    @property
    def group(self) -> str:
        """The problem without its dtype: the cases measured together (interleaved)."""
        return f"op/{self.shape.name}/B{self.shape.batch}/{self.mode.name}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class ModelCase:
    config: str
    task: str  # "eval" (forward, no grad) or "train" (forward + backward + optimizer step)
    batch: int
    dtype: str  # "fp32" or "bf16-autocast"
    impls: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"model/{self.config}/{self.task}/b{self.batch}/{self.dtype}"

    @property
    def group(self) -> str:
        return f"model/{self.config}/{self.task}/b{self.batch}"


@dataclass(frozen=True)
class SegmentCase:
    """Zero-shot segmentation throughput (docs/segmentation.md): ``images`` random ``size x size``
    images through the 448 px slide-inference protocol (``crop``/``stride`` windows after resizing
    the short side to ``crop``), ``classes`` the class names (first ``background``: thresholded)."""

    config: str  # an IMAGE_TEXT_CONFIGS name
    images: int
    size: tuple[int, int]
    classes: tuple[str, ...]
    impls: tuple[str, ...]
    crop: int = 448
    stride: int = 224
    bg_thresh: float = 0.95
    task: str = "segment"
    dtype: str = "fp32"

    @property
    def batch(self) -> int:
        return self.images

    @property
    def id(self) -> str:
        return f"segment/{self.config}/{self.images}x{self.size[0]}x{self.size[1]}/k{len(self.classes)}"

    @property
    def group(self) -> str:
        return self.id


@dataclass(frozen=True)
class Tier:
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

    def items(self, pattern: str | None = None, dtypes: tuple[str, ...] | None = None):
        """``(case, impl)`` pairs in run order, filtered by a regex over ``"<case id>/<impl>"``
        and by dtype (``bf16`` also selects ``bf16-autocast`` model cases)."""
        regex = re.compile(pattern) if pattern else None
        for case in (*self.op_cases, *self.model_cases, *self.segment_cases):
            if dtypes and case.dtype.split("-")[0] not in dtypes:
                continue
            for impl in case.impls:
                if regex is None or regex.search(f"{case.id}/{impl}"):
                    yield case, impl


def _op_cases(shapes, modes, dtypes, impls, batches=None, compiled_for=None) -> list[OpCase]:
    """Every shape x mode x dtype, with ``batches`` scaling the batch and ``compiled_for`` (shape
    names) limiting the torch.compile baseline to some shapes (its compile time is the cost)."""
    cases = []
    for dtype in dtypes:
        for shape in shapes:
            for mode in modes:
                case_impls = tuple(i for i in impls
                                   if i != "compiled" or compiled_for is None or shape.name in compiled_for)
                scaled = shape.with_batch(batches[shape.name]) if batches else shape
                cases.append(OpCase(scaled, MODES[mode], dtype, case_impls,
                                    None if scaled == shape else shape.name))
    return cases


_GPU_OP_IMPLS = ("reference", "compiled", *OUR_BACKENDS["cuda"])
_CPU_OP_IMPLS = ("reference", "compiled", *OUR_BACKENDS["cpu"])
_ALL_MODES = tuple(MODES)

#: CPU batch sizes: about 3k image tokens per call (stage0-224 at B=16 is the issue-#6 case).
CPU_BATCH = {"stage0-224": 16, "stage1-224": 16, "stage0-448": 4, "stage0-896": 1, "wide": 2, "multihead": 8}
SMOKE_BATCH = {name: 1 for name in SHAPE_BY_NAME}

_NOTE_CPU_COMPILE = ("torch.compile baselines on the CPU: only for stage0-224 (each compile takes about 10 s on 2 "
                     "cores); the other compiled baselines are GPU-only.")
_NOTE_CPU_MODEL_COMPILE = ("Compiled models are GPU-only: compiling GroupViT on 2 CPU cores takes minutes.")
_NOTE_GPU_MODEL_COMPILE = ("Compiled models only at B=64: each compile takes about a minute, and "
                           "torch.compile recompiles for every batch size.")


_VOC = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_SEG_IMPLS = ("reference", "ours")
#: Zero-shot segmentation per tier: GroupViT-S at 448 px with the 21 VOC classes (one 448 x 448
#: window per image); the smoke tier's tiny model at 64 px (two windows of 64 at stride 32).
SEGMENT_CASES: dict[str, tuple[SegmentCase, ...]] = {
    "gpu": (SegmentCase("groupvit-s-image-text", 8, (448, 448), _VOC, _SEG_IMPLS),),
    "gpu-quick": (SegmentCase("groupvit-s-image-text", 4, (448, 448), _VOC, _SEG_IMPLS),),
    "cpu": (SegmentCase("groupvit-s-image-text", 2, (448, 448), _VOC, _SEG_IMPLS),),
    "cpu-quick": (SegmentCase("groupvit-s-image-text", 1, (448, 448), _VOC, _SEG_IMPLS),),
    "smoke": (SegmentCase("groupvit-tiny-image-text", 1, (64, 96), _VOC[:4], _SEG_IMPLS, crop=64, stride=32,
                          bg_thresh=0.5),),
}


def _tiers() -> dict[str, Tier]:
    s = SHAPE_BY_NAME
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

    cpu_ops = _op_cases(SHAPES, _ALL_MODES, ("fp32",), _CPU_OP_IMPLS, CPU_BATCH, compiled_for=("stage0-224",))
    # bf16 on the CPU: speed-up and error against fp32 (issue #6), for the headline shape
    cpu_ops += _op_cases((s["stage0-224"],), ("eval", "train"), ("bf16",), ("reference", "cpu"), CPU_BATCH)
    cpu_models = (
        ModelCase("groupvit-s", "eval", 8, "fp32", ("reference", "ours", "hf")),
        ModelCase("groupvit-s", "eval", 8, "bf16-autocast", ("ours",)),  # vs its fp32 row: speed-up, error
        ModelCase("groupvit-s", "train", 2, "fp32", ("reference", "ours")),
        ModelCase("groupvit-s-image-text", "train", 2, "fp32", ("reference", "ours")),
    )
    scaled_note = ("CPU shapes are the spec's with the batch scaled down (column B; `scaled from` names the spec "
                   "shape): " + ", ".join(f"{k} B={v}" for k, v in CPU_BATCH.items()) + ".")
    tiers = [
        Tier("gpu", "cuda", tuple(_op_cases(SHAPES, _ALL_MODES, ("bf16", "fp32"), _GPU_OP_IMPLS)),
             tuple(gpu_models), budget_s=0.4, min_reps=5, max_reps=300, notes=(_NOTE_GPU_MODEL_COMPILE,)),
        Tier("gpu-quick", "cuda",
             tuple(_op_cases([s[n] for n in STAGE0], ("eval", "train"), ("bf16",), _GPU_OP_IMPLS)),
             (ModelCase("groupvit-s", "eval", 64, "bf16-autocast", ("reference", "ours", "hf")),
              ModelCase("groupvit-s", "train", 64, "bf16-autocast", ("reference", "ours")),
              ModelCase("groupvit-s-image-text", "train", 64, "bf16-autocast", ("reference", "ours"))),
             budget_s=0.25, min_reps=5, max_reps=200,
             notes=("Quick subset: stage-0 shapes, eval and train, bf16; models at B=64 without compile.",)),
        Tier("cpu", "cpu", tuple(cpu_ops), cpu_models, budget_s=2.0, min_reps=5, max_reps=50,
             notes=(scaled_note, _NOTE_CPU_COMPILE, _NOTE_CPU_MODEL_COMPILE)),
        Tier("cpu-quick", "cpu",
             tuple(_op_cases((s["stage0-224"],), ("eval", "train"), ("fp32",), ("reference", "cpu"), CPU_BATCH)),
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


# --------------------------------------------------------------------------------------------
# Runners: one case x one implementation -> a zero-argument call to time
# --------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """What the harnesses time, measure and check for one (case, implementation)."""

    #: the timed call (one op call, or one model forward / training step)
    fn: Callable[[], Any]
    #: images per call (model cases), for images/s
    images: int | None = None
    #: ``() -> list of tensors`` to compare against a reference (None: not comparable)
    outputs: Callable[[], list[torch.Tensor]] | None = None
    #: storages that are inputs or parameters: excluded from "extra" saved bytes
    owned_storages: set[int] = field(default_factory=set)
    #: runs a forward under grad for the saved-tensor count (None: nothing is saved, e.g. eval)
    forward_for_saved: Callable[[], Any] | None = None
    #: the assignment-attention backend the call reached (model cases: as dispatch chose it)
    backend: str | None = None
    #: ``() -> float``: the error column when it is not a relative error of ``outputs`` (segmentation:
    #: the fraction of pixels whose label differs from the reference pipeline's), and what it is
    error: Callable[[], float] | None = None
    error_vs: str | None = None


def impl_unavailable(impl: str, device: str) -> str | None:
    """Why ``impl`` cannot run on ``device`` here (None: it can)."""
    if impl in BACKENDS and impl != "reference":
        backend = BACKENDS[impl]
        reason = backend.unavailable_reason()
        if reason is None and device not in backend.devices:
            reason = f"backend {impl!r} runs on {backend.devices}, not {device}"
        return reason
    if impl == "hf":
        try:
            import transformers  # noqa: F401
        except ImportError as err:
            return f"transformers is not installed ({err})"
    return None


def _fresh_compile(fn, **kwargs):
    """``torch.compile(fn)`` after clearing Dynamo's caches, so that every case compiles its own
    static graph instead of piling entries on one code object until the recompile limit makes
    Dynamo silently fall back to eager."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False, **kwargs)


def op_inputs(case: OpCase, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q ``[B, G, C]``, k, v ``[B, N, C]`` with N(0, 1) entries (logits of unit scale, as the
    LayerNorm'ed projections in GroupViT give), requiring grad in train mode."""
    s = case.shape
    gen = torch.Generator(device=device).manual_seed(seed)
    make = functools.partial(torch.randn, generator=gen, device=device, dtype=case.torch_dtype)
    q = make(s.batch, s.groups, s.channels)
    k, v = make(s.batch, s.tokens, s.channels), make(s.batch, s.tokens, s.channels)
    if case.mode.backward:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v


def _grad_out(case: OpCase, device: str) -> torch.Tensor:
    s = case.shape
    gen = torch.Generator(device=device).manual_seed(1)
    return torch.randn(s.batch, s.groups, s.channels, generator=gen, device=device, dtype=case.torch_dtype)


def op_function(case: OpCase, impl: str, **extra) -> Callable:
    """``f(q, k, v) -> out`` for ``impl``; ``compiled`` is torch.compile of the reference call."""
    kwargs = dict(num_heads=case.shape.heads, **case.mode.op_kwargs(), **extra)
    backend = "reference" if impl == "compiled" else impl

    def call(q, k, v):
        return assign_attention(q, k, v, backend=backend, **kwargs)

    return _fresh_compile(call) if impl == "compiled" else call


def build_op_runner(case: OpCase, impl: str, device: str) -> Runner:
    q, k, v = op_inputs(case, device)
    f = op_function(case, impl)
    owned = {t.untyped_storage().data_ptr() for t in (q, k, v)}
    if case.mode.backward:
        grad_out = _grad_out(case, device)

        def fn():
            # autograd.grad (not .backward) leaves no .grad behind, so each call allocates the same
            out = f(q, k, v)
            return torch.autograd.grad(out, (q, k, v), grad_out)

        forward_for_saved = functools.partial(f, q, k, v)
    else:
        fn = functools.partial(f, q, k, v)
        forward_for_saved = None

    outputs = None
    if impl != "compiled":  # a compiled call with other arguments would mean another compile
        outputs = functools.partial(op_outputs, case, impl, device)
    return Runner(fn=fn, outputs=outputs, owned_storages=owned, forward_for_saved=forward_for_saved,
                  backend="reference" if impl == "compiled" else impl)


def op_outputs(case: OpCase, impl: str, device: str, compute_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """``[out]`` (plus ``dq, dk, dv`` in train mode) of ``impl`` on the case's inputs, with one
    fixed Gumbel noise tensor so that every implementation (and a float64 reference, with
    ``compute_dtype``) computes the same function and can be compared."""
    q, k, v = op_inputs(case, device)
    if compute_dtype is not None:
        q, k, v = (t.detach().to(compute_dtype).requires_grad_(t.requires_grad) for t in (q, k, v))
    extra = {}
    if case.mode.gumbel:
        s = case.shape
        gen = torch.Generator(device=device).manual_seed(2)
        u = torch.rand((s.batch, s.heads, s.groups, s.tokens), generator=gen, device=device).clamp_(1e-10, 1 - 1e-7)
        extra["noise"] = -torch.log(-torch.log(u))
    out = op_function(case, impl, **extra)(q, k, v)
    if not case.mode.backward:
        return [out.detach()]
    grad_out = _grad_out(case, device)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(q.dtype))
    return [out.detach(), *grads]


# ---- models --------------------------------------------------------------------------------


def _autocast(device: str, dtype: str):
    if dtype == "bf16-autocast":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return torch.autocast(device_type=device, enabled=False)


def hf_config(config: str):
    """The ``transformers.GroupViTVisionConfig`` of the same network as ``GroupViT(**MODEL_CONFIGS[config])``."""
    from transformers import GroupViTVisionConfig

    kw = MODEL_CONFIGS[config]  # missing keys take GroupViT-S's defaults
    embed = kw.get("embed_dim", 384)
    depths = list(kw.get("depths", (6, 3, 3)))
    groups = list(kw.get("num_output_groups", (64, 8)))
    return GroupViTVisionConfig(
        hidden_size=embed, intermediate_size=4 * embed, depths=depths, num_hidden_layers=sum(depths),
        num_attention_heads=kw.get("num_heads", (6, 6, 6))[0],
        num_group_tokens=list(kw.get("num_group_tokens", (64, 8, 0))),
        num_output_groups=groups + groups[-1:], image_size=kw.get("img_size", 224), patch_size=16)


_REFERENCE_BACKENDS = {"attn_backend": "explicit", "assign_backend": "reference"}


def _image_text_config(config: str, reference: bool) -> dict[str, Any]:
    cfg = dict(IMAGE_TEXT_CONFIGS[config])
    if reference:  # the original formulation in both encoders
        cfg["img_encoder"] = {**cfg["img_encoder"], **_REFERENCE_BACKENDS}
        cfg["text_encoder"] = {**cfg["text_encoder"], "attn_backend": "explicit"}
    return cfg


class ModelBank:
    """Builds each model of one configuration, all with the same weights (the reference's), on
    the same inputs, and caches the fp32 reference output per batch size for the error column."""

    def __init__(self, config: str, device: str, seed: int = 0):
        self.config, self.device = config, device
        self.image_text = config in IMAGE_TEXT_CONFIGS
        torch.manual_seed(seed)
        self.reference = self._build(reference=True).to(device)
        self.state = {k: v.detach().clone() for k, v in self.reference.state_dict().items()}
        vision = self.reference.img_encoder if self.image_text else self.reference
        self.img_size = vision.patch_embed.img_size[0]
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._ref_out: dict[int, torch.Tensor] = {}

    def _build(self, reference: bool) -> torch.nn.Module:
        if self.image_text:
            from groupvit_fast.models.registry import build_model

            return build_model(_image_text_config(self.config, reference))
        from groupvit_fast import GroupViT

        return GroupViT(**MODEL_CONFIGS[self.config], **(_REFERENCE_BACKENDS if reference else {}))

    def model(self, impl: str) -> torch.nn.Module:
        base = impl.removesuffix("-compiled")
        if base == "hf":
            from transformers import GroupViTVisionModel

            from groupvit_fast.convert import nvlabs_to_hf

            model = GroupViTVisionModel(hf_config(self.config))
            missing, unexpected = model.load_state_dict(nvlabs_to_hf(self.state), strict=False)
            if unexpected or [k for k in missing if "position_ids" not in k]:
                raise RuntimeError(f"HF weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
            return model.to(self.device)
        if base not in ("reference", "ours"):
            raise ValueError(f"unknown model implementation {impl!r}")
        model = self._build(reference=base == "reference")
        model.load_state_dict(self.state)
        return model.to(self.device)

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images [batch, 3, H, W]`` (N(0, 1)) and, for an image-text model, token ids
        ``[batch, 1 + multi_label, L]`` (random words, the end-of-text token, the largest id, at a
        random position: the text encoder reads its feature there). The same for every model."""
        if batch not in self._inputs:
            gen = torch.Generator(device=self.device).manual_seed(3)
            images = torch.randn(batch, 3, self.img_size, self.img_size, generator=gen, device=self.device)
            text = None
            if self.image_text:
                cfg = IMAGE_TEXT_CONFIGS[self.config]
                vocab, length = cfg["text_encoder"]["vocab_size"], cfg["text_encoder"]["context_length"]
                shape = (batch, 1 + cfg.get("multi_label", 0), length)
                text = torch.randint(1, vocab - 1, shape, generator=gen, device=self.device)
                ends = torch.randint(2, length, shape[:2] + (1,), generator=gen, device=self.device)
                text.scatter_(-1, ends, vocab - 1)
            self._inputs[batch] = (images, text)
        return self._inputs[batch]

    def images(self, batch: int) -> torch.Tensor:
        return self.inputs(batch)[0]

    def reference_output(self, batch: int) -> torch.Tensor:
        """fp32 eager reference-model output ``[B, C]`` on ``images(batch)`` (eval mode)."""
        if batch not in self._ref_out:
            self.reference.eval()
            with torch.no_grad():
                self._ref_out[batch] = self.reference(self.images(batch)).float()
        return self._ref_out[batch]


def _forward(model: torch.nn.Module, impl: str, x: torch.Tensor) -> torch.Tensor:
    if impl == "hf":
        return model(pixel_values=x).pooler_output
    return model(x)


def build_model_runner(case: ModelCase, impl: str, bank: ModelBank) -> Runner:
    from groupvit_fast.ops import backend_usage

    device = bank.device
    model = bank.model(impl)
    call = _fresh_compile(model) if impl.endswith("-compiled") else model
    x, text = bank.inputs(case.batch)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params.update(t.untyped_storage().data_ptr() for t in (x, text) if t is not None)
    if bank.image_text and case.task != "train":
        raise ValueError(f"{case.id}: image-text models are benchmarked in training only")

    if case.task == "eval":
        model.eval()

        last: list[torch.Tensor] = []

        def fn():
            with torch.no_grad(), _autocast(device, case.dtype):
                out = _forward(call, impl, x)
            last[:] = [out]  # the error column reuses the last timed output: no extra forward
            return out

        runner = Runner(fn=fn, images=case.batch, outputs=lambda: [last[0].float()], owned_storages=params)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def forward():
            with _autocast(device, case.dtype):
                if bank.image_text:  # the contrastive (+ multi-label) losses of MultiLabelContrastive
                    return sum(loss.float() for loss in call(x, text).values())
                return _forward(call, impl, x).float().square().mean()

        def fn():
            optimizer.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            optimizer.step()
            return loss

        runner = Runner(fn=fn, images=case.batch, owned_storages=params, forward_for_saved=forward)

    if impl != "hf":
        # which assignment backend dispatch picks, seen on one eager image in the task's mode
        # (usage is not counted inside compiled graphs, so ask the eager module)
        before = backend_usage()
        with torch.no_grad(), _autocast(device, case.dtype):
            (model.img_encoder if bank.image_text else model)(x[:1])
        used = {k for k, n in backend_usage().items() if n > before.get(k, 0)}
        runner.backend = ",".join(sorted(used)) or None
    return runner


# ---- zero-shot segmentation -----------------------------------------------------------------


def _class_tokens(config: str, texts: list[str]) -> torch.Tensor:
    """Deterministic token ids per text (the real BPE tokenizer is not needed for throughput): ids
    from the characters, then the end-of-text token (the largest id: the text encoder reads its
    feature there), as ``ModelBank.inputs`` builds them."""
    enc = IMAGE_TEXT_CONFIGS[config]["text_encoder"]
    vocab, length = enc["vocab_size"], enc["context_length"]
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [1 + (sum(map(ord, t)) * (j + 7)) % (vocab - 2) for j in range(min(len(t), length - 1))]
        out[i, :len(ids)] = torch.tensor(ids)
        out[i, len(ids)] = vocab - 1
    return out


class SegmentBank:
    """What both implementations of one SegmentCase share: the images (uint8, random), the class
    embeddings (computed once, by our model: the same weights as the reference's) and the
    reference pipeline's label maps (from its last timed call, else computed once)."""

    def __init__(self, case: SegmentCase, models: ModelBank, seed: int = 4):
        from groupvit_fast.segmentation import TextEmbeddingCache, resolve_classes

        self.case, self.models, self.device = case, models, models.device
        self.class_set = resolve_classes(list(case.classes), case.bg_thresh)
        gen = torch.Generator().manual_seed(seed)
        self.images = [torch.randint(0, 256, (3, *case.size), dtype=torch.uint8, generator=gen).to(self.device)
                       for _ in range(case.images)]
        self.text_cache = TextEmbeddingCache()
        self.text_model = models.model("ours").eval()
        self.text = self.text_cache.get(self.text_model, self.class_set.text_names, "simple",
                                        tokenizer=functools.partial(_class_tokens, case.config))
        self.reference_labels: list[torch.Tensor] | None = None

    def reference_call(self, model: torch.nn.Module) -> list[torch.Tensor]:
        from groupvit_fast.reference.segmentation import reference_segment_scores

        c = self.case
        labels = [reference_segment_scores(model, img, self.text, with_bg=self.class_set.with_bg,
                                           bg_thresh=self.class_set.bg_thresh, crop=c.crop, stride=c.stride,
                                           short_side=c.crop).argmax(0) for img in self.images]
        self.reference_labels = labels
        return labels

    def label_disagreement(self, labels: list[torch.Tensor]) -> float:
        if self.reference_labels is None:
            self.reference_call(self.models.model("reference").eval())
        same = sum(int((a == b).sum()) for a, b in zip(labels, self.reference_labels))
        return 1.0 - same / sum(a.numel() for a in labels)


def build_segment_runner(case: SegmentCase, impl: str, bank: SegmentBank) -> Runner:
    """``reference``: the step-by-step path (groupvit_fast.reference.segmentation) with the
    reference-formulation model, one crop at a time, the encoder twice per crop; ``ours``:
    GroupViTSegmenter with the default model (one pass per batch of crops, batched scoring)."""
    from groupvit_fast.ops import backend_usage

    if impl not in _SEG_IMPLS:
        raise ValueError(f"unknown segmentation implementation {impl!r}")
    last: list[torch.Tensor] = []
    if impl == "reference":
        model = bank.models.model("reference").eval()

        def fn():
            last[:] = bank.reference_call(model)
            return last

        error = None
    else:
        from groupvit_fast.segmentation import GroupViTSegmenter

        model = bank.text_model  # our model: its embeddings are in the cache already
        seg = GroupViTSegmenter(model, bank.class_set, crop_size=case.crop, stride=case.stride,
                                short_side=case.crop, text_cache=bank.text_cache)

        def fn():
            last[:] = seg.predict(bank.images)
            return last

        error = lambda: bank.label_disagreement(last or seg.predict(bank.images))  # noqa: E731
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    runner = Runner(fn=fn, images=case.images, owned_storages=params, error=error,
                    error_vs=None if error is None else "fraction of pixels labelled differently from the reference")
    before = backend_usage()
    with torch.no_grad():
        model.img_encoder(bank.images[0].new_zeros(1, 3, case.crop, case.crop, dtype=torch.float32))
    runner.backend = ",".join(sorted(k for k, n in backend_usage().items() if n > before.get(k, 0))) or None
    return runner
