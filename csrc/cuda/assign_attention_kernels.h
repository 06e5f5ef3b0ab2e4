// Torch-free interface of the CUDA assignment-attention kernels (assign_attention_kernels.cu).
//
// Only raw pointers, element strides and a cudaStream_t cross this boundary, so the .cu file
// includes no torch header and nvcc compiles it in seconds; the torch glue (checks, dtype,
// allocation, stream, TORCH_LIBRARY_IMPL) is assign_attention_cuda.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../assign_params.h"

#if defined(GVF_CUDA_EMULATION)
#include "emulation/cuda_emulation.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace groupvit_fast {
namespace cuda {

using groupvit_fast::DType;
using groupvit_fast::Strided;
using Params = groupvit_fast::AssignParams;

// Largest G the kernels take (shared memory holds [G, 32] fp32 tiles: one in the forward, two in
// the backward); the glue also checks the device's per-block shared memory limit.
constexpr int64_t kMaxGroups = 512;

// Dynamic shared memory bytes per block of the forward / backward kernel for G groups.
size_t forward_smem_bytes(int64_t G);
size_t backward_smem_bytes(int64_t G);

struct ForwardWorkspace {
  float* acc = nullptr;       // [B, H, G, D] zero-initialised: per-group sums of A v
  float* cnt = nullptr;       // [B, H, G] zero-initialised: r = sum_n A
  int32_t* state = nullptr;   // [B, H, D] filled with -1: non-finite v bookkeeping (see the .cu)
  int32_t* poison = nullptr;  // [B, H] zero-initialised: a token with a NaN softmax column
};

// out [B, G, C] and r [B, H, G] (contiguous); hard_attn / soft_attn [B, H, G, N] contiguous
// (return_attn only). Returns the first launch error.
cudaError_t assign_forward(const Params& p, Strided q, Strided k, Strided v, const ForwardWorkspace& ws, void* out,
                           float* r, void* hard_attn, void* soft_attn, cudaStream_t stream);

// dq [B, G, C] (fp32 accumulator dq_acc, zero-initialised, then converted into dq unless dq ==
// dq_acc), dk and dv [B, N, C] contiguous; delta: a [B, H, G] fp32 scratch buffer.
cudaError_t assign_backward(const Params& p, Strided q, Strided k, Strided v, Strided dout, Strided out,
                            const float* r, float* delta, float* dq_acc, void* dq, void* dk, void* dv,
                            cudaStream_t stream);

// out[i] = Gumbel noise of counter offset + i (groupvit_fast/reference/philox.py), i < count.
cudaError_t gumbel_noise(float* out, int64_t count, uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace cuda
}  // namespace groupvit_fast
