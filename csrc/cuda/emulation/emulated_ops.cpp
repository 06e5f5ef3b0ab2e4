// The CUDA kernels of ../assign_attention_kernels.cu compiled for the host with emulated threads
// (cuda_emulation.h) and exposed on CPU tensors as torch.ops.groupvit_fast_cuda_emulation.*, with
// the schemas of the real native ops. Built on demand by tests/kernels/test_cuda_emulation.py
// (torch.utils.cpp_extension.load), never by setup.py: it lets the CUDA kernels' logic be tested
// on machines without a GPU. The workspace handling mirrors ../assign_attention_cuda.cpp.

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "assign_checks.h"
#include "op_schemas.h"

#define GVF_CUDA_EMULATION 1
#include "../assign_attention_kernels.cu"

namespace {

using groupvit_fast::AssignDims;
namespace gc = groupvit_fast::cuda;

gc::Strided strided(const at::Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

gc::Params make_params(const AssignDims& dims, const at::Tensor& q, const std::optional<at::Tensor>& noise,
                       int64_t seed, int64_t offset, double scale, bool hard, bool gumbel, double tau, bool sum_assign,
                       double eps, bool return_attn) {
  return groupvit_fast::fill_params<gc::Params>(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign,
                                                eps, return_attn);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& noise_in,
    int64_t seed, int64_t offset, int64_t num_heads, double scale, bool hard, bool gumbel, double tau,
    bool sum_assign, double eps, bool return_attn) {
  const AssignDims dims =
      groupvit_fast::check_assign_inputs(q, k, v, noise_in, num_heads, scale, gumbel, tau, sum_assign, eps);
  TORCH_CHECK_VALUE(dims.G <= gc::kMaxGroups, "G too large for the cuda kernels");
  const auto attn_shape = return_attn ? std::vector<int64_t>{dims.B, dims.H, dims.G, dims.N} : std::vector<int64_t>{0};
  at::Tensor out = at::empty({dims.B, dims.G, dims.C}, q.options());
  at::Tensor r = at::empty({dims.B, dims.H, dims.G}, q.options().dtype(at::kFloat));
  at::Tensor hard_attn = at::empty(attn_shape, q.options());
  at::Tensor soft_attn = at::empty(attn_shape, q.options());
  std::optional<at::Tensor> noise;
  if (noise_in.has_value()) noise = noise_in->contiguous();
  const gc::Params p = make_params(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps, return_attn);
  at::Tensor acc = at::zeros({dims.B, dims.H, dims.G, dims.D}, q.options().dtype(at::kFloat));
  at::Tensor cnt = at::zeros({dims.B, dims.H, dims.G}, q.options().dtype(at::kFloat));
  at::Tensor state = at::full({dims.B, dims.H, dims.D}, -1, q.options().dtype(at::kInt));
  at::Tensor poison = at::zeros({dims.B, dims.H}, q.options().dtype(at::kInt));
  gc::ForwardWorkspace ws;
  ws.acc = acc.data_ptr<float>();
  ws.cnt = cnt.data_ptr<float>();
  ws.state = state.data_ptr<int32_t>();
  ws.poison = poison.data_ptr<int32_t>();
  gc::assign_forward(p, strided(q), strided(k), strided(v), ws, out.data_ptr(), r.data_ptr<float>(),
                     return_attn ? hard_attn.data_ptr() : nullptr, return_attn ? soft_attn.data_ptr() : nullptr,
                     nullptr);
  return {out, r, hard_attn, soft_attn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& r, const std::optional<at::Tensor>& noise_in, int64_t seed, int64_t offset, int64_t num_heads,
    double scale, bool hard, bool gumbel, double tau, bool sum_assign, double eps) {
  const AssignDims dims =
      groupvit_fast::check_assign_inputs(q, k, v, noise_in, num_heads, scale, gumbel, tau, sum_assign, eps);
  groupvit_fast::check_backward_inputs(dims, q, grad_out, out, r);
  std::optional<at::Tensor> noise;
  if (noise_in.has_value()) noise = noise_in->contiguous();
  const at::Tensor r_c = r.contiguous();
  const gc::Params p = make_params(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps, false);
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor dq_acc = at::zeros({dims.B, dims.G, dims.C}, f32);
  at::Tensor dq = q.scalar_type() == at::kFloat ? dq_acc : at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor delta = at::empty({dims.B, dims.H, dims.G}, f32);
  gc::assign_backward(p, strided(q), strided(k), strided(v), strided(grad_out), strided(out), r_c.data_ptr<float>(),
                      delta.data_ptr<float>(), dq_acc.data_ptr<float>(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                      nullptr);
  return {dq, dk, dv};
}

at::Tensor gumbel_noise(const at::Tensor& like, at::IntArrayRef shape, int64_t seed, int64_t offset) {
  at::Tensor noise = at::empty(shape, like.options().dtype(at::kFloat));
  gc::gumbel_noise(noise.data_ptr<float>(), noise.numel(), static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                   nullptr);
  return noise;
}

void set_schedule(const std::string& order) {
  TORCH_CHECK_VALUE(order == "forward" || order == "reverse", "order must be 'forward' or 'reverse', got ", order);
  gvf_emulation::reverse_schedule = order == "reverse";
}

// A deliberately checkable kernel for the schedule test: y[t] = x[(t + 1) % n] through shared
// memory, with or without the __syncthreads between the write and the neighbour's read.
__global__ void neighbour_shift_kernel(const float* x, float* y, int n, bool sync) {
  GVF_DYNAMIC_SHARED(float, tile);
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = x[t];
  if (sync) __syncthreads();
  y[t] = tile[(t + 1) % n];
}

at::Tensor neighbour_shift(const at::Tensor& x, bool sync) {
  TORCH_CHECK_VALUE(x.dim() == 1 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.numel() > 0,
                    "x must be a non-empty contiguous 1-d float32 tensor");
  at::Tensor y = at::empty({x.numel()}, x.options());
  const int n = static_cast<int>(x.numel());
  GVF_LAUNCH(neighbour_shift_kernel, 1, n, n * sizeof(float), nullptr)(x.data_ptr<float>(), y.data_ptr<float>(), n,
                                                                         sync);
  return y;
}

}  // namespace

TORCH_LIBRARY(groupvit_fast_cuda_emulation, m) {
  m.def("set_schedule(str order) -> ()");
  m.def("neighbour_shift(Tensor x, bool sync) -> Tensor");
  m.def(groupvit_fast::kForwardSchema);
  m.def(groupvit_fast::kBackwardSchema);
  m.def(groupvit_fast::kGumbelNoiseSchema);
}

TORCH_LIBRARY_IMPL(groupvit_fast_cuda_emulation, CPU, m) {
  m.impl("assign_attention_forward_native", &forward);
  m.impl("assign_attention_backward_native", &backward);
  m.impl("gumbel_noise_native", &gumbel_noise);
  m.impl("neighbour_shift", &neighbour_shift);
}

TORCH_LIBRARY_IMPL(groupvit_fast_cuda_emulation, CompositeExplicitAutograd, m) {
  m.impl("set_schedule", &set_schedule);
}
