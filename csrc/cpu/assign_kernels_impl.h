// The CPU assignment-attention kernels (docs/assign_op.md), written once and compiled per ISA.
//
// Included by assign_kernels_baseline.cpp and assign_kernels_avx2.cpp with GVF_ISA set to a
// namespace name; everything below lives in an anonymous namespace inside it, so the two copies
// never share a symbol. Torch-free on purpose (see assign_kernels.h). The inner loops run over
// contiguous token or channel ranges and are written for the compiler's vectoriser (`omp simd`,
// branch-free selects, our own exp/log), because libm's scalar expf/logf would dominate.
//
// Per item (batch b, head h, token chunk [n0, n0 + nc)) the forward computes
//   Z[g, n]  = scale * <q_g, k_n>                  (GEMM into a [G, chunk] fp32 tile)
//   y        = (Z + e) / tau                        (e: Philox Gumbel noise, or the noise tensor)
//   hard: g*(n) = argmax_g y[:, n] (lowest g on ties); acc[g*] += v_n, cnt[g*] += 1
//   soft: S = softmax_g(y); acc = S @ V (GEMM), cnt = sum_n S
// and finalize sums the chunks in order and writes out = acc / (cnt + eps) (or acc with
// sum_assign) and r = cnt. The backward recomputes Z, e, S and g* the same way and applies the
// spec's "Backward" formulas (groupvit_fast/reference/assign_attention_grad.py).
//
// Non-finite inputs follow what the dense formula (R @ v with R a [G, N] matrix) gives:
// * a token whose logit column holds a NaN or whose maximum is +-inf has a NaN softmax column, so
//   in hard mode its column of A is NaN: every r[g] and every out[g] of that (b, h) is NaN;
// * a non-finite v[n, d] reaches out[g, d] for every g: through 1 * v for the token's own group and
//   through 0 * v = NaN for all others.
#ifndef GVF_ISA
#error "define GVF_ISA (the namespace of this instruction-set copy) before including this file"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(GVF_AVX2)
#include <immintrin.h>
#endif

#include "assign_kernels.h"
#include "float_bits.h"
#include "philox_gumbel.h"

// The selects below (x < c ? a : b on floats) only become vector blends when the compiler may
// evaluate both sides, which GCC's default -ftrapping-math forbids; PyTorch builds its own
// kernels with -fno-trapping-math -fno-math-errno too. Local to the kernel translation units.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "no-math-errno")
#endif

namespace groupvit_fast {
namespace cpu {
namespace GVF_ISA {
namespace {

#define GVF_INLINE inline __attribute__((always_inline))

constexpr float kInf = __builtin_inff();
constexpr float kNaN = __builtin_nanf("");

GVF_INLINE int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
GVF_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

using float_bits::bits_to_float;  // memcpy bit casts (float_bits.h)
using float_bits::float_to_bits;

// dtype conversion (IEEE half and bfloat16 as raw uint16), branch-free so the loops vectorise.
using float_bits::bf16_to_float;
using float_bits::float_to_bf16;
using float_bits::float_to_half;
using float_bits::half_to_float;

GVF_INLINE int64_t elem_size(DType dt) { return dt == DType::kFloat32 ? 4 : 2; }

GVF_INLINE const void* elem_ptr(const void* base, DType dt, int64_t offset) {
  return static_cast<const char*>(base) + offset * elem_size(dt);
}
GVF_INLINE void* elem_ptr(void* base, DType dt, int64_t offset) {
  return static_cast<char*>(base) + offset * elem_size(dt);
}

// dst[i] = float(src[i * stride]), i < len
void load_row(DType dt, const void* src, int64_t stride, int64_t len, float* dst) {
  if (dt == DType::kFloat32) {
    const float* s = static_cast<const float*>(src);
    if (stride == 1) {
      std::memcpy(dst, s, sizeof(float) * len);
    } else {
      for (int64_t i = 0; i < len; ++i) dst[i] = s[i * stride];
    }
  } else if (dt == DType::kFloat16) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dst[i] = half_to_float(s[i * stride]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dst[i] = bf16_to_float(s[i * stride]);
  }
}

// dst[i] = dtype(src[i]) for a contiguous destination, i < len
void store_row(DType dt, void* dst, const float* src, int64_t len) {
  if (dt == DType::kFloat32) {
    std::memcpy(dst, src, sizeof(float) * len);
  } else if (dt == DType::kFloat16) {
    uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) d[i] = float_to_half(src[i]);
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) d[i] = float_to_bf16(src[i]);
  }
}

// Rows [l0, l0 + rows) of head h (channels [col0, col0 + D)) of batch b as fp32 with row stride
// *ld: the tensor itself when it already is fp32 with unit channel stride (no copy), else a copy
// converted into `scratch` ([rows, D]).
const float* rows_f32(const Strided& t, DType dt, int64_t b, int64_t l0, int64_t rows, int64_t col0, int64_t D,
                      float* scratch, int64_t* ld) {
  const int64_t base = b * t.sb + l0 * t.sl + col0 * t.sc;
  if (dt == DType::kFloat32 && t.sc == 1 && t.sl >= D) {
    *ld = t.sl;
    return static_cast<const float*>(t.ptr) + base;
  }
  for (int64_t r = 0; r < rows; ++r) load_row(dt, elem_ptr(t.ptr, dt, base + r * t.sl), t.sc, D, scratch + r * D);
  *ld = D;
  return scratch;
}

// --------------------------------------------------------------------------------------------
// exp: Cephes' single-precision algorithm (about 1 ulp), branch-free so it vectorises (its log
// twin, used only by the noise, is in philox_gumbel.h).
// --------------------------------------------------------------------------------------------

// Round to the nearest integer (ties to even) for |x| < 2**22, with adds only (SSE2 has no
// vector round): the classic 1.5 * 2**23 shifter. Needs strict IEEE arithmetic (no -ffast-math).
GVF_INLINE float round_nearest(float x) { return (x + 12582912.0f) - 12582912.0f; }

// exp(x) for x <= 0 (softmax numerators); NaN stays NaN, x < -87.3 (below the normal range) -> 0.
GVF_INLINE float exp_nonpos(float x) {
  const bool under = x < -87.3f;
  const bool nan = x != x;
  const float xc = (under || nan) ? 0.0f : x;
  const float n = round_nearest(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const float two_n = bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  const float e = p * two_n;
  return nan ? x : (under ? 0.0f : e);
}

// --------------------------------------------------------------------------------------------
// Gumbel noise: gumbel_run(dst, len, seed, first), per instruction set (gumbel_noise_cpu.h).
// --------------------------------------------------------------------------------------------

#include "gumbel_noise_cpu.h"

// --------------------------------------------------------------------------------------------
// Column operations on a [G, ldz] logits tile (tokens contiguous: the loops vectorise over n).
// --------------------------------------------------------------------------------------------

// y = (z + e) / tau in place; e from the noise tensor or Philox (counter of element (g, n) of the
// [B,H,G,N] noise: offset + (bh * G + g) * N + n0 + n).
void apply_noise_and_tau(const Params& p, int64_t bh, int64_t n0, int64_t nc, float* Z, int64_t ldz, float* tmp) {
  for (int64_t g = 0; g < p.G; ++g) {
    float* row = Z + g * ldz;
    if (p.gumbel) {
      const int64_t index = (bh * p.G + g) * p.N + n0;
      const float* e = tmp;
      if (p.noise != nullptr) {
        e = p.noise + index;
      } else {
        gumbel_run(tmp, nc, p.seed, p.offset + static_cast<uint64_t>(index));
      }
#pragma omp simd
      for (int64_t n = 0; n < nc; ++n) row[n] += e[n];
    }
    if (p.tau != 1.0f) {
      const float tau = p.tau;
#pragma omp simd
      for (int64_t n = 0; n < nc; ++n) row[n] = row[n] / tau;
    }
  }
}

// m[n] = max_g y[g, n] ignoring NaN, idx[n] = its lowest g, bad[n] = the softmax column is NaN
// (a NaN in the column, or a maximum of +inf or -inf: exp(inf - inf) and exp(-inf + inf) are NaN).
void column_max(const float* Z, int64_t G, int64_t nc, int64_t ldz, float* m, int32_t* idx, int32_t* bad) {
  for (int64_t n = 0; n < nc; ++n) {
    m[n] = -kInf;
    idx[n] = 0;
    bad[n] = 0;
  }
  for (int64_t g = 0; g < G; ++g) {
    const float* row = Z + g * ldz;
    const int32_t gi = static_cast<int32_t>(g);
#pragma omp simd
    for (int64_t n = 0; n < nc; ++n) {
      const float y = row[n];
      const bool greater = y > m[n];  // strict: ties keep the lowest g
      m[n] = greater ? y : m[n];
      idx[n] = greater ? gi : idx[n];
      bad[n] |= static_cast<int32_t>(y != y);
    }
  }
#pragma omp simd
  for (int64_t n = 0; n < nc; ++n) bad[n] |= static_cast<int32_t>(!(m[n] - m[n] == 0.0f));
}

// In place: Z[:, n] = softmax over g, given the column maxima m (NaN propagates); tmp: [nc].
void softmax_columns(float* Z, int64_t G, int64_t nc, int64_t ldz, const float* m, float* tmp) {
  for (int64_t n = 0; n < nc; ++n) tmp[n] = 0.0f;
  for (int64_t g = 0; g < G; ++g) {
    float* row = Z + g * ldz;
#pragma omp simd
    for (int64_t n = 0; n < nc; ++n) {
      const float e = exp_nonpos(row[n] - m[n]);
      row[n] = e;
      tmp[n] += e;
    }
  }
#pragma omp simd
  for (int64_t n = 0; n < nc; ++n) tmp[n] = 1.0f / tmp[n];
  for (int64_t g = 0; g < G; ++g) {
    float* row = Z + g * ldz;
#pragma omp simd
    for (int64_t n = 0; n < nc; ++n) row[n] *= tmp[n];
  }
}

void store_tile(DType dt, void* dst, int64_t N, int64_t base, const float* W, int64_t G, int64_t nc, int64_t ldz) {
  for (int64_t g = 0; g < G; ++g) store_row(dt, elem_ptr(dst, dt, base + g * N), W + g * ldz, nc);
}

// Carves float slices out of one scratch buffer, each 64-byte aligned.
struct Carver {
  float* next;
  float* take(int64_t count) {
    float* slice = next;
    next += round_up(count, 16);
    return slice;
  }
};

// --------------------------------------------------------------------------------------------
// GEMM tiles: our own AVX2 micro-kernels (gemm_avx2.h) in the AVX2 copy (GVF_GEMM_AVX2), else
// ATen's BLAS through the callback, as PyTorch's CPU flash attention routes every tile through
// cpublas: MKL / oneDNN pick AVX-512 or AMX on x86 and the ARM BLAS on aarch64 for us.
// --------------------------------------------------------------------------------------------

#if defined(GVF_GEMM_AVX2)
#include "gemm_avx2.h"
#endif

// The GEMM context of an item: the BLAS callback, or a packing panel (own AVX2 tiles).
struct Mm {
  GemmFn gemm;
  float* panel;  // panel_floats(p) floats, 64-byte aligned
};

// Floats of packing panel an item needs (depth up to max(D, chunk, G)).
GVF_INLINE int64_t panel_floats(const Params& p) {
  int64_t depth = p.D > p.chunk ? p.D : p.chunk;
  depth = depth > p.G ? depth : p.G;
  return 24 * depth;
}

// C[m, n] = alpha * sum_k A[m, k] B[n, k] (A, B rows contiguous in k)
GVF_INLINE void mm_nt(const Mm& mm, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float* C, int64_t ldc) {
#if defined(GVF_GEMM_AVX2)
  gemm_avx2::gemm_nt(M, N, K, alpha, A, lda, B, ldb, C, ldc, mm.panel);
#else
  mm.gemm(M, N, K, alpha, A, lda, false, B, ldb, true, 0.0f, C, ldc);
#endif
}

// C[m, :] = alpha * sum_k A[m * sam + k * sak] B[k, :]; one of sam, sak is 1.
GVF_INLINE void mm_nn(const Mm& mm, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t sam,
                      int64_t sak, const float* B, int64_t ldb, float* C, int64_t ldc) {
#if defined(GVF_GEMM_AVX2)
  gemm_avx2::gemm_nn(M, N, K, alpha, A, sam, sak, B, ldb, C, ldc, mm.panel);
#else
  if (sak == 1) {
    mm.gemm(M, N, K, alpha, A, sam, false, B, ldb, false, 0.0f, C, ldc);
  } else {
    mm.gemm(M, N, K, alpha, A, sak, true, B, ldb, false, 0.0f, C, ldc);  // A stored as [K, M]
  }
#endif
}

// --------------------------------------------------------------------------------------------
// Forward
// --------------------------------------------------------------------------------------------

// The reduced sums of one (b, h) -> out (input dtype) and r.
void write_forward_outputs(const ForwardArgs& a, int64_t bh, float* acc, const float* cnt, const int32_t* state) {
  const Params& p = a.p;
  const int64_t G = p.G, D = p.D, b = bh / p.H, h = bh % p.H;
  const bool poisoned = state[D] != 0;
  bool any_state = false;
  for (int64_t d = 0; d < D; ++d) any_state |= state[d] != -1;
  for (int64_t g = 0; g < G; ++g) {
    float* row = acc + g * D;
    a.r[bh * G + g] = poisoned ? kNaN : cnt[g];
    // R = A / (r + eps): out[g] = (sum of the group's v) / (r[g] + eps); R = A with sum_assign.
    const float inv = poisoned ? kNaN : (p.sum_assign ? 1.0f : 1.0f / (cnt[g] + p.eps));
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) row[d] *= inv;
    if (any_state) {
      const int32_t gi = static_cast<int32_t>(g);
      for (int64_t d = 0; d < D; ++d) {
        if (state[d] != -1 && state[d] != gi) row[d] = kNaN;
      }
    }
    store_row(p.dtype, elem_ptr(a.out, p.dtype, (b * G + g) * (p.H * D) + h * D), row, D);
  }
}

size_t forward_scratch_floats(const Params& p) {
  const int64_t ldz = round_up(p.chunk, 16), D = round_up(p.D, 16);
  // + the item's own acc [G, D], cnt [G] and state [D + 1] when there is a single chunk
  const int64_t local = p.nchunks == 1 ? p.G * D + round_up(p.G, 16) + D + 16 : 0;
  return static_cast<size_t>(p.G * D + 2 * p.chunk * D + 2 * p.G * ldz + 5 * ldz + local + panel_floats(p) + 32);
}

void forward_item(const ForwardArgs& a, int64_t item, float* scratch, GemmFn gemm) {
  const Params& p = a.p;
  const DType dt = p.dtype;
  const int64_t G = p.G, D = p.D, N = p.N;
  const int64_t bh = item / p.nchunks, ci = item % p.nchunks, b = bh / p.H, h = bh % p.H;
  const int64_t n0 = ci * p.chunk, nc = min64(p.chunk, N - n0), col0 = h * D;
  const int64_t ldz = round_up(p.chunk, 16);
  Carver carve{scratch};
  const Mm mm{gemm, carve.take(panel_floats(p))};
  float* sQ = carve.take(G * D);
  float* sK = carve.take(p.chunk * D);
  float* sV = carve.take(p.chunk * D);
  float* Z = carve.take(G * ldz);
  float* W = carve.take(G * ldz);
  float* tok_m = carve.take(ldz);
  float* tok_tmp = carve.take(ldz);
  float* noise_tmp = carve.take(ldz);
  int32_t* tok_idx = reinterpret_cast<int32_t*>(carve.take(ldz));
  int32_t* tok_bad = reinterpret_cast<int32_t*>(carve.take(ldz));

  int64_t ldq, ldk, ldv;
  const float* Q = rows_f32(a.q, dt, b, 0, G, col0, D, sQ, &ldq);
  const float* K = rows_f32(a.k, dt, b, n0, nc, col0, D, sK, &ldk);
  mm_nt(mm, G, nc, D, p.scale, Q, ldq, K, ldk, Z, ldz);  // Z = scale * Q K^T

  const int64_t attn_base = bh * G * N + n0;  // element (g, n) of [B,H,G,N]: attn_base + g * N + n
  if (p.return_attn) {                         // soft = softmax_g(z): no noise, no tau
    for (int64_t g = 0; g < G; ++g) std::memcpy(W + g * ldz, Z + g * ldz, sizeof(float) * nc);
    column_max(W, G, nc, ldz, tok_m, tok_idx, tok_bad);
    softmax_columns(W, G, nc, ldz, tok_m, tok_tmp);
    store_tile(dt, a.soft_attn, N, attn_base, W, G, nc, ldz);
  }

  apply_noise_and_tau(p, bh, n0, nc, Z, ldz, noise_tmp);  // y
  column_max(Z, G, nc, ldz, tok_m, tok_idx, tok_bad);

  // A single chunk per (b, h) finalizes right here from scratch; else partials go to the glue's
  // buffers and forward_finalize sums them.
  const bool local = p.nchunks == 1;
  float* acc = local ? carve.take(G * D) : a.part_acc + item * G * D;
  float* cnt = local ? carve.take(G) : a.part_cnt + item * G;
  int32_t* state = local ? reinterpret_cast<int32_t*>(carve.take(D + 1)) : a.part_state + item * (D + 1);
  for (int64_t d = 0; d < D; ++d) state[d] = -1;
  state[D] = 0;
  const float* V = rows_f32(a.v, dt, b, n0, nc, col0, D, sV, &ldv);

  if (p.hard) {
    if (p.return_attn) {  // hard = the exact one-hot A (a NaN column for a bad token)
      for (int64_t g = 0; g < G; ++g) {
        float* row = W + g * ldz;
        const int32_t gi = static_cast<int32_t>(g);
#pragma omp simd
        for (int64_t n = 0; n < nc; ++n) row[n] = tok_bad[n] ? kNaN : (tok_idx[n] == gi ? 1.0f : 0.0f);
      }
      store_tile(dt, a.hard_attn, N, attn_base, W, G, nc, ldz);
    }
    // Segmented sum: each token adds its v row to its group; no [G, N] matrix.
    std::memset(acc, 0, sizeof(float) * G * D);
    std::memset(cnt, 0, sizeof(float) * G);
    for (int64_t n = 0; n < nc; ++n) {
      if (tok_bad[n]) {
        state[D] = 1;
        continue;
      }
      const int64_t g = tok_idx[n];
      float* acc_row = acc + g * D;
      const float* v_row = V + n * ldv;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) acc_row[d] += v_row[d];
      cnt[g] += 1.0f;
    }
    // Rare path: a non-finite sum means a non-finite v (or an overflow). Record per channel d the
    // group of its non-finite tokens (-1: none, g: all in group g, -2: several groups), so that
    // finalize can give every *other* group the 0 * inf = NaN of the dense formula.
    int32_t nonfinite = 0;
#pragma omp simd reduction(| : nonfinite)
    for (int64_t i = 0; i < G * D; ++i) nonfinite |= static_cast<int32_t>(!(acc[i] - acc[i] == 0.0f));
    if (nonfinite) {
      for (int64_t n = 0; n < nc; ++n) {
        if (tok_bad[n]) continue;
        const int32_t g = tok_idx[n];
        const float* v_row = V + n * ldv;
        for (int64_t d = 0; d < D; ++d) {
          if (!(v_row[d] - v_row[d] == 0.0f)) state[d] = (state[d] == -1 || state[d] == g) ? g : -2;
        }
      }
    }
  } else {
    softmax_columns(Z, G, nc, ldz, tok_m, tok_tmp);  // S (NaN columns stay NaN)
    if (p.return_attn) store_tile(dt, a.hard_attn, N, attn_base, Z, G, nc, ldz);
    mm_nn(mm, G, D, nc, 1.0f, Z, ldz, 1, V, ldv, acc, D);  // acc = S V
    for (int64_t g = 0; g < G; ++g) {
      const float* row = Z + g * ldz;
      float s = 0.0f;
      for (int64_t n = 0; n < nc; ++n) s += row[n];
      cnt[g] = s;
    }
  }
  if (local) write_forward_outputs(a, bh, acc, cnt, state);
}

void forward_finalize(const ForwardArgs& a, int64_t bh) {
  const Params& p = a.p;
  const int64_t G = p.G, D = p.D, nch = p.nchunks;
  float* acc = a.part_acc + bh * nch * G * D;
  float* cnt = a.part_cnt + bh * nch * G;
  int32_t* state = a.part_state + bh * nch * (D + 1);
  for (int64_t ci = 1; ci < nch; ++ci) {  // fixed order: thread-count independent
    const float* acc_c = acc + ci * G * D;
#pragma omp simd
    for (int64_t i = 0; i < G * D; ++i) acc[i] += acc_c[i];
    for (int64_t g = 0; g < G; ++g) cnt[g] += cnt[ci * G + g];
    const int32_t* state_c = state + ci * (D + 1);
    for (int64_t d = 0; d < D; ++d) {
      if (state_c[d] != -1) state[d] = (state[d] == -1 || state[d] == state_c[d]) ? state_c[d] : -2;
    }
    state[D] |= state_c[D];
  }
  write_forward_outputs(a, bh, acc, cnt, state);
}

// --------------------------------------------------------------------------------------------
// Backward (docs/assign_op.md, "Backward"): recompute Z, e, S, g*; then
//   dv[n] = sum_g R[g,n] dO[g];  dR = dO V^T;  dA = (dR - delta) / (r + eps)  (dA = dR: sum_assign)
//   dz = S * (dA - sum_g S dA) / tau;  dq = scale * dz K;  dk = scale * dz^T Q
// --------------------------------------------------------------------------------------------

// The reduced dq [G, D] of one (b, h) -> dq (input dtype).
void write_dq(const BackwardArgs& a, int64_t bh, const float* dq) {
  const Params& p = a.p;
  const int64_t G = p.G, D = p.D, b = bh / p.H, h = bh % p.H;
  for (int64_t g = 0; g < G; ++g) {
    store_row(p.dtype, elem_ptr(a.dq, p.dtype, (b * G + g) * (p.H * D) + h * D), dq + g * D, D);
  }
}

size_t backward_scratch_floats(const Params& p) {
  const int64_t ldz = round_up(p.chunk, 16), D = round_up(p.D, 16);
  const int64_t local = p.nchunks == 1 ? p.G * D : 0;  // the item's own dq [G, D] (single chunk)
  return static_cast<size_t>(2 * p.G * D + 3 * p.chunk * D + 3 * p.G * ldz + 6 * ldz + 2 * round_up(p.G, 16) +
                             local + panel_floats(p) + 32);
}

void backward_item(const BackwardArgs& a, int64_t item, float* scratch, GemmFn gemm) {
  const Params& p = a.p;
  const DType dt = p.dtype;
  const int64_t G = p.G, D = p.D, N = p.N, C = p.H * p.D;
  const int64_t bh = item / p.nchunks, ci = item % p.nchunks, b = bh / p.H, h = bh % p.H;
  const int64_t n0 = ci * p.chunk, nc = min64(p.chunk, N - n0), col0 = h * D;
  const int64_t ldz = round_up(p.chunk, 16);
  Carver carve{scratch};
  const Mm mm{gemm, carve.take(panel_floats(p))};
  float* sQ = carve.take(G * D);
  float* sdO = carve.take(G * D);
  float* sK = carve.take(p.chunk * D);
  float* sV = carve.take(p.chunk * D);
  float* sOut = carve.take(p.chunk * D);
  float* Z = carve.take(G * ldz);
  float* dR = carve.take(G * ldz);
  float* W = carve.take(G * ldz);
  float* tok_m = carve.take(ldz);
  float* tok_tmp = carve.take(ldz);
  float* noise_tmp = carve.take(ldz);
  int32_t* tok_idx = reinterpret_cast<int32_t*>(carve.take(ldz));
  int32_t* tok_bad = reinterpret_cast<int32_t*>(carve.take(ldz));
  float* inv = carve.take(G);
  float* delta = carve.take(G);

  int64_t ldq, ldk, ldv, ldo;
  const float* Q = rows_f32(a.q, dt, b, 0, G, col0, D, sQ, &ldq);
  const float* dO = rows_f32(a.dout, dt, b, 0, G, col0, D, sdO, &ldo);
  const float* K = rows_f32(a.k, dt, b, n0, nc, col0, D, sK, &ldk);
  const float* V = rows_f32(a.v, dt, b, n0, nc, col0, D, sV, &ldv);

  // delta[g] = <dO[g], out[g]>, inv[g] = 1 / (r[g] + eps) (1 with sum_assign)
  for (int64_t g = 0; g < G; ++g) {
    load_row(dt, elem_ptr(a.out.ptr, dt, b * a.out.sb + g * a.out.sl + col0 * a.out.sc), a.out.sc, D, sOut);
    const float* o = dO + g * ldo;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < D; ++d) s += o[d] * sOut[d];
    delta[g] = s;
    inv[g] = p.sum_assign ? 1.0f : 1.0f / (a.r[bh * G + g] + p.eps);
  }

  mm_nt(mm, G, nc, D, p.scale, Q, ldq, K, ldk, Z, ldz);  // Z = scale * Q K^T
  mm_nt(mm, G, nc, D, 1.0f, dO, ldo, V, ldv, dR, ldz);   // dR = dO V^T
  apply_noise_and_tau(p, bh, n0, nc, Z, ldz, noise_tmp);              // y
  column_max(Z, G, nc, ldz, tok_m, tok_idx, tok_bad);
  softmax_columns(Z, G, nc, ldz, tok_m, tok_tmp);  // S

  // dv[n] = sum_g R[g, n] dO[g], R = A * inv[g]. Written straight into dv when it is fp32.
  const int64_t tok_base = (b * N + n0) * C + col0;  // element (n, d) of dv/dk: tok_base + n * C + d
  const bool direct = dt == DType::kFloat32;
  float* dv_dst = direct ? static_cast<float*>(a.dv) + tok_base : sOut;
  const int64_t ld_dst = direct ? C : D;
  if (p.hard) {  // one-hot A: dv[n] = inv[g*] dO[g*], a NaN row for a bad token
    for (int64_t n = 0; n < nc; ++n) {
      float* dst = dv_dst + n * ld_dst;
      const int64_t g = tok_idx[n];
      const float w = tok_bad[n] ? kNaN : inv[g];
      const float* o = dO + g * ldo;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) dst[d] = w * o[d];
    }
  } else {
    for (int64_t g = 0; g < G; ++g) {
      const float* s_row = Z + g * ldz;
      float* w_row = W + g * ldz;
      const float w = inv[g];
#pragma omp simd
      for (int64_t n = 0; n < nc; ++n) w_row[n] = s_row[n] * w;
    }
    mm_nn(mm, nc, D, G, 1.0f, W, 1, ldz, dO, ldo, dv_dst, ld_dst);  // R^T dO
  }
  if (!direct) {
    for (int64_t n = 0; n < nc; ++n) store_row(dt, elem_ptr(a.dv, dt, tok_base + n * C), sOut + n * D, D);
  }

  // dA (in dR), then t[n] = sum_g S dA, then dz = S (dA - t) * scale / tau (in dR)
  for (int64_t n = 0; n < nc; ++n) tok_tmp[n] = 0.0f;
  for (int64_t g = 0; g < G; ++g) {
    float* r_row = dR + g * ldz;
    const float* s_row = Z + g * ldz;
    if (!p.sum_assign) {
      const float dl = delta[g], w = inv[g];
#pragma omp simd
      for (int64_t n = 0; n < nc; ++n) r_row[n] = (r_row[n] - dl) * w;
    }
#pragma omp simd
    for (int64_t n = 0; n < nc; ++n) tok_tmp[n] += s_row[n] * r_row[n];
  }
  const float dz_scale = p.scale / p.tau;
  for (int64_t g = 0; g < G; ++g) {
    float* r_row = dR + g * ldz;
    const float* s_row = Z + g * ldz;
#pragma omp simd
    for (int64_t n = 0; n < nc; ++n) r_row[n] = s_row[n] * (r_row[n] - tok_tmp[n]) * dz_scale;
  }

  const bool local = p.nchunks == 1;  // a single chunk writes dq itself, else partials for finalize
  float* dq = local ? carve.take(G * D) : a.part_dq + item * G * D;
  mm_nn(mm, G, D, nc, 1.0f, dR, ldz, 1, K, ldk, dq, D);  // dq (part) = dz K
  float* dk_dst = direct ? static_cast<float*>(a.dk) + tok_base : sOut;
  mm_nn(mm, nc, D, G, 1.0f, dR, 1, ldz, Q, ldq, dk_dst, ld_dst);  // dk = dz^T Q
  if (!direct) {
    for (int64_t n = 0; n < nc; ++n) store_row(dt, elem_ptr(a.dk, dt, tok_base + n * C), sOut + n * D, D);
  }
  if (local) write_dq(a, bh, dq);
}

void backward_finalize(const BackwardArgs& a, int64_t bh) {
  const Params& p = a.p;
  const int64_t G = p.G, D = p.D, nch = p.nchunks;
  float* dq = a.part_dq + bh * nch * G * D;
  for (int64_t ci = 1; ci < nch; ++ci) {  // fixed order: thread-count independent
    const float* part = dq + ci * G * D;
#pragma omp simd
    for (int64_t i = 0; i < G * D; ++i) dq[i] += part[i];
  }
  write_dq(a, bh, dq);
}

void gumbel_noise(float* out, int64_t count, uint64_t seed, uint64_t first_counter) {
  gumbel_run(out, count, seed, first_counter);
}

#undef GVF_INLINE

}  // namespace

const KernelTable& table() {
  static const KernelTable kTable = {
      GVF_ISA_NAME,     forward_scratch_floats, forward_item,      forward_finalize,
      backward_scratch_floats, backward_item,   backward_finalize, gumbel_noise,
  };
  return kTable;
}

}  // namespace GVF_ISA
}  // namespace cpu
}  // namespace groupvit_fast
