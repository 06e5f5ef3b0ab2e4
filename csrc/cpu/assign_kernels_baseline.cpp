// The CPU kernels compiled for the baseline instruction set of the target (x86-64: SSE2;
// aarch64: NEON), every GEMM tile through ATen's BLAS. The run-time choice between the copies
// is kernel_select.cpp.

#define GVF_ISA baseline
#define GVF_ISA_NAME "baseline"
#include "assign_kernels_impl.h"

namespace groupvit_fast {
namespace cpu {

const KernelTable& kernels_baseline() { return baseline::table(); }

}  // namespace cpu
}  // namespace groupvit_fast
