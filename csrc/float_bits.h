// Bit-level float conversions, written once for the CPU kernels (cpu/assign_kernels_impl.h), the
// Philox noise (philox_gumbel.h) and the host emulation of the CUDA kernels
// (cuda/emulation/cuda_emulation.h): float <-> uint32 bit casts, and IEEE half and bfloat16 held
// as raw uint16 (docs/assign_op.md, "Contract": fp32 compute, outputs rounded to the input dtype).
//
// * half: the FP16 library's branch-free algorithm (the one c10::Half uses), round to nearest
//   even, so that the CPU loops over rows vectorise;
// * bfloat16: round to nearest even, NaN kept a quiet NaN (c10::BFloat16, __float2bfloat16_rn).
//
// Torch-free and CUDA-free, host + device: under nvcc every function is __host__ __device__; as
// host C++ they are inline functions with memcpy bit casts. Internal linkage on purpose: the CPU
// kernels include this header once per instruction set (baseline, AVX2, ...), and an inline
// function with external linkage would be one symbol for the linker, which could keep the AVX2
// body for the baseline copy and fault on a CPU without AVX2.
#ifndef GROUPVIT_FAST_FLOAT_BITS_H_
#define GROUPVIT_FAST_FLOAT_BITS_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef GVF_HD
#if defined(__CUDACC__)
#define GVF_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define GVF_HD inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define GVF_HD __forceinline
#else
#define GVF_HD inline
#endif
#endif

namespace groupvit_fast {
namespace float_bits {
namespace {

GVF_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

GVF_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

GVF_HD float half_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_to_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = two_w < (1u << 27) ? float_to_bits(denormalized) : float_to_bits(normalized);
  return bits_to_float(sign | magnitude);
}

GVF_HD uint16_t float_to_half(float f) {
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = float_to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bits_to_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_to_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

GVF_HD float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

GVF_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

}  // namespace
}  // namespace float_bits
}  // namespace groupvit_fast

#endif  // GROUPVIT_FAST_FLOAT_BITS_H_
