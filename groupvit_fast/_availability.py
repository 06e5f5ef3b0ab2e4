"""``Availability``: whether a backend (or the compiled extension) can run here, and which kind of "not".

A leaf module (imports nothing of the package), shared by ``_extension`` and ``ops``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Availability", "USABLE"]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on this machine, and if not, which kind of "not".

    * ``usable``: built, importable, and the device it needs is there;
    * ``absent``: the machine truly lacks something (a package not installed, no GPU, an extension
      not built, disabled on purpose): tests skip;
    * ``broken``: it is installed but fails (an import error in our kernels, a stale or unloadable
      extension, a compile error): logged once as an error, and a test failure under
      ``GROUPVIT_FAST_REQUIRE`` (tests/README.md).
    """

    status: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("usable", "absent", "broken"):
            raise ValueError(f"status must be 'usable', 'absent' or 'broken', got {self.status!r}")

    @property
    def usable(self) -> bool:
        return self.status == "usable"

    def describe(self) -> str:
        """'usable', 'not available: <why>' or 'BROKEN: <why>' (what ``info`` prints)."""
        if self.usable:
            return "usable"
        return f"{'BROKEN' if self.status == 'broken' else 'not available'}: {self.reason}"


USABLE = Availability("usable")
