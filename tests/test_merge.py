"""Shard manifests and the merge of a sharded run: every selected case lands once, and every gap is named."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.plugin import merge_cmd
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.jsonl import JsonlLog
from vq_benchmark.reports.manifest import (
    MANIFEST_NAME,
    Manifest,
    find_manifests,
    manifest_db_path,
    read_manifest,
    shard_dir_name,
    write_manifest,
)
from vq_benchmark.reports.merge import merge_runs, write_rerun_file
from vq_benchmark.reports.rows import make_row
from vq_benchmark.reports.sqlite_store import SqliteStore

pytestmark = pytest.mark.smoke

RUN = "run-1"
_HYP = settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ---------------------------------------------------------------- building shard folders


def case_list(n: int) -> list[str]:
    return [f"dummy-pq-M{i}-nbits8" for i in range(n)]


def digest(cases: Sequence[str]) -> str:
    return hashlib.sha256("".join(f"{c}\n" for c in cases).encode()).hexdigest()


def make(case_id: str, status: str = "ok", run_id: str = RUN) -> dict:
    identity = {"case_id": case_id, "dataset": "dummy", "method": "pq", "params_json": '{"M": 4}'}
    measured = {"mse": 0.25, "recall_at_10": 0.75, "code_bytes": 4} if status == "ok" else None
    error = None if status == "ok" else "boom"
    context = {"run_id": run_id, "worker": "shard", "created_at": "2026-01-01T00:00:00Z"}
    return make_row(identity=identity, status=status, measured=measured, error=error, context=context)


def manifest(shard_id: int, num_shards: int, selected: Sequence[str], cases: Sequence[str], **over) -> Manifest:
    fields = {
        "run_id": RUN,
        "shard_id": shard_id,
        "num_shards": num_shards,
        "shard_mode": "round-robin",
        "case_ids": tuple(selected),
        "n_cases_total": len(cases),
        "case_list_sha256": digest(cases),
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:01:00Z",
        "exit_status": 0,
        "host": "node1",
        "git_commit": "abc123",
        "slurm": {"SLURM_ARRAY_TASK_ID": str(shard_id)},
        "db": "results.db",
        "settings": {"dataset": "dummy", "sweep": None},
    }
    return Manifest(**{**fields, **over})


def write_rows(folder: Path, rows: Sequence[dict], db: Path | None = None) -> None:
    store = SqliteStore(db or folder / "results.db")
    store.write(rows)
    store.close()
    log = JsonlLog(folder / "results.jsonl")
    for row in rows:
        log.append(row)


def write_shard(
    run_dir: Path,
    shard_id: int,
    num_shards: int,
    selected: Sequence[str],
    cases: Sequence[str],
    *,
    no_row: Sequence[str] = (),
    failed: Sequence[str] = (),
    **over,
) -> Path:
    folder = run_dir / shard_dir_name(shard_id, num_shards)
    m = manifest(shard_id, num_shards, selected, cases, **over)
    rows = [make(c, "failed" if c in failed else "ok", m.run_id) for c in selected if c not in no_row]
    write_rows(folder, rows)
    write_manifest(folder, m)
    return folder


def sharded_run(tmp_path: Path, n_cases: int = 7, num_shards: int = 3, **kw) -> tuple[Path, list[str]]:
    run_dir = tmp_path / "runs" / RUN
    cases = case_list(n_cases)
    for i in range(num_shards):
        write_shard(run_dir, i, num_shards, cases[i::num_shards], cases, **kw)
    return run_dir, cases


def db_rows(path: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT * FROM results ORDER BY run_id, case_id").fetchall()


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vq-benchmark")
    merge_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# ---------------------------------------------------------------- manifest


def test_manifest_round_trips_as_sorted_json(tmp_path: Path) -> None:
    m = manifest(1, 3, ["b", "a"], ["a", "b", "c"], finished_at=None, exit_status=None)
    path = write_manifest(tmp_path / "shard-1-of-3", m)
    assert path == tmp_path / "shard-1-of-3" / MANIFEST_NAME
    assert read_manifest(path) == m
    doc = json.loads(path.read_text())
    assert list(doc) == sorted(doc) and doc["format_version"] == 1 and doc["case_ids"] == ["b", "a"]
    assert not list(path.parent.glob(".*.tmp"))


@given(
    cases=st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), unique=True, max_size=8),
    slurm=st.dictionaries(st.sampled_from(["SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID"]), st.text(max_size=5)),
    exit_status=st.none() | st.integers(-(2**31), 2**31),
)
@_HYP
def test_any_manifest_reads_back_equal(tmp_path: Path, cases: list[str], slurm: dict, exit_status: int | None) -> None:
    m = manifest(0, 1, cases, cases, slurm=slurm, exit_status=exit_status)
    assert read_manifest(write_manifest(tmp_path, m)) == m


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "corrupt JSON"),
        (b"[1, 2]", "not a vq-benchmark manifest"),
        (b'{"rows": []}', "not a vq-benchmark manifest"),
        (b'{"format_version": 2}', "newer vq-benchmark"),
        (b'{"format_version": "1"}', "format_version must be a positive integer"),
        (b'{"format_version": 1, "run_id": "r"}', "missing shard_id"),
    ],
)
def test_untrusted_manifest_is_one_line_naming_the_file(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(content)
    with pytest.raises(ReportError) as info:
        read_manifest(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("shard_id", "1", "shard_id must be an integer"),
        ("shard_id", True, "shard_id must be an integer"),
        ("shard_id", 3, "shard_id must be in 0..num_shards-1"),
        ("case_ids", "abc", "case_ids must be a list"),
        ("case_ids", ["a\nb"], "one-line"),
        ("slurm", {"SLURM_JOB_ID": 5}, "slurm must map text to text"),
        ("settings", {"seed": 5}, "settings must map text to text or null"),
        ("finished_at", 5, "finished_at must be text or null"),
    ],
)
def test_bad_manifest_values_are_refused(tmp_path: Path, key: str, value: object, expected: str) -> None:
    doc = manifest(0, 3, ["a"], ["a", "b", "c"]).to_json()
    path = tmp_path / MANIFEST_NAME
    path.write_text(json.dumps({**doc, key: value}))
    with pytest.raises(ReportError, match=expected):
        read_manifest(path)
    with pytest.raises(ValueError, match=expected):
        Manifest(**{**doc, key: value})


def test_find_manifests_top_first_then_shards_in_numeric_order(tmp_path: Path) -> None:
    assert find_manifests(tmp_path / "nowhere") == []
    for name in ("rerun-20260102T000000Z", "shard-10-of-12", "shard-2-of-12", "other", "shard-0-of-12"):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST_NAME).write_text("{}")
    (tmp_path / "shard-3-of-12").mkdir()  # a folder without a manifest is not listed
    (tmp_path / MANIFEST_NAME).write_text("{}")
    found = [p.parent.name for p in find_manifests(tmp_path)]
    assert found == [tmp_path.name, "shard-0-of-12", "shard-2-of-12", "shard-10-of-12", "rerun-20260102T000000Z"]


def test_manifest_db_resolves_against_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert manifest_db_path(folder / MANIFEST_NAME, manifest(0, 1, ["a"], ["a"])) == folder / "results.db"
    elsewhere = manifest(0, 1, ["a"], ["a"], db=str(tmp_path / "all.db"))
    assert manifest_db_path(folder / MANIFEST_NAME, elsewhere) == tmp_path / "all.db"


def test_manifest_kind_defaults_from_the_shard_count_and_older_files_read(tmp_path: Path) -> None:
    assert manifest(0, 1, [], []).kind == "run" and manifest(0, 2, [], []).kind == "shard"
    assert manifest(0, 1, [], [], kind="rerun").kind == "rerun"
    with pytest.raises(ValueError, match="kind must be one of"):
        manifest(0, 1, [], [], kind="partial")
    doc = manifest(1, 2, ["a"], ["a", "b"]).to_json()
    del doc["kind"], doc["settings"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    m = read_manifest(tmp_path / MANIFEST_NAME)
    assert m.kind == "shard" and dict(m.settings) == {}


# ---------------------------------------------------------------- merge


def test_complete_merge_has_one_row_per_case(tmp_path: Path) -> None:
    run_dir, cases = sharded_run(tmp_path)
    out = tmp_path / "merged.db"
    result = merge_runs([run_dir], out)
    assert result.ok and not result.failed and not result.problems and not result.notes
    assert result.run_id == RUN and result.shards_merged == 3 and result.rows_written == len(cases)
    assert result.status_counts == {"ok": len(cases)}
    assert [r[1] for r in db_rows(out)] == sorted(cases)


def test_merging_twice_changes_nothing_and_keeps_other_runs(tmp_path: Path) -> None:
    run_dir, cases = sharded_run(tmp_path, failed=["dummy-pq-M1-nbits8"])
    out = tmp_path / "merged.db"
    write_rows(tmp_path, [make("older-case", run_id="run-0")], db=out)
    merge_runs([run_dir], out)
    first = db_rows(out)
    second_result = merge_runs([run_dir], out)
    assert db_rows(out) == first and len(first) == len(cases) + 1
    assert second_result.failed == ("dummy-pq-M1-nbits8",) and not second_result.missing


def test_missing_shard_folder_is_named(tmp_path: Path) -> None:
    run_dir, _ = sharded_run(tmp_path)
    (run_dir / "shard-1-of-3" / MANIFEST_NAME).unlink()
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert not result.ok
    assert [p for p in result.problems if "shard 1 of 3 is missing" in p and "shard-1-of-3" in p]
    assert result.missing_shards == (1,) and result.missing == ()
    assert cli(["merge", str(run_dir), "--db", str(tmp_path / "m2.db")]) == 1


def test_case_selected_by_two_shards_is_reported(tmp_path: Path) -> None:
    run_dir = tmp_path / RUN
    cases = case_list(4)
    write_shard(run_dir, 0, 2, cases[:3], cases)
    write_shard(run_dir, 1, 2, cases[2:], cases)
    result = merge_runs([run_dir], tmp_path / "merged.db")
    (problem,) = [p for p in result.problems if "two shards" in p]
    assert cases[2] in problem and "shard 0 of 2" in problem and "shard 1 of 2" in problem
    assert [r[1] for r in db_rows(tmp_path / "merged.db")] == cases  # the first shard's row of the case


@pytest.mark.parametrize(("key", "value"), [("case_list_sha256", "0" * 64), ("run_id", "run-2"), ("n_cases_total", 9)])
def test_disagreeing_manifest_is_reported_and_its_rows_left_out(tmp_path: Path, key: str, value: object) -> None:
    run_dir, cases = sharded_run(tmp_path)
    folder = run_dir / "shard-2-of-3"
    write_shard(run_dir, 2, 3, cases[2::3], cases, **{key: value})
    result = merge_runs([run_dir], tmp_path / "merged.db")
    disagree = [p for p in result.problems if "disagrees" in p]
    assert len(disagree) == 1 and str(folder) in disagree[0] and key in disagree[0]
    assert any("shard 2 of 3 is missing" in p for p in result.problems)
    assert {r[1] for r in db_rows(tmp_path / "merged.db")} == set(cases) - set(cases[2::3])


def test_case_without_row_is_missing_and_goes_to_the_rerun_file(tmp_path: Path) -> None:
    lost, broke = "dummy-pq-M4-nbits8", "dummy-pq-M2-nbits8"
    run_dir, _ = sharded_run(tmp_path, no_row=[lost], failed=[broke])
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.missing == (lost,) and result.failed == (broke,) and not result.ok and not result.problems
    assert result.status_counts == {"failed": 1, "ok": 5}
    path = write_rerun_file(tmp_path / "rerun.txt", result.rerun_cases)
    assert path.read_text() == f"--vq-case={lost}\n--vq-case={broke}\n"


def test_rerun_file_is_an_argparse_argument_file(tmp_path: Path) -> None:
    ids = ["a-1", "b.2_x", "a-1"]
    path = write_rerun_file(tmp_path / "rerun.txt", ids, ["--vq-run-id=run 1"])
    parser = argparse.ArgumentParser(fromfile_prefix_chars="@")  # how pytest reads @FILE
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--vq-case", action="append", default=[])
    parser.add_argument("--vq-run-id")
    args = parser.parse_args(["vq_cases", f"@{path}"])
    assert args.paths == ["vq_cases"] and args.vq_case == ["a-1", "b.2_x"] and args.vq_run_id == "run 1"
    with pytest.raises(ValueError, match="one line"):
        write_rerun_file(tmp_path / "bad.txt", ["a"], ["--vq-run-id=x\ny"])
    with pytest.raises(ValueError, match="every case"):
        write_rerun_file(tmp_path / "empty.txt", [])
    assert not (tmp_path / "empty.txt").exists()


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_shard_without_its_database_merges_from_its_row_log(tmp_path: Path, damage: str) -> None:
    run_dir, cases = sharded_run(tmp_path)
    db = run_dir / "shard-1-of-3" / "results.db"
    if damage == "delete":
        db.unlink()
    else:
        db.write_bytes(b"this is not sqlite" * 100)
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.ok and result.rows_written == len(cases)
    assert len(result.notes) == 1 and "results.jsonl" in result.notes[0] and str(db) in result.notes[0]


def test_database_missing_rows_are_filled_from_the_row_log(tmp_path: Path) -> None:
    run_dir, cases = sharded_run(tmp_path)
    folder = run_dir / "shard-0-of-3"
    JsonlLog(folder / "results.jsonl").append(make(cases[3], "failed"))  # logged later than the db row
    with contextlib.closing(sqlite3.connect(folder / "results.db")) as conn, conn:
        conn.execute("DELETE FROM results WHERE case_id = ?", (cases[0],))
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.ok and result.rows_written == len(cases) and result.failed == ()  # the db row wins for M3
    assert any("1 row(s) not in" in n for n in result.notes)


def test_shard_with_neither_database_nor_log_is_unreadable(tmp_path: Path) -> None:
    run_dir, cases = sharded_run(tmp_path)
    folder = run_dir / "shard-1-of-3"
    (folder / "results.db").unlink()
    (folder / "results.jsonl").unlink()
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.missing == tuple(cases[1::3])
    assert any(p.startswith("unreadable file:") and "shard 1 of 3" in p for p in result.problems)


def test_corrupt_manifest_and_corrupt_log_are_unreadable_files(tmp_path: Path) -> None:
    run_dir, _ = sharded_run(tmp_path)
    (run_dir / "shard-0-of-3" / MANIFEST_NAME).write_text("{oops")
    (run_dir / "shard-1-of-3" / "results.db").unlink()
    (run_dir / "shard-1-of-3" / "results.jsonl").write_text("{broken\n")
    result = merge_runs([run_dir], tmp_path / "merged.db")
    unreadable = [p for p in result.problems if p.startswith("unreadable file:")]
    assert len(unreadable) == 2 and "corrupt JSON" in unreadable[0] and "line 1" in unreadable[1]
    assert all("\n" not in p for p in result.problems)


def test_unsharded_run_with_its_database_elsewhere_merges(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / RUN
    shared = tmp_path / "db" / "all.db"
    cases = case_list(3)
    write_rows(run_dir, [make(c) for c in cases], db=shared)
    write_rows(tmp_path / "other", [make("someone-else", run_id="run-0")], db=shared)
    write_manifest(run_dir, manifest(0, 1, cases, cases, db=str(shared)))
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.ok and result.rows_written == 3 and [r[1] for r in db_rows(tmp_path / "merged.db")] == cases
    assert merge_runs([run_dir], shared).ok  # merging an unsharded run into its own database is a no-op
    assert len(db_rows(shared)) == 4


def write_rerun(run_dir: Path, stamp: str, cases: Sequence[str], status: str = "ok", **over) -> Path:
    folder = run_dir / f"rerun-{stamp}"
    m = manifest(0, 1, cases, cases, kind="rerun", started_at=f"2026-01-0{stamp}", **over)
    write_rows(folder, [make(c, status, m.run_id) for c in cases])
    write_manifest(folder, m)
    return folder


def test_rerun_folders_replace_and_fill_the_shards_rows(tmp_path: Path) -> None:
    lost, broke = "dummy-pq-M4-nbits8", "dummy-pq-M2-nbits8"
    run_dir, cases = sharded_run(tmp_path, no_row=[lost], failed=[broke])
    write_rerun(run_dir, "2", [lost, broke], status="failed")
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.missing == () and result.failed == (lost, broke) and result.reruns_merged == 1
    write_rerun(run_dir, "3", [broke])  # a later rerun wins
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.failed == (lost,) and result.rows_written == len(cases) and not result.problems
    assert len([n for n in result.notes if n.startswith("rerun (")]) == 2


def test_rerun_of_another_run_or_of_unknown_cases_is_a_problem(tmp_path: Path) -> None:
    run_dir, _ = sharded_run(tmp_path, failed=["dummy-pq-M0-nbits8"])
    write_rerun(run_dir, "2", ["dummy-pq-M0-nbits8"], run_id="run-9")
    write_rerun(run_dir, "3", ["not-a-case"])
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.failed == ("dummy-pq-M0-nbits8",)
    assert any("rerun of run 'run-9'" in p for p in result.problems)
    assert any("no shard selected: not-a-case" in p for p in result.problems)
    assert "not-a-case" not in {r[1] for r in db_rows(tmp_path / "merged.db")}
    with pytest.raises(ReportError, match="is the database of rerun"):
        merge_runs([run_dir], run_dir / "rerun-3" / "results.db")


def test_only_reruns_is_a_problem(tmp_path: Path) -> None:
    write_rerun(tmp_path / RUN, "2", ["a"])
    result = merge_runs([tmp_path / RUN], tmp_path / "merged.db")
    assert result.problems == ("no run or shard manifest found, only reruns: nothing to merge them into",)


def test_rows_no_manifest_selected_are_not_copied(tmp_path: Path) -> None:
    run_dir, cases = sharded_run(tmp_path)
    write_rows(run_dir / "shard-0-of-3", [make("stray-case"), make(cases[1])])  # M1 belongs to shard 1
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.rows_written == len(cases) and "stray-case" not in {r[1] for r in db_rows(tmp_path / "merged.db")}
    assert any("in no manifest" in p and "stray-case" in p for p in result.problems)
    assert any("another shard selected" in p and cases[1] in p for p in result.problems)


def test_same_shard_in_two_run_folders_is_a_duplicate(tmp_path: Path) -> None:
    run_dir, cases = sharded_run(tmp_path)
    copy = tmp_path / "copy" / RUN
    write_shard(copy, 1, 3, cases[1::3], cases)
    result = merge_runs([run_dir, copy], tmp_path / "merged.db")
    assert result.rows_written == len(cases)
    (problem,) = result.problems
    assert problem.startswith("duplicate shard:") and str(copy) in problem


def test_shard_folder_name_must_match_its_manifest(tmp_path: Path) -> None:
    run_dir, _ = sharded_run(tmp_path, n_cases=4, num_shards=2)
    (run_dir / "shard-1-of-2").rename(run_dir / "shard-5-of-9")
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.rows_written == 4 and any("shard-5-of-9" in p for p in result.problems)


def test_shard_count_that_does_not_add_up_is_a_problem(tmp_path: Path) -> None:
    run_dir = tmp_path / RUN
    cases = case_list(5)
    write_shard(run_dir, 0, 2, cases[:2], cases)
    write_shard(run_dir, 1, 2, cases[2:4], cases)  # case 4 was never selected
    result = merge_runs([run_dir], tmp_path / "merged.db")
    assert result.problems == ("the 2 shard(s) select 4 distinct cases but the run has 5",)


def test_usage_errors_raise(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no manifest\.json under"):
        merge_runs([tmp_path], tmp_path / "merged.db")
    run_dir, _ = sharded_run(tmp_path)
    with pytest.raises(ReportError, match="is the database of shard 0 of 3"):
        merge_runs([run_dir], run_dir / "shard-0-of-3" / "results.db")


@given(
    n_cases=st.integers(0, 9),
    num_shards=st.integers(1, 4),
    data=st.data(),
)
@_HYP
def test_any_partition_merges_to_exactly_the_union(n_cases: int, num_shards: int, data: st.DataObject) -> None:
    cases = case_list(n_cases)
    owner = data.draw(st.lists(st.integers(0, num_shards - 1), min_size=n_cases, max_size=n_cases))
    no_row = data.draw(st.sets(st.sampled_from(cases)) if cases else st.just(set()))
    failed = data.draw(st.sets(st.sampled_from(cases)) if cases else st.just(set()))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / RUN
        for i in range(num_shards):
            mine = [c for c, o in zip(cases, owner, strict=True) if o == i]
            write_shard(run_dir, i, num_shards, mine, cases, no_row=sorted(no_row), failed=sorted(failed))
        result = merge_runs([run_dir], Path(tmp) / "merged.db")
        merged = [r[1] for r in db_rows(Path(tmp) / "merged.db")]
    assert not result.problems
    assert merged == sorted(set(cases) - no_row)
    assert set(result.missing) == no_row and set(result.failed) == failed - no_row
    assert set(result.rerun_cases) == no_row | failed and result.ok == (not no_row)


# ---------------------------------------------------------------- command line


def test_cli_complete_run_prints_the_summary_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, cases = sharded_run(tmp_path)
    assert cli(["merge", str(run_dir), "--db", str(tmp_path / "merged.db")]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in cases) and "recall@10" in out
    assert "complete:" in out and "problem" not in out and "pytest vq_cases" not in out
    assert not (run_dir / merge_cmd.RERUN_NAME).exists()


def test_cli_incomplete_run_writes_the_rerun_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = sharded_run(tmp_path, no_row=["dummy-pq-M4-nbits8"], failed=["dummy-pq-M2-nbits8"])
    assert cli(["merge", str(run_dir), "--db", str(tmp_path / "merged.db")]) == 1
    out = capsys.readouterr().out
    rerun = run_dir / merge_cmd.RERUN_NAME
    assert f"pytest vq_cases @{rerun}" in out
    assert "missing: 1 case(s): dummy-pq-M4-nbits8" in out and "failed: 1 case(s): dummy-pq-M2-nbits8" in out
    assert "failed: boom" in out  # the summary row of the failed case
    settings = f"--vq-run-id={RUN}\n--vq-run-dir={run_dir.parent.resolve()}\n--vq-dataset=dummy\n"
    assert rerun.read_text() == settings + "--vq-case=dummy-pq-M4-nbits8\n--vq-case=dummy-pq-M2-nbits8\n"
    custom = tmp_path / "todo.txt"
    assert cli(["merge", str(run_dir), "--db", str(tmp_path / "merged.db"), "--rerun-file", str(custom)]) == 1
    assert f"pytest vq_cases @{custom}" in capsys.readouterr().out and custom.read_text() == rerun.read_text()


def test_cli_lists_the_first_20_of_many(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = case_list(25)
    run_dir, _ = sharded_run(tmp_path, n_cases=25, num_shards=1, no_row=cases)
    assert cli(["merge", str(run_dir), "--db", str(tmp_path / "merged.db")]) == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("missing:")]
    assert line.startswith("missing: 25 cases, the first 20:") and cases[19] in line and cases[20] not in line


def test_cli_inconsistent_run_prints_each_problem_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = sharded_run(tmp_path)
    (run_dir / "shard-2-of-3" / MANIFEST_NAME).unlink()
    assert cli(["merge", str(run_dir), "--db", str(tmp_path / "merged.db")]) == 1
    out = capsys.readouterr().out
    problems = [x for x in out.splitlines() if x.startswith("problem:")]
    assert len(problems) == 1 and "shard-2-of-3" in problems[0]
    assert "missing shard(s) 2 are unknown" in out


@pytest.mark.parametrize("where", ["no-manifest", "db-is-a-directory", "db-under-a-file", "db-of-a-shard"])
def test_cli_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    run_dir, _ = sharded_run(tmp_path)
    (tmp_path / "a-file").write_text("x")
    target, db = {
        "no-manifest": (tmp_path, tmp_path / "merged.db"),
        "db-is-a-directory": (run_dir, tmp_path),
        "db-under-a-file": (run_dir, tmp_path / "a-file" / "merged.db"),
        "db-of-a-shard": (run_dir, run_dir / "shard-1-of-3" / "results.db"),
    }[where]
    assert cli(["merge", str(target), "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vq-benchmark: error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_cli_needs_a_run_dir_and_db(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["merge", "somewhere"])
    assert info.value.code == 2 and "--db" in capsys.readouterr().err
