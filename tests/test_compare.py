"""`vq-benchmark compare`: verdicts and changes on a real run against a derived one (values edited with SQL), the
three argument forms, output formats, tolerance parsing (hypothesis), one-line errors, and two real identical sweeps
that compare `same` on every non-timing metric under the default tolerances (the determinism the defaults rely on)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sweeps import run_sweep

from vq_benchmark.plugin.cli import main
from vq_benchmark.reports.compare import (
    Tolerance,
    compare_rows,
    default_tolerance,
    format_tolerances,
    judge,
    parse_tolerances,
)
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.schema import METRIC_NAMES, TIMING_COLUMNS

REPO = Path(__file__).resolve().parent.parent
CASES = "sq or (M8 and not opq)"  # sq4, sq8, sqfp16, pq-M8-nbits8, ivf-nlist64-innerpq-M8-nbits8: all train fast
NEW_RUN = "20990101T000000Z-newnew"
SQ8, SQ4, FP16 = "dummy-small-sq8", "dummy-small-sq4", "dummy-small-sqfp16"
PQ, IVF, ADDED = "dummy-small-pq-M8-nbits8", "dummy-small-ivf-nlist64-innerpq-M8-nbits8", "dummy-small-added"


def _sweep(tmp: Path, db: Path, keyword: str, codebooks: str) -> None:
    run_sweep(tmp, "-k", keyword, "-p", "no:xdist", db=db, codebooks=codebooks)


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("compare")
    _sweep(tmp, tmp / "bench.db", CASES, "codebooks")
    return tmp / "bench.db"


def _rows(db: Path, run_id: str | None = None) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM results")]
    conn.close()
    return {r["case_id"]: r for r in rows if run_id is None or r["run_id"] == run_id}


@pytest.fixture(scope="module")
def two_runs(real_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real run plus NEW_RUN: its rows copied, then a recall drop beyond tolerance (sq8) and one within it
    (sqfp16), a 20% QPS drop (sqfp16), a lost value (sq8 relative_mse), a gain (sq8 recall@1, ivf recall@100), sq4
    removed, a case added and pq turned failed."""
    db = tmp_path_factory.mktemp("two") / "two.db"
    shutil.copy(real_db, db)
    (base_run,) = {r["run_id"] for r in _rows(db).values()}
    conn = sqlite3.connect(db)
    with conn:
        for row in _rows(db).values():
            row.update(run_id=NEW_RUN, created_at="2099-01-01T00:00:00+00:00")
            names = ", ".join(f'"{k}"' for k in row)
            conn.execute(f"INSERT INTO results ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        edits = [
            ("recall_at_10 = recall_at_10 - 0.02, recall_at_1 = recall_at_1 + 0.005, relative_mse = NULL", SQ8),
            ("recall_at_10 = recall_at_10 - 0.005, qps = qps * 0.8", FP16),
            ("recall_at_100 = recall_at_100 + 0.01, qps = qps * 1.05", IVF),
            ("status = 'failed', error = 'boom', recall_at_10 = NULL, qps = NULL", PQ),
            (f"case_id = '{ADDED}'", SQ4),
        ]
        for assignments, case in edits:
            conn.execute(f"UPDATE results SET {assignments} WHERE run_id = ? AND case_id = ?", (NEW_RUN, case))
    conn.close()
    return db, base_run


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["compare", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc, out, _ = _cli(capsys, *argv, "--format", "json")
    return rc, json.loads(out)


def test_verdicts_and_changes(two_runs: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    db, base_run = two_runs
    rc, doc = _json(capsys, f"{db}:{base_run}", str(db), "--tolerance", "recall_at_10=0.01,qps=10%", "--all")
    assert rc == 0  # no --fail-on-regression
    lines = {(x["case_id"], x["metric"]): x for x in doc["lines"]}
    assert {k[0] for k in lines} == {SQ8, FP16, IVF, PQ}
    assert doc["only_in_base"] == [SQ4] and doc["only_in_new"] == [ADDED]
    assert doc["cases"] == {SQ8: "regressed", FP16: "regressed", IVF: "improved", PQ: "regressed"}
    assert doc["summary"] == "4 cases compared, 3 regressed, 1 improved, 0 same; only in base: 1; only in new: 1"
    base, new = _rows(db, base_run), _rows(db, NEW_RUN)
    expected = {
        (SQ8, "recall_at_10"): "regressed",
        (SQ8, "recall_at_1"): "improved",
        (SQ8, "relative_mse"): "missing",
        (SQ8, "code_bytes"): "same",
        (FP16, "recall_at_10"): "same",  # 0.005 within 0.01
        (FP16, "qps"): "regressed",  # -20% against 10%
        (IVF, "qps"): "same",  # +5%
        (IVF, "recall_at_100"): "improved",
        (IVF, "train_s"): "same",
        (PQ, "status"): "regressed",
    }
    assert {k: lines[k]["verdict"] for k in expected} == expected
    assert lines[(PQ, "status")]["new"] == "failed: boom" and (PQ, "qps") not in lines  # status only
    for case, name in [(SQ8, "recall_at_10"), (SQ8, "recall_at_1"), (FP16, "qps"), (IVF, "recall_at_100")]:
        b, n = base[case][name], new[case][name]
        assert lines[(case, name)]["base"] == b and lines[(case, name)]["new"] == n
        assert lines[(case, name)]["change"] == pytest.approx(n - b, abs=1e-12)
        assert lines[(case, name)]["change_pct"] == pytest.approx(100 * (n - b) / b)
    assert lines[(FP16, "qps")]["change_pct"] == pytest.approx(-20.0)


def test_table_hides_same_and_fail_on_regression(
    two_runs: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, base_run = two_runs
    rc, out, err = _cli(capsys, f"{db}:{base_run}", f"{db}:{NEW_RUN}", "--fail-on-regression")
    assert rc == 1 and not err
    assert "recall_at_10 ↑" in out and "qps ↑" in out and "-20.0%" in out and "failed: boom" in out
    assert not [line for line in out.splitlines() if line.endswith(" same")]  # default: lines not same only
    assert f"only in base: {SQ4}" in out and f"only in new: {ADDED}" in out
    assert out.rstrip().splitlines()[-1].startswith("4 cases compared, 3 regressed")
    # wide enough tolerances: only the failed case and the removed one remain regressions
    rc, doc = _json(capsys, f"{db}:{base_run}", str(db), "--tolerance", "recall_at_10=0.05,qps=25%", "-k", "sq or ivf")
    assert rc == 0 and doc["cases"] == {SQ8: "regressed", FP16: "same", IVF: "improved"}  # sq8: missing mse
    rc, doc = _json(capsys, f"{db}:{base_run}", str(db), "-k", "ivf", "--fail-on-regression")
    assert rc == 0 and doc["cases"] == {IVF: "improved"} and not doc["only_in_base"]
    rc, _, _ = _cli(capsys, f"{db}:{base_run}", str(db), "-k", "sq4 or ivf", "--fail-on-regression")
    assert rc == 1  # sq4 is absent from NEW: a regression for CI


def test_run_id_form_and_colon_paths(
    two_runs: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db, base_run = two_runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VQ_DB_PATH", str(db))
    rc, doc = _json(capsys, base_run, NEW_RUN, "--dataset", "dummy-small")
    assert rc == 0 and doc["base"]["run_id"] == base_run and doc["new"]["run_id"] == NEW_RUN and doc["lines"]
    odd = tmp_path / "odd:name.db"
    shutil.copy(db, odd)
    rc, doc = _json(capsys, f"{odd}:{base_run}", str(odd))  # a whole existing path wins; else split at the last ':'
    assert rc == 0 and doc["base"] == {"db": str(odd), "run_id": base_run} and doc["new"]["run_id"] == NEW_RUN


def test_identical_runs_are_same(two_runs: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    db, base_run = two_runs
    rc, out, _ = _cli(capsys, f"{db}:{base_run}", f"{db}:{base_run}", "--fail-on-regression")
    assert rc == 0 and "no differences beyond tolerance" in out
    assert out.rstrip().endswith("5 cases compared, 0 regressed, 0 improved, 5 same; only in base: 0; only in new: 0")


def test_csv_parses(two_runs: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    db, base_run = two_runs
    rc, out, err = _cli(capsys, f"{db}:{base_run}", str(db), "--format", "csv", "--metrics", "qps,recall_at_10")
    assert rc == 0 and err.startswith("4 cases compared")
    parsed = list(csv.DictReader(io.StringIO(out)))
    by_key = {(r["case_id"], r["metric"]): r for r in parsed}
    # no tolerance given for a timing: its -20% is shown, not judged
    assert by_key[(FP16, "qps")]["verdict"] == "changed" and float(by_key[(FP16, "qps")]["change_pct"]) < -19
    assert {r["metric"] for r in parsed if r["verdict"] not in ("only_in_base", "only_in_new")} <= {
        "qps",
        "recall_at_10",
        "status",
    }
    assert [r["case_id"] for r in parsed if r["verdict"] == "only_in_base"] == [SQ4]


_tolerance = st.builds(Tolerance, st.floats(0, 1e300, allow_nan=False, allow_infinity=False), st.booleans())


@given(st.dictionaries(st.sampled_from(METRIC_NAMES), _tolerance, max_size=6))
def test_tolerance_spec_round_trips(tolerances: dict[str, Tolerance]) -> None:
    spec = format_tolerances(tolerances)
    assert parse_tolerances([spec]) == tolerances
    halves = [
        format_tolerances(dict(list(tolerances.items())[:2])),
        format_tolerances(dict(list(tolerances.items())[2:])),
    ]
    assert parse_tolerances(halves) == tolerances  # repeated --tolerance options join


def test_tolerance_kinds_and_defaults() -> None:
    assert parse_tolerances(["qps=10%, recall_at_10 = 0.01", "train_s=1e-3"]) == {
        "qps": Tolerance(10.0, relative=True),
        "recall_at_10": Tolerance(0.01),
        "train_s": Tolerance(0.001),
    }
    assert Tolerance(10, relative=True).allows(200.0, -20.0) and not Tolerance(10, relative=True).allows(200.0, 21.0)
    assert Tolerance(10).allows(1e6, 10.0) and not Tolerance(10).allows(1e6, 10.5)
    assert not Tolerance(50, relative=True).allows(0.0, 1e-12)  # relative to a zero base: only no change
    assert all(default_tolerance(n) is None for n in ("qps", "train_s", "encode_s", "latency_p99_ms"))
    assert judge("qps", 100.0, 50.0, default_tolerance("qps")).verdict == "changed"  # timings: judged only when asked
    assert judge("qps", 100.0, 100.0, default_tolerance("qps")).verdict == "same"
    assert default_tolerance("recall_at_10") == Tolerance(1e-9)
    assert judge("threads", 2, 1, default_tolerance("threads")).verdict == "changed"  # no direction: never regressed
    assert judge("code_bytes", 8, 16, default_tolerance("code_bytes")).verdict == "regressed"
    assert judge("recall_at_10", None, 0.5, Tolerance(0.0)).verdict == "added"
    for bad in ("qps=abc", "qps=-1", "qps=nan", "qps=inf%", "nosuch=1", "qps", "=1"):
        with pytest.raises(ReportError, match="--tolerance"):
            parse_tolerances([bad])


def test_status_transitions() -> None:
    ok, skipped = {"case_id": "c", "status": "ok", "qps": 1.0}, {"case_id": "c", "status": "skipped"}
    failed = {"case_id": "c", "status": "failed", "error": "boom\ntraceback"}
    for base, new, want in [
        (ok, failed, "regressed"),
        (ok, skipped, "regressed"),
        (failed, ok, "improved"),
        (failed, skipped, "same"),
    ]:
        lines, cases, only_base, only_new = compare_rows([base], [new], ["qps"], {})
        assert cases == {"c": want} and [x.metric for x in lines] == ["status"] and not only_base + only_new
    assert compare_rows([ok], [failed], ["qps"], {})[0][0].new == "failed: boom"  # one line of the error


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["{tmp}/missing.db", "{db}"], "missing.db"),
        (["{db}", "{db}:nope"], "no run 'nope'"),
        (["{db}", "nope-run"], "'nope-run'"),
        (["{db}", "{db}", "--tolerance", "nosuch=0.1"], "--tolerance 'nosuch=0.1': unknown metric"),
        (["{db}", "{db}", "--tolerance", "qps=abc"], "--tolerance 'qps=abc'"),
        (["{db}", "{db}", "--metrics", "qps,bogus"], "--metrics"),
        (["{db}", "{db}", "-k", "sq8 or"], "-k 'sq8 or'"),
        (["{db}", "{db}", "--dataset", "other"], "no rows of either run"),
    ],
)
def test_errors_are_one_line(
    real_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VQ_DB_PATH", str(tmp_path / "default.db"))
    rc, out, err = _cli(capsys, *(a.format(tmp=tmp_path, db=real_db) for a in argv))
    assert rc == 2 and not out
    assert len(err.strip().splitlines()) == 1 and err.startswith("vq-benchmark: error: ") and needle in err


def test_two_real_sweeps_compare_same(real_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Same cases, same seed, codecs trained afresh (new codebooks dir): every quality metric is identical."""
    db = tmp_path / "again.db"
    shutil.copy(real_db, db)
    (base_run,) = {r["run_id"] for r in _rows(db).values()}
    keyword = "sq8 or (pq and M8 and not opq and not ivf)"
    _sweep(tmp_path, db, keyword, "fresh-codebooks")
    new = [r for r in _rows(db).values() if r["run_id"] != base_run]
    assert len(new) == 2 and all(r["codec_cached"] == 0 for r in new)
    quality = [n for n in METRIC_NAMES if n not in TIMING_COLUMNS]
    rc, doc = _json(capsys, f"{db}:{base_run}", str(db), "-k", keyword, "--metrics", ",".join(quality), "--all")
    assert rc == 0 and doc["new"]["run_id"] != base_run and set(doc["cases"]) == {SQ8, PQ}
    assert len(doc["lines"]) == 2 * len(quality)
    assert [x for x in doc["lines"] if x["verdict"] != "same"] == []
    rc, _, _ = _cli(
        capsys, f"{db}:{base_run}", str(db), "-k", keyword, "--metrics", ",".join(quality), "--fail-on-regression"
    )
    assert rc == 0
