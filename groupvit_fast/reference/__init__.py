"""Pure-PyTorch oracles. Nothing here imports what it checks."""

from .assign_attention import assign_attention_reference, sample_gumbel
from .assign_attention_grad import assign_attention_backward_math, assign_attention_forward_math
from .philox import philox_gumbel_noise

__all__ = [
    "assign_attention_reference",
    "sample_gumbel",
    "assign_attention_forward_math",
    "assign_attention_backward_math",
    "philox_gumbel_noise",
]
