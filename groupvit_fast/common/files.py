"""Atomic file writes: every file the package writes (checkpoints, shards, images, reports) goes through
``atomic_write``, so a file that exists is the old one or the complete new one, never a half-written one,
also when the process is killed while it writes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

__all__ = ["TEMP_PREFIX", "atomic_write"]

#: Temporary files start with this (hidden, in the destination's folder; a kill mid-write leaves one).
TEMP_PREFIX = ".tmp-"


def _file_mode() -> int:
    """What ``open(path, 'w')`` would give a new file: 0o666 less the umask (mkstemp uses 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str, write: Callable[[str], object], *, durable: bool = False) -> None:
    """``write(tmp_path)``, then rename it onto ``path``: readers see the old file or the whole new one.

    The temporary file sits in ``path``'s folder (``os.replace`` is atomic within one file system) and
    keeps ``path``'s extension for writers that read the format from it. ``durable=True`` also flushes
    it to the disk before the rename (``fsync``): a power cut then cannot leave a renamed but empty file
    (checkpoints pay for that; reports and images do not need it). The temporary file is removed if
    ``write`` raises.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
