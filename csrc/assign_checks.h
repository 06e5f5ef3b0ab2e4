// Argument checks of the native assignment-attention ops, shared by the CPU and CUDA glue.
//
// They raise c10::ValueError / c10::TypeError (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), which
// Python sees as ValueError / TypeError, and every message names the offending argument
// (docs/assign_op.md, "Bad input").
#pragma once

#include <cmath>
#include <optional>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "assign_params.h"

namespace groupvit_fast {

struct AssignDims {
  int64_t B, G, N, C, H, D;
};

inline bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float_tensor(const at::Tensor& t, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == 3, name, " must have rank 3 (", layout, "), got shape ", t.sizes());
  TORCH_CHECK_TYPE(is_supported_dtype(t.scalar_type()), name, " must be float32, float16 or bfloat16, got ",
                   t.scalar_type());
}

inline AssignDims check_assign_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& noise, int64_t num_heads, double scale,
                                      bool gumbel, double tau, bool sum_assign, double eps) {
  check_float_tensor(q, "q", "[B, G, C]");
  check_float_tensor(k, "k", "[B, N, C]");
  check_float_tensor(v, "v", "[B, N, C]");
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type(), "k must have q's dtype ", q.scalar_type(), ", got ",
                   k.scalar_type());
  TORCH_CHECK_TYPE(v.scalar_type() == q.scalar_type(), "v must have q's dtype ", q.scalar_type(), ", got ",
                   v.scalar_type());
  TORCH_CHECK_VALUE(k.device() == q.device(), "k must be on q's device ", q.device(), ", got ", k.device());
  TORCH_CHECK_VALUE(v.device() == q.device(), "v must be on q's device ", q.device(), ", got ", v.device());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), "v must have k's shape ", k.sizes(), ", got ", v.sizes());
  TORCH_CHECK_VALUE(k.size(0) == q.size(0), "k must have q's batch size ", q.size(0), ", got ", k.size(0));
  TORCH_CHECK_VALUE(k.size(2) == q.size(2), "k must have q's channel count C = ", q.size(2), ", got ", k.size(2));
  TORCH_CHECK_VALUE(q.size(1) >= 1, "q must hold at least one group (G >= 1), got G = 0");
  TORCH_CHECK_VALUE(k.size(1) >= 1, "k must hold at least one token (N >= 1), got N = 0");
  TORCH_CHECK_VALUE(q.size(2) >= 1, "q must have at least one channel (C >= 1), got C = 0");
  TORCH_CHECK_VALUE(num_heads >= 1, "num_heads must be >= 1, got ", num_heads);
  TORCH_CHECK_VALUE(q.size(2) % num_heads == 0, "num_heads = ", num_heads, " must divide the channel count C = ",
                    q.size(2));
  TORCH_CHECK_VALUE(std::isfinite(scale), "scale must be finite, got ", scale);
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0, "tau must be a finite number > 0, got ", tau);
  TORCH_CHECK_VALUE(std::isfinite(eps), "eps must be finite, got ", eps);
  TORCH_CHECK_VALUE(sum_assign || eps >= 0, "eps must be >= 0 when sum_assign is false, got ", eps);
  const AssignDims dims{q.size(0), q.size(1), k.size(1), q.size(2), num_heads, q.size(2) / num_heads};
  if (noise.has_value()) {
    const at::Tensor& e = *noise;
    TORCH_CHECK_VALUE(gumbel, "noise is only used with gumbel=True");
    TORCH_CHECK_TYPE(e.scalar_type() == at::kFloat, "noise must be float32, got ", e.scalar_type());
    TORCH_CHECK_VALUE(e.device() == q.device(), "noise must be on q's device ", q.device(), ", got ", e.device());
    TORCH_CHECK_VALUE(e.dim() == 4 && e.size(0) == dims.B && e.size(1) == dims.H && e.size(2) == dims.G &&
                          e.size(3) == dims.N,
                      "noise must have shape [B, h, G, N] = [", dims.B, ", ", dims.H, ", ", dims.G, ", ", dims.N,
                      "], got ", e.sizes());
  }
  return dims;
}

inline void check_backward_inputs(const AssignDims& dims, const at::Tensor& q, const at::Tensor& grad_out,
                                  const at::Tensor& out, const at::Tensor& r) {
  check_float_tensor(grad_out, "grad_out", "[B, G, C]");
  check_float_tensor(out, "out", "[B, G, C]");
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{grad_out, "grad_out"},
                                std::pair<const at::Tensor&, const char*>{out, "out"}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == q.scalar_type(), name, " must have q's dtype ", q.scalar_type(), ", got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == q.device(), name, " must be on q's device ", q.device(), ", got ", t.device());
    TORCH_CHECK_VALUE(t.sizes() == q.sizes(), name, " must have q's shape ", q.sizes(), ", got ", t.sizes());
  }
  TORCH_CHECK_TYPE(r.scalar_type() == at::kFloat, "r must be float32, got ", r.scalar_type());
  TORCH_CHECK_VALUE(r.device() == q.device(), "r must be on q's device ", q.device(), ", got ", r.device());
  TORCH_CHECK_VALUE(r.dim() == 3 && r.size(0) == dims.B && r.size(1) == dims.H && r.size(2) == dims.G,
                    "r must have shape [B, h, G] = [", dims.B, ", ", dims.H, ", ", dims.G, "], got ", r.sizes());
}

inline void check_noise_shape(at::IntArrayRef shape) {
  for (int64_t s : shape) TORCH_CHECK_VALUE(s >= 0, "shape must hold sizes >= 0, got ", shape);
}


inline DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "q must be float32, float16 or bfloat16, got ", t);
      return DType::kFloat32;
  }
}

// The scalar arguments of a call, filled in one place for every backend's Params (an
// AssignParams, or a struct derived from it).
template <class Params>
Params fill_params(const AssignDims& dims, const at::Tensor& q, const std::optional<at::Tensor>& noise, int64_t seed,
                   int64_t offset, double scale, bool hard, bool gumbel, double tau, bool sum_assign, double eps,
                   bool return_attn) {
  Params p;
  p.B = dims.B;
  p.H = dims.H;
  p.G = dims.G;
  p.N = dims.N;
  p.D = dims.D;
  p.scale = static_cast<float>(scale);
  p.tau = static_cast<float>(tau);
  p.eps = static_cast<float>(eps);
  p.hard = hard;
  p.gumbel = gumbel;
  p.sum_assign = sum_assign;
  p.return_attn = return_attn;
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint64_t>(offset);
  p.noise = (gumbel && noise.has_value()) ? noise->data_ptr<float>() : nullptr;
  p.dtype = to_dtype(q.scalar_type());
  return p;
}

}  // namespace groupvit_fast
