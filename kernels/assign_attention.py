"""Triton kernels for GroupViT assignment attention: forward, backward and in-kernel Gumbel noise.

Math (docs/assign_op.md, "Math"), per batch element ``b`` and head ``h``, ``g`` a group, ``n`` a token::

    z[g,n] = scale * <q_g, k_n>                    y = (z + e) / tau      (e = Gumbel noise or 0)
    S[:,n] = softmax_g(y[:,n])                     A = onehot(argmax_g y[:,n]) if hard else S
    r[g]   = sum_n A[g,n]                          out[g] = sum_n A[g,n] v_n / (r[g] + eps)

Design (FlashAttention-like, nothing of size [G, N] ever reaches memory unless ``return_attn``):

* One program per ``(b, h, block of BLOCK_N tokens)``. It holds the logits tile ``[G_PAD, BLOCK_N]`` of
  *all* groups on chip (``tl.dot`` of q and k, accumulated over the head dim in BLOCK_D chunks, fp32),
  so the softmax over groups and the argmax are register reductions along axis 0.
* Segment merging ``out[g] += sum_n A[g,n] v_n`` is a second ``tl.dot`` per BLOCK_D chunk of v. When one
  token block covers all N tokens (GroupViT: G=64/N=196 and G=8/N=64 at 224 px) the program owns its
  ``(b, h)`` outright and writes ``out`` and ``r`` directly (deterministic, no workspace). Otherwise the
  partial sums go to an fp32 workspace with atomics and a small kernel divides by ``r + eps``.
* The backward recomputes z, the noise (same Philox counters), S and the argmax per token block;
  ``dv``/``dk`` are owned by the token block, ``dq`` is reduced over token blocks with fp32 atomics
  (or written directly when there is one block); ``delta[g] = <dO[g], out[g]>`` is a preprocess.
* Noise: counter ``i = offset + ((b*H + h)*G + g)*N + n`` (int64), ``u = tl.rand(seed, i)`` (Philox4x32-10,
  the convention of ``groupvit_fast/reference/philox.py``), clamped to ``[2**-32, 1 - 2**-24]``,
  ``e = -log(-log(u))``.
* fp32 inputs use ``input_precision="ieee"`` dots (TF32 would miss the 1e-5 fp32 tolerance); fp16/bf16
  inputs feed the dots in their own dtype with fp32 accumulation (as FlashAttention does).

Launchers: :func:`assign_attention_forward`, :func:`assign_attention_backward`, :func:`gumbel_noise`.
On GPU the three main kernels are autotuned over a few ``(BLOCK_D, num_warps, num_stages)`` configs
keyed on ``(G, N, D, H, dtype, ...)``; under ``TRITON_INTERPRET=1`` one fixed small config is used.
"""

from __future__ import annotations

import contextlib
import inspect
import os

import torch
import triton
import triton.language as tl

from groupvit_fast.kernels.triton_compat import install_interpreter_fixes

__all__ = ["INTERPRET", "MAX_GROUPS", "assign_attention_backward", "assign_attention_forward", "gumbel_noise"]


def _interpreting() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # triton without knobs: parse the variable as triton does
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")


#: Whether these kernels were decorated in Triton's interpreter (``TRITON_INTERPRET=1`` at import):
#: then they run on CPU tensors, with one fixed config and no autotuning.
INTERPRET: bool = _interpreting()

# Fixes for Triton releases whose interpreter mis-runs these kernels (triton 3.6 with numpy >= 2.4): see
# triton_compat, which says which releases need each and when it can go.
INTERPRETER_FIXES: tuple[str, ...] = install_interpreter_fixes(INTERPRET)

#: Largest G: the [G_PAD, BLOCK_N] logits tile of all groups must stay on chip.
MAX_GROUPS = 256

# Noise clamp of the convention (reference/philox.py): u in [2**-32, 1 - 2**-24], both exact in fp32.
_U_MIN = tl.constexpr(2.0**-32)
_U_MAX = tl.constexpr(1.0 - 2.0**-24)

# Logits-tile budget (elements of the fp32 [G_PAD, BLOCK_N] tile). The forward's 16384 lets one block
# cover GroupViT's N=196 at G=64 (no workspace, no atomics: they would double its memory traffic); the
# backward keeps about four such tiles live (S, A, dR, dz) and spills at 16384 (ptxas, sm_90).
_FWD_TILE = 16384
_BWD_TILE = 8192
_MAX_BLOCK_N = 256

# Triton's interpreter multiplies the raw uint16 bits of bfloat16 dot operands (triton 3.8): there the
# operands are widened to fp32 first, which is exact and gives what the GPU's bf16 dot with fp32
# accumulation gives, up to the summation order. So the interpreter tests never run the GPU's
# half-precision `tl.dot` branch: only the ahead-of-time compile (groupvit_fast/tools/compile_check.py,
# every dtype) and a GPU run see it (docs/assign_op.md, "Interpreter vs GPU").
_WIDEN_DOT = tl.constexpr(INTERPRET)


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _gumbel(seed, counter):
    """e = -log(-log(clamp(u))) with u = tl.rand(seed, counter): the Philox convention (reference/philox.py)."""
    u = tl.rand(seed, counter)
    u = tl.minimum(tl.maximum(u, _U_MIN), _U_MAX)
    return -tl.log(-tl.log(u))


@triton.jit
def _dot(a, b, FP32: tl.constexpr):
    """a @ b with fp32 accumulation; exact fp32 products for fp32 inputs (no TF32)."""
    if FP32:
        return tl.dot(a, b, input_precision="ieee")
    elif _WIDEN_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        return tl.dot(a, b)


@triton.jit
def _assignment(
    z,
    noise_ptr,
    seed,
    offset,
    bh,
    offs_g,
    offs_n,
    row_mask,
    col_mask,
    G,
    N,
    tau,
    HARD: tl.constexpr,
    GUMBEL: tl.constexpr,
    HAS_NOISE: tl.constexpr,
):
    """From the scaled logits tile z [G_PAD, BLOCK_N]: (S, A), both zero outside the valid [G, N] box.

    y = (z + e) / tau; S = softmax over groups (axis 0); A = onehot(argmax_g y) (ties -> lowest g) or S.
    The argmax is taken on y (argmax y == argmax S, exp is monotone), so it does not depend on exp rounding.
    """
    valid = row_mask[:, None] & col_mask[None, :]
    y = z
    if GUMBEL:
        # int64 counter ((b*H + h)*G + g)*N + n + offset: the index of (b, h, g, n) in [B, H, G, N]
        lin = (bh * G + offs_g[:, None]).to(tl.int64) * N + offs_n[None, :]
        if HAS_NOISE:
            e = tl.load(noise_ptr + lin, mask=valid, other=0.0)
        else:
            e = _gumbel(seed, lin + offset)
        y = y + e
    y = y / tau
    # padded groups get -inf: they can neither win the argmax nor take softmax mass
    y = tl.where(row_mask[:, None], y, float("-inf"))
    m = tl.max(y, axis=0)
    p = tl.exp(y - m[None, :])
    s = p / tl.sum(p, axis=0)[None, :]
    if HARD:
        idx = tl.argmax(y, axis=0, tie_break_left=True)
        a = tl.where(offs_g[:, None] == idx[None, :], 1.0, 0.0)
        # A NaN column (non-finite input) stays NaN, as NVlabs' `onehot - S.detach() + S` does.
        a = tl.where(s == s, a, s)  # noqa: PLR0124 (s == s is False exactly for NaN)
    else:
        a = s
    s = tl.where(valid, s, 0.0)
    a = tl.where(valid, a, 0.0)
    return s, a


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@triton.jit
def _assign_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    noise_ptr,
    out_ptr,
    ws_ptr,
    r_ptr,
    hard_ptr,
    soft_ptr,
    stride_qb,
    stride_qg,
    stride_qc,
    stride_kb,
    stride_kn,
    stride_kc,
    stride_vb,
    stride_vn,
    stride_vc,
    G,
    N,
    D,
    H,
    n_blocks,
    seed,
    offset,
    scale,
    tau,
    eps,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HARD: tl.constexpr,
    GUMBEL: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    SUM_ASSIGN: tl.constexpr,
    RETURN_ATTN: tl.constexpr,
    SINGLE: tl.constexpr,
    FP32: tl.constexpr,
):
    """One (b, h, token block): logits tile, softmax/argmax over groups, r[g] += sum_n A, out[g] += A @ v.

    SINGLE (one token block covers N): writes out = (A @ v) / (r + eps) and r directly.
    Otherwise: atomically adds A @ v into the fp32 workspace ws [B, G, C] and sum_n A into r [B, H, G].
    """
    pid = tl.program_id(0)
    bh = (pid // n_blocks).to(tl.int64)
    blk = pid % n_blocks
    b = bh // H
    h = bh % H
    C = H * D

    offs_g = tl.arange(0, G_PAD)
    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_g < G
    col_mask = offs_n < N

    q_base = q_ptr + b * stride_qb + (h * D) * stride_qc
    k_base = k_ptr + b * stride_kb + (h * D) * stride_kc
    v_base = v_ptr + b * stride_vb + (h * D) * stride_vc

    # z = scale * q k^T over the head dim, in BLOCK_D chunks (masked when D is not a multiple)
    z = tl.zeros((G_PAD, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + offs_d
        dm = d < D
        qt = tl.load(
            q_base + offs_g[:, None] * stride_qg + d[None, :] * stride_qc,
            mask=row_mask[:, None] & dm[None, :],
            other=0.0,
        )
        kt = tl.load(
            k_base + offs_n[:, None] * stride_kn + d[None, :] * stride_kc,
            mask=col_mask[:, None] & dm[None, :],
            other=0.0,
        )
        z += _dot(qt, tl.trans(kt), FP32)
    z = z * scale

    _s, a = _assignment(
        z, noise_ptr, seed, offset, bh, offs_g, offs_n, row_mask, col_mask, G, N, tau, HARD, GUMBEL, HAS_NOISE
    )

    r_part = tl.sum(a, axis=1)  # r[g] = sum_n A[g, n] over this block
    r_ptrs = r_ptr + bh * G + offs_g
    if SINGLE:
        tl.store(r_ptrs, r_part, mask=row_mask)
    else:
        tl.atomic_add(r_ptrs, r_part, mask=row_mask, sem="relaxed")
    denom = r_part + eps

    if FP32:
        a_dot = a
    else:
        a_dot = a.to(v_ptr.dtype.element_ty)  # exact for the one-hot; FlashAttention-style for S
    out_rows = (b * G + offs_g) * C + h * D  # out and ws are contiguous [B, G, C]
    for d0 in range(0, D, BLOCK_D):
        d = d0 + offs_d
        dm = d < D
        vt = tl.load(
            v_base + offs_n[:, None] * stride_vn + d[None, :] * stride_vc,
            mask=col_mask[:, None] & dm[None, :],
            other=0.0,
        )
        acc = _dot(a_dot, vt, FP32)  # [G_PAD, BLOCK_D] = sum_n A[g, n] v[n, d]
        o_mask = row_mask[:, None] & dm[None, :]
        if SINGLE:
            if not SUM_ASSIGN:
                acc = acc / denom[:, None]  # R = A / (r + eps), applied after the sum (exact one-hot in the dot)
            tl.store(out_ptr + out_rows[:, None] + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=o_mask)
        else:
            tl.atomic_add(ws_ptr + out_rows[:, None] + d[None, :], acc, mask=o_mask, sem="relaxed")

    if RETURN_ATTN:
        valid = row_mask[:, None] & col_mask[None, :]
        lin = (bh * G + offs_g[:, None]).to(tl.int64) * N + offs_n[None, :]
        tl.store(hard_ptr + lin, a.to(hard_ptr.dtype.element_ty), mask=valid)
        # soft = softmax_g(z): no noise, no tau (docs/assign_op.md, "Math")
        zz = tl.where(row_mask[:, None], z, float("-inf"))
        pz = tl.exp(zz - tl.max(zz, axis=0)[None, :])
        sz = pz / tl.sum(pz, axis=0)[None, :]
        tl.store(soft_ptr + lin, sz.to(soft_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _assign_fwd_finalize_kernel(
    ws_ptr, r_ptr, out_ptr, G, C, D, H, eps, SUM_ASSIGN: tl.constexpr, BLOCK_C: tl.constexpr
):
    """out[b, g, c] = ws[b, g, c] / (r[b, c // D, g] + eps) in the output dtype (multi-block forward)."""
    row = tl.program_id(0).to(tl.int64)  # b * G + g
    b = row // G
    g = row % G
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    acc = tl.load(ws_ptr + row * C + c, mask=cm, other=0.0)
    if not SUM_ASSIGN:
        r = tl.load(r_ptr + (b * H + c // D) * G + g, mask=cm, other=0.0)
        acc = acc / (r + eps)
    tl.store(out_ptr + row * C + c, acc.to(out_ptr.dtype.element_ty), mask=cm)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _assign_bwd_preprocess_kernel(
    do_ptr,
    out_ptr,
    delta_ptr,
    stride_db,
    stride_dg,
    stride_dc,
    stride_ob,
    stride_og,
    stride_oc,
    G,
    D,
    H,
    G_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """delta[b, h, g] = <dO[b, g, h-th head], out[b, g, h-th head]> (= sum_n dR[g, n] R[g, n])."""
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_g < G
    acc = tl.zeros((G_PAD,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = h * D + d0 + offs_d
        m = row_mask[:, None] & ((d0 + offs_d) < D)[None, :]
        do = tl.load(
            do_ptr + b * stride_db + offs_g[:, None] * stride_dg + d[None, :] * stride_dc, mask=m, other=0.0
        ).to(tl.float32)
        o = tl.load(
            out_ptr + b * stride_ob + offs_g[:, None] * stride_og + d[None, :] * stride_oc, mask=m, other=0.0
        ).to(tl.float32)
        acc += tl.sum(do * o, axis=1)
    tl.store(delta_ptr + bh * G + offs_g, acc, mask=row_mask)


@triton.jit
def _assign_bwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    r_ptr,
    delta_ptr,
    noise_ptr,
    dq_ptr,
    dq_ws_ptr,
    dk_ptr,
    dv_ptr,
    stride_qb,
    stride_qg,
    stride_qc,
    stride_kb,
    stride_kn,
    stride_kc,
    stride_vb,
    stride_vn,
    stride_vc,
    stride_db,
    stride_dg,
    stride_dc,
    G,
    N,
    D,
    H,
    n_blocks,
    seed,
    offset,
    scale,
    tau,
    eps,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HARD: tl.constexpr,
    GUMBEL: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    SUM_ASSIGN: tl.constexpr,
    SINGLE: tl.constexpr,
    FP32: tl.constexpr,
):
    """One (b, h, token block) of the backward (docs/assign_op.md, "Backward"), recomputing z, e, S and A:

    dR[g,n] = <dO[g], v_n>        dA = (dR - delta[g]) / (r[g] + eps)   (dA = dR if sum_assign)
    dz      = S * (dA - sum_g S dA) / tau                               (dS = dA: straight-through)
    dv[n]   = sum_g R[g,n] dO[g]  dk[n] = scale sum_g dz[g,n] q_g       dq[g] += scale sum_n dz[g,n] k_n
    """
    pid = tl.program_id(0)
    bh = (pid // n_blocks).to(tl.int64)
    blk = pid % n_blocks
    b = bh // H
    h = bh % H
    C = H * D

    offs_g = tl.arange(0, G_PAD)
    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_g < G
    col_mask = offs_n < N
    valid = row_mask[:, None] & col_mask[None, :]

    q_base = q_ptr + b * stride_qb + (h * D) * stride_qc
    k_base = k_ptr + b * stride_kb + (h * D) * stride_kc
    v_base = v_ptr + b * stride_vb + (h * D) * stride_vc
    do_base = do_ptr + b * stride_db + (h * D) * stride_dc

    # pass 1 over the head dim: logits z = q k^T and dR = dO v^T
    z = tl.zeros((G_PAD, BLOCK_N), dtype=tl.float32)
    dr = tl.zeros((G_PAD, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + offs_d
        dm = d < D
        gm = row_mask[:, None] & dm[None, :]
        nm = col_mask[:, None] & dm[None, :]
        qt = tl.load(q_base + offs_g[:, None] * stride_qg + d[None, :] * stride_qc, mask=gm, other=0.0)
        kt = tl.load(k_base + offs_n[:, None] * stride_kn + d[None, :] * stride_kc, mask=nm, other=0.0)
        dot_ = tl.load(do_base + offs_g[:, None] * stride_dg + d[None, :] * stride_dc, mask=gm, other=0.0)
        vt = tl.load(v_base + offs_n[:, None] * stride_vn + d[None, :] * stride_vc, mask=nm, other=0.0)
        z += _dot(qt, tl.trans(kt), FP32)
        dr += _dot(dot_, tl.trans(vt), FP32)
    z = z * scale

    s, a = _assignment(
        z, noise_ptr, seed, offset, bh, offs_g, offs_n, row_mask, col_mask, G, N, tau, HARD, GUMBEL, HAS_NOISE
    )

    if SUM_ASSIGN:
        w = a  # R = A
        da = dr  # dA = dR
    else:
        r = tl.load(r_ptr + bh * G + offs_g, mask=row_mask, other=0.0)
        delta = tl.load(delta_ptr + bh * G + offs_g, mask=row_mask, other=0.0)
        denom = (r + eps)[:, None]
        w = a / denom
        da = (dr - delta[:, None]) / denom
    # padded rows/columns: zero (their r + eps may be 0 when eps = 0)
    w = tl.where(valid, w, 0.0)
    da = tl.where(valid, da, 0.0)
    dz = s * (da - tl.sum(s * da, axis=0)[None, :]) / tau

    if FP32:
        w_dot = w
        dz_dot = dz
    else:
        w_dot = w.to(v_ptr.dtype.element_ty)
        dz_dot = dz.to(q_ptr.dtype.element_ty)
    w_t = tl.trans(w_dot)
    dz_t = tl.trans(dz_dot)

    # pass 2 over the head dim: dv, dk (owned by this token block) and dq (reduced over token blocks)
    dq_rows = (b * G + offs_g) * C + h * D  # dq, dq_ws contiguous [B, G, C]
    dkv_rows = (b * N + offs_n) * C + h * D  # dk, dv contiguous [B, N, C]
    for d0 in range(0, D, BLOCK_D):
        d = d0 + offs_d
        dm = d < D
        gm = row_mask[:, None] & dm[None, :]
        nm = col_mask[:, None] & dm[None, :]
        dot_ = tl.load(do_base + offs_g[:, None] * stride_dg + d[None, :] * stride_dc, mask=gm, other=0.0)
        qt = tl.load(q_base + offs_g[:, None] * stride_qg + d[None, :] * stride_qc, mask=gm, other=0.0)
        kt = tl.load(k_base + offs_n[:, None] * stride_kn + d[None, :] * stride_kc, mask=nm, other=0.0)
        dv = _dot(w_t, dot_, FP32)
        dk = _dot(dz_t, qt, FP32) * scale
        dq = _dot(dz_dot, kt, FP32) * scale
        tl.store(dv_ptr + dkv_rows[:, None] + d[None, :], dv.to(dv_ptr.dtype.element_ty), mask=nm)
        tl.store(dk_ptr + dkv_rows[:, None] + d[None, :], dk.to(dk_ptr.dtype.element_ty), mask=nm)
        if SINGLE:
            tl.store(dq_ptr + dq_rows[:, None] + d[None, :], dq.to(dq_ptr.dtype.element_ty), mask=gm)
        else:
            tl.atomic_add(dq_ws_ptr + dq_rows[:, None] + d[None, :], dq, mask=gm, sem="relaxed")


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------


@triton.jit
def _gumbel_noise_kernel(out_ptr, total, seed, offset, UNIFORM: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = e(offset + i) (or the clamped uniform u when UNIFORM) for the flat [B, H, G, N] index i."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    if UNIFORM:
        u = tl.rand(seed, i + offset)
        val = tl.minimum(tl.maximum(u, _U_MIN), _U_MAX)
    else:
        val = _gumbel(seed, i + offset)
    tl.store(out_ptr + i, val, mask=mask)


# --------------------------------------------------------------------------------------------
# Autotuning (GPU only)
# --------------------------------------------------------------------------------------------

# (BLOCK_D, num_warps, num_stages). BLOCK_D chunks the head dim of every dot; the [G_PAD, BLOCK_N] tile
# is fixed by the launcher (_block_n), which must know whether one token block covers N.
_CONFIGS = [
    (16, 4, 2),
    (16, 8, 2),
    (16, 16, 2),
    (32, 4, 2),
    (64, 4, 2),
    (64, 8, 2),
    (64, 8, 3),
    (64, 16, 2),
    (128, 8, 2),
    (128, 16, 2),
]


def _prune(configs, named_args, **kwargs):
    """Keep configs whose BLOCK_D fits the head dim (BLOCK_D=16 only for D <= 16) and whose warps give
    16..64 logits-tile elements per thread (ptxas for sm_90: a 64x256 tile at 8 warps already spills a
    little, at 16 warps it fits in 128 registers); tiny tiles keep the fewest warps."""
    args = {**named_args, **kwargs}
    d, tile = args["D"], args["G_PAD"] * args["BLOCK_N"]
    width = max(16, triton.next_power_of_2(d))
    fit = [c for c in configs if c.kwargs["BLOCK_D"] <= width and (c.kwargs["BLOCK_D"] > 16 or d <= 16)]
    kept = [c for c in fit if 16 <= tile // (32 * c.num_warps) <= 64]
    if not kept:
        fewest = min(c.num_warps for c in fit)
        kept = [c for c in fit if c.num_warps == fewest]
    return kept


def _autotuned(kernel, key, reset_to_zero):
    if INTERPRET:
        return kernel
    configs = [triton.Config({"BLOCK_D": bd}, num_warps=w, num_stages=s) for bd, w, s in _CONFIGS]
    extra = {}
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        extra["cache_results"] = True  # keep the timings on disk: tuning costs seconds per key
    return triton.autotune(
        configs=configs, key=key, prune_configs_by={"early_config_prune": _prune}, reset_to_zero=reset_to_zero, **extra
    )(kernel)


# Keyed on the sizes and the constexpr flags that change the work; the autotuner adds the dtypes.
_assign_fwd = _autotuned(
    _assign_fwd_kernel, ["G", "N", "D", "H", "GUMBEL", "RETURN_ATTN", "SINGLE"], ["ws_ptr", "r_ptr"]
)
_assign_bwd = _autotuned(_assign_bwd_kernel, ["G", "N", "D", "H", "GUMBEL", "SINGLE"], ["dq_ws_ptr"])


def _fixed_config(d: int) -> dict:
    """The one config used in the interpreter (no timing there)."""
    return {"BLOCK_D": min(64, max(16, triton.next_power_of_2(d))), "num_warps": 4} if INTERPRET else {}


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

_sm_counts: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _sm_counts:
        _sm_counts[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _sm_counts[index]


def _block_n(groups_pad: int, tokens: int, programs_per_block: int, tile: int, device: torch.device) -> int:
    """Tokens per program: as many as the logits-tile budget allows (one block for all N when it
    fits, so no atomics), but split a multi-block problem further while the grid has fewer programs
    than SMs (one (b, h) with N = 16384 tokens must still fill the GPU)."""
    block = max(16, min(triton.next_power_of_2(tokens), _MAX_BLOCK_N, max(16, tile // groups_pad)))
    if triton.cdiv(tokens, block) > 1:
        sms = _sm_count(device)
        while block > 32 and programs_per_block * triton.cdiv(tokens, block) < sms:
            block //= 2
    return block


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> tuple[int, int, int, int, int]:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError("q, k, v must be [B, G, C], [B, N, C], [B, N, C]")
    b, g, c = q.shape
    n = k.shape[1]
    if k.shape != v.shape or k.shape[0] != b or k.shape[2] != c or c % num_heads:
        raise ValueError(f"bad shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, h={num_heads}")
    if g > MAX_GROUPS:
        raise ValueError(f"G={g} > {MAX_GROUPS} groups is not supported by the Triton kernels")
    return b, g, n, c, c // num_heads


def _device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it t's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _noise_arg(noise: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if noise is None:
        return like.new_empty(1, dtype=torch.float32)  # never read (HAS_NOISE=False)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must be [B, h, G, N] = {list(shape)}, got {list(noise.shape)}")
    return noise.to(device=like.device, dtype=torch.float32).contiguous()


def assign_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    return_attn: bool = False,
    noise: torch.Tensor | None = None,
    seed: int = 0,
    offset: int = 0,
    block_n: int | None = None,
):
    """Fused forward. q: [B, G, C]; k, v: [B, N, C] (any strides); noise: optional [B, h, G, N].

    Returns ``(out [B, G, C] in q's dtype, r [B, h, G] float32, hard [B, h, G, N], soft [B, h, G, N])``;
    ``hard``/``soft`` (in q's dtype) are empty tensors unless ``return_attn``. ``block_n`` forces the
    token-block size (a power of two >= 16; tests use it to reach the multi-block path).

    Equivalent PyTorch (one head, no noise)::

        z = (q @ k.transpose(1, 2)) * scale / tau; s = z.softmax(1)
        a = one_hot(s.argmax(1)) if hard else s; r = a.sum(-1)
        out = (a / (r[..., None] + eps)) @ v
    """
    b, g, n, c, d = _check(q, k, v, num_heads)
    h = num_heads
    scale = d**-0.5 if scale is None else float(scale)
    g_pad = max(16, triton.next_power_of_2(g))
    block = block_n or _block_n(g_pad, n, b * h, _FWD_TILE, q.device)
    n_blocks = triton.cdiv(n, block)
    single = n_blocks == 1

    out = torch.empty((b, g, c), dtype=q.dtype, device=q.device)
    r = (torch.empty if single else torch.zeros)((b, h, g), dtype=torch.float32, device=q.device)
    ws = q.new_empty(1, dtype=torch.float32) if single else torch.zeros((b, g, c), dtype=torch.float32, device=q.device)
    if return_attn:
        hard_map = torch.empty((b, h, g, n), dtype=q.dtype, device=q.device)
        soft_map = torch.empty((b, h, g, n), dtype=q.dtype, device=q.device)
    else:
        hard_map, soft_map = q.new_empty(0), q.new_empty(0)
    noise_t = _noise_arg(noise if gumbel else None, q, (b, h, g, n))

    with _device_guard(q):
        _assign_fwd[(b * h * n_blocks,)](
            q,
            k,
            v,
            noise_t,
            out,
            ws,
            r,
            hard_map,
            soft_map,
            q.stride(0),
            q.stride(1),
            q.stride(2),
            k.stride(0),
            k.stride(1),
            k.stride(2),
            v.stride(0),
            v.stride(1),
            v.stride(2),
            g,
            n,
            d,
            h,
            n_blocks,
            int(seed),
            int(offset),
            scale,
            float(tau),
            float(eps),
            G_PAD=g_pad,
            BLOCK_N=block,
            HARD=bool(hard),
            GUMBEL=bool(gumbel),
            HAS_NOISE=noise is not None and gumbel,
            SUM_ASSIGN=bool(sum_assign),
            RETURN_ATTN=bool(return_attn),
            SINGLE=single,
            FP32=q.dtype == torch.float32,
            **_fixed_config(d),
        )
        if not single:
            block_c = min(1024, triton.next_power_of_2(c))
            _assign_fwd_finalize_kernel[(b * g, triton.cdiv(c, block_c))](
                ws, r, out, g, c, d, h, float(eps), SUM_ASSIGN=bool(sum_assign), BLOCK_C=block_c
            )
    return out, r, hard_map, soft_map


def assign_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    r: torch.Tensor,
    *,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    noise: torch.Tensor | None = None,
    seed: int = 0,
    offset: int = 0,
    block_n: int | None = None,
):
    """Fused backward from what the forward saved: grad_out, out [B, G, C], r [B, h, G] (float32).

    Recomputes z, the noise (same counters as the forward), S and the argmax; nothing [B, h, G, N] is
    read or written. Returns ``(dq, dk, dv)`` in the input dtype (docs/assign_op.md, "Backward").
    """
    b, g, n, c, d = _check(q, k, v, num_heads)
    h = num_heads
    scale = d**-0.5 if scale is None else float(scale)
    g_pad = max(16, triton.next_power_of_2(g))
    block = block_n or _block_n(g_pad, n, b * h, _BWD_TILE, q.device)
    n_blocks = triton.cdiv(n, block)
    single = n_blocks == 1

    r = r.to(torch.float32).contiguous()
    dk = torch.empty((b, n, c), dtype=k.dtype, device=k.device)
    dv = torch.empty((b, n, c), dtype=v.dtype, device=v.device)
    if single:
        dq = torch.empty((b, g, c), dtype=q.dtype, device=q.device)
        dq_ws = q.new_empty(1, dtype=torch.float32)
    else:
        dq_ws = torch.zeros((b, g, c), dtype=torch.float32, device=q.device)
        dq = dq_ws  # converted below
    noise_t = _noise_arg(noise if gumbel else None, q, (b, h, g, n))

    with _device_guard(q):
        if sum_assign:
            delta = r  # unused (SUM_ASSIGN: dA = dR)
        else:
            delta = torch.empty((b, h, g), dtype=torch.float32, device=q.device)
            _assign_bwd_preprocess_kernel[(b * h,)](
                grad_out,
                out,
                delta,
                grad_out.stride(0),
                grad_out.stride(1),
                grad_out.stride(2),
                out.stride(0),
                out.stride(1),
                out.stride(2),
                g,
                d,
                h,
                G_PAD=g_pad,
                BLOCK_D=min(64, max(16, triton.next_power_of_2(d))),
            )
        _assign_bwd[(b * h * n_blocks,)](
            q,
            k,
            v,
            grad_out,
            r,
            delta,
            noise_t,
            dq,
            dq_ws,
            dk,
            dv,
            q.stride(0),
            q.stride(1),
            q.stride(2),
            k.stride(0),
            k.stride(1),
            k.stride(2),
            v.stride(0),
            v.stride(1),
            v.stride(2),
            grad_out.stride(0),
            grad_out.stride(1),
            grad_out.stride(2),
            g,
            n,
            d,
            h,
            n_blocks,
            int(seed),
            int(offset),
            scale,
            float(tau),
            float(eps),
            G_PAD=g_pad,
            BLOCK_N=block,
            HARD=bool(hard),
            GUMBEL=bool(gumbel),
            HAS_NOISE=noise is not None and gumbel,
            SUM_ASSIGN=bool(sum_assign),
            SINGLE=single,
            FP32=q.dtype == torch.float32,
            **_fixed_config(d),
        )
    if not single:
        dq = dq_ws.to(q.dtype)  # no copy for fp32
    return dq, dk, dv


def gumbel_noise(
    shape: tuple[int, int, int, int], seed: int, offset: int = 0, device=None, uniform: bool = False
) -> torch.Tensor:
    """The float32 [B, H, G, N] Gumbel noise the kernels draw for (seed, offset); with ``uniform=True``
    the clamped uniforms u instead (for bit-exact tests of the Philox stream)."""
    device = torch.device("cuda" if device is None else device)
    out = torch.empty(tuple(int(s) for s in shape), dtype=torch.float32, device=device)
    total = out.numel()
    if total == 0:
        return out
    block = 1024
    with _device_guard(out):
        _gumbel_noise_kernel[(triton.cdiv(total, block),)](
            out, total, int(seed), int(offset), UNIFORM=bool(uniform), BLOCK=block
        )
    return out
