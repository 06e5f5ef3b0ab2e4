"""Public ops. A model reaches a kernel only through here."""

from .assign_attention import assign_attention, backend_usage, gumbel_noise
from .backend import USABLE, AssignInputs, AssignParams, Availability
from .dispatch import BACKENDS, ENV_VAR, PRIORITY, backend_table, select_backend
from .shapes import AssignShape

__all__ = [
    "assign_attention",
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
