"""Optional dependencies, grouped as the package's extras (pyproject.toml, the one place they are listed).

A feature whose extra is not installed fails at import with one line that names the extra, e.g.
``groupvit_fast.train needs webdataset, nltk: pip install 'groupvit_fast[train]'``. The check reads the
installed package's own metadata (so it follows pyproject.toml with nothing copied here); in a plain
checkout without an install there is no metadata and nothing is checked.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

__all__ = ["require_extra", "extra_requirements"]

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_DIST = "groupvit_fast"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(extra: str, requires: list[str] | None = None) -> list[str]:
    """The distributions ``groupvit_fast[extra]`` pulls in (nested self-references expanded), or ``[]``
    when groupvit_fast is not installed. ``requires``: the metadata's Requires-Dist lines (tests)."""
    if requires is None:
        try:
            requires = importlib.metadata.requires(_DIST) or []
        except importlib.metadata.PackageNotFoundError:
            return []
    found: list[str] = []
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for line in requires:
            requirement, _, marker = line.partition(";")
            wanted = _EXTRA_MARKER.search(marker)
            if wanted is None or wanted.group(1) != current:
                continue
            match = _NAME.match(requirement)
            if match is None:
                continue
            if _canonical(match.group(1)) == _canonical(_DIST):
                pending.extend(part.strip() for part in (match.group(3) or "").split(",") if part.strip())
            elif match.group(1) not in found:
                found.append(match.group(1))
    return found


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def require_extra(feature: str, extra: str) -> None:
    """Raise ``ModuleNotFoundError`` naming ``extra`` if a distribution of ``groupvit_fast[extra]`` is
    missing; ``feature`` is what the user imported (the message's subject)."""
    missing = [name for name in extra_requirements(extra) if not _installed(name)]
    if missing:
        raise ModuleNotFoundError(
            f"{feature} needs {', '.join(missing)}: pip install 'groupvit_fast[{extra}]'", name=missing[0]
        )


def _main(argv: list[str]) -> int:
    """``python -m groupvit_fast._extras EXTRA [--beyond OTHER]``: the distributions of ``EXTRA`` (less
    those of ``OTHER``), one per line: what CI installs for its linters (the ``dev`` extra beyond ``test``)."""
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--beyond"):
        print("usage: python -m groupvit_fast._extras EXTRA [--beyond OTHER]", file=sys.stderr)
        return 2
    other = set(extra_requirements(argv[2])) if len(argv) == 3 else set()
    wanted = [name for name in extra_requirements(argv[0]) if name not in other]
    if not wanted:
        print(f"groupvit_fast[{argv[0]}]: no such extra, or groupvit_fast is not installed", file=sys.stderr)
        return 1
    print("\n".join(wanted))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
