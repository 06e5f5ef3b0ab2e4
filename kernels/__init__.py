"""Triton kernels of groupvit_fast, installed as ``groupvit_fast.kernels`` (one module per op).

* ``assign_attention``: fused forward, backward and in-kernel Gumbel noise of GroupViT's
  assignment attention (launchers ``assign_attention_forward``, ``assign_attention_backward``,
  ``gumbel_noise``).

Their ahead-of-time compile check (a build tool, not a kernel) lives in ``groupvit_fast.tools``.

Nothing is imported here on purpose: importing this package must never import triton (which may be
missing) nor fail. From the repository root this folder is also visible as a top-level ``kernels``
package, which ``transformers`` probes for (an unrelated Hugging Face package of that name); with no
``__version__`` and no side effects it reads as "not available" there. Import the submodule
explicitly: ``from groupvit_fast.kernels import assign_attention``.
"""
