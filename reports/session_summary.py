"""The end of a session's summary, below the results table: one line of counts, every file the run wrote, and the
`vq-benchmark report` command that prints the table again, so nobody has to hunt for where results went.

Pure functions of the session's rows and paths: the plugin only supplies them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from vq_benchmark.reports.errors import one_line
from vq_benchmark.reports.schema import Row

STATUSES = ("ok", "failed", "skipped")
REASON_CHARS = 90
REASON_GROUPS_SHOWN = 4
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _reason_key(reason: str) -> str:
    """Skip reasons differ by the numbers in them (`M=16 > d=8`, `needs ~412 MiB`): group by the words."""
    return _NUMBER.sub("#", reason)


def skip_groups(rows: Sequence[Row]) -> list[tuple[int, str]]:
    """(count, first reason) per group of skipped rows whose reasons differ only in numbers, largest group first."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.get("status") == "skipped":
            reason = one_line(str(row.get("error") or "no reason given"), 10_000)
            groups.setdefault(_reason_key(reason), []).append(reason)  # grouped whole, cut only for display
    ordered = sorted(groups.values(), key=lambda reasons: (-len(reasons), reasons[0]))
    return [(len(reasons), one_line(reasons[0], REASON_CHARS)) for reasons in ordered]


def counts_line(rows: Sequence[Row], *, not_recorded: int = 0) -> str:
    """`9 cases run: 6 ok, 1 failed, 2 skipped (2x M=16 > d=8: ...); 9 rows written`."""
    counts = {status: sum(1 for r in rows if r.get("status") == status) for status in STATUSES}
    other = len(rows) - sum(counts.values())
    parts = [f"{counts['ok']} ok", f"{counts['failed']} failed", f"{counts['skipped']} skipped"]
    groups = skip_groups(rows)
    if groups:
        shown = [f"{n}x {reason}" for n, reason in groups[:REASON_GROUPS_SHOWN]]
        if len(groups) > REASON_GROUPS_SHOWN:
            shown.append(f"{len(groups) - REASON_GROUPS_SHOWN} more reasons")
        parts[-1] += f" ({'; '.join(shown)})"
    if other:
        parts.append(f"{other} other")
    written = len(rows) - not_recorded
    tail = f"{written} row{'s' if written != 1 else ''} written"
    tail += f", {not_recorded} could not be recorded" if not_recorded else ""
    noun = "case" if len(rows) == 1 else "cases"
    return f"{len(rows)} {noun} run: {', '.join(parts)}; {tail}"


def _folder_contents(folder: Path) -> str:
    """`results.jsonl, results.json, manifest.json, arrays/ (4 files)`: what the run folder holds now."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: (p.is_dir(), p.name))
    except OSError:
        return "(not readable)"
    names = []
    for entry in entries:
        if entry.name.startswith("."):
            continue  # temp files of an atomic write in progress elsewhere
        if entry.is_dir():
            n = sum(1 for p in entry.rglob("*") if p.is_file())
            names.append(f"{entry.name}/ ({n} file{'s' if n != 1 else ''})")
        else:
            names.append(entry.name)
    return ", ".join(names) or "(empty)"


def _codec_line(rows: Sequence[Row]) -> str | None:
    """How many codec files this session wrote (trained here) and where; loaded or reused ones are not new."""
    written = [
        Path(str(r["codec_path"]))
        for r in rows
        if r.get("codec_path") and r.get("codec_cached") == 0 and r.get("codec_reused") != 1
    ]
    if not written:
        return None
    folders = sorted({str(p.parent) for p in written})
    where = folders[0] if len(folders) == 1 else f"{len(folders)} folders under {Path(folders[0]).parent}"
    return f"{len(written)} trained codec{'s' if len(written) != 1 else ''} in {where}"


def files_lines(
    rows: Sequence[Row],
    *,
    db_path: Path,
    run_id: str,
    run_folder: Path,
    gt_sources: Sequence[str] = (),
    extra: Sequence[tuple[str, Path]] = (),
) -> list[str]:
    """Every file (or folder of files) the session wrote, one per line, aligned. Ground truth computed in this
    process (`gt_sources`: an xdist controller computes it before its workers read it from the cache) or by a case
    (the rows' gt_source) is listed."""
    entries: list[tuple[str, str]] = [
        ("database", f"{db_path}  (table results, run_id='{run_id}')"),
        ("run folder", f"{run_folder}: {_folder_contents(run_folder)}"),
    ]
    codecs = _codec_line(rows)
    if codecs:
        entries.append(("codecs", codecs))
    sources = {*gt_sources, *(str(r.get("gt_source") or "") for r in rows)}
    for source in sorted(s for s in sources if s.startswith("computed")):
        entries.append(("ground truth", source))
    entries += [(label, str(path)) for label, path in extra]
    width = max(len(label) for label, _ in entries)
    return ["files written:", *(f"  {label:<{width}}  {text}" for label, text in entries)]


def reproduce_command(db_path: Path, run_id: str) -> str:
    """The `vq-benchmark report` command that prints this run's table again (shell-quoted)."""
    return f"vq-benchmark report {shlex.quote(str(db_path))} --run {shlex.quote(run_id)}"
