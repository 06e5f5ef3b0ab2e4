// groupvit_fast._C: the native assignment-attention ops, declared once (torchvision style).
//
// The schemas live here; each dispatch key adds its kernels in its own file:
//   csrc/cpu/assign_attention_cpu.cpp    TORCH_LIBRARY_IMPL(groupvit_fast, CPU, m)
//   csrc/cuda/assign_attention_cuda.cpp  TORCH_LIBRARY_IMPL(groupvit_fast, CUDA, m)
// The Python package defines its own ops (torch.library.custom_op) in the same namespace, so
// this file adds a *fragment* of the namespace rather than owning it.
//
// Contract and math: docs/assign_op.md; Python adapter and fake (meta) implementations:
// groupvit_fast/ops/backends/native.py.

#include <Python.h>

#include <string>

#include <torch/library.h>

#include "cpu/assign_kernels.h"
#include "op_schemas.h"
#ifdef WITH_CUDA
#include "cuda/assign_attention_kernels.h"
#endif

namespace groupvit_fast {

// "key=value;..." facts the Python side reads instead of copying them (groupvit_fast/ops/backends/native.py):
// the CPU instruction set chosen at run time and those this CPU can run ('|'-separated), whether CUDA kernels are built and their group limit.
std::string build_info() {
  std::string info = "cpu_isa=";
  info += cpu::select_kernels().isa;
  info += ";cpu_isas=";
  info += cpu::available_kernels();
  info += ";cpu_threading=";
  info += cpu::parallel_backend();
#ifdef WITH_CUDA
  info += ";cuda=1;cuda_max_groups=" + std::to_string(cuda::kMaxGroups);
#else
  info += ";cuda=0";
#endif
  return info;
}

TORCH_LIBRARY_FRAGMENT(groupvit_fast, m) {
  m.def(kForwardSchema);
  m.def(kBackwardSchema);
  m.def(kGumbelNoiseSchema);
  m.def("build_info() -> str", &build_info);
  // Chooses the CPU kernel copy of every later call ("auto", "baseline", "avx2", "avx512"; see
  // csrc/cpu/kernel_select.cpp) and returns the previous one: tests and benchmarks run every copy.
  m.def("set_cpu_isa(str isa) -> str", [](const std::string& isa) { return std::string(cpu::set_kernels(isa.c_str())); });
}

}  // namespace groupvit_fast

// The shared object is imported as the Python module groupvit_fast._C (importing it runs the
// static registrations above); it exposes no Python functions itself, so no pybind11 is needed.
static struct PyModuleDef groupvit_fast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&groupvit_fast_module); }
