"""Where a report's numbers came from: the rows' own provenance columns plus the settings their run recorded.

A page of results is only worth sharing when a reader can tell which commit, library versions, machines, data and
seeds produced it, and which settings (and from where: option, env, ini, default) the run resolved. The rows carry
the first part; the run folder (`<run-dir>/<run_id>/results.json`, else its manifests) the second. Nothing here
raises on a missing or corrupt file: a report is still worth rendering, so the problem becomes a one-line note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vq_benchmark.reports.errors import ReportError, one_line, read_versioned_json
from vq_benchmark.reports.json_report import FORMAT_VERSION as REPORT_VERSION
from vq_benchmark.reports.json_report import REPORT_NAME
from vq_benchmark.reports.manifest import MANIFEST_NAME, find_manifests, read_manifest
from vq_benchmark.reports.schema import Row

SHOWN_DISTINCT = 6  # distinct values listed before "+N more"
UNKNOWN_SOURCE = "unknown (manifest.json)"


@dataclass(frozen=True)
class SettingLine:
    """One resolved setting of a run: `value` None when unset; `source` as the pytest header words it."""

    name: str
    value: str | None
    source: str


@dataclass(frozen=True)
class RunSettings:
    """The settings one run recorded, the file(s) they were read from, and notes on what could not be read."""

    run_id: str
    origin: tuple[str, ...]
    settings: tuple[SettingLine, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Provenance:
    """`facts`: (label, compact text) pairs from the rows; `runs`: each run's recorded settings, oldest first."""

    facts: tuple[tuple[str, str], ...]
    runs: tuple[RunSettings, ...]


def _text(value: object) -> str:
    return "(not recorded)" if value is None or value == "" else str(value)


def distinct(values: Iterable[object], fmt: Callable[[object], str] = _text) -> str:
    """`a` when all agree, else `a (3 cases); b (1 case)` most common first, cut after SHOWN_DISTINCT values."""
    counts: dict[str, int] = {}
    for value in values:
        key = fmt(value)
        counts[key] = counts.get(key, 0) + 1
    if len(counts) <= 1:
        return next(iter(counts), "(no rows)")
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [f"{k} ({n} case{'s' if n != 1 else ''})" for k, n in ordered[:SHOWN_DISTINCT]]
    more = len(ordered) - SHOWN_DISTINCT
    return "; ".join(shown) + (f"; +{more} more" if more > 0 else "")


def int_ranges(values: Iterable[object]) -> str:
    """Seeds as `0-4, 7` (runs of consecutive integers), non-integers and NULL listed after."""
    ints = sorted({v for v in values if type(v) is int})
    others = sorted({_text(v) for v in values if type(v) is not int})
    parts: list[str] = []
    start = prev = None
    for v in [*ints, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    return ", ".join(parts + others) or "(no rows)"


def _commit(row: Row) -> str:
    commit = row.get("git_commit")
    if not commit:
        return "(not recorded)"
    dirty = row.get("git_dirty")
    flag = {1: " (dirty: uncommitted changes)", 0: "", None: " (dirty unknown)"}.get(dirty, f" (dirty={dirty})")
    return f"{commit}{flag}"


def row_facts(rows: Sequence[Row]) -> tuple[tuple[str, str], ...]:
    """The provenance columns of `rows`, each reduced to its distinct values."""
    by_dataset: dict[str, list[object]] = {}
    for row in rows:
        by_dataset.setdefault(_text(row.get("dataset")), []).append(row.get("dataset_fingerprint"))
    fingerprints = "; ".join(f"{name}: {distinct(fps)}" for name, fps in sorted(by_dataset.items()))
    created = sorted(str(r["created_at"]) for r in rows if r.get("created_at"))
    recorded = (created[0] if created[0] == created[-1] else f"{created[0]} to {created[-1]}") if created else "-"
    return (
        ("runs", distinct(r.get("run_id") for r in rows)),
        ("git commit", distinct(_commit(r) for r in rows)),
        ("Python", distinct(r.get("python_version") for r in rows)),
        ("numpy", distinct(r.get("numpy_version") for r in rows)),
        ("faiss", distinct(r.get("faiss_version") for r in rows)),
        ("hosts", distinct(r.get("hostname") for r in rows)),
        ("CPU models", distinct(r.get("cpu_model") for r in rows)),
        ("dataset fingerprints", fingerprints or "-"),
        ("seeds", int_ranges(r.get("seed") for r in rows)),
        ("recorded (UTC)", recorded),
    )


def _settings_from(doc: object, where: str) -> tuple[dict[str, str | None], dict[str, str]]:
    """The `settings` (and `sources`, when present) of a results.json meta or a manifest document."""
    meta = doc.get("meta") if isinstance(doc, dict) and "rows" in doc else doc
    settings = meta.get("settings") if isinstance(meta, dict) else None
    if not isinstance(settings, dict) or not settings:
        raise ReportError(f"{where}: holds no settings")
    sources = meta.get("sources") if isinstance(meta, dict) else None
    values = {str(k): (None if v is None else str(v)) for k, v in settings.items()}
    return values, {str(k): str(v) for k, v in (sources or {}).items()} if isinstance(sources, dict) else {}


def _merge(found: Sequence[tuple[dict[str, str | None], dict[str, str]]]) -> tuple[SettingLine, ...]:
    """One line per setting, in the recorded order; shards that disagree (shard-id does) show every value they hold."""
    names = list(dict.fromkeys(name for values, _ in found for name in values))  # as the run recorded them
    lines = []
    for name in names:
        values = list(dict.fromkeys(values.get(name) for values, _ in found if name in values))
        sources = list(dict.fromkeys(sources.get(name, UNKNOWN_SOURCE) for _, sources in found))
        value = values[0] if len(values) == 1 else "varies: " + ", ".join(_text(v) for v in values)
        lines.append(SettingLine(name, value, sources[0] if len(sources) == 1 else "varies: " + ", ".join(sources)))
    return tuple(lines)


def _safe_name(run_id: str) -> bool:
    return bool(run_id) and run_id not in (".", "..") and "/" not in run_id and "\\" not in run_id


def run_settings(run_dir: Path, run_id: str) -> RunSettings:
    """The settings of `run_id` from `<run_dir>/<run_id>/results.json`, else from its shards' (or reruns')
    results.json and manifest.json; never raises."""
    folder = Path(run_dir) / run_id
    if not _safe_name(run_id):
        return RunSettings(run_id, (), (), (f"settings not looked up: run id {run_id!r} is not a folder name",))
    notes: list[str] = []
    top = folder / REPORT_NAME
    try:
        if top.is_file():
            doc = read_versioned_json(top, f"JSON report {top}", "report", REPORT_VERSION)
            return RunSettings(run_id, (str(top),), _merge([_settings_from(doc, f"JSON report {top}")]), ())
    except (ReportError, OSError) as exc:
        notes.append(one_line(exc, 300))
    found, origin = [], []
    manifests: list[Path] = []
    try:
        manifests = find_manifests(folder) if folder.is_dir() else []
    except OSError as exc:
        notes.append(f"{folder}: cannot list ({one_line(exc, 120)})")
    for manifest in manifests:
        report = manifest.parent / REPORT_NAME
        if manifest.parent != folder and report.is_file():  # a shard's report also knows the sources
            try:
                doc = read_versioned_json(report, f"JSON report {report}", "report", REPORT_VERSION)
                found.append(_settings_from(doc, f"JSON report {report}"))
                origin.append(str(report))
                continue
            except (ReportError, OSError) as exc:
                notes.append(one_line(exc, 300))
        try:
            values = dict(read_manifest(manifest).settings)
            if values:
                found.append((values, {}))
                origin.append(str(manifest))
        except (ReportError, OSError) as exc:
            notes.append(one_line(exc, 300))
    if not found and not notes:
        notes.append(f"settings not recorded (no {REPORT_NAME} or {MANIFEST_NAME} under {folder})")
    elif not found:
        notes.append(f"settings not recorded (no readable {REPORT_NAME} under {folder})")
    return RunSettings(run_id, tuple(origin), _merge(found) if found else (), tuple(notes))


def gather_provenance(rows: Sequence[Row], run_dir: Path | None, run_order: Sequence[str] = ()) -> Provenance:
    """Facts from `rows` and the settings of each of their runs (in `run_order`, then by id) under `run_dir`."""
    ids = {str(r.get("run_id")) for r in rows}
    ordered = [r for r in run_order if r in ids] + sorted(ids - set(run_order))
    if run_dir is None:
        runs = tuple(RunSettings(r, (), (), ("settings not looked up (no run folder given)",)) for r in ordered)
    else:
        runs = tuple(run_settings(run_dir, r) for r in ordered)
    return Provenance(row_facts(rows), runs)


def settings_table(run: RunSettings) -> list[tuple[str, str, str]]:
    """(name, value, source) rows for display; unset values read `(unset)` as in the pytest header."""
    return [(s.name, "(unset)" if s.value is None else s.value, s.source) for s in run.settings]
