// groupvit_fast._C: the native assignment-attention ops, declared once (torchvision style).
//
// The schemas live here; each dispatch key adds its kernels in its own file:
//   csrc/cpu/assign_attention_cpu.cpp    TORCH_LIBRARY_IMPL(groupvit_fast, CPU, m)
//   csrc/cuda/assign_attention_cuda.cpp  TORCH_LIBRARY_IMPL(groupvit_fast, CUDA, m)
// The Python package defines its own ops (torch.library.custom_op) in the same namespace, so
// this file adds a *fragment* of the namespace rather than owning it.
//
// Contract and math: spec/assign_op.md; Python adapter and fake (meta) implementations:
// groupvit_fast/ops/backends/native.py.

#include <Python.h>

#include <string>

#include <torch/library.h>

#include "cpu/assign_kernels.h"

namespace groupvit_fast {

std::string build_info() {
  std::string info = "cpu_isa=";
  info += cpu::select_kernels().isa;
#ifdef WITH_CUDA
  info += ";cuda=1";
#else
  info += ";cuda=0";
#endif
  return info;
}

TORCH_LIBRARY_FRAGMENT(groupvit_fast, m) {
  // Forward: out [B,G,C] (input dtype), r [B,h,G] float32 (r = sum_n A), and with return_attn
  // hard = A [B,h,G,N] and soft = softmax_g(z) [B,h,G,N] (else two distinct empty tensors).
  // The noise is taken from `noise` ([B,h,G,N] float32) when given, else drawn in-kernel with
  // Philox from (seed, offset) following groupvit_fast/reference/philox.py.
  m.def(
      "assign_attention_forward_native(Tensor q, Tensor k, Tensor v, Tensor? noise, int seed, int offset, "
      "int num_heads, float scale, bool hard, bool gumbel, float tau, bool sum_assign, float eps, "
      "bool return_attn) -> (Tensor out, Tensor r, Tensor hard, Tensor soft)");
  // Backward: recomputes z, noise, S and the argmax; saved state is only q, k, v, out, r.
  m.def(
      "assign_attention_backward_native(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor r, "
      "Tensor? noise, int seed, int offset, int num_heads, float scale, bool hard, bool gumbel, float tau, "
      "bool sum_assign, float eps) -> (Tensor dq, Tensor dk, Tensor dv)");
  // The float32 noise of the given shape that the kernels draw for (seed, offset), on like's device.
  m.def("gumbel_noise_native(Tensor like, int[] shape, int seed, int offset) -> Tensor");
  m.def("build_info() -> str", &build_info);
}

}  // namespace groupvit_fast

// The shared object is imported as the Python module groupvit_fast._C (importing it runs the
// static registrations above); it exposes no Python functions itself, so no pybind11 is needed.
static struct PyModuleDef groupvit_fast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&groupvit_fast_module); }
