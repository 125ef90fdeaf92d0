"""Merge the shards of one run into one database, and say exactly what is missing, failed or inconsistent.

Each shard of a sharded run writes its own SQLite file (SQLite locking is unreliable on NFS/Lustre), so a merge
job joins them afterwards. The manifests, not the folder names, decide what belongs together: they must agree on
the run and its case list, cover shard ids 0..N-1 once each and select every case at most once. A rerun folder
(`rerun-<stamp>/`, some cases run again with the same run id) supplies newer rows for the cases it ran. Rows are
copied with the store's INSERT OR REPLACE, so merging again (after a rerun, or twice by accident) converges on the
same database. Only what the manifests selected is copied: a stray row would otherwise pass for a measured case.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vq_benchmark.reports.atomic import atomic_write_bytes
from vq_benchmark.reports.errors import ReportError, one_line
from vq_benchmark.reports.json_report import LOG_NAME
from vq_benchmark.reports.jsonl import read_run_logs, run_logs
from vq_benchmark.reports.manifest import (
    MANIFEST_NAME,
    SHARD_DIR,
    Manifest,
    find_manifests,
    manifest_db_path,
    read_manifest,
    shard_dir_name,
)
from vq_benchmark.reports.schema import COLUMN_NAMES, Row, stored_row
from vq_benchmark.reports.sqlite_store import TABLE, SqliteStore

RERUN_OPTION = "--vq-case"
SHOWN_IDS = 5
_AGREE_ON = ("run_id", "num_shards", "case_list_sha256", "n_cases_total")


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote and what stands between it and a complete run."""

    out_db: Path
    run_id: str | None
    run_folder: Path | None  # the <run-dir>/<run_id> folder a rerun must write into
    shards_merged: int
    rows: tuple[Row, ...]  # every row written, sorted by case id
    status_counts: dict[str, int]
    missing: tuple[str, ...]  # selected cases without a row, in run order
    failed: tuple[str, ...]  # cases whose row has status failed, in run order
    problems: tuple[str, ...]  # one-line inconsistencies; any of them makes the merge not ok
    notes: tuple[str, ...] = ()  # worth knowing, harmless: a row log read because a database was gone
    missing_shards: tuple[int, ...] = ()  # their cases are unknown, so `missing` cannot list them
    reruns_merged: int = 0
    settings: Mapping[str, str | None] = field(default_factory=dict)  # the run's settings, from its manifest
    lost_cases_known: bool = False  # the manifests list the full case list, so a lost shard's cases are named

    @property
    def rows_written(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> bool:
        """Consistent and complete (failed cases are complete: they have a row saying why)."""
        return not self.problems and not self.missing

    @property
    def rerun_cases(self) -> tuple[str, ...]:
        """Missing, then failed case ids: what a rerun must select."""
        return tuple(dict.fromkeys((*self.missing, *self.failed)))


@dataclass(frozen=True)
class _Source:
    """A manifest that was read, and where (its folder holds the row log and, usually, the database)."""

    path: Path
    manifest: Manifest

    @property
    def label(self) -> str:
        m = self.manifest
        if m.kind == "rerun":
            return f"rerun ({self.path.parent})"
        return f"shard {m.shard_id} of {m.num_shards} ({self.path.parent})"


def merge_runs(run_dirs: Sequence[Path], out_db: Path) -> MergeResult:
    """Join the shards (and reruns) found under `run_dirs` (each a `<run-dir>/<run_id>` folder) into `out_db`.

    A rerun folder's rows replace the shards' rows of the cases it ran (later reruns last). Raises ReportError
    when a run dir holds no manifest or `out_db` is a shard's or rerun's own database (usage errors), StoreError
    when `out_db` cannot be written. Everything about the shards themselves lands in the result.
    """
    problems: list[str] = []
    notes: list[str] = []
    found = _read_manifests(run_dirs, problems)
    shards = _consistent([s for s in found if s.manifest.kind != "rerun"], problems)
    out_db = Path(out_db)
    _refuse_source_db(found, out_db)
    store = SqliteStore(out_db)  # before the reading: an unwritable --db fails fast
    try:
        if not shards:
            if found:
                problems.append("no run or shard manifest found, only reruns: nothing to merge them into")
            return MergeResult(out_db, None, None, 0, (), {}, (), (), tuple(problems), tuple(notes))
        run_id = shards[0].manifest.run_id
        shards, absent = _check_partition(shards, problems, notes)
        owner: dict[str, _Source | None] = dict(_owners(shards, problems))
        if absent:  # the lost shards' cases (None: no shard ran them), so they are missing and a rerun may fill them
            owner.update((c, None) for c in shards[0].manifest.all_case_ids if c not in owner)
        reruns = _reruns([s for s in found if s.manifest.kind == "rerun"], run_id, owner, problems)
        chosen: dict[str, Row] = {}
        for source in (*shards, *reruns):
            rows_here = _shard_rows(source, run_id, problems, notes)
            _report_strays(source, rows_here, owner, problems)
            selected_here = set(source.manifest.case_ids)
            mine = {c: r for c, r in rows_here.items() if c in owner and c in selected_here}
            if source.manifest.kind == "rerun":
                notes.append(f"{source.label}: {len(mine)} row(s) replace or fill those of the shards")
            else:
                mine = {c: r for c, r in mine.items() if owner[c] is source}
            chosen.update(mine)
        rows = tuple(chosen[c] for c in sorted(chosen))
        store.write(rows)
    finally:
        store.close()
    missing = tuple(c for c in owner if c not in chosen)
    failed = tuple(c for c in owner if c in chosen and chosen[c].get("status") == "failed")
    counts = dict(sorted(Counter(str(r.get("status")) for r in rows).items()))
    return MergeResult(
        out_db,
        run_id,
        _run_folder(shards[0]),
        len(shards),
        rows,
        counts,
        missing,
        failed,
        tuple(problems),
        tuple(notes),
        tuple(absent),
        len(reruns),
        dict(shards[0].manifest.settings),
        bool(shards[0].manifest.all_case_ids),
    )


def write_rerun_file(path: Path, case_ids: Iterable[str], extra_args: Sequence[str] = ()) -> Path:
    """Write `--vq-case=<id>` lines (after `extra_args`, one per line) for `pytest vq_cases @<path>`: pytest
    reads an argument file with argparse, one argument per line.

    An empty case list raises ValueError: `pytest vq_cases @empty-file` would rerun the whole sweep.
    """
    ids = list(dict.fromkeys(case_ids))
    if not ids:
        raise ValueError("write_rerun_file: no case ids; an empty file would select every case")
    lines = [*extra_args, *(f"{RERUN_OPTION}={c}" for c in ids)]
    bad = [a for a in lines if any(ch in a for ch in "\r\n") or a == f"{RERUN_OPTION}="]
    if bad:
        raise ValueError(f"write_rerun_file: {bad[0]!r} cannot be one line of an argument file")
    path = Path(path)
    atomic_write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))
    return path


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown if len(ids) <= SHOWN_IDS else f"{shown} and {len(ids) - SHOWN_IDS} more"


def _read_manifests(run_dirs: Sequence[Path], problems: list[str]) -> list[_Source]:
    if not run_dirs:
        raise ReportError("merge: no run folder given")
    shards: list[_Source] = []
    seen: set[Path] = set()
    for run_dir in run_dirs:
        paths = find_manifests(Path(run_dir))
        if not paths:
            raise ReportError(
                f"merge: no {MANIFEST_NAME} under {run_dir} (expected a <run-dir>/<run_id> folder holding "
                f"{MANIFEST_NAME} or shard-<i>-of-<N>/{MANIFEST_NAME})"
            )
        for path in paths:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                shard = _Source(path, read_manifest(path))
            except ReportError as exc:
                problems.append(f"unreadable file: {exc}")
                continue
            _check_folder_name(shard, problems)
            shards.append(shard)
    return shards


def _check_folder_name(shard: _Source, problems: list[str]) -> None:
    match = SHARD_DIR.match(shard.path.parent.name)
    m = shard.manifest
    if match and (int(match["shard_id"]), int(match["num_shards"])) != (m.shard_id, m.num_shards):
        problems.append(
            f"{shard.path}: its folder is named {match[0]} but it says shard {m.shard_id} of {m.num_shards}"
        )


def _consistent(shards: list[_Source], problems: list[str]) -> list[_Source]:
    """The shards that agree with the most common (run, case list); each other one is reported and left out,
    because copying its rows would mix two runs or two sweeps under one run id."""
    if not shards:
        return []
    keys = [tuple(getattr(s.manifest, k) for k in _AGREE_ON) for s in shards]
    reference = Counter(keys).most_common(1)[0][0]
    ref_path = shards[keys.index(reference)].path
    kept = []
    for shard, key in zip(shards, keys, strict=True):
        if key == reference:
            kept.append(shard)
            continue
        diffs = "; ".join(f"{n} {v!r} != {r!r}" for n, v, r in zip(_AGREE_ON, key, reference, strict=True) if v != r)
        problems.append(f"{shard.path} disagrees with {ref_path} ({diffs}); its rows are not copied")
    return sorted(kept, key=lambda s: s.manifest.shard_id)


def _check_partition(shards: list[_Source], problems: list[str], notes: list[str]) -> tuple[list[_Source], list[int]]:
    """Shard ids 0..N-1 exactly once, together selecting all n_cases_total cases; returns the shards without
    duplicates (the first of two copies of a shard is merged) and the missing shard ids."""
    num_shards = shards[0].manifest.num_shards
    by_id: dict[int, _Source] = {}
    for shard in shards:
        first = by_id.setdefault(shard.manifest.shard_id, shard)
        if first is not shard:
            problems.append(
                f"duplicate shard: {first.path} and {shard.path} both say shard "
                f"{shard.manifest.shard_id} of {num_shards}; only the first is merged"
            )
    shards = list(by_id.values())
    home = _run_folder(shards[0])
    absent = [i for i in range(num_shards) if i not in by_id]
    for i in absent:
        missing = f"shard {i} of {num_shards} is missing: no {home / shard_dir_name(i, num_shards) / MANIFEST_NAME}"
        if shards[0].manifest.all_case_ids:  # its cases are known: a rerun that runs them all completes the run
            notes.append(f"{missing}; its cases are listed as missing")
        else:
            problems.append(missing)
    total = shards[0].manifest.n_cases_total
    n_selected = len({c for s in shards for c in s.manifest.case_ids})
    if not absent and n_selected != total:
        problems.append(f"the {num_shards} shard(s) select {n_selected} distinct cases but the run has {total}")
    return shards, absent


def _run_folder(shard: _Source) -> Path:
    """`<run-dir>/<run_id>`: a shard's parent folder, an unsharded run's own."""
    folder = shard.path.parent
    return folder.parent if shard.manifest.kind == "shard" else folder


def _reruns(
    reruns: list[_Source], run_id: str, owner: Mapping[str, _Source | None], problems: list[str]
) -> list[_Source]:
    """The reruns of this run, oldest first; one of another run is left out, and cases a rerun ran that no shard
    selected are reported (their rows are not copied)."""
    kept = []
    for rerun in sorted(reruns, key=lambda r: (r.manifest.started_at, str(r.path))):
        if rerun.manifest.run_id != run_id:
            problems.append(f"{rerun.path} is a rerun of run {rerun.manifest.run_id!r}, not {run_id!r}; not copied")
            continue
        outside = [c for c in rerun.manifest.case_ids if c not in owner]
        if outside:
            problems.append(f"{rerun.label} ran {len(outside)} case(s) that no shard selected: {_ids(outside)}")
        kept.append(rerun)
    return kept


def _owners(shards: list[_Source], problems: list[str]) -> dict[str, _Source]:
    """Each selected case and the first shard selecting it, in run order; cases selected twice are reported once
    per pair of shards (a case listed twice by one shard too)."""
    owners: dict[str, _Source] = {}
    twice: dict[tuple[str, str], list[str]] = {}
    for shard in shards:
        seen: set[str] = set()
        for case_id in shard.manifest.case_ids:
            owner = shard if case_id in seen else owners.setdefault(case_id, shard)
            if owner is not shard or case_id in seen:
                twice.setdefault((owner.label, shard.label), []).append(case_id)
            seen.add(case_id)
    for (a, b), ids in twice.items():
        if a == b:
            problems.append(f"{a} lists {len(ids)} case(s) twice: {_ids(ids)}")
        else:
            problems.append(f"a case is in two shards: {a} and {b} both select {len(ids)} case(s): {_ids(ids)}")
    return owners


def _shard_rows(shard: _Source, run_id: str, problems: list[str], notes: list[str]) -> dict[str, Row]:
    """The shard's rows of `run_id` by case id: from its database, else (or for what the database lacks) from
    its row log next to the manifest."""
    rows: dict[str, Row] = {}
    db = manifest_db_path(shard.path, shard.manifest)
    log = shard.path.parent / LOG_NAME
    db_trouble = _read_db(db, run_id, rows, problems)
    wanted = set(shard.manifest.case_ids)
    if db_trouble is None and wanted <= rows.keys():
        return rows
    logs = run_logs(shard.path.parent)
    if not logs:
        if db_trouble is not None and wanted:
            problems.append(f"unreadable file: {shard.label}: {db_trouble}, and there is no {log} to fall back on")
        return rows
    try:
        logged = read_run_logs(shard.path.parent)
    except ReportError as exc:
        what = db_trouble or f"{len(wanted - rows.keys())} selected case(s) not in {db}"
        problems.append(f"unreadable file: {shard.label}: {what}, and {one_line(exc)}")
        return rows
    names = ", ".join(p.name for p in logs)
    from_log = {str(r["case_id"]): r for r in logged if r.get("run_id") == run_id}  # last row per case wins
    added = [c for c in from_log if c not in rows]
    for case_id in added:
        rows[case_id] = from_log[case_id]
    if db_trouble is not None:
        notes.append(f"{shard.label}: {db_trouble}; read {len(from_log)} row(s) from {names}")
    elif added:
        notes.append(f"{shard.label}: {len(added)} row(s) not in {db} were read from {names}")
    return rows


def _read_db(db: Path, run_id: str, into: dict[str, Row], problems: list[str]) -> str | None:
    """Read the rows of `run_id` into `into` read-only; return why the database could not be read, or None.

    Opened with mode=ro and not through SqliteStore: that would create a missing file and needs write access,
    which a finished shard on a shared file system need not grant."""
    if not db.is_file():
        return f"{db} is missing"
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"{db} cannot be opened ({one_line(exc, 200)})"
    try:
        conn.row_factory = sqlite3.Row
        found = [dict(r) for r in conn.execute(f"SELECT * FROM {TABLE} WHERE run_id = ?", (run_id,))]
    except sqlite3.Error as exc:
        return f"{db} cannot be read ({one_line(exc, 200)})"
    finally:
        conn.close()
    unknown = sorted({k for r in found for k in r if k not in COLUMN_NAMES})
    if unknown:
        problems.append(f"{db}: columns unknown to this vq-benchmark are not copied: {_ids(unknown)}")
    for index, raw in enumerate(found):
        row = {k: v for k, v in raw.items() if k in COLUMN_NAMES and v is not None}
        try:
            into[str(raw.get("case_id"))] = stored_row(f"{db}, row {index + 1}", row)
        except ValueError as exc:
            problems.append(f"unreadable file: {one_line(exc)}")
    return None


def _report_strays(
    source: _Source, found: dict[str, Row], owner: Mapping[str, _Source | None], problems: list[str]
) -> None:
    """Rows a shard holds for cases it did not select are not copied; say whose they would have been."""
    extra = set(found) - set(source.manifest.case_ids)
    nobody = sorted(c for c in extra if c not in owner)
    other = sorted(c for c in extra if c in owner)
    if nobody:
        problems.append(f"{source.label}: {len(nobody)} row(s) of cases in no manifest were not copied: {_ids(nobody)}")
    if other:
        problems.append(
            f"{source.label}: {len(other)} row(s) of cases another shard selected were not copied: {_ids(other)}"
        )


def _refuse_source_db(sources: list[_Source], out_db: Path) -> None:
    """Merging into a shard's or rerun's own database would leave it holding other folders' rows. Only an
    unsharded run may be merged into its own database (a no-op)."""
    target = out_db.resolve()
    for source in sources:
        if source.manifest.kind != "run" and manifest_db_path(source.path, source.manifest).resolve() == target:
            raise ReportError(f"merge: --db {out_db} is the database of {source.label}; merge into another file")
