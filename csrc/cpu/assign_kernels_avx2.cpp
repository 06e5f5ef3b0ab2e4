// The CPU kernels compiled for AVX2 + FMA (chosen at run time by select_kernels() when the CPU
// has both). The target pragma applies to this translation unit only; it includes no torch
// header, and the kernels live in their own namespace, so no AVX2 code can leak into the
// baseline copy through a shared inline function.

#if defined(__x86_64__) || defined(_M_X64)
// Standard headers first, compiled for the baseline: only the kernels below get the AVX2 target.
#include <cmath>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include "assign_kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma")
#endif

#define GVF_ISA avx2
#define GVF_AVX2 1       // the noise in AVX2 intrinsics (gumbel_noise_cpu.h)
#define GVF_GEMM_AVX2 1  // the GEMM tiles in our own micro-kernels (gemm_avx2.h)
#define GVF_ISA_NAME "avx2"
#include "assign_kernels_impl.h"

namespace groupvit_fast {
namespace cpu {
const KernelTable& kernels_avx2() { return avx2::table(); }
}  // namespace cpu
}  // namespace groupvit_fast

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
