"""Which grouping maps the segmentation composes (docs/segmentation.md, "Soft or hard assignment"): the choices
and their check, without torch, so that command-line parsers and the onnxruntime runner can name them."""

from __future__ import annotations

__all__ = ["ASSIGNMENTS", "check_assignment"]

#: the grouping maps the segmentation can compose
ASSIGNMENTS = ("soft", "hard")


def check_assignment(assignment: str, name: str = "assignment") -> str:
    """``assignment`` if it is ``'soft'`` or ``'hard'``, else a ``ValueError`` naming ``name``."""
    if not isinstance(assignment, str) or assignment not in ASSIGNMENTS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, ASSIGNMENTS))}, got {assignment!r}")
    return assignment
