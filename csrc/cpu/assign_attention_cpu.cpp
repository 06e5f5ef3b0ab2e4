// CPU kernels of the native assignment-attention ops: checks, allocation, parallel loop.
//
// The math is in assign_kernels_impl.h (torch-free, compiled per ISA). Here:
// * the work is split into items (b, h, token chunk) whose chunking depends on the shapes only;
//   at::parallel_for runs items, then a finalize pass per (b, h) sums the chunk partials in a
//   fixed order, so the result does not depend on the number of threads;
// * GEMM tiles go to ATen's BLAS (at::cpu::addmm_out on borrowed pointers); inside the parallel
//   region BLAS runs single-threaded, one tile per thread.

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

// Narrow ATen includes (not ATen/ATen.h): this file compiles in a fraction of the time.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include "assign_checks.h"
#include "cpu/assign_kernels.h"

namespace groupvit_fast {
namespace {


cpu::Strided strided(const at::Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

// C[m, n] = alpha * op(A) op(B) + beta * C on borrowed fp32 buffers (see cpu::GemmFn).
void gemm_aten(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, bool trans_a,
               const float* b, int64_t ldb, bool trans_b, float beta, float* c, int64_t ldc) {
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(at::kCPU);
  auto* pa = const_cast<float*>(a);
  auto* pb = const_cast<float*>(b);
  const at::Tensor A =
      trans_a ? at::from_blob(pa, {k, m}, {lda, 1}, opts).t() : at::from_blob(pa, {m, k}, {lda, 1}, opts);
  const at::Tensor B =
      trans_b ? at::from_blob(pb, {n, k}, {ldb, 1}, opts).t() : at::from_blob(pb, {k, n}, {ldb, 1}, opts);
  at::Tensor Cm = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  at::cpu::addmm_out(Cm, Cm, A, B, beta, alpha);
}

// Token chunk per (b, h): at most 512 tokens (bounds the per-thread tiles), and small batches are
// split further (chunks of >= 64 tokens) so that up to 16 threads have work. A function of the
// shapes only: never of the thread count.
void choose_chunks(cpu::Params& p) {
  const int64_t bh = std::max<int64_t>(p.B * p.H, 1);
  int64_t nchunks = (p.N + 511) / 512;
  const int64_t wanted = std::min<int64_t>((16 + bh - 1) / bh, (p.N + 63) / 64);
  nchunks = std::max<int64_t>({nchunks, wanted, 1});
  p.chunk = (p.N + nchunks - 1) / nchunks;
  p.nchunks = (p.N + p.chunk - 1) / p.chunk;
}

cpu::Params make_params(const AssignDims& dims, const at::Tensor& q, const std::optional<at::Tensor>& noise,
                        int64_t seed, int64_t offset, double scale, bool hard, bool gumbel, double tau,
                        bool sum_assign, double eps, bool return_attn) {
  auto p = fill_params<cpu::Params>(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps,
                                    return_attn);
  choose_chunks(p);
  return p;
}

template <typename Fn>
void run_items(int64_t items, size_t scratch_floats, const Fn& fn) {
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    // One scratch buffer per thread and call (64-byte aligned by the CPU allocator).
    at::Tensor scratch = at::empty({static_cast<int64_t>(scratch_floats)}, at::TensorOptions().dtype(at::kFloat));
    float* buffer = scratch.data_ptr<float>();
    for (int64_t item = begin; item < end; ++item) fn(item, buffer);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> assign_attention_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& noise_in,
    int64_t seed, int64_t offset, int64_t num_heads, double scale, bool hard, bool gumbel, double tau,
    bool sum_assign, double eps, bool return_attn) {
  const AssignDims dims = check_assign_inputs(q, k, v, noise_in, num_heads, scale, gumbel, tau, sum_assign, eps);
  const auto attn_shape = return_attn ? std::vector<int64_t>{dims.B, dims.H, dims.G, dims.N} : std::vector<int64_t>{0};
  at::Tensor out = at::empty({dims.B, dims.G, dims.C}, q.options());
  at::Tensor r = at::empty({dims.B, dims.H, dims.G}, q.options().dtype(at::kFloat));
  at::Tensor hard_attn = at::empty(attn_shape, q.options());
  at::Tensor soft_attn = at::empty(attn_shape, q.options());
  if (dims.B == 0) return {out, r, hard_attn, soft_attn};

  std::optional<at::Tensor> noise;
  if (noise_in.has_value()) noise = noise_in->contiguous();
  const cpu::KernelTable& kt = cpu::select_kernels();
  cpu::ForwardArgs args;
  args.p = make_params(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps, return_attn);
  args.q = strided(q);
  args.k = strided(k);
  args.v = strided(v);
  const int64_t items = dims.B * dims.H * args.p.nchunks;
  const bool chunked = args.p.nchunks > 1;  // else each item finalizes its (b, h) itself
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor part_acc, part_cnt, part_state;
  if (chunked) {
    part_acc = at::empty({items, dims.G, dims.D}, f32);
    part_cnt = at::empty({items, dims.G}, f32);
    part_state = at::empty({items, dims.D + 1}, q.options().dtype(at::kInt));
    args.part_acc = part_acc.data_ptr<float>();
    args.part_cnt = part_cnt.data_ptr<float>();
    args.part_state = part_state.data_ptr<int32_t>();
  }
  args.out = out.data_ptr();
  args.r = r.data_ptr<float>();
  args.hard_attn = return_attn ? hard_attn.data_ptr() : nullptr;
  args.soft_attn = return_attn ? soft_attn.data_ptr() : nullptr;

  run_items(items, kt.forward_scratch_floats(args.p),
            [&](int64_t item, float* buffer) { kt.forward_item(args, item, buffer, gemm_aten); });
  if (chunked) {
    at::parallel_for(0, dims.B * dims.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) kt.forward_finalize(args, bh);
    });
  }
  return {out, r, hard_attn, soft_attn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> assign_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& r, const std::optional<at::Tensor>& noise_in, int64_t seed, int64_t offset, int64_t num_heads,
    double scale, bool hard, bool gumbel, double tau, bool sum_assign, double eps) {
  const AssignDims dims = check_assign_inputs(q, k, v, noise_in, num_heads, scale, gumbel, tau, sum_assign, eps);
  check_backward_inputs(dims, q, grad_out, out, r);
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  if (dims.B == 0) return {dq, dk, dv};

  std::optional<at::Tensor> noise;
  if (noise_in.has_value()) noise = noise_in->contiguous();
  const at::Tensor r_c = r.contiguous();
  const cpu::KernelTable& kt = cpu::select_kernels();
  cpu::BackwardArgs args;
  args.p = make_params(dims, q, noise, seed, offset, scale, hard, gumbel, tau, sum_assign, eps, false);
  args.q = strided(q);
  args.k = strided(k);
  args.v = strided(v);
  args.dout = strided(grad_out);
  args.out = strided(out);
  args.r = r_c.data_ptr<float>();
  const int64_t items = dims.B * dims.H * args.p.nchunks;
  const bool chunked = args.p.nchunks > 1;  // else each item writes its (b, h) rows of dq itself
  at::Tensor part_dq;
  if (chunked) {
    part_dq = at::empty({items, dims.G, dims.D}, q.options().dtype(at::kFloat));
    args.part_dq = part_dq.data_ptr<float>();
  }
  args.dq = dq.data_ptr();
  args.dk = dk.data_ptr();
  args.dv = dv.data_ptr();

  run_items(items, kt.backward_scratch_floats(args.p),
            [&](int64_t item, float* buffer) { kt.backward_item(args, item, buffer, gemm_aten); });
  if (chunked) {
    at::parallel_for(0, dims.B * dims.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) kt.backward_finalize(args, bh);
    });
  }
  return {dq, dk, dv};
}

at::Tensor gumbel_noise_cpu(const at::Tensor& like, at::IntArrayRef shape, int64_t seed, int64_t offset) {
  check_noise_shape(shape);
  at::Tensor noise = at::empty(shape, like.options().dtype(at::kFloat));
  const int64_t count = noise.numel();
  if (count == 0) return noise;
  const cpu::KernelTable& kt = cpu::select_kernels();
  float* data = noise.data_ptr<float>();
  constexpr int64_t kBlock = 4096;
  at::parallel_for(0, (count + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t first = blk * kBlock;
      kt.gumbel_noise(data + first, std::min(kBlock, count - first), static_cast<uint64_t>(seed),
                      static_cast<uint64_t>(offset) + static_cast<uint64_t>(first));
    }
  });
  return noise;
}

}  // namespace

// at::parallel_for is inline: with torch's OpenMP builds its threads are this file's
// `#pragma omp parallel`, which exists only when we are compiled with OpenMP too (setup.py).
const char* cpu::parallel_backend() {
#if AT_PARALLEL_NATIVE
  return "native";
#elif defined(_OPENMP)
  return "openmp";
#else
  return "serial";
#endif
}

TORCH_LIBRARY_IMPL(groupvit_fast, CPU, m) {
  m.impl("assign_attention_forward_native", &assign_attention_forward_cpu);
  m.impl("assign_attention_backward_native", &assign_attention_backward_cpu);
  m.impl("gumbel_noise_native", &gumbel_noise_cpu);
}

}  // namespace groupvit_fast
