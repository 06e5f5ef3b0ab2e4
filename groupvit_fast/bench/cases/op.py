"""The op cases: the documented assignment-attention shapes, the modes, the implementations compared,
what the op must move and compute at the least, and the runners that time one implementation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from groupvit_fast.ops import AssignShape, assign_attention

from .family import BuildContext, Family
from .runner import Runner, fresh_compile

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Mode:
    """How the op is called: eval (hard argmax, no noise, forward), train (hard + Gumbel, forward +
    backward), soft (soft assignment, forward)."""

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


#: docs/benchmarks.md, "Shapes" (GroupViT-S unless said; keep in this order: the most important
#: first, so a run cut by its time budget drops the least important cases).
SHAPES: dict[str, AssignShape] = {
    "stage0-224": AssignShape(256, 64, 196, 384, 1),
    "stage1-224": AssignShape(256, 8, 64, 384, 1),
    "stage0-448": AssignShape(64, 64, 784, 384, 1),
    "stage0-896": AssignShape(8, 64, 3136, 384, 1),
    "wide": AssignShape(64, 64, 1024, 768, 1),
    "multihead": AssignShape(128, 64, 196, 384, 6),
}
#: Where each shape occurs.
SHAPE_WHERE: dict[str, str] = {
    "stage0-224": "grouping block 0, training at 224 px",
    "stage1-224": "grouping block 1",
    "stage0-448": "segmentation at 448 px",
    "stage0-896": "large images",
    "wide": "a GroupViT-B-like width",
    "multihead": "the op with heads > 1",
}
#: The stage-0 shapes: G = 64, C = 384, one head, N growing with the image size (the plot's x axis).
STAGE0 = ("stage0-224", "stage0-448", "stage0-896")

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


def min_bytes(shape: AssignShape, mode: Mode, dtype: torch.dtype) -> int:
    """Bytes the op must move at the least (docs/benchmarks.md, "Roofline").

    Forward: read q, k, v and write out. Backward: read q, k, v, out, dO and write dq, dk, dv.
    ``r`` ([B, h, G] float32) is negligible and left out, as in the documented 102 MB / 204 MB for
    stage0-224 in bf16.
    """
    size = torch.empty((), dtype=dtype).element_size()
    q = shape.batch * shape.groups * shape.channels * size  # q, out, dq, dO are all [B, G, C]
    kv = shape.batch * shape.tokens * shape.channels * size  # k, v, dk, dv are all [B, N, C]
    forward = 2 * q + 2 * kv
    backward = 3 * q + 2 * kv + q + 2 * kv  # reads q, out, dO, k, v; writes dq, dk, dv
    return forward + (backward if mode.backward else 0)


def flops(shape: AssignShape, mode: Mode) -> int:
    """Matmul FLOPs: forward z = q k^T and out = R v (4 BGNC); backward dR, dv, dz q and dz k
    (8 BGNC), without the recomputation of z a fused backward adds."""
    bgnc = shape.batch * shape.groups * shape.tokens * shape.channels
    return 4 * bgnc + (8 * bgnc if mode.backward else 0)


def fused_flops(shape: AssignShape, mode: Mode) -> int:
    """Matmul FLOPs a fused kernel under the memory contract of docs/assign_op.md cannot avoid.

    Forward: z = q k^T (2 BGNC); the merge R v is a GEMM only in soft mode (hard mode: a
    segmented sum of v, O(BNC)). Backward: z again (nothing [B,h,G,N] is saved), dR = dO v^T,
    dq = dz k and dk = dz^T q (8 BGNC); dv = R^T dO is a GEMM only in soft mode (hard: a gather).
    Hard train is therefore 10 BGNC against the eager reference's 12 BGNC.
    """
    bgnc = shape.batch * shape.groups * shape.tokens * shape.channels
    soft = 0 if mode.hard else 1
    forward = (2 + 2 * soft) * bgnc
    return forward + ((8 + 2 * soft) * bgnc if mode.backward else 0)


@dataclass(frozen=True)
class OpCase:
    """One op problem in one dtype: the implementations ``impls`` are measured side by side."""

    shape_name: str  # a SHAPES name
    shape: AssignShape
    mode: Mode
    dtype: str
    impls: tuple[str, ...]
    #: the spec shape this one is scaled down from (None: the spec's own size)
    scaled_from: str | None = None

    @property
    def id(self) -> str:
        return f"op/{self.shape_name}/{self.mode.name}/{self.dtype}"

    @property
    def group(self) -> str:
        """The problem without its dtype: the cases measured together (interleaved)."""
        return f"op/{self.shape_name}/B{self.shape.batch}/{self.mode.name}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


# ---- runners ---------------------------------------------------------------------------------


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

    return fresh_compile(call) if impl == "compiled" else call


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
    return Runner(
        fn=fn,
        outputs=outputs,
        owned_storages=owned,
        forward_for_saved=forward_for_saved,
        backend="reference" if impl == "compiled" else impl,
    )


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


# --- the op family: its cases per tier, its records ------------------------------------------


def op_cases(names, modes, dtypes, impls, batches=None, compiled_for=None) -> list[OpCase]:
    """Every shape (SHAPES names) x mode x dtype, with ``batches`` scaling the batch and
    ``compiled_for`` (shape names) limiting the torch.compile baseline to some shapes (its compile
    time is the cost)."""
    cases = []
    for dtype in dtypes:
        for name in names:
            shape = SHAPES[name]
            for mode in modes:
                case_impls = tuple(i for i in impls if i != "compiled" or compiled_for is None or name in compiled_for)
                scaled = shape.with_batch(batches[name]) if batches else shape
                cases.append(OpCase(name, scaled, MODES[mode], dtype, case_impls, None if scaled == shape else name))
    return cases


_GPU_OP_IMPLS = ("reference", "compiled", *OUR_BACKENDS["cuda"])
_CPU_OP_IMPLS = ("reference", "compiled", *OUR_BACKENDS["cpu"])

#: CPU batch sizes: about 3k image tokens per call (stage0-224 at B=16 is the README's CPU table).
CPU_BATCH = {"stage0-224": 16, "stage1-224": 16, "stage0-448": 4, "stage0-896": 1, "wide": 2, "multihead": 8}
SMOKE_BATCH = {name: 1 for name in SHAPES}

OP_TIER_CASES: dict[str, tuple[OpCase, ...]] = {
    "gpu": tuple(op_cases(SHAPES, tuple(MODES), ("bf16", "fp32"), _GPU_OP_IMPLS)),
    "gpu-quick": tuple(op_cases(STAGE0, ("eval", "train"), ("bf16",), _GPU_OP_IMPLS)),
    # bf16 on the CPU: speed-up and error against fp32, for the headline shape
    "cpu": tuple(
        op_cases(SHAPES, tuple(MODES), ("fp32",), _CPU_OP_IMPLS, CPU_BATCH, compiled_for=("stage0-224",))
        + op_cases(("stage0-224",), ("eval", "train"), ("bf16",), ("reference", "cpu"), CPU_BATCH)
    ),
    "cpu-quick": tuple(op_cases(("stage0-224",), ("eval", "train"), ("fp32",), ("reference", "cpu"), CPU_BATCH)),
    "smoke": tuple(op_cases(SHAPES, tuple(MODES), ("fp32",), ("reference", "cpu"), SMOKE_BATCH)),
}


def op_record(case: OpCase, impl: str, stats: dict[str, Any], runner: Runner, ctx: BuildContext) -> dict[str, Any]:
    """The report's record of one op measurement: the stats, bandwidth, FLOP rate, floor and error."""
    device, copy_bw, matmul_gflops = ctx.device, ctx.meta.get("copy_bandwidth_gbs"), ctx.meta.get("matmul_gflops")
    s = case.shape
    record = {
        "kind": "op",
        "case": case.id,
        "shape": case.shape_name,
        "scaled_from": case.scaled_from,
        "B": s.batch,
        "G": s.groups,
        "N": s.tokens,
        "C": s.channels,
        "heads": s.heads,
        "mode": case.mode.name,
        "dtype": case.dtype,
        "impl": impl,
        "backend": runner.backend,
        **stats,
    }
    seconds = stats["median_ms"] / 1e3
    record["min_bytes"] = min_bytes(s, case.mode, case.torch_dtype)
    record["achieved_gbs"] = record["min_bytes"] / seconds / 1e9
    record["tflops"] = flops(s, case.mode) / seconds / 1e12
    # The floor. GPU: the roofline of docs/benchmarks.md, min bytes / measured copy bandwidth. CPU:
    # these shapes are compute-bound (about 48 FLOP/byte against about 10 for a CPU), so the floor is
    # the matmul work a fused kernel cannot avoid (fused_flops) at the fp32 matmul rate measured in
    # the same run: no kernel under the memory contract can be faster than that.
    if device == "cuda" and copy_bw:
        record["floor_kind"] = "bandwidth"
        record["floor_ms"] = record["min_bytes"] / (copy_bw * 1e9) * 1e3
    elif device != "cuda" and matmul_gflops:
        record["floor_kind"] = "compute"
        record["fused_flops"] = fused_flops(s, case.mode)
        record["floor_ms"] = record["fused_flops"] / (matmul_gflops * 1e9) * 1e3
    else:
        record["floor_kind"] = record["floor_ms"] = None
    record["roofline_fraction"] = record["floor_ms"] / stats["median_ms"] if record["floor_ms"] else None
    record["rel_error"] = None
    if runner.outputs is not None:  # (not for compiled: another signature, another compile)
        from ..timing import rel_error

        try:
            want = op_outputs(case, "reference", device, compute_dtype=torch.float64)
            record["rel_error"] = rel_error(runner.outputs(), want)
            record["error_vs"] = "float64 reference, same inputs and noise"
        except Exception as err:  # noqa: BLE001 - a failing check must not lose the timing
            record["error_note"] = f"{type(err).__name__}: {err}"
    return record


def speedup_ceilings(records: list[dict[str, Any]]) -> list[str]:
    """For each case with a compute floor and a reference row: the largest speed-up over the eager
    reference that any kernel under the memory contract could reach on this machine."""
    out = []
    for r in records:
        if r["impl"] == "reference" and r.get("floor_kind") == "compute" and r.get("floor_ms"):
            out.append(
                f"- {r['shape']} {r['mode']} {r['dtype']} (B={r['B']}): reference {r['median_ms']:.3g} ms, "
                f"compute floor {r['floor_ms']:.3g} ms: at most {r['median_ms'] / r['floor_ms']:.2f}x "
                "faster than the reference, before any non-matmul work (softmax, noise, memory traffic)"
            )
    return ["", "Speed-up ceilings (compute floor):", ""] + out if out else []


def _build(case: OpCase, impl: str, ctx: BuildContext) -> Runner:
    return build_op_runner(case, impl, ctx.device)


FAMILY = Family(
    name="op",
    title="Assignment attention op",
    cases=OP_TIER_CASES,
    build=_build,
    record=op_record,
    impl_info=OP_IMPL_INFO,
    ratio_keys=("shape", "B", "mode", "dtype"),
    reference_impl="reference",
    compiled_impl="compiled",
    summary=speedup_ceilings,
    table="op",
)
