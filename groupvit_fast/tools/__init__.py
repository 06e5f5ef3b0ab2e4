"""Build and verification tools (not kernels, not ops): what a developer or CI runs to check the
kernels without a GPU.

* ``compile_check``: compiles the Triton kernels ahead of time for sm_80 / sm_90 through Triton's
  NVIDIA back end and reports shared memory, registers and spills
  (``python -m groupvit_fast.tools.compile_check``); its ``parse_ptxas`` also reads nvcc's report.
"""
