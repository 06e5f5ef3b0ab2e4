// Torch-free description of one assignment-attention call, shared by the CPU kernels
// (csrc/cpu) and the CUDA kernels (csrc/cuda): the kernels see only these plain structs, raw
// pointers and element strides, so they compile without torch headers.
#pragma once

#include <cstdint>

namespace groupvit_fast {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// A [B, L, C] tensor of the kernel's dtype, with element strides (any, including 0).
struct Strided {
  const void* ptr = nullptr;
  int64_t sb = 0, sl = 0, sc = 0;
};

// The scalar arguments of a call (docs/assign_op.md), filled by fill_params (assign_checks.h).
struct AssignParams {
  int64_t B = 0, H = 0, G = 0, N = 0, D = 0;  // C = H * D
  float scale = 1.f, tau = 1.f, eps = 1.f;
  bool hard = true, gumbel = false, sum_assign = false, return_attn = false;
  uint64_t seed = 0, offset = 0;
  const float* noise = nullptr;  // [B, H, G, N] float32 contiguous, or null (Philox in-kernel)
  DType dtype = DType::kFloat32;
};

}  // namespace groupvit_fast
