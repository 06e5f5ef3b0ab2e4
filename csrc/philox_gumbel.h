// The in-kernel Gumbel noise of assignment attention (docs/assign_op.md, "Noise: what is guaranteed"), written once for
// the CPU kernels (cpu/assign_kernels_impl.h), the CUDA kernels (cuda/assign_attention_kernels.cu)
// and their host emulation (cuda/emulation/), and matching groupvit_fast/reference/philox.py:
//
//   x = first output word of Philox4x32-10, key (seed lo, seed hi), counter (c lo, c hi, 0, 0)
//       (what Triton's tl.randint returns)
//   u = float32(x') * 4.6566127342e-10, x' = x as int32 (~x when negative: tl.rand), clamped to
//       [2**-32, 1 - 2**-24]
//   e = -log(-log(u))
//
// The log is Cephes' single-precision algorithm (about 1 ulp), not the platform's: on the GPU
// --use_fast_math maps logf to __logf, whose absolute error near u = 1 would swamp -log(u), and on
// the CPU libm's scalar logf would stop the noise loops from vectorising. Both kernels therefore
// produce the same bits up to the compiler's choice of contracting a * b + c into an FMA.
//
// Torch-free, and host + device: under nvcc every function is __host__ __device__; as host C++
// (the CPU kernels, the CUDA emulation) they are plain inline functions with memcpy bit casts.
#ifndef GROUPVIT_FAST_PHILOX_GUMBEL_H_
#define GROUPVIT_FAST_PHILOX_GUMBEL_H_

#include <cstdint>
#include <cstring>

#include "float_bits.h"  // GVF_HD and the bit casts

namespace groupvit_fast {
namespace philox {
// Internal linkage on purpose: the CPU kernels compile this header once for the x86-64 baseline and
// once with AVX2 + FMA enabled. Inline functions with external linkage would be one symbol for the
// linker, which could keep the AVX2 body for the baseline copy and fault on a CPU without AVX2.
namespace {

// Philox4x32 round multipliers and Weyl key increments (Salmon et al., SC'11).
constexpr uint32_t kMulA = 0xD2511F53u;
constexpr uint32_t kMulB = 0xCD9E8D57u;
constexpr uint32_t kKeyStep0 = 0x9E3779B9u;
constexpr uint32_t kKeyStep1 = 0xBB67AE85u;
constexpr int kRounds = 10;

// tl.rand's int32 -> [0, 1) scale, and the clamp that keeps both logs finite.
constexpr float kUniformScale = 4.6566127342e-10f;
constexpr float kUniformMin = 0x1.0p-32f;
constexpr float kUniformMax = 1.0f - 0x1.0p-24f;

// Cephes logf: log(x) = e * ln2 + log1p(m), log1p(m) = m - m^2 / 2 + m^3 * P(m), ln2 split in a
// high part exact in float and a low part.
constexpr float kSqrtHalf = 0.707106781186547524f;
// Scalars, not an array: nvcc lets device code read namespace-scope constexpr scalars only.
constexpr float kLogP0 = 7.0376836292e-2f;
constexpr float kLogP1 = -1.1514610310e-1f;
constexpr float kLogP2 = 1.1676998740e-1f;
constexpr float kLogP3 = -1.2420140846e-1f;
constexpr float kLogP4 = 1.4249322787e-1f;
constexpr float kLogP5 = -1.6668057665e-1f;
constexpr float kLogP6 = 2.0000714765e-1f;
constexpr float kLogP7 = -2.4999993993e-1f;
constexpr float kLogP8 = 3.3333331174e-1f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;

using float_bits::bits_to_float;
using float_bits::float_to_bits;

// High 32 bits of a * b.
GVF_HD uint32_t mul_hi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// One Philox4x32 round on the counter words (c0, c1, c2, c3) with round key (k0, k1). Written on
// references so the CPU kernels can run it over arrays of lanes that the compiler vectorises.
GVF_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint32_t hi_b = mul_hi(kMulB, c2), lo_b = kMulB * c2;
  const uint32_t hi_a = mul_hi(kMulA, c0), lo_a = kMulA * c0;
  c0 = hi_b ^ c1 ^ k0;
  c2 = hi_a ^ c3 ^ k1;
  c1 = lo_b;
  c3 = lo_a;
}

// x of the formula above for one counter.
GVF_HD uint32_t philox_x0(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < kRounds; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kKeyStep0;
    k1 += kKeyStep1;
  }
  return c0;
}

// log(x) = e * ln2 + log1p(m) from log_pos's reduced argument m (in [sqrt(1/2), sqrt(2)) - 1) and
// exponent e. Its own function so that the CPU's baseline copy (cpu/gumbel_noise_cpu.h), which
// reduces with masks instead of selects, runs the same polynomial.
GVF_HD float log_from_reduced(float m, int32_t e) {
  const float z = m * m;
  float y = kLogP0;
  y = y * m + kLogP1;
  y = y * m + kLogP2;
  y = y * m + kLogP3;
  y = y * m + kLogP4;
  y = y * m + kLogP5;
  y = y * m + kLogP6;
  y = y * m + kLogP7;
  y = y * m + kLogP8;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y = y + kLn2Lo * fe;
  y = y - 0.5f * z;
  return (m + y) + kLn2Hi * fe;
}

// log(x) for positive, normal, finite x (the noise path only sees u and -log(u)). Selects rather
// than branches, so the CPU loops vectorise; exact range reduction: x = m * 2**e, m in [0.5, 1),
// folded to [sqrt(1/2), sqrt(2)) - 1.
GVF_HD float log_pos(float x) {
  const uint32_t ix = float_to_bits(x);
  int32_t e = static_cast<int32_t>((ix >> 23) & 0xFFu) - 126;
  float m = bits_to_float((ix & 0x007FFFFFu) | 0x3F000000u);
  const bool small = m < kSqrtHalf;
  e = small ? e - 1 : e;
  m = small ? (m + m) - 1.0f : m - 1.0f;
  return log_from_reduced(m, e);
}

// e of the formula above from Philox's output word x.
GVF_HD float gumbel_from_bits(uint32_t x) {
  int32_t xi = static_cast<int32_t>(x);
  xi = xi < 0 ? ~xi : xi;
  float u = static_cast<float>(xi) * kUniformScale;
  u = u < kUniformMin ? kUniformMin : u;
  u = u > kUniformMax ? kUniformMax : u;
  return -log_pos(-log_pos(u));
}

// The noise of element `counter` (its flat index plus the call's offset) under `seed`.
GVF_HD float gumbel_at(uint64_t counter, uint64_t seed) { return gumbel_from_bits(philox_x0(counter, seed)); }

}  // namespace
}  // namespace philox
}  // namespace groupvit_fast

#endif  // GROUPVIT_FAST_PHILOX_GUMBEL_H_
