"""Files that survive a crash: atomic writes and checksums (used by every layer).

:func:`atomic_write` writes to a temporary file in the target's folder,
flushes it to disk and renames it over the target (``os.replace``, atomic on
POSIX): a kill at any moment leaves the old file or the new one, never half a
file. A symbolic link at the target is replaced, not followed, so a write
never lands outside the folder it names.

>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
>>> with atomic_write(p, "w") as f:
...     _ = f.write("hello")
>>> open(p).read(), sha256_file(p)[:12]
('hello', '2cf24dba5fb0')
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "sha256_file", "fsync_dir", "write_verified", "is_verified"]


def fsync_dir(folder) -> None:
    """Persist a rename (the directory entry) where the file system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file for writing; on success it replaces ``path``
    (fsynced), on an exception it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp creates the file owner-only (0600): give it the mode a plain open() would (the file's own
    # when it is replaced, else 0666 less the umask), so results and pictures stay readable by the group.
    os.chmod(tmp, _mode_of(path))
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_dir(path.parent)


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_verified(path, write, mode: str = "wb") -> None:
    """Write a cache file atomically (``write(f)`` fills it) and then its checksum beside it
    (``path.sha256``): :func:`is_verified` tells a whole, unchanged file from a damaged one.

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "map.npy")
    >>> write_verified(p, lambda f: np.save(f, np.arange(3.0)))
    >>> is_verified(p)
    True
    >>> with open(p, "r+b") as f:
    ...     _ = f.seek(-8, 2); _ = f.write(bytes(8))      # zero the last value
    >>> is_verified(p)
    False
    """
    with atomic_write(path, mode) as f:
        write(f)
    digest = sha256_file(path)
    with atomic_write(_sidecar(path), "w") as f:
        f.write(digest + "\n")


def is_verified(path) -> bool:
    """Whether ``path`` exists with a checksum file written by :func:`write_verified` that matches
    it. A file without one (or killed between the two writes) counts as not verified: rebuild it."""
    path, side = Path(path), _sidecar(path)
    if not path.is_file() or not side.is_file():
        return False
    try:
        return side.read_text().strip() == sha256_file(path)
    except OSError:
        return False
