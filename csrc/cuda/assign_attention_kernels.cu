// CUDA kernels of GroupViT's assignment attention (docs/assign_op.md). Torch-free: CUDA headers,
// raw pointers and a stream only (the glue is assign_attention_cuda.cpp).
//
// One thread block (256 threads) per (batch b, head h, tile of 32 tokens). The block computes the
// whole logits tile z[G, 32] into shared memory (G <= kMaxGroups), so the softmax over groups is
// a reduction inside the block:
//
//   forward   y = (z + e) / tau, e = Philox Gumbel noise (or the noise tensor)
//             hard: g*(n) = argmax_g y (lowest g on ties); acc[g*] += v_n, cnt[g*] += 1
//             soft: S = softmax_g(y); acc[g] += sum_n S[g,n] v_n, cnt[g] += sum_n S[g,n]
//             (fp32 atomics into a [B, H, G, D] workspace: a segmented sum, no [G, N] matrix)
//   finalize  out = acc / (cnt + eps) (acc with sum_assign), r = cnt
//   backward  recompute z, e, S, g*; dR = dO V^T (second tile); then per docs/assign_op.md, "Backward"
//             dv[n] = sum_g R[g,n] dO[g], dA = (dR - delta) / (r + eps), dz = S (dA - sum_g S dA),
//             dk[n] = scale/tau sum_g dz q_g (token-owned, plain stores),
//             dq[g] += scale/tau sum_n dz k_n (fp32 atomics).
// Accumulation is fp32 for every input dtype. The atomics make the summation order (and so the
// last bits of out / dq) run-to-run dependent, as for torch's own index_add_ on CUDA.
//
// Non-finite inputs follow the dense formula R @ v, as the CPU kernels do: a token whose softmax
// column is NaN makes A's column NaN (hard mode: every r[g] and out[g] of that (b, h) is NaN), and
// a non-finite v[n, d] reaches out[g, d] for every group g (1 * v for the token's own group,
// 0 * v = NaN for the others).

#include <cstdint>

#if defined(GVF_CUDA_EMULATION)
// Compiled as host C++ with emulated threads (tests/kernels/test_cuda_emulation.py, emulation/).
#include "emulation/cuda_emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define GVF_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#define GVF_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif

#include "assign_attention_kernels.h"
#include "philox_gumbel.h"

namespace groupvit_fast {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;             // tokens per block
constexpr int kLdz = kTile + 1;       // row stride of the [G, kTile] tiles: no bank conflicts
constexpr int kStageFloats = 2 * 32 * 33;  // staging for 32 x 32 (+1) operand tiles
constexpr int kChunk = 64;            // channels per staged chunk in the merge loops

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ float neg_inf_f() { return __int_as_float(0xff800000); }

// Gumbel noise: philox::gumbel_at (philox_gumbel.h), the same header the CPU kernels use.
using philox::gumbel_at;

// ---------------------------------------------------------------------------------------------
// Block-level building blocks (all threads of the block call them; they synchronise inside).
// ---------------------------------------------------------------------------------------------

// out[g * kLdz + n] = alpha * sum_d A[g, d] * Bm[n, d] for g < G, n < tn, where A rows are
// a + g * a_sl + d * a_sc and Bm rows b + n * b_sl + d * b_sc (global memory, dtype T).
// 32 x 32 output tiles; operands staged through shared memory in 32-channel slices.
template <typename T>
__device__ void tile_dot(const T* a, int64_t a_sl, int64_t a_sc, int G, const T* b, int64_t b_sl, int64_t b_sc,
                         int tn, int D, float alpha, float* out, float* stage) {
  float* as = stage;            // [32][33]
  float* bs = stage + 32 * 33;  // [32][33]
  const int tid = threadIdx.x, tx = tid & 31, ty = tid >> 5;
  for (int g0 = 0; g0 < G; g0 += 32) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int d0 = 0; d0 < D; d0 += 32) {
      for (int i = tid; i < 32 * 32; i += kThreads) {
        const int row = i >> 5, col = i & 31, d = d0 + col;
        as[row * 33 + col] = (g0 + row < G && d < D) ? to_float(a[(g0 + row) * a_sl + d * a_sc]) : 0.f;
        bs[row * 33 + col] = (row < tn && d < D) ? to_float(b[row * b_sl + d * b_sc]) : 0.f;
      }
      __syncthreads();
#pragma unroll 8
      for (int c = 0; c < 32; ++c) {
        const float bv = bs[tx * 33 + c];
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i] = fmaf(as[(ty + 8 * i) * 33 + c], bv, acc[i]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int g = g0 + ty + 8 * i;
      if (g < G && tx < tn) out[g * kLdz + tx] = alpha * acc[i];
    }
  }
  __syncthreads();
}

// y = (z + e) / tau on the tile (e from the noise tensor or Philox), element (g, n) of the
// [B, H, G, N] noise having the index (bh * G + g) * N + n0 + n.
__device__ void apply_noise_and_tau(const Params& p, int64_t bh, int64_t n0, int tn, float* Z) {
  const int G = static_cast<int>(p.G);
  for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
    const int g = i / kTile, n = i % kTile;
    if (n >= tn) continue;
    float y = Z[g * kLdz + n];
    if (p.gumbel) {
      const int64_t index = (bh * p.G + g) * p.N + n0 + n;
      y += p.noise != nullptr ? p.noise[index] : gumbel_at(p.offset + static_cast<uint64_t>(index), p.seed);
    }
    if (p.tau != 1.0f) y = y / p.tau;
    Z[g * kLdz + n] = y;
  }
  __syncthreads();
}

// Per token column n < tn: m = max_g Z ignoring NaN, idx = its lowest g, bad = the softmax column
// is NaN (a NaN in it, or a maximum of +-inf). With softmax, Z becomes exp(Z - m) and inv_sum
// 1 / sum_g exp(Z - m), so that S = Z * inv_sum (NaN propagates). One warp per column.
__device__ void column_stats(int G, int tn, float* Z, bool softmax, float* m_out, int* idx_out, int* bad_out,
                             float* inv_sum_out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int n = warp; n < tn; n += kWarps) {
    float m = neg_inf_f();
    int idx = G;  // lanes without a group lose every tie
    int nan = 0;
    for (int g = lane; g < G; g += 32) {
      const float y = Z[g * kLdz + n];
      if (y > m) {  // strict: within a lane the lowest g wins ties
        m = y;
        idx = g;
      }
      nan |= (y != y);
    }
    for (int off = 16; off > 0; off >>= 1) {
      const float om = __shfl_xor_sync(0xffffffffu, m, off);
      const int oi = __shfl_xor_sync(0xffffffffu, idx, off);
      if (om > m || (om == m && oi < idx)) {
        m = om;
        idx = oi;
      }
    }
    nan = __any_sync(0xffffffffu, nan);
    const int bad = nan || isinf(m);
    if (softmax) {
      float s = 0.f;
      for (int g = lane; g < G; g += 32) {
        const float e = __expf(Z[g * kLdz + n] - m);
        Z[g * kLdz + n] = e;
        s += e;
      }
      for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == 0) inv_sum_out[n] = 1.0f / s;
    }
    if (lane == 0) {
      m_out[n] = m;
      idx_out[n] = idx < G ? idx : 0;
      bad_out[n] = bad;
    }
  }
  __syncthreads();
}

// Z[g, n] *= inv_sum[n] (turns the exps of column_stats into S).
__device__ void normalize_columns(int G, int tn, float* Z, const float* inv_sum) {
  for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
    const int g = i / kTile, n = i % kTile;
    if (n < tn) Z[g * kLdz + n] *= inv_sum[n];
  }
  __syncthreads();
}

// dst[(row0 + g) * N + n0 + n] = W[g, n] for g < G, n < tn (a [B,H,G,N] attention map).
template <typename T>
__device__ void store_map(T* dst, int64_t base, int64_t N, int G, int tn, const float* W) {
  for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
    const int g = i / kTile, n = i % kTile;
    if (n < tn) dst[base + g * N + n] = from_float<T>(W[g * kLdz + n]);
  }
}

// acc[g, d] += sum_{n < tn} W[g, n] * rows[n, d] (fp32 atomics; acc row stride D), rows from
// global (rows + n * sl + d * sc), staged through shared memory kChunk channels at a time.
template <typename T>
__device__ void group_outputs_atomic(int G, int tn, int D, const float* W, const T* rows, int64_t sl, int64_t sc,
                                     float* acc, float* stage) {
  constexpr int kLd = kChunk + 1;
  for (int d0 = 0; d0 < D; d0 += kChunk) {
    for (int i = threadIdx.x; i < kTile * kChunk; i += kThreads) {
      const int n = i / kChunk, c = i % kChunk, d = d0 + c;
      stage[n * kLd + c] = (n < tn && d < D) ? to_float(rows[n * sl + d * sc]) : 0.f;
    }
    __syncthreads();
    const int width = D - d0 < kChunk ? D - d0 : kChunk;
    for (int i = threadIdx.x; i < G * kChunk; i += kThreads) {
      const int g = i / kChunk, c = i % kChunk;
      if (c >= width) continue;
      float s = 0.f;
      for (int n = 0; n < tn; ++n) s = fmaf(W[g * kLdz + n], stage[n * kLd + c], s);
      atomicAdd(acc + static_cast<int64_t>(g) * D + d0 + c, s);
    }
    __syncthreads();
  }
}

// out[n, d] = alpha * sum_g w(g) W[g, n] * rows[g, d] for n < tn (token-owned rows, plain stores
// into out + n * C + d, dtype T), rows from global (rows + g * sl + d * sc), staged in chunks of
// 32 groups x kChunk channels; w(g) = gw[g] when gw is given, else 1.
template <typename T, typename TOut>
__device__ void token_outputs(int G, int tn, int D, const float* W, const float* gw, const T* rows, int64_t sl,
                              int64_t sc, float alpha, TOut* out, int64_t C, float* stage) {
  constexpr int kLd = kChunk + 1;
  constexpr int kPer = kTile * kChunk / kThreads;  // outputs per thread in a chunk: 8
  for (int d0 = 0; d0 < D; d0 += kChunk) {
    float acc[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) acc[j] = 0.f;
    for (int g0 = 0; g0 < G; g0 += 32) {
      for (int i = threadIdx.x; i < 32 * kChunk; i += kThreads) {
        const int g = i / kChunk, c = i % kChunk, d = d0 + c;
        float x = (g0 + g < G && d < D) ? to_float(rows[(g0 + g) * sl + d * sc]) : 0.f;
        if (gw != nullptr && g0 + g < G) x *= gw[g0 + g];
        stage[g * kLd + c] = x;
      }
      __syncthreads();
      const int gn = G - g0 < 32 ? G - g0 : 32;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int i = threadIdx.x + j * kThreads, n = i / kChunk, c = i % kChunk;
        float s = acc[j];
        if (n < tn) {
          for (int g = 0; g < gn; ++g) s = fmaf(W[(g0 + g) * kLdz + n], stage[g * kLd + c], s);
        }
        acc[j] = s;
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = threadIdx.x + j * kThreads, n = i / kChunk, c = i % kChunk;
      if (n < tn && d0 + c < D) out[n * C + d0 + c] = from_float<TOut>(alpha * acc[j]);
    }
  }
}

// state[d] bookkeeping for a non-finite v[n, d] of a token in group g: -1 none yet, g all such
// tokens in group g, -2 several groups.
__device__ void note_nonfinite(int32_t* state, int g) {
  int old = atomicAdd(state, 0);
  while (true) {
    const int desired = (old == -1 || old == g) ? g : -2;
    if (desired == old) return;
    const int prev = atomicCAS(state, old, desired);
    if (prev == old) return;
    old = prev;
  }
}

struct Shared {
  float* Z;
  float* R;
  float* stage;
  float* col_m;
  float* col_inv;
  int* col_idx;
  int* col_bad;
  float* gw;     // [G]: 1 / (r + eps)
  float* delta;  // [G]
};

__device__ Shared carve_shared(float* smem, int G, bool backward) {
  Shared s;
  float* next = smem;
  s.Z = next;
  next += G * kLdz;
  s.R = nullptr;
  if (backward) {
    s.R = next;
    next += G * kLdz;
  }
  s.stage = next;
  next += kStageFloats;
  s.col_m = next;
  next += kTile;
  s.col_inv = next;
  next += kTile;
  s.col_idx = reinterpret_cast<int*>(next);
  next += kTile;
  s.col_bad = reinterpret_cast<int*>(next);
  next += kTile;
  s.gw = next;
  next += backward ? G : 0;
  s.delta = next;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(Params p, Strided q, Strided k, Strided v,
                                                           ForwardWorkspace ws, T* hard_attn, T* soft_attn) {
  GVF_DYNAMIC_SHARED(float, smem);
  const int G = static_cast<int>(p.G), D = static_cast<int>(p.D);
  const int64_t tiles = (p.N + kTile - 1) / kTile;
  const int64_t bh = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const int64_t b = bh / p.H, h = bh % p.H, n0 = tile * kTile;
  const int tn = static_cast<int>(p.N - n0 < kTile ? p.N - n0 : kTile);
  Shared s = carve_shared(smem, G, false);

  const T* qb = static_cast<const T*>(q.ptr) + b * q.sb + h * D * q.sc;
  const T* kb = static_cast<const T*>(k.ptr) + b * k.sb + n0 * k.sl + h * D * k.sc;
  const T* vb = static_cast<const T*>(v.ptr) + b * v.sb + n0 * v.sl + h * D * v.sc;
  tile_dot(qb, q.sl, q.sc, G, kb, k.sl, k.sc, tn, D, p.scale, s.Z, s.stage);  // z = scale * q k^T

  const int64_t map_base = bh * p.G * p.N + n0;
  if (p.return_attn) {  // soft map = softmax_g(z): no noise, no tau; written straight to global
    column_stats(G, tn, s.Z, false, s.col_m, s.col_idx, s.col_bad, s.col_inv);
    for (int n = threadIdx.x >> 5; n < tn; n += kWarps) {  // sum of exps per column (one warp each)
      float acc = 0.f;
      for (int g = threadIdx.x & 31; g < G; g += 32) acc += __expf(s.Z[g * kLdz + n] - s.col_m[n]);
      for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
      if ((threadIdx.x & 31) == 0) s.col_inv[n] = 1.0f / acc;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
      const int g = i / kTile, n = i % kTile;
      if (n < tn) {
        soft_attn[map_base + g * p.N + n] = from_float<T>(__expf(s.Z[g * kLdz + n] - s.col_m[n]) * s.col_inv[n]);
      }
    }
    __syncthreads();
  }

  apply_noise_and_tau(p, bh, n0, tn, s.Z);  // y
  const bool need_softmax = !p.hard;
  column_stats(G, tn, s.Z, need_softmax, s.col_m, s.col_idx, s.col_bad, s.col_inv);
  float* acc = ws.acc + bh * p.G * p.D;
  float* cnt = ws.cnt + bh * p.G;

  if (p.hard) {
    if (p.return_attn) {  // the exact one-hot A (a NaN column for a bad token)
      for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
        const int g = i / kTile, n = i % kTile;
        if (n < tn) {
          const float a = s.col_bad[n] ? nan_f() : (s.col_idx[n] == g ? 1.0f : 0.0f);
          hard_attn[map_base + g * p.N + n] = from_float<T>(a);
        }
      }
    }
    // Segmented sum: token n adds its v row to its group's row of acc.
    for (int i = threadIdx.x; i < tn * D; i += kThreads) {
      const int n = i / D, d = i % D;
      if (s.col_bad[n]) continue;
      const int g = s.col_idx[n];
      const float x = to_float(vb[n * v.sl + d * v.sc]);
      atomicAdd(acc + static_cast<int64_t>(g) * D + d, x);
      if (!isfinite(x)) note_nonfinite(ws.state + bh * p.D + d, g);
    }
    if (threadIdx.x < tn) {
      const int n = threadIdx.x;
      if (s.col_bad[n]) {
        atomicExch(ws.poison + bh, 1);
      } else {
        atomicAdd(cnt + s.col_idx[n], 1.0f);
      }
    }
  } else {
    normalize_columns(G, tn, s.Z, s.col_inv);  // S
    if (p.return_attn) {
      store_map(hard_attn, map_base, p.N, G, tn, s.Z);
    }
    group_outputs_atomic(G, tn, D, s.Z, vb, v.sl, v.sc, acc, s.stage);  // acc += S v
    for (int g = threadIdx.x; g < G; g += kThreads) {
      float r = 0.f;
      for (int n = 0; n < tn; ++n) r += s.Z[g * kLdz + n];
      atomicAdd(cnt + g, r);
    }
  }
}

// out[b, g, h * D + d] = acc[b, h, g, d] / (cnt + eps) (acc with sum_assign); r = cnt, both NaN
// for a poisoned (b, h); plus the 0 * inf = NaN of non-finite v in the other groups.
template <typename T>
__global__ void forward_finalize_kernel(Params p, ForwardWorkspace ws, T* out, float* r) {
  const int64_t C = p.H * p.D, total = p.B * p.G * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (p.G * C), g = (i / C) % p.G, c = i % C, h = c / p.D, d = c % p.D;
    const int64_t bh = b * p.H + h;
    const bool poisoned = ws.poison[bh] != 0;
    const float count = ws.cnt[bh * p.G + g];
    const float inv = poisoned ? nan_f() : (p.sum_assign ? 1.0f : 1.0f / (count + p.eps));
    float val = ws.acc[(bh * p.G + g) * p.D + d] * inv;
    const int32_t st = ws.state[bh * p.D + d];
    if (st != -1 && st != g) val = nan_f();
    out[i] = from_float<T>(val);
    if (d == 0 && h == 0) {
      for (int64_t hh = 0; hh < p.H; ++hh) {
        const int64_t bhh = b * p.H + hh;
        r[bhh * p.G + g] = ws.poison[bhh] != 0 ? nan_f() : ws.cnt[bhh * p.G + g];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// delta[b, h, g] = <dO[b, g, head h], out[b, g, head h]> (one warp per (b, h, g)).
template <typename T>
__global__ void delta_kernel(Params p, Strided dout, Strided out, float* delta) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (warp >= p.B * p.H * p.G) return;
  const int64_t g = warp % p.G, bh = warp / p.G, b = bh / p.H, h = bh % p.H;
  const T* o = static_cast<const T*>(dout.ptr) + b * dout.sb + g * dout.sl + h * p.D * dout.sc;
  const T* y = static_cast<const T*>(out.ptr) + b * out.sb + g * out.sl + h * p.D * out.sc;
  float s = 0.f;
  for (int64_t d = lane; d < p.D; d += 32) s = fmaf(to_float(o[d * dout.sc]), to_float(y[d * out.sc]), s);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[warp] = s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) backward_kernel(Params p, Strided q, Strided k, Strided v, Strided dout,
                                                            const float* r, const float* delta, float* dq_acc, T* dk,
                                                            T* dv) {
  GVF_DYNAMIC_SHARED(float, smem);
  const int G = static_cast<int>(p.G), D = static_cast<int>(p.D);
  const int64_t C = p.H * p.D;
  const int64_t tiles = (p.N + kTile - 1) / kTile;
  const int64_t bh = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const int64_t b = bh / p.H, h = bh % p.H, n0 = tile * kTile;
  const int tn = static_cast<int>(p.N - n0 < kTile ? p.N - n0 : kTile);
  Shared s = carve_shared(smem, G, true);

  for (int g = threadIdx.x; g < G; g += kThreads) {
    s.gw[g] = p.sum_assign ? 1.0f : 1.0f / (r[bh * p.G + g] + p.eps);  // R = A * gw
    s.delta[g] = delta[bh * p.G + g];
  }
  const T* qb = static_cast<const T*>(q.ptr) + b * q.sb + h * D * q.sc;
  const T* ob = static_cast<const T*>(dout.ptr) + b * dout.sb + h * D * dout.sc;
  const T* kb = static_cast<const T*>(k.ptr) + b * k.sb + n0 * k.sl + h * D * k.sc;
  const T* vb = static_cast<const T*>(v.ptr) + b * v.sb + n0 * v.sl + h * D * v.sc;
  tile_dot(qb, q.sl, q.sc, G, kb, k.sl, k.sc, tn, D, p.scale, s.Z, s.stage);          // z
  tile_dot(ob, dout.sl, dout.sc, G, vb, v.sl, v.sc, tn, D, 1.0f, s.R, s.stage);      // dR = dO v^T
  apply_noise_and_tau(p, bh, n0, tn, s.Z);                                             // y
  column_stats(G, tn, s.Z, true, s.col_m, s.col_idx, s.col_bad, s.col_inv);
  normalize_columns(G, tn, s.Z, s.col_inv);                                            // S

  // dv[n] = sum_g R[g, n] dO[g]
  T* dv_b = dv + (b * p.N + n0) * C + h * D;
  if (p.hard) {  // one-hot: dv[n] = gw[g*] dO[g*] (NaN for a bad token)
    for (int i = threadIdx.x; i < tn * D; i += kThreads) {
      const int n = i / D, d = i % D, g = s.col_idx[n];
      const float w = s.col_bad[n] ? nan_f() : s.gw[g];
      dv_b[n * C + d] = from_float<T>(w * to_float(ob[g * dout.sl + d * dout.sc]));
    }
  } else {
    token_outputs(G, tn, D, s.Z, s.gw, ob, dout.sl, dout.sc, 1.0f, dv_b, C, s.stage);
  }
  __syncthreads();

  // dA = (dR - delta) * gw (dR with sum_assign), t[n] = sum_g S dA, dz = S (dA - t) * scale / tau
  for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
    const int g = i / kTile, n = i % kTile;
    if (n < tn && !p.sum_assign) s.R[g * kLdz + n] = (s.R[g * kLdz + n] - s.delta[g]) * s.gw[g];
  }
  __syncthreads();
  float* t = s.col_inv;  // reuse: the softmax is done
  for (int n = threadIdx.x >> 5; n < tn; n += kWarps) {
    float acc = 0.f;
    for (int g = threadIdx.x & 31; g < G; g += 32) acc = fmaf(s.Z[g * kLdz + n], s.R[g * kLdz + n], acc);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0) t[n] = acc;
  }
  __syncthreads();
  const float dz_scale = p.scale / p.tau;
  for (int i = threadIdx.x; i < G * kTile; i += kThreads) {
    const int g = i / kTile, n = i % kTile;
    if (n < tn) s.R[g * kLdz + n] = s.Z[g * kLdz + n] * (s.R[g * kLdz + n] - t[n]) * dz_scale;
  }
  __syncthreads();

  // dk[n] = sum_g dz[g, n] q_g (token-owned); dq[g] += sum_n dz[g, n] k_n (atomics)
  T* dk_b = dk + (b * p.N + n0) * C + h * D;
  token_outputs(G, tn, D, s.R, static_cast<const float*>(nullptr), qb, q.sl, q.sc, 1.0f, dk_b, C, s.stage);
  __syncthreads();
  float* dq_b = dq_acc + b * p.G * C + h * D;
  // group_outputs_atomic writes acc[g * D + d]; dq rows are C apart, so go through a row pointer
  // per group: stage k, then atomics into dq_b[g * C + d].
  constexpr int kLd = kChunk + 1;
  for (int d0 = 0; d0 < D; d0 += kChunk) {
    for (int i = threadIdx.x; i < kTile * kChunk; i += kThreads) {
      const int n = i / kChunk, c = i % kChunk, d = d0 + c;
      s.stage[n * kLd + c] = (n < tn && d < D) ? to_float(kb[n * k.sl + d * k.sc]) : 0.f;
    }
    __syncthreads();
    const int width = D - d0 < kChunk ? D - d0 : kChunk;
    for (int i = threadIdx.x; i < G * kChunk; i += kThreads) {
      const int g = i / kChunk, c = i % kChunk;
      if (c >= width) continue;
      float acc = 0.f;
      for (int n = 0; n < tn; ++n) acc = fmaf(s.R[g * kLdz + n], s.stage[n * kLd + c], acc);
      atomicAdd(dq_b + static_cast<int64_t>(g) * C + d0 + c, acc);
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void convert_kernel(const float* src, T* dst, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = from_float<T>(src[i]);
  }
}

__global__ void gumbel_noise_kernel(float* out, int64_t count, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = gumbel_at(offset + static_cast<uint64_t>(i), seed);
  }
}

int grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

template <typename T>
cudaError_t forward_typed(const Params& p, Strided q, Strided k, Strided v, const ForwardWorkspace& ws, void* out,
                          float* r, void* hard_attn, void* soft_attn, cudaStream_t stream) {
  const size_t smem = forward_smem_bytes(p.G);
  cudaError_t err = cudaFuncSetAttribute(forward_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const int64_t blocks = p.B * p.H * ((p.N + kTile - 1) / kTile);
  GVF_LAUNCH(forward_kernel<T>, static_cast<unsigned>(blocks), kThreads, smem, stream)(
      p, q, k, v, ws, static_cast<T*>(hard_attn), static_cast<T*>(soft_attn));
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  GVF_LAUNCH(forward_finalize_kernel<T>, grid_for(p.B * p.G * p.H * p.D, 256), 256, 0, stream)(
      p, ws, static_cast<T*>(out), r);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_typed(const Params& p, Strided q, Strided k, Strided v, Strided dout, Strided out,
                           const float* r, float* delta, float* dq_acc, void* dq, void* dk, void* dv,
                           cudaStream_t stream) {
  GVF_LAUNCH(delta_kernel<T>, grid_for(p.B * p.H * p.G * 32, 256), 256, 0, stream)(p, dout, out, delta);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const size_t smem = backward_smem_bytes(p.G);
  err = cudaFuncSetAttribute(backward_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const int64_t blocks = p.B * p.H * ((p.N + kTile - 1) / kTile);
  GVF_LAUNCH(backward_kernel<T>, static_cast<unsigned>(blocks), kThreads, smem, stream)(
      p, q, k, v, dout, r, delta, dq_acc, static_cast<T*>(dk), static_cast<T*>(dv));
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (dq != static_cast<void*>(dq_acc)) {
    const int64_t count = p.B * p.G * p.H * p.D;
    GVF_LAUNCH(convert_kernel<T>, grid_for(count, 256), 256, 0, stream)(dq_acc, static_cast<T*>(dq), count);
    err = cudaGetLastError();
  }
  return err;
}

}  // namespace

size_t forward_smem_bytes(int64_t G) {
  return sizeof(float) * static_cast<size_t>(G * kLdz + kStageFloats + 4 * kTile);
}

size_t backward_smem_bytes(int64_t G) {
  return sizeof(float) * static_cast<size_t>(2 * G * kLdz + kStageFloats + 4 * kTile + 2 * G);
}

cudaError_t assign_forward(const Params& p, Strided q, Strided k, Strided v, const ForwardWorkspace& ws, void* out,
                           float* r, void* hard_attn, void* soft_attn, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat16:
      return forward_typed<__half>(p, q, k, v, ws, out, r, hard_attn, soft_attn, stream);
    case DType::kBFloat16:
      return forward_typed<__nv_bfloat16>(p, q, k, v, ws, out, r, hard_attn, soft_attn, stream);
    default:
      return forward_typed<float>(p, q, k, v, ws, out, r, hard_attn, soft_attn, stream);
  }
}

cudaError_t assign_backward(const Params& p, Strided q, Strided k, Strided v, Strided dout, Strided out,
                            const float* r, float* delta, float* dq_acc, void* dq, void* dk, void* dv,
                            cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat16:
      return backward_typed<__half>(p, q, k, v, dout, out, r, delta, dq_acc, dq, dk, dv, stream);
    case DType::kBFloat16:
      return backward_typed<__nv_bfloat16>(p, q, k, v, dout, out, r, delta, dq_acc, dq, dk, dv, stream);
    default:
      return backward_typed<float>(p, q, k, v, dout, out, r, delta, dq_acc, dq, dk, dv, stream);
  }
}

cudaError_t gumbel_noise(float* out, int64_t count, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  GVF_LAUNCH(gumbel_noise_kernel, grid_for(count, 256), 256, 0, stream)(out, count, seed, offset);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace groupvit_fast
