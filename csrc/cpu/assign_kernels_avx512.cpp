// The CPU kernels compiled for AVX-512 (F, BW, VL, DQ) with AVX2 + FMA, chosen at run time by
// kernel_select.cpp when the CPU has all of them. The element-wise loops (noise, softmax, argmax,
// segmented sums, dtype conversion) vectorise 16 lanes wide; every GEMM tile goes to ATen's BLAS
// (MKL / oneDNN use AVX-512, and AMX where there is one), as in PyTorch's CPU flash attention.
// The noise reuses the AVX2 intrinsics (every AVX-512 CPU has AVX2). The target pragma applies to
// this translation unit only; it includes no torch header, and the kernels live in their own
// namespace, so no AVX-512 code can leak into another copy through a shared inline function.

#if defined(__x86_64__) || defined(_M_X64)
// Standard headers first, compiled for the baseline: only the kernels below get the AVX-512 target.
#include <cmath>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include "assign_kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#endif

#define GVF_ISA avx512
#define GVF_AVX2 1  // the noise in AVX2 intrinsics (gumbel_noise_cpu.h); GEMMs through BLAS
#define GVF_ISA_NAME "avx512"
#include "assign_kernels_impl.h"

namespace groupvit_fast {
namespace cpu {
const KernelTable& kernels_avx512() { return avx512::table(); }
}  // namespace cpu
}  // namespace groupvit_fast

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
