"""The end-of-session lines: counts with skip reasons grouped, the files written, the command to see the table again."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from vq_benchmark.reports.session_summary import (
    counts_line,
    files_lines,
    reproduce_command,
    skip_groups,
)


def _row(case_id: str, status: str, error: str | None = None, **extra: object) -> dict:
    return {"case_id": case_id, "status": status, "error": error, **extra}


def test_skip_reasons_that_differ_only_in_numbers_are_one_group() -> None:
    rows = [
        _row("a", "skipped", "M=16 > d=8: more sub-quantizers than dimensions"),
        _row("b", "skipped", "M=32 > d=8: more sub-quantizers than dimensions"),
        _row("c", "skipped", "case c needs ~412.5 MiB but only 60.0 MiB is available"),
        _row("d", "ok"),
    ]
    assert skip_groups(rows) == [
        (2, "M=16 > d=8: more sub-quantizers than dimensions"),
        (1, "case c needs ~412.5 MiB but only 60.0 MiB is available"),
    ]
    line = counts_line(rows)
    assert line == (
        "4 cases run: 1 ok, 0 failed, 3 skipped (2x M=16 > d=8: more sub-quantizers than dimensions; "
        "1x case c needs ~412.5 MiB but only 60.0 MiB is available); 4 rows written"
    )


def test_counts_name_rows_that_reached_no_file() -> None:
    rows = [_row("a", "ok"), _row("b", "failed", "disk full")]
    assert (
        counts_line(rows, not_recorded=1)
        == "2 cases run: 1 ok, 1 failed, 0 skipped; 1 row written, 1 could not be recorded"
    )
    assert counts_line([_row("a", "ok")]).startswith("1 case run: 1 ok,")


def test_many_skip_reasons_are_cut_to_the_largest_groups() -> None:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    rows = [_row(f"{w}{i}", "skipped", f"{w} missing") for n, w in enumerate(words) for i in range(n + 1)]
    line = counts_line(rows)
    assert "6x zeta missing; 5x epsilon missing; 4x delta missing; 3x gamma missing; 2 more reasons" in line


@given(st.lists(st.sampled_from(["ok", "failed", "skipped"]), max_size=30), st.data())
def test_counts_add_up(statuses: list[str], data: st.DataObject) -> None:
    rows = [_row(str(i), s, f"reason {i % 3}" if s != "ok" else None) for i, s in enumerate(statuses)]
    unrecorded = data.draw(st.integers(0, len(rows)))
    line = counts_line(rows, not_recorded=unrecorded)
    ok, failed, skipped = (int(re.search(rf"(\d+) {s}", line)[1]) for s in ("ok", "failed", "skipped"))  # type: ignore[index]
    assert (ok, failed, skipped) == tuple(statuses.count(s) for s in ("ok", "failed", "skipped"))
    assert line.startswith(f"{len(rows)} case")
    written = len(rows) - unrecorded
    assert f"; {written} row{'s' if written != 1 else ''} written" in line
    assert sum(n for n, _ in skip_groups(rows)) == skipped


def test_files_lines_list_the_run_folder_new_codecs_and_computed_ground_truth(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "r1"
    (folder / "arrays").mkdir(parents=True)
    for name in ("results.jsonl", "manifest.json", ".tmp-results.json-x"):
        (folder / name).write_text("{}")
    for name in ("a.ids.npy", "a.dist.npy"):
        (folder / "arrays" / name).write_bytes(b"")
    codecs = tmp_path / "codebooks" / "fp"
    rows = [
        _row("a", "ok", codec_path=str(codecs / "a.faissindex"), codec_cached=0, gt_source="computed (cached in c)"),
        _row("b", "ok", codec_path=str(codecs / "b.faissindex"), codec_cached=1, gt_source="computed (cached in c)"),
        _row("c", "ok", codec_path=str(codecs / "c.faissindex"), codec_cached=0, codec_reused=1, gt_source="given"),
    ]
    lines = files_lines(
        rows,
        db_path=tmp_path / "b.db",
        run_id="r1",
        run_folder=folder,
        gt_sources=["computed (cached in d)", "cached e"],  # an xdist controller's own: its rows say "cached"
        extra=[("benchmark JSON", tmp_path / "bj")],
    )
    assert lines == [
        "files written:",
        f"  database        {tmp_path / 'b.db'}  (table results, run_id='r1')",
        f"  run folder      {folder}: manifest.json, results.jsonl, arrays/ (2 files)",
        f"  codecs          1 trained codec in {codecs}",
        "  ground truth    computed (cached in c)",
        "  ground truth    computed (cached in d)",
        f"  benchmark JSON  {tmp_path / 'bj'}",
    ]


def test_reproduce_command_survives_the_shell() -> None:
    command = reproduce_command(Path("/data/my runs/bench.db"), "20261207T000000Z-abc123")
    assert shlex.split(command) == [
        "vq-benchmark",
        "report",
        "/data/my runs/bench.db",
        "--run",
        "20261207T000000Z-abc123",
    ]
