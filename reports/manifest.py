"""Shard manifest (`manifest.json`): what one shard of a run was asked to do, so a merge can prove it got it all.

A sweep split over N SLURM array tasks leaves N folders that nothing ties together but their names. Each shard
therefore records its run id, its index, the digest of the full case list it was cut from and the cases it
selected; the merge step compares these instead of trusting folder names or row counts. The database path is kept
relative to the manifest's folder when it lies inside it, so a run folder can be copied off the cluster whole.
Kinds: `run` (unsharded, shard 0 of 1, in `<run-dir>/<run_id>/`), `shard` (`shard-<i>-of-<N>/`) and `rerun`
(`rerun-<stamp>/`: some cases of a sharded run run again; its case list is those cases, not the run's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vq_benchmark.reports.atomic import atomic_write_bytes, describe_os_error
from vq_benchmark.reports.errors import ReportError, StoreError, one_line, read_versioned_json

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SHARD_DIR = re.compile(r"^shard-(?P<shard_id>[0-9]+)-of-(?P<num_shards>[0-9]+)$")
KINDS: tuple[str, ...] = ("run", "shard", "rerun")
_OPTIONAL_KEYS = frozenset({"kind", "settings", "all_case_ids"})  # a manifest without them is read with their defaults


@dataclass(frozen=True)
class Manifest:
    """One shard of one run; shard 0 of 1 for an unsharded run. Invalid values raise ValueError."""

    run_id: str
    shard_id: int
    num_shards: int
    shard_mode: str
    case_ids: tuple[str, ...]  # this shard's selected cases, in run order
    n_cases_total: int  # length of the full ordered case list that was sharded
    case_list_sha256: str
    started_at: str
    finished_at: str | None
    exit_status: int | None
    host: str
    git_commit: str | None
    slurm: Mapping[str, str] = field(default_factory=dict)
    db: str = "results.db"  # relative to the manifest's folder when inside it, else absolute
    kind: str = ""  # run, shard or rerun; empty: shard when num_shards > 1, else run
    settings: Mapping[str, str | None] = field(default_factory=dict)  # the resolved --vq-* settings, as text
    all_case_ids: tuple[str, ...] = ()  # the full ordered list that was sharded: names a lost shard's cases
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("run_id", "shard_mode", "case_list_sha256", "started_at", "host", "db", "kind"):
            _expect(name, getattr(self, name), str)
        for name in ("finished_at", "git_commit"):
            _expect(name, getattr(self, name), str, optional=True)
        for name in ("shard_id", "num_shards", "n_cases_total", "format_version"):
            _expect(name, getattr(self, name), int)
        _expect("exit_status", self.exit_status, int, optional=True)
        if not self.run_id or not self.db:
            raise ValueError("run_id and db must not be empty")
        if self.num_shards < 1 or not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id must be in 0..num_shards-1, got shard {self.shard_id} of {self.num_shards}")
        if self.n_cases_total < 0 or self.format_version < 1:
            raise ValueError("n_cases_total must be >= 0 and format_version >= 1")
        for name in ("case_ids", "all_case_ids"):
            ids = getattr(self, name)
            if not isinstance(ids, list | tuple) or not all(_one_line_id(c) for c in ids):
                raise ValueError(f"{name} must be a list of one-line text case ids, got {_short(ids)}")
            object.__setattr__(self, name, tuple(ids))
        if not _text_mapping(self.slurm, optional_values=False):
            raise ValueError(f"slurm must map text to text, got {_short(self.slurm)}")
        if not _text_mapping(self.settings, optional_values=True):
            raise ValueError(f"settings must map text to text or null, got {_short(self.settings)}")
        kind = self.kind or ("shard" if self.num_shards > 1 else "run")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {_short(self.kind)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "slurm", MappingProxyType(dict(sorted(self.slurm.items()))))
        object.__setattr__(self, "settings", MappingProxyType(dict(sorted(self.settings.items()))))

    def to_json(self) -> dict[str, Any]:
        """The manifest as plain JSON values (dataclasses.asdict cannot copy the read-only mappings)."""
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["case_ids"] = list(self.case_ids)
        doc["all_case_ids"] = list(self.all_case_ids)
        doc["slurm"] = dict(self.slurm)
        doc["settings"] = dict(self.settings)
        return doc


_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Manifest))


def _expect(name: str, value: object, kind: type, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if type(value) is not kind:  # exact: True is not a shard id
        wanted = {str: "text", int: "an integer"}[kind] + (" or null" if optional else "")
        raise ValueError(f"{name} must be {wanted}, got {_short(value)}")


def _text_mapping(value: object, *, optional_values: bool) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and (isinstance(v, str) or (optional_values and v is None)) for k, v in value.items()
    )


def _one_line_id(case_id: object) -> bool:
    """A case id a rerun argument file can hold: text, not empty, one line."""
    return isinstance(case_id, str) and bool(case_id) and "\n" not in case_id and "\r" not in case_id


def _short(value: object) -> str:
    return one_line(repr(value), 60)


def shard_dir_name(shard_id: int, num_shards: int) -> str:
    """`shard-<i>-of-<N>`: the folder one shard writes under `<run-dir>/<run_id>/`."""
    return f"shard-{shard_id}-of-{num_shards}"


def manifest_db_path(manifest_path: Path, manifest: Manifest) -> Path:
    """The database a manifest names, resolved against the manifest's folder."""
    return Path(manifest_path).parent / manifest.db


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write `<folder>/manifest.json` atomically (sorted keys) and return its path; StoreError if it cannot."""
    path = Path(folder) / MANIFEST_NAME
    data = (json.dumps(manifest.to_json(), sort_keys=True, indent=1) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise StoreError(describe_os_error(path, exc)) from exc
    return path


def read_manifest(path: Path) -> Manifest:
    """Read a manifest back; ReportError (one line naming the file) when it cannot be trusted."""
    where = f"manifest {path}"
    doc = read_versioned_json(path, where, "manifest", FORMAT_VERSION)
    missing = [k for k in _KEYS if k not in doc and k not in _OPTIONAL_KEYS]
    if missing:
        raise ReportError(f"{where}: not a complete vq-benchmark manifest (missing {', '.join(missing)})")
    try:
        return Manifest(**{k: doc[k] for k in _KEYS if k in doc})
    except ValueError as exc:
        raise ReportError(f"{where}: {one_line(exc)}") from None


def _order(path: Path, run_dir: Path) -> tuple[int, int, int, str]:
    if path.parent == run_dir:
        return (0, 0, 0, "")
    match = SHARD_DIR.match(path.parent.name)
    if match is None:
        return (2, 0, 0, path.parent.name)  # rerun-<UTC stamp>: by name is by time
    return (1, int(match["num_shards"]), int(match["shard_id"]), path.parent.name)


def find_manifests(run_dir: Path) -> list[Path]:
    """`manifest.json` of `run_dir`, of its `shard-*-of-*/` and of its `rerun-*/` folders, where they exist: the
    top one first, then shards in numeric order (shard-2 before shard-10), then reruns by name (= time)."""
    run_dir = Path(run_dir)
    found = [
        run_dir / MANIFEST_NAME,
        *(p for pattern in ("shard-*-of-*", "rerun-*") for p in run_dir.glob(f"{pattern}/{MANIFEST_NAME}")),
    ]
    return sorted((p for p in found if p.is_file()), key=lambda p: _order(p, run_dir))
