"""Does recording a case cost the same for the 1st and the N-th case?

Records N realistic rows the way a session does now (SqliteStore.write + JsonlLog.append per case) and the way it
did before (SqliteStore.write + rewriting the whole results.json per case), and prints the mean and median per-row
time of the first and the last 100 rows with their ratio last/first. Flat recording has a ratio near 1 (target
<= 1.2, judged on the median because single fsync stalls skew a mean); the old way grows with the number of rows
already recorded, so a sweep's recording time was quadratic.

    python benchmarks/recording.py --rows 2000                 # about 2 minutes, nearly all of it the old way
    python benchmarks/recording.py --rows 2000 --old-rows 0    # the new way only, a few seconds
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vq_benchmark.reports.json_report import LOG_NAME, REPORT_NAME, rebuild_json_report, write_json_report
from vq_benchmark.reports.jsonl import JsonlLog
from vq_benchmark.reports.rows import make_row
from vq_benchmark.reports.schema import Row
from vq_benchmark.reports.sqlite_store import SqliteStore

WINDOW = 100
TARGET_RATIO = 1.2
RUN_ID = "20260101T000000Z-abcdef"


def realistic_row(i: int) -> Row:
    """A row shaped like a real ok case: every metric, artifact paths, provenance, a note on some cases."""
    m = 4 << (i % 4)
    case_id = f"glove-50d-pq-M{m}-nbits8-{i:05d}"
    measured = {
        "factory": f"PQ{m}x8np",
        "metric_type": "l2",
        "n_base": 400_000,
        "n_queries": 10_000,
        "dim": 50,
        "n_train": 100_000,
        "code_bytes": m,
        "compression_ratio": 200 / m,
        "mse": 0.1 / (1 + i % 7),
        "relative_mse": 0.01 / (1 + i % 5),
        **{f"recall_at_{k}": 0.3 + 0.001 * (i % 300) for k in (1, 10, 100)},
        **{f"one_recall_at_{k}": 0.5 + 0.001 * (i % 300) for k in (1, 10, 100)},
        "train_s": 1.5 + (i % 11) / 10,
        "encode_s": 0.8,
        "search_s": 0.25,
        "qps": 40_000.0 + i,
        "threads": 2,
        "neighbors_path": f"results/runs/{RUN_ID}/arrays/{case_id}.ids.npy",
        "distances_path": f"results/runs/{RUN_ID}/arrays/{case_id}.dist.npy",
        "codec_path": f"results/codebooks/3f2a9c/{case_id}.faissindex",
        "notes": "training sample 100000 < 156000 recommended by faiss" if i % 10 == 0 else None,
    }
    context = {
        "run_id": RUN_ID,
        "worker": "main",
        "created_at": "2026-01-01T00:00:00+00:00",
        "seed": 0,
        "dataset_fingerprint": "sha256:3f2a9c0d1e2b4a5c",
        "gt_source": "computed (cache results/cache/gt/3f2a9c.k100.bin)",
        "git_commit": "259d5b8" + "0" * 33,
        "git_dirty": 0,
        "python_version": "3.11.7",
        "numpy_version": "2.3.0",
        "faiss_version": "1.15.1",
        "hostname": "node-017",
        "cpu_model": "AMD EPYC 7B13",
        "omp_wait_policy": "PASSIVE",
    }
    identity = {"case_id": case_id, "dataset": "glove-50d", "method": "pq", "params_json": json.dumps({"M": m})}
    return make_row(identity=identity, status="ok", measured=measured, context=context)


def time_each(rows: list[Row], record: Callable[[Row], None]) -> list[float]:
    times = []
    for row in rows:
        t0 = time.perf_counter()
        record(row)
        times.append(time.perf_counter() - t0)
    return times


def record_append_only(rows: list[Row], workdir: Path) -> list[float]:
    store = SqliteStore(workdir / "new.db")
    log = JsonlLog(workdir / "new-run" / LOG_NAME)

    def record(row: Row) -> None:
        store.write([row])
        log.append(row)

    try:
        return time_each(rows, record)
    finally:
        store.close()


def record_rewrite_json(rows: list[Row], workdir: Path) -> list[float]:
    store = SqliteStore(workdir / "old.db")
    report = workdir / "old-run" / REPORT_NAME
    recorded: list[Row] = []
    meta = {"run_id": RUN_ID}

    def record(row: Row) -> None:
        store.write([row])
        recorded.append(row)
        write_json_report(report, recorded, meta)

    try:
        return time_each(rows, record)
    finally:
        store.close()


def _window(times: list[float]) -> str:
    ms = [1e3 * t for t in times]
    return f"mean {statistics.fmean(ms):.2f} ms, median {statistics.median(ms):.2f} ms, max {max(ms):.1f} ms"


def report_lines(label: str, times: list[float], target: float | None = None) -> str:
    """The verdict uses the median: one fsync stall of a busy shared disk moves a 100-row mean by several %."""
    first, last = times[:WINDOW], times[-WINDOW:]
    mean_ratio = statistics.fmean(last) / statistics.fmean(first)
    median_ratio = statistics.median(last) / statistics.median(first)
    verdict = (
        "" if target is None else f"  (target median <= {target}: {'met' if median_ratio <= target else 'MISSED'})"
    )
    return (
        f"{label}: {len(times)} rows, {sum(times):.2f} s in all\n"
        f"  first {WINDOW}: {_window(first)} | last {WINDOW}: {_window(last)}\n"
        f"  last/first: median {median_ratio:.2f}, mean {mean_ratio:.2f}{verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows recorded the new way (default 2000)")
    parser.add_argument(
        "--old-rows", type=int, default=None, help="rows recorded the old way (default: --rows; 0 skips it)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a fresh temp dir)")
    args = parser.parse_args(argv)
    old_rows = args.rows if args.old_rows is None else args.old_rows
    if args.rows < 2 * WINDOW or (old_rows and old_rows < 2 * WINDOW):
        parser.error(f"--rows and --old-rows need at least {2 * WINDOW} rows")

    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    rows = [realistic_row(i) for i in range(max(args.rows, old_rows))]
    print(f"row size: {len(json.dumps(rows[0]))} bytes of JSON, {len(rows[0])} columns")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="vq-recording-") as tmp:
        workdir = Path(tmp)
        new = record_append_only(rows[: args.rows], workdir)
        print(report_lines("new, per row: SQLite write + JSONL append", new, TARGET_RATIO))
        t0 = time.perf_counter()
        rebuild_json_report(workdir / "new-run", {"run_id": RUN_ID})
        print(f"new, once at the end: results.json from the log in {time.perf_counter() - t0:.3f} s")
        if old_rows:
            old = record_rewrite_json(rows[:old_rows], workdir)
            print(report_lines("old, per row: SQLite write + whole results.json rewritten", old))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
