// The CPU kernels compiled for the x86-64 (or other architecture's) baseline instruction set,
// and the run-time choice between them and the AVX2+FMA copy (assign_kernels_avx2.cpp).

#include <cstdlib>
#include <cstring>

#define GVF_ISA baseline
#define GVF_ISA_NAME "baseline"
#include "assign_kernels_impl.h"

namespace groupvit_fast {
namespace cpu {

const KernelTable& kernels_baseline() { return baseline::table(); }

const KernelTable& select_kernels() {
  static const KernelTable* const chosen = [] {
    const char* forced = std::getenv("GROUPVIT_FAST_CPU_ISA");
    const bool want_baseline = forced != nullptr && std::strcmp(forced, "baseline") == 0;
#if defined(__x86_64__) || defined(_M_X64)
    if (!want_baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &kernels_avx2();
#else
    (void)want_baseline;
#endif
    return &kernels_baseline();
  }();
  return *chosen;
}

}  // namespace cpu
}  // namespace groupvit_fast
