"""Work-arounds for bugs of the Triton releases ``groupvit_fast.kernels`` supports (setup.py: ``triton>=3.6``).

Each one names the releases it applies to, is installed only there, and says when it can go. They
touch Triton's interpreter only (``TRITON_INTERPRET=1``, the kernels on CPU tensors); the compiled (GPU)
kernels never see them.

* ``interpreter_index_fix``: Triton 3.6's interpreter turns a runtime scalar into a Python int (as
  ``range`` needs for the loops over the head dim, ``for d0 in range(0, D, BLOCK_D)``) with ``int()`` of
  its 1-element 1-D numpy array, which numpy >= 2.4 refuses ("only 0-dimensional arrays can be
  converted"); Triton >= 3.7 squeezes the array first. ``tl.range`` or a host-computed chunk count hit
  the same conversion, so 3.7's conversion is back-ported onto 3.6's private
  ``triton.runtime.interpreter._patch_lang_tensor``. It can go when the oldest supported Triton is 3.7
  (raise the ``triton`` extra in setup.py and ``tools/compat.sh``'s oldest pair together).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["needs_interpreter_index_fix", "interpreter_index_fix", "install_interpreter_fixes"]


def needs_interpreter_index_fix(triton_version: str) -> bool:
    """Whether ``triton_version``'s interpreter needs ``interpreter_index_fix`` (3.6.x only)."""
    return triton_version.startswith("3.6.")


def interpreter_index_fix(interpreter: ModuleType) -> None:
    """Wrap ``interpreter._patch_lang_tensor`` so that a tensor's ``__index__`` squeezes its array first.

    Installed once: a second call on the same module does nothing.
    """
    original = interpreter._patch_lang_tensor
    if getattr(original, "_groupvit_fast_index_fix", False):
        return

    def _patch_lang_tensor(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    _patch_lang_tensor._groupvit_fast_index_fix = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = _patch_lang_tensor


def install_interpreter_fixes(interpreting: bool) -> tuple[str, ...]:
    """The fixes this Triton needs, installed when its interpreter runs the kernels; returns their names."""
    import triton

    if not interpreting or not needs_interpreter_index_fix(triton.__version__):
        return ()
    from triton.runtime import interpreter

    interpreter_index_fix(interpreter)
    return ("interpreter_index_fix",)
