// CUDA kernels of the native assignment-attention ops: the torch glue (checks, dtype, workspace,
// stream, registration). The kernels themselves are torch-free (assign_attention_kernels.cu).

#include <optional>
#include <tuple>
#include <vector>

// Narrow includes (not ATen/ATen.h, not ATen/cuda/CUDAContext.h): compiles in a fraction of the time.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "assign_checks.h"
#include "cuda/assign_attention_kernels.h"

namespace groupvit_fast {
namespace {

cuda::Strided strided(const at::Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

void check_cuda_inputs(const AssignDims& dims, const at::Tensor& q, size_t smem_bytes) {
  TORCH_CHECK_VALUE(q.is_cuda(), "q must be a CUDA tensor for the cuda backend, got ", q.device());
  TORCH_CHECK_VALUE(dims.G <= cuda::kMaxGroups, "q has G = ", dims.G, " groups; the cuda kernels take at most ",
                    cuda::kMaxGroups);
  int device = q.get_device(), limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK_VALUE(smem_bytes <= static_cast<size_t>(limit), "q has G = ", dims.G, " groups, which needs ",
                    smem_bytes, " bytes of shared memory per block; this device allows ", limit);
}

cuda::Params make_params(const AssignDims& dims, const at::Tensor& q, const std::optional<at::Tensor>& noise,
                         int64_t seed, int64_t offset, double scale, bool hard, bool gumbel, double tau,
                         bool sum_assign, double eps, bool return_attn) {
  return fill_params<cuda::Params>(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps,
                                   return_attn);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> assign_attention_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& noise_in,
    int64_t seed, int64_t offset, int64_t num_heads, double scale, bool hard, bool gumbel, double tau,
    bool sum_assign, double eps, bool return_attn) {
  const AssignDims dims = check_assign_inputs(q, k, v, noise_in, num_heads, scale, gumbel, tau, sum_assign, eps);
  check_cuda_inputs(dims, q, cuda::forward_smem_bytes(dims.G));
  const c10::cuda::CUDAGuard guard(q.device());
  const auto attn_shape = return_attn ? std::vector<int64_t>{dims.B, dims.H, dims.G, dims.N} : std::vector<int64_t>{0};
  at::Tensor out = at::empty({dims.B, dims.G, dims.C}, q.options());
  at::Tensor r = at::empty({dims.B, dims.H, dims.G}, q.options().dtype(at::kFloat));
  at::Tensor hard_attn = at::empty(attn_shape, q.options());
  at::Tensor soft_attn = at::empty(attn_shape, q.options());
  if (dims.B == 0) return {out, r, hard_attn, soft_attn};

  std::optional<at::Tensor> noise;
  if (noise_in.has_value()) noise = noise_in->contiguous();
  const cuda::Params p = make_params(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps,
                                     return_attn);
  at::Tensor acc = at::zeros({dims.B, dims.H, dims.G, dims.D}, q.options().dtype(at::kFloat));
  at::Tensor cnt = at::zeros({dims.B, dims.H, dims.G}, q.options().dtype(at::kFloat));
  at::Tensor state = at::full({dims.B, dims.H, dims.D}, -1, q.options().dtype(at::kInt));
  at::Tensor poison = at::zeros({dims.B, dims.H}, q.options().dtype(at::kInt));
  cuda::ForwardWorkspace ws;
  ws.acc = acc.data_ptr<float>();
  ws.cnt = cnt.data_ptr<float>();
  ws.state = state.data_ptr<int32_t>();
  ws.poison = poison.data_ptr<int32_t>();
  C10_CUDA_CHECK(cuda::assign_forward(p, strided(q), strided(k), strided(v), ws, out.data_ptr(), r.data_ptr<float>(),
                                      return_attn ? hard_attn.data_ptr() : nullptr,
                                      return_attn ? soft_attn.data_ptr() : nullptr,
                                      c10::cuda::getCurrentCUDAStream()));
  return {out, r, hard_attn, soft_attn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> assign_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& r, const std::optional<at::Tensor>& noise_in, int64_t seed, int64_t offset, int64_t num_heads,
    double scale, bool hard, bool gumbel, double tau, bool sum_assign, double eps) {
  const AssignDims dims = check_assign_inputs(q, k, v, noise_in, num_heads, scale, gumbel, tau, sum_assign, eps);
  check_backward_inputs(dims, q, grad_out, out, r);
  check_cuda_inputs(dims, q, cuda::backward_smem_bytes(dims.G));
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  const auto f32 = q.options().dtype(at::kFloat);
  if (dims.B == 0) return {at::empty(q.sizes(), q.options()), dk, dv};

  std::optional<at::Tensor> noise;
  if (noise_in.has_value()) noise = noise_in->contiguous();
  const at::Tensor r_c = r.contiguous();
  const cuda::Params p = make_params(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps, false);
  at::Tensor dq_acc = at::zeros({dims.B, dims.G, dims.C}, f32);  // fp32 atomics target
  at::Tensor dq = q.scalar_type() == at::kFloat ? dq_acc : at::empty(q.sizes(), q.options());
  at::Tensor delta = at::empty({dims.B, dims.H, dims.G}, f32);
  C10_CUDA_CHECK(cuda::assign_backward(p, strided(q), strided(k), strided(v), strided(grad_out), strided(out),
                                       r_c.data_ptr<float>(), delta.data_ptr<float>(), dq_acc.data_ptr<float>(),
                                       dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return {dq, dk, dv};
}

at::Tensor gumbel_noise_cuda(const at::Tensor& like, at::IntArrayRef shape, int64_t seed, int64_t offset) {
  check_noise_shape(shape);
  const c10::cuda::CUDAGuard guard(like.device());
  at::Tensor noise = at::empty(shape, like.options().dtype(at::kFloat));
  C10_CUDA_CHECK(cuda::gumbel_noise(noise.data_ptr<float>(), noise.numel(), static_cast<uint64_t>(seed),
                                    static_cast<uint64_t>(offset), c10::cuda::getCurrentCUDAStream()));
  return noise;
}

}  // namespace

TORCH_LIBRARY_IMPL(groupvit_fast, CUDA, m) {
  m.impl("assign_attention_forward_native", &assign_attention_forward_cuda);
  m.impl("assign_attention_backward_native", &assign_attention_backward_cuda);
  m.impl("gumbel_noise_native", &gumbel_noise_cuda);
}

}  // namespace groupvit_fast
