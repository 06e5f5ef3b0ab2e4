// The run-time choice between the CPU kernel copies (assign_kernels.h), as ATen's DispatchStub
// makes it: the best instruction set the CPU has, overridable by GROUPVIT_FAST_CPU_ISA (read at the
// first call) and by set_kernels() (tests and benchmarks time and check every copy in one process).
//
// Compiled for the baseline instruction set: it runs before any copy is chosen.

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include <c10/util/Exception.h>

#include "cpu/assign_kernels.h"

namespace groupvit_fast {
namespace cpu {
namespace {

struct Copy {
  const char* name;
  const KernelTable& (*table)();
  bool (*runs_here)();
};

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__)  // GCC and clang (MSVC would ask __cpuid; see docs/cpu_backend.md)
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512() {
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#else
bool has_avx2() { return false; }
bool has_avx512() { return false; }
#endif
#endif
bool always() { return true; }

// Best first.
const Copy kCopies[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"avx512", &kernels_avx512, &has_avx512},
    {"avx2", &kernels_avx2, &has_avx2},
#endif
    {"baseline", &kernels_baseline, &always},
};

const char* const kKnown = "auto, baseline, avx2, avx512";

// The copy named `isa`, or an error naming it.
const KernelTable* find(const char* isa, const char* source) {
  if (isa == nullptr || isa[0] == '\0' || std::strcmp(isa, "auto") == 0) {
    for (const Copy& c : kCopies) {
      if (c.runs_here()) return &c.table();
    }
  }
  const bool known = std::strcmp(isa, "baseline") == 0 || std::strcmp(isa, "avx2") == 0 ||
                     std::strcmp(isa, "avx512") == 0;
  TORCH_CHECK_VALUE(known, source, "='", isa, "': expected one of ", kKnown);
  for (const Copy& c : kCopies) {
    if (std::strcmp(c.name, isa) != 0) continue;
    TORCH_CHECK_VALUE(c.runs_here(), source, "='", isa, "': this CPU lacks its instructions (it runs ",
                      available_kernels(), ")");
    return &c.table();
  }
  TORCH_CHECK_VALUE(false, source, "='", isa, "': not built for this architecture (it runs ", available_kernels(),
                    ")");
  return nullptr;
}

std::atomic<const KernelTable*> g_chosen{nullptr};

}  // namespace

const char* available_kernels() {
  static const std::string names = [] {
    std::string s;
    for (const Copy& c : kCopies) {
      if (!c.runs_here()) continue;
      if (!s.empty()) s += '|';
      s += c.name;
    }
    return s;
  }();
  return names.c_str();
}

const KernelTable& select_kernels() {
  const KernelTable* chosen = g_chosen.load(std::memory_order_acquire);
  if (chosen == nullptr) {
    const KernelTable* from_env = find(std::getenv("GROUPVIT_FAST_CPU_ISA"), "GROUPVIT_FAST_CPU_ISA");
    // Another thread may have chosen first (or set_kernels run): keep whatever is there.
    if (g_chosen.compare_exchange_strong(chosen, from_env, std::memory_order_acq_rel)) chosen = from_env;
  }
  return *chosen;
}

const char* set_kernels(const char* isa) {
  const KernelTable* wanted = find(isa, "isa");
  const char* before = select_kernels().isa;
  g_chosen.store(wanted, std::memory_order_release);
  return before;
}

}  // namespace cpu
}  // namespace groupvit_fast
