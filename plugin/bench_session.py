"""State of one benchmark session: resolved settings, run id, the case list, and where rows go.

The pytest hooks in `plugin.pytest_plugin` only call into this object, so the same logic is usable (and tested)
without a pytest run.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from vq_benchmark.fixtures.loading import LoadedDataset, open_dataset
from vq_benchmark.fixtures.registry import DatasetError, DatasetSpec, get_dataset, known_datasets
from vq_benchmark.plugin.settings import Resolved
from vq_benchmark.reports.json_report import read_json_report, write_json_report
from vq_benchmark.reports.schema import RECALL_KS, Row
from vq_benchmark.reports.sqlite_store import SqliteStore
from vq_benchmark.vq_cases.sweep import DEFAULT_SWEEP, Case, expand_sweep


def new_run_id() -> str:
    """Sortable and unique enough across a cluster: UTC time plus 6 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class BenchSession:
    settings: dict[str, Resolved]
    run_id: str
    worker: str = "main"
    n_workers: int = 1
    rows: list[Row] = field(default_factory=list)
    _store: SqliteStore | None = None
    _json_loaded: bool = False
    _dataset: LoadedDataset | None = None

    def value(self, name: str):
        return self.settings[name].value

    def faiss_threads(self) -> int:
        """--vq-threads, or the machine's cores shared evenly among xdist workers (never oversubscribed)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return self.value("threads") or max(1, cores // self.n_workers)

    # -- what is measured -------------------------------------------------------------------------------
    def dataset_spec(self) -> DatasetSpec:
        """The selected dataset; raises DatasetError (a usage error) when unset or unknown."""
        specs = known_datasets(self.value("datasets-file"), self.value("data-dir"))
        name = self.value("dataset")
        if not name:
            raise DatasetError(
                "no dataset selected: pass --vq-dataset NAME (or set VQ_DATASET / ini vq_dataset); "
                f"known: {', '.join(specs)}"
            )
        return get_dataset(name, specs)

    def dataset(self) -> LoadedDataset:
        """Open the selected dataset (vectors + ground truth) once per process; DatasetError when unusable."""
        if self._dataset is None:
            self._dataset = open_dataset(self.dataset_spec(), self.value("cache-dir"), gt_k=max(RECALL_KS))
        return self._dataset

    def sweep_path(self) -> Path:
        return self.value("sweep") or DEFAULT_SWEEP

    def cases(self) -> list[Case]:
        return expand_sweep(self.sweep_path(), self.dataset_spec().name)

    # -- where results go --------------------------------------------------------------------------------
    @property
    def run_path(self) -> Path:
        return Path(self.value("run-dir")) / self.run_id

    @property
    def json_path(self) -> Path:
        return self.run_path / "results.json"

    @property
    def arrays_dir(self) -> Path:
        return self.run_path / "arrays"

    def codec_path(self, dataset_fingerprint: str, case_id: str) -> Path:
        return Path(self.value("codebooks-dir")) / dataset_fingerprint / f"{case_id}.faissindex"

    def open_store(self) -> SqliteStore:
        """Open (and create) the database now, so a bad --vq-db-path fails before any case runs."""
        if self._store is None:
            self._store = SqliteStore(Path(self.value("db-path")))
        return self._store

    def record(self, row: Row) -> None:
        """Persist one finished case at once: SQLite row committed, JSON report rewritten atomically."""
        if not self._json_loaded:
            self._json_loaded = True
            if self.json_path.is_file():  # a resumed run id: keep the rows an earlier session recorded
                self.rows = [dict(r) for r in read_json_report(self.json_path)["rows"]] + self.rows
        self.rows = [r for r in self.rows if r["case_id"] != row["case_id"]] + [row]
        self.open_store().write([row])
        write_json_report(self.json_path, self.rows, self.meta())

    def meta(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "settings": {k: (None if r.value is None else str(r.value)) for k, r in self.settings.items()},
            "sources": {k: r.source for k, r in self.settings.items()},
            "db_path": str(self.value("db-path")),
        }

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
