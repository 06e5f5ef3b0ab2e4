// Torch-free interface of the CPU assignment-attention kernels (csrc/cpu/assign_kernels_impl.h).
//
// The kernels are compiled once per instruction set, each copy in its own namespace
// (assign_kernels_{baseline,avx2,avx512}.cpp; only the baseline on non-x86 targets);
// `select_kernels()` picks one at run time, as ATen's DispatchStub does. They see only raw pointers, element strides and plain
// structs (no torch headers), so the copies share no inline code that could be compiled for
// the wrong instruction set. The torch glue (checks, allocation, at::parallel_for, the GEMM
// callback) is csrc/cpu/assign_attention_cpu.cpp.
//
// Work decomposition: one *item* per (batch b, head h, token chunk). Chunks depend only on the
// shapes, never on the thread count, and partial sums over chunks are reduced in a fixed order
// by the *finalize* step, so results are bitwise independent of torch.get_num_threads().
#pragma once

#include <cstddef>
#include <cstdint>

#include "../assign_params.h"

namespace groupvit_fast {
namespace cpu {

using groupvit_fast::DType;
using groupvit_fast::Strided;

// Row-major GEMM: C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C. op(A) = A stored as
// [m][k] with row stride lda, or (trans_a) A stored as [k][m]; likewise op(B) [k][n] or (trans_b)
// [n][k]. beta == 0 means C is write-only. Provided by the glue (ATen's BLAS), called from inside
// a parallel region, so it must run single-threaded there.
using GemmFn = void (*)(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, bool trans_a,
                        const float* b, int64_t ldb, bool trans_b, float beta, float* c, int64_t ldc);

// The call's parameters plus the CPU work split.
struct Params : AssignParams {
  int64_t chunk = 1, nchunks = 1;  // token chunk length and count per (b, h)
  int64_t items() const { return B * H * nchunks; }
};

struct ForwardArgs {
  Params p;
  Strided q, k, v;
  // Per item partial results, reduced by forward_finalize: sums of v per group [G, D], the
  // group mass [G], and for each channel d the non-finite-v state (see the implementation) plus
  // one "poisoned token" flag: [D + 1] int32.
  float* part_acc = nullptr;
  float* part_cnt = nullptr;
  int32_t* part_state = nullptr;
  void* out = nullptr;        // [B, G, C] contiguous, dtype
  float* r = nullptr;         // [B, H, G] float32
  void* hard_attn = nullptr;  // [B, H, G, N] contiguous, dtype (return_attn only)
  void* soft_attn = nullptr;
};

struct BackwardArgs {
  Params p;
  Strided q, k, v, dout, out;
  const float* r = nullptr;  // [B, H, G] float32 contiguous
  float* part_dq = nullptr;  // per item [G, D], reduced by backward_finalize
  void* dq = nullptr;        // [B, G, C] contiguous, dtype
  void* dk = nullptr;        // [B, N, C] contiguous, dtype
  void* dv = nullptr;
};

struct KernelTable {
  const char* isa;
  size_t (*forward_scratch_floats)(const Params&);
  void (*forward_item)(const ForwardArgs&, int64_t item, float* scratch, GemmFn gemm);
  void (*forward_finalize)(const ForwardArgs&, int64_t bh);
  size_t (*backward_scratch_floats)(const Params&);
  void (*backward_item)(const BackwardArgs&, int64_t item, float* scratch, GemmFn gemm);
  void (*backward_finalize)(const BackwardArgs&, int64_t bh);
  // out[i] = Gumbel noise of counter first_counter + i, i < count (philox.py convention).
  void (*gumbel_noise)(float* out, int64_t count, uint64_t seed, uint64_t first_counter);
};

const KernelTable& kernels_baseline();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
#endif

// The run-time choice (kernel_select.cpp), as ATen's DispatchStub makes it: the best copy this
// CPU runs (avx512, then avx2, then baseline), unless GROUPVIT_FAST_CPU_ISA or set_kernels()
// names another. Raises (ValueError) for a name that is unknown or that this CPU cannot run.
const KernelTable& select_kernels();
// Makes the copy named `isa` ("auto", "baseline", "avx2", "avx512") the choice of every later
// call, for tests and benchmarks; returns the name of the copy chosen before.
const char* set_kernels(const char* isa);
// How the glue's at::parallel_for threads (assign_attention_cpu.cpp): "openmp", "native" (torch's
// own pool), or "serial" when torch threads with OpenMP but the glue was compiled without it.
const char* parallel_backend();
// The copies this build and CPU can run, best first, joined by '|' (e.g. "avx2|baseline").
const char* available_kernels();

}  // namespace cpu
}  // namespace groupvit_fast
