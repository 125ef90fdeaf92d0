"""Atomic file replacement: readers see the old file or the complete new one, never a torn write.

pytest-xdist workers and Slurm array tasks write caches and reports into shared directories; a crash or a
concurrent reader must never observe half a file. The recipe is the POSIX one: write a temp file in the
*same* directory (rename is only atomic within one file system), flush and fsync it, then os.replace() it
over the target. Pure stdlib so any module can import it without pulling in numpy or pytest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_MODES = ("wb", "w")
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?:(?P<host>[0-9a-f]{6})-)?(?P<pid>[0-9]+)\.(?P<token>[0-9a-f]{8})\.tmp$")
_HOST_TAG = hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()
FOREIGN_TEMP_AGE_S = 24 * 3600  # another host's writer: its pid means nothing here, only age does
_ERRNO_WORDS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}


def temp_name(path: Path, pid: int | None = None) -> Path:
    """`.<name>.<host tag>-<pid>.<8 hex>.tmp`: hidden, unique, and carrying the writer's host and pid so a dead
    writer's leftovers can be told apart from a live writer's file in progress, even in a directory that several
    cluster nodes share (see clean_stale_temps)."""
    return path.with_name(f".{path.name}.{_HOST_TAG}-{os.getpid() if pid is None else pid}.{secrets.token_hex(4)}.tmp")


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create an exclusive temp file next to `path`, with the permissions a plain open() would give.

    tempfile.mkstemp would create it 0600, which survives the rename and hides results from group members on a
    shared cluster; opening with 0o666 lets the process umask decide, as for any ordinary file.
    """
    for _ in range(100):
        tmp = temp_name(path)
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


def os_error_reason(exc: OSError) -> str:
    """The cause of a failed file operation in a few plain words (disk full, permission denied, ...)."""
    reason = _ERRNO_WORDS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return reason.replace("\r", " ").replace("\n", " ")


def describe_os_error(path: str | os.PathLike[str], exc: OSError) -> str:
    """One line for a failed write: "cannot write <path>: disk full (no space left on device)" and the like.

    Users act on the cause (free space, fix permissions, pick another path), so the common causes are worded
    plainly; anything else falls back to the system's own message.
    """
    line = f"cannot write {os.fspath(path)}: {os_error_reason(exc)}"
    return line.replace("\r", " ").replace("\n", " ")


def _pid_is_dead(pid: int) -> bool:
    """True only when this host has no process `pid`; any doubt (another user's process, odd pids) is alive."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def _temp_files(directory: Path, recursive: bool) -> Iterator[Path]:
    if recursive:
        for root, _dirs, files in os.walk(directory):
            for name in files:
                yield Path(root) / name
    else:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            yield from directory.iterdir()


def clean_stale_temps(directory: Path, *, recursive: bool = True, min_age_s: float = 0.0) -> list[Path]:
    """Remove temp files that atomic_open left behind when its process was killed; return what was removed.

    Only regular files named like `temp_name` makes them are removed: this host's whose pid no longer exists, and
    another host's (or an untagged one's) only once older than FOREIGN_TEMP_AGE_S, because a pid says nothing
    about another node writing into a shared directory. A live writer's temp file is never touched.
    """
    removed: list[Path] = []
    now = time.time()
    for path in _temp_files(Path(directory), recursive):
        match = _TEMP_NAME.match(path.name)
        if match is None:
            continue
        ours = match["host"] == _HOST_TAG
        if ours and not _pid_is_dead(int(match["pid"])):
            continue
        try:
            st = path.lstat()
            age = now - st.st_mtime
            if not stat.S_ISREG(st.st_mode) or age < min_age_s or (not ours and age < FOREIGN_TEMP_AGE_S):
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return sorted(removed)
