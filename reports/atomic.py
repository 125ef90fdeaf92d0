"""Atomic file replacement: readers see the old file or the complete new one, never a torn write.

pytest-xdist workers and Slurm array tasks write caches and reports into shared directories; a crash or a
concurrent reader must never observe half a file. The recipe is the POSIX one: write a temp file in the
*same* directory (rename is only atomic within one file system), flush and fsync it, then os.replace() it
over the target. Pure stdlib so any module can import it without pulling in numpy or pytest.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_MODES = ("wb", "w")


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create an exclusive temp file next to `path`, with the permissions a plain open() would give.

    tempfile.mkstemp would create it 0600, which survives the rename and hides results from group members on a
    shared cluster; opening with 0o666 lets the process umask decide, as for any ordinary file.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"could not create a unique temp file next to {path}")


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort because some platforms/file systems cannot fsync a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file object for a temp file that replaces `path` only if the with-block succeeds.

    mode is "wb" (bytes) or "w" (UTF-8 text). On any exception the temp file is removed and the previous
    content of `path`, if any, is left untouched.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_open: mode must be one of {_MODES}, got {mode!r}")
    target = Path(path)
    fd, tmp = _create_temp(target)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding="utf-8" if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically (see atomic_open)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
