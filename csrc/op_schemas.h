// The schemas of the native assignment-attention ops, written once: csrc/ops.cpp declares them
// in the groupvit_fast namespace, and the CUDA emulation (cuda/emulation/emulated_ops.cpp)
// declares the same ones in its own test namespace, so both always test one contract.
#pragma once

namespace groupvit_fast {

// Forward: out [B,G,C] (input dtype), r [B,h,G] float32 (r = sum_n A), and with return_attn
// hard = A [B,h,G,N] and soft = softmax_g(z) [B,h,G,N] (else two distinct empty tensors).
// The noise is taken from `noise` ([B,h,G,N] float32) when given, else drawn in-kernel with
// Philox from (seed, offset) following groupvit_fast/reference/philox.py.
constexpr const char* kForwardSchema =
    "assign_attention_forward_native(Tensor q, Tensor k, Tensor v, Tensor? noise, int seed, int offset, "
    "int num_heads, float scale, bool hard, bool gumbel, float tau, bool sum_assign, float eps, "
    "bool return_attn) -> (Tensor out, Tensor r, Tensor hard, Tensor soft)";

// Backward: recomputes z, noise, S and the argmax; saved state is only q, k, v, out, r.
constexpr const char* kBackwardSchema =
    "assign_attention_backward_native(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor r, "
    "Tensor? noise, int seed, int offset, int num_heads, float scale, bool hard, bool gumbel, float tau, "
    "bool sum_assign, float eps) -> (Tensor dq, Tensor dk, Tensor dv)";

// The float32 noise of the given shape that the kernels draw for (seed, offset), on like's device.
constexpr const char* kGumbelNoiseSchema =
    "gumbel_noise_native(Tensor like, int[] shape, int seed, int offset) -> Tensor";

}  // namespace groupvit_fast
