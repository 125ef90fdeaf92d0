"""The case matrix of a session: which datasets, which cases, and which earlier rows `--vq-resume` may skip.

Datasets come from `--vq-dataset a,b,c`; without it, from the `datasets` lists of the sweep entries. An entry's
own `datasets` list narrows it to those of the selected datasets it names. Every dataset name is checked here,
before collection ends (an unknown one is a usage error naming where it was written); no vectors are read except
to learn d for `bits_per_dim` entries, where a format keeps d outside its header.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vq_benchmark.fixtures.registry import DatasetError
from vq_benchmark.fixtures.session import DatasetPool
from vq_benchmark.plugin.layout import ok_rows_for
from vq_benchmark.plugin.settings import Settings, dataset_names
from vq_benchmark.vq_cases.sweep import DEFAULT_SWEEP, Case, expand_entries, read_entries, select_datasets


def plan_cases(settings: Settings, pool: DatasetPool) -> list[Case]:
    """Every case of the sweep for every selected dataset, dataset by dataset (reads the sweep and datasets
    files; never vectors, except d of a `bits_per_dim` dataset whose format does not keep d in a header)."""
    entries = read_entries(settings.sweep or DEFAULT_SWEEP)
    for entry in entries:
        for name in entry.datasets or ():
            try:
                pool.spec(name)
            except DatasetError as exc:
                raise DatasetError(f"{entry.where}: datasets: {exc}") from None
    names = select_datasets(entries, dataset_names(settings.dataset, settings.sources.get("dataset", "")))
    if not names:
        pool.spec(None)  # raises: no dataset selected
    specs = [pool.spec(name).name for name in names]
    return expand_entries(entries, specs, dim_of=pool.dim, repeats=settings.repeats, base_seed=settings.seed)


def datasets_in_order(cases: Iterable[Case]) -> list[str]:
    """The datasets of `cases` in the order they first appear (the run order)."""
    return list(dict.fromkeys(c.dataset for c in cases))


class ResumeIndex:
    """The ok rows `--vq-resume` skips for, per dataset fingerprint, from the merged database and this process's
    own (a shard's or rerun's), each read once."""

    def __init__(self, db_paths: Iterable[Path]) -> None:
        self.db_paths = list(dict.fromkeys(db_paths))
        self._by_fingerprint: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {}

    def find(self, case_id: str, fingerprint: str) -> tuple[Path, dict[str, Any]] | None:
        """(database, row) of the latest ok row of this case measured on data with this fingerprint."""
        rows = self._by_fingerprint.get(fingerprint)
        if rows is None:
            rows = {}
            for db in self.db_paths:
                rows.update({c: (db, r) for c, r in ok_rows_for(db, fingerprint).items()})
            self._by_fingerprint[fingerprint] = rows
        return rows.get(case_id)
