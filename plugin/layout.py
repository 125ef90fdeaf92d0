"""Where one process writes: a plain run, one shard of a sharded run, or a rerun of some cases of a sharded run.

No two processes ever write one SQLite file (SQLite locking is unreliable on NFS/Lustre scratch): each shard and
each rerun gets its own folder and database under `<run-dir>/<run_id>/`, and `vq-benchmark merge` joins them.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from vq_benchmark.plugin.settings import Settings

SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_JOB_NODELIST",
)
SHARD_DB = "results.db"


@dataclass(frozen=True)
class Layout:
    kind: str  # "run" (plain), "shard", or "rerun" (some cases of an existing run, run again by --vq-case)
    folder: Path  # results.jsonl, results.json, arrays/, manifest.json
    db_path: Path
    shard_id: int
    num_shards: int

    @property
    def manifest_db(self) -> str:
        """The database as the manifest names it: relative when it sits in the manifest's folder."""
        return self.db_path.name if self.db_path.parent == self.folder else str(self.db_path)


def output_layout(settings: Settings, run_id: str, *, rerun_cases: tuple[str, ...] = ()) -> Layout:
    run_path = settings.run_dir / run_id
    if settings.num_shards and settings.shard_id is not None and settings.num_shards > 1:
        n, i = settings.num_shards, settings.shard_id
        folder = run_path / f"shard-{i}-of-{n}"
        return Layout("shard", folder, folder / SHARD_DB, i, n)
    if rerun_cases and ((run_path / "manifest.json").is_file() or any(run_path.glob("shard-*-of-*"))):
        # named by the cases, not the clock, so an xdist controller and its workers agree on the folder
        digest = hashlib.sha256("\n".join(sorted(rerun_cases)).encode()).hexdigest()[:12]
        folder = run_path / f"rerun-{digest}"
        return Layout("rerun", folder, folder / SHARD_DB, 0, 1)
    return Layout("run", run_path, settings.db_path, 0, 1)


def query_read_only(db_path: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    """Rows of a query on a results database opened read-only; empty when the file is absent or unreadable
    (what an earlier run recorded is a hint for ordering and resuming, never a reason to fail)."""
    if not Path(db_path).is_file():
        return []
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    return []


def ok_rows_for(db_path: Path, fingerprint: str) -> dict[str, dict]:
    """case id -> the latest ok row recorded for the same dataset fingerprint (what --vq-resume skips)."""
    sql = "SELECT * FROM results WHERE status = 'ok' AND dataset_fingerprint = ? ORDER BY created_at"
    return {str(r["case_id"]): dict(r) for r in query_read_only(db_path, sql, (fingerprint,))}
