"""Output paths checked before the first case: each exists or can be created, is a directory, and takes files.

A result that cannot be written should fail with one line naming the option before the first case trains,
not after. Root ignores mode bits, so writability is proven by creating a file, not by os.access.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vq_benchmark.plugin.settings import BY_NAME, Setting, Settings, os_reason, setting_error, show_value

OUTPUT_DIRS = ("run-dir", "codebooks-dir", "cache-dir")  # checked after the database's directory


def _in_the_way(path: Path) -> str:
    """Why `path` cannot be a directory: the nearest existing ancestor-or-self that is not a directory."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return "" if p.is_dir() else f" (a file is in the way: {show_value(p)})"
    return ""


def _check_dir(setting: Setting, path: Path, source: str, label: str) -> None:
    """Create `path` if needed, then prove it takes files by writing one (root ignores mode bits)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise setting_error(setting, f"{label} is not a directory{_in_the_way(path)}", source) from None
    except (OSError, ValueError) as exc:
        raise setting_error(setting, f"{label} cannot be created ({os_reason(exc)})", source) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".vq-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise setting_error(setting, f"{label} is not writable ({os_reason(exc)})", source) from None


def _check_db_file(setting: Setting, path: Path, source: str) -> None:
    """An existing database must be a regular file SQLite can open for writing."""
    try:
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
        if is_file:
            with open(path, "r+b"):
                pass
    except (OSError, ValueError) as exc:
        raise setting_error(setting, f"{show_value(path)} is not writable ({os_reason(exc)})", source) from None
    if is_dir:
        raise setting_error(setting, f"{show_value(path)} is a directory, expected a database file", source)
    if exists and not is_file:
        raise setting_error(setting, f"{show_value(path)} is not a regular file", source)


def check_output_paths(settings: Settings) -> None:
    """Fail with one line before the first case, not after it trained, when a result could not be written.

    Creates the output directories (and the database's directory) that do not exist yet.
    """
    db = BY_NAME["db-path"]
    source = settings.sources[db.name]
    _check_db_file(db, settings.db_path, source)
    parent = settings.db_path.parent
    _check_dir(db, parent, source, f"{show_value(parent)} (directory of {show_value(settings.db_path)})")
    for name in OUTPUT_DIRS:
        path = settings.value(name)
        _check_dir(BY_NAME[name], path, settings.sources[name], show_value(path))
