"""The shape of one assignment-attention problem, the one type that tests, benchmarks and the
sanitizer cases describe the op's inputs with."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class AssignShape:
    """Sizes of one ``assign_attention`` call: q ``[batch, groups, channels]``, k and v
    ``[batch, tokens, channels]``, split into ``heads`` heads of ``channels // heads`` channels.

    ``str(shape)`` is a compact id (``B2-G3-N7-C8-h1``, used as a pytest id); ``dims()`` the
    readable form (``B=2 G=3 N=7 C=8 h=1``).
    """

    batch: int
    groups: int
    tokens: int
    channels: int
    heads: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AssignShape: {f.name} must be a positive int, got {value!r}")
        if self.channels % self.heads:
            raise ValueError(f"AssignShape: channels={self.channels} is not a multiple of heads={self.heads}")

    @property
    def head_dim(self) -> int:
        return self.channels // self.heads

    def with_batch(self, batch: int) -> AssignShape:
        """The same problem at another batch size."""
        return replace(self, batch=batch)

    def dims(self) -> str:
        return f"B={self.batch} G={self.groups} N={self.tokens} C={self.channels} h={self.heads}"

    def __str__(self) -> str:
        return f"B{self.batch}-G{self.groups}-N{self.tokens}-C{self.channels}-h{self.heads}"
