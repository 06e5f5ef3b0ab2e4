// Host emulation of the CUDA subset used by ../assign_attention_kernels.cu, so that the kernels'
// logic runs (and is tested) on machines without a GPU: tests/kernels/test_cuda_emulation.py compiles
// emulated_ops.cpp, which includes the .cu with GVF_CUDA_EMULATION defined.
//
// Each block runs as blockDim.x cooperative fibers (ucontext) on the calling thread, blocks one
// after another (blocks and fibers in index order, or both reversed: see reverse_schedule),
// sharing a dynamic shared memory buffer. __syncthreads is a block barrier and the warp shuffles / votes go through a per-warp exchange buffer and a 32-fiber barrier; a fiber
// waiting at a barrier yields to the others, and a barrier no fiber can complete (divergent
// __syncthreads) aborts with a message. It checks logic (indexing, synchronisation placement,
// reductions, tails, atomics), not speed or the memory model; __expf is expf and half / bfloat16
// round like the device conversions. Not part of the built extension (setup.py compiles
// csrc/cuda/*.cu|*.cpp, not this folder).
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "../../float_bits.h"

// ---- runtime API ------------------------------------------------------------------------------

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
using cudaStream_t = void*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(threads)

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local uint3 threadIdx, blockIdx, blockDim, gridDim;

namespace gvf_emulation {

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;  // left uninitialised: only the pages a fiber uses get touched
  bool done = false;
};

struct Scheduler {
  ucontext_t context;
  Fiber* current = nullptr;
  uint64_t progress = 0;  // arrivals, barrier releases and finished fibers
  const std::function<void()>* task = nullptr;
};

inline thread_local Scheduler* scheduler = nullptr;

// The order in which the fibers of a block take turns between barriers, and the blocks run: thread
// (block) 0 first (forward) or the last first (reverse). A kernel free of shared-memory races gives the same result in
// both; a read of another thread's write without a __syncthreads in between sees the new value in
// one order and the stale one in the other (a poor man's racecheck; tests run both orders).
inline bool reverse_schedule = false;

inline void yield() { swapcontext(&scheduler->current->context, &scheduler->context); }

class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    const uint64_t generation = generation_;
    ++scheduler->progress;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      return;
    }
    while (generation_ == generation) yield();
  }

 private:
  int count_, arrived_ = 0;
  uint64_t generation_ = 0;
};

struct Warp {
  Barrier barrier{32};
  alignas(8) unsigned char slots[32][8];
};

struct Block {
  explicit Block(int threads, size_t smem_bytes)
      : barrier(threads), warps(static_cast<size_t>((threads + 31) / 32)), smem(smem_bytes / sizeof(double) + 2) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<double> smem;  // 8-byte aligned storage, enough for every type the kernels keep there
};

inline thread_local Block* current_block = nullptr;

inline Warp& warp() { return *current_block->warps[threadIdx.x / 32]; }

inline void fiber_main() {
  (*scheduler->task)();
  scheduler->current->done = true;
  ++scheduler->progress;
}  // returns to scheduler->context through uc_link

// Runs fn on grid x block emulated threads.
inline void run(unsigned grid, unsigned block, size_t smem_bytes, const std::function<void()>& fn) {
  constexpr size_t kStack = 256 * 1024;
  Scheduler sched;
  sched.task = &fn;
  Scheduler* const outer = scheduler;
  scheduler = &sched;
  std::vector<Fiber> fibers(block);
  for (auto& f : fibers) f.stack.reset(new char[kStack]);
  for (unsigned bi = 0; bi < grid; ++bi) {
    const unsigned b = reverse_schedule ? grid - 1 - bi : bi;  // blocks, too, in either order
    Block state(static_cast<int>(block), smem_bytes);
    current_block = &state;
    for (auto& f : fibers) {
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack.get();
      f.context.uc_stack.ss_size = kStack;
      f.context.uc_link = &sched.context;
      f.done = false;
      makecontext(&f.context, fiber_main, 0);
    }
    unsigned remaining = block;
    while (remaining > 0) {
      const uint64_t before = sched.progress;
      for (unsigned i = 0; i < block; ++i) {
        const unsigned t = reverse_schedule ? block - 1 - i : i;
        if (fibers[t].done) continue;
        threadIdx.x = t;
        blockIdx.x = b;
        blockDim.x = block;
        gridDim.x = grid;
        sched.current = &fibers[t];
        swapcontext(&sched.context, &fibers[t].context);
        if (fibers[t].done) --remaining;
      }
      if (remaining > 0 && sched.progress == before) {
        std::fprintf(stderr, "cuda emulation: block %u is stuck at a barrier not every thread reaches\n", b);
        std::abort();
      }
    }
  }
  current_block = nullptr;
  scheduler = outer;
}

template <typename Kernel>
auto launch(Kernel kernel, unsigned grid, unsigned block, size_t smem_bytes) {
  return [=](auto... args) { run(grid, block, smem_bytes, [=] { kernel(args...); }); };
}

template <typename T>
T exchange_xor(T value, int offset) {
  static_assert(sizeof(T) <= 8, "warp exchange of at most 8 bytes");
  Warp& w = warp();
  const unsigned lane = threadIdx.x & 31u;
  std::memcpy(w.slots[lane], &value, sizeof(T));
  w.barrier.wait();
  T other;
  std::memcpy(&other, w.slots[lane ^ static_cast<unsigned>(offset)], sizeof(T));
  w.barrier.wait();
  return other;
}

}  // namespace gvf_emulation

#define GVF_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::gvf_emulation::current_block->smem.data())
#define GVF_LAUNCH(kernel, grid, block, smem, stream) ::gvf_emulation::launch(kernel, grid, block, smem)

inline void __syncthreads() { gvf_emulation::current_block->barrier.wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T value, int offset) {
  return gvf_emulation::exchange_xor(value, offset);
}

inline int __any_sync(unsigned, int predicate) {
  int any = predicate != 0;
  for (int offset = 16; offset > 0; offset >>= 1) any |= gvf_emulation::exchange_xor(any, offset);
  return any;
}

// ---- atomics ------------------------------------------------------------------------------------

inline float atomicAdd(float* address, float value) {
  uint32_t* bits = reinterpret_cast<uint32_t*>(address);
  uint32_t old = __atomic_load_n(bits, __ATOMIC_SEQ_CST);
  while (true) {
    float current;
    std::memcpy(&current, &old, 4);
    const float updated = current + value;
    uint32_t desired;
    std::memcpy(&desired, &updated, 4);
    if (__atomic_compare_exchange_n(bits, &old, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return current;
  }
}
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST); }
inline int atomicCAS(int* address, int compare, int value) {
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;  // the old value
}
inline int atomicExch(int* address, int value) { return __atomic_exchange_n(address, value, __ATOMIC_SEQ_CST); }

// ---- math ---------------------------------------------------------------------------------------

using std::isfinite;
using std::isinf;

inline float __expf(float x) { return std::exp(x); }
inline uint32_t __umulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}
inline uint32_t __float_as_uint(float x) { return groupvit_fast::float_bits::float_to_bits(x); }
inline float __uint_as_float(uint32_t u) { return groupvit_fast::float_bits::bits_to_float(u); }
inline float __int_as_float(int i) { return __uint_as_float(static_cast<uint32_t>(i)); }

// ---- half and bfloat16 (round to nearest even, as __float2half_rn / __float2bfloat16_rn) ---------

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

// The conversions themselves are the CPU kernels' (float_bits.h): one implementation, two users.
inline float __half2float(__half h) { return groupvit_fast::float_bits::half_to_float(h.bits); }
inline __half __float2half_rn(float f) { return __half{groupvit_fast::float_bits::float_to_half(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return groupvit_fast::float_bits::bf16_to_float(b.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{groupvit_fast::float_bits::float_to_bf16(f)}; }
