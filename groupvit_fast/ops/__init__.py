"""Public ops. A model reaches a kernel only through here.

* ``assign_attention``: GroupViT's fused assignment attention (backends reference, triton, cuda, cpu);
* ``multi_head_attention``: softmax attention over keys (backends sdpa, xformers, explicit).

Both dispatch through the same protocol (``dispatch.Dispatcher``): ``backend=`` per call, an environment
variable for ``"auto"``, log-once fallback with reasons, ``*_usage()`` counters and ``python -m
groupvit_fast.info``.
"""

from .assign_attention import assign_attention, backend_usage, gumbel_noise
from .attention import ATTN_ENV_VAR, attention_backend_table, attention_backend_usage, multi_head_attention
from .backend import USABLE, AssignInputs, AssignParams, Availability
from .dispatch import BACKENDS, ENV_VAR, PRIORITY, backend_table, select_backend
from .shapes import AssignShape

__all__ = [
    "assign_attention",
    "multi_head_attention",
    "attention_backend_usage",
    "attention_backend_table",
    "ATTN_ENV_VAR",
    "gumbel_noise",
    "backend_usage",
    "select_backend",
    "backend_table",
    "BACKENDS",
    "PRIORITY",
    "ENV_VAR",
    "AssignInputs",
    "AssignParams",
    "Availability",
    "USABLE",
    "AssignShape",
]
