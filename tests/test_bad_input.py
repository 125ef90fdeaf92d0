"""Bad-input matrix: nothing a user feeds the harness ends a sweep with INTERNALERROR or a traceback.

Usage errors (settings, paths, data files, existing result files) stop the session before the first case with
exit code 4 and ONE line naming the option or file; case-level problems fail that case and keep every other row.
Most runs are in-process (pytester.runpytest) to keep the matrix fast; the xdist rows run in subprocesses.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")
RNG = np.random.default_rng(7)
N_BASE, N_Q, DIM = 600, 12, 8


def _out(tmp: Path) -> dict[str, Path]:
    return {
        "db-path": tmp / "out" / "bench.db",
        "run-dir": tmp / "out" / "runs",
        "cache-dir": tmp / "cache",
        "codebooks-dir": tmp / "codebooks",
    }


def _args(tmp: Path, **override: object) -> list[str]:
    paths = {**_out(tmp), **override}
    return [f"--vq-{k}={v}" for k, v in paths.items()] + ["-p", "no:cacheprovider"]


def _toy(tmp: Path, *, base=None, queries=None, gt: tuple | None = None, metric: str = "l2") -> list[str]:
    """A user dataset under tmp/data; `gt` = (ids, dists) arrays to write as given ground truth."""
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    base = RNG.standard_normal((N_BASE, DIM)).astype(np.float32) if base is None else base
    queries = RNG.standard_normal((N_Q, DIM)).astype(np.float32) if queries is None else queries
    for name, arr in (("base", base), ("queries", queries)):
        if isinstance(arr, np.ndarray):
            np.save(data / f"{name}.npy", arr)
    entry = [
        "[datasets.toy]",
        f'base = "{base if isinstance(base, str) else "base.npy"}"',
        f'queries = "{queries if isinstance(queries, str) else "queries.npy"}"',
        f'metric = "{metric}"',
    ]
    if gt is not None:
        np.save(data / "gt_ids.npy", gt[0])
        np.save(data / "gt_d.npy", gt[1])
        entry += ['ground_truth = "gt_ids.npy"', 'ground_truth_distances = "gt_d.npy"']
    (tmp / "ds.toml").write_text("\n".join(entry) + "\n")
    return ["--vq-dataset=toy", f"--vq-datasets-file={tmp / 'ds.toml'}", f"--vq-data-dir={data}", "-k", "sq8"]


def _exact_gt(base: np.ndarray, queries: np.ndarray, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    d = ((queries[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return ids.astype(np.int64), np.take_along_axis(d, ids, axis=1).astype(np.float32)


def _gt_variant(mutate: Callable[[np.ndarray, np.ndarray], tuple]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        base = RNG.standard_normal((N_BASE, DIM)).astype(np.float32)
        queries = RNG.standard_normal((N_Q, DIM)).astype(np.float32)
        ids, d = _exact_gt(base, queries)
        return _toy(tmp, base=base, queries=queries, gt=mutate(ids, d))

    return make


def _base_with(value: float) -> np.ndarray:
    base = RNG.standard_normal((N_BASE, DIM)).astype(np.float32)
    base[17, 3] = value
    return base


def _nan_base_given_gt(tmp: Path) -> list[str]:
    """Ground truth is given, so nothing computes it: only an explicit scan of the base can find the NaN."""
    base = RNG.standard_normal((N_BASE, DIM)).astype(np.float32)
    queries = RNG.standard_normal((N_Q, DIM)).astype(np.float32)
    gt = _exact_gt(base, queries)
    base[17, 3] = np.nan
    return _toy(tmp, base=base, queries=queries, gt=gt)


def _foreign_db(tmp: Path) -> list[str]:
    db = tmp / "foreign.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, case_id TEXT, value REAL)")
    conn.commit()
    conn.close()
    return ["--vq-dataset=dummy-small", "-k", "sq8", f"--vq-db-path={db}"]


def _garbage_file(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _reused_run(tmp: Path, content: bytes) -> list[str]:
    _garbage_file(tmp, "out/runs/again/results.json", content)
    return ["--vq-dataset=dummy-small", "-k", "sq8", "--vq-run-id=again"]


BAD_SWEEP = b'[[sweep]]\nmethod = "lattice"\n'


def _file_in_the_way(tmp: Path) -> Path:
    return _garbage_file(tmp, "plain-file", b"x")


# (id, builder(tmp) -> extra args, text the one error line must contain (may use {tmp}))
USAGE_ERRORS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("seed-negative", lambda t: ["--vq-dataset=dummy-small", "--vq-seed=-1"], "--vq-seed"),
    ("seed-too-big", lambda t: ["--vq-dataset=dummy-small", f"--vq-seed={2**63}"], "--vq-seed"),
    ("threads-not-int", lambda t: ["--vq-dataset=dummy-small", "--vq-threads=many"], "--vq-threads"),
    ("run-id-path", lambda t: ["--vq-dataset=dummy-small", "--vq-run-id=../../x"], "--vq-run-id"),
    ("run-id-absolute", lambda t: ["--vq-dataset=dummy-small", "--vq-run-id=/abs"], "--vq-run-id"),
    ("db-is-directory", lambda t: ["--vq-dataset=dummy-small", f"--vq-db-path={t}"], "--vq-db-path"),
    (
        "db-under-file",
        lambda t: ["--vq-dataset=dummy-small", f"--vq-db-path={_file_in_the_way(t)}/x.db"],
        "--vq-db-path",
    ),
    ("db-unknown-user", lambda t: ["--vq-dataset=dummy-small", "--vq-db-path=~nosuchuser9/x.db"], "--vq-db-path"),
    ("run-dir-read-only", lambda t: ["--vq-dataset=dummy-small", "--vq-run-dir=/sys/kernel/vq"], "--vq-run-dir"),
    (
        "codebooks-under-file",
        lambda t: ["--vq-dataset=dummy-small", f"--vq-codebooks-dir={_file_in_the_way(t)}/cb"],
        "--vq-codebooks-dir",
    ),
    (
        "cache-under-file",
        lambda t: ["--vq-dataset=dummy-small", f"--vq-cache-dir={_file_in_the_way(t)}/c"],
        "--vq-cache-dir",
    ),
    ("db-foreign-schema", _foreign_db, "foreign.db"),
    (
        "db-not-sqlite",
        lambda t: ["--vq-dataset=dummy-small", f"--vq-db-path={_garbage_file(t, 'junk.db', b'not sqlite' * 500)}"],
        "junk.db",
    ),
    ("json-corrupt", lambda t: _reused_run(t, b'{"format_version": 1, "rows": ['), "results.json"),
    (
        "json-newer",
        lambda t: _reused_run(t, json.dumps({"format_version": 99, "meta": {}, "rows": []}).encode()),
        "results.json",
    ),
    ("dataset-missing", lambda t: [], "--vq-dataset"),
    ("dataset-unknown", lambda t: ["--vq-dataset=nosuch"], "nosuch"),
    (
        "datasets-file-bad-toml",
        lambda t: ["--vq-dataset=x", f"--vq-datasets-file={_garbage_file(t, 'bad.toml', b'[datasets.x')}"],
        "bad.toml",
    ),
    (
        "sweep-unknown-method",
        lambda t: ["--vq-dataset=dummy-small", f"--vq-sweep={_garbage_file(t, 's.toml', BAD_SWEEP)}"],
        "s.toml",
    ),
    ("base-nan-given-gt", lambda t: _nan_base_given_gt(t), "base.npy"),
    ("base-inf-computed-gt", lambda t: _toy(t, base=_base_with(np.inf)), "base.npy"),
    ("base-overflow", lambda t: _toy(t, base=_base_with(3e38)), "base.npy"),
    (
        "queries-nan",
        lambda t: _toy(t, queries=np.full((N_Q, DIM), np.nan, dtype=np.float32)),
        "queries.npy",
    ),
    ("base-is-directory", lambda t: _toy(t, base=str(t)), "base"),
    ("base-is-dev-zero", lambda t: _toy(t, base="/dev/zero"), "/dev/zero"),
    ("base-not-npy", lambda t: _toy(t, base=str(_garbage_file(t, "base.txt", b"1 2 3\n" * 100))), "base.txt"),
    ("gt-integer-distances", _gt_variant(lambda i, d: (i, d.astype(np.int64))), "gt_d.npy"),
    ("gt-wrong-rows", _gt_variant(lambda i, d: (i[:-1], d[:-1])), "gt_ids.npy"),
    ("gt-id-out-of-range", _gt_variant(lambda i, d: (i + N_BASE, d)), "gt_ids.npy"),
    ("gt-repeated-id", _gt_variant(lambda i, d: (np.concatenate([i[:, :1], i[:, :-1]], axis=1), d)), "gt_ids.npy"),
    ("gt-unsorted", _gt_variant(lambda i, d: (i, d[:, ::-1].copy())), "gt_d.npy"),
    (
        "gt-nan-distance",
        _gt_variant(lambda i, d: (i, np.where(np.arange(100) == 5, np.nan, d).astype(np.float32))),
        "gt_d.npy",
    ),
]


@pytest.mark.parametrize(
    ("make", "expected"), [(m, e) for _, m, e in USAGE_ERRORS], ids=[i for i, _, _ in USAGE_ERRORS]
)
def test_usage_error_is_one_line_before_any_case(pytester: pytest.Pytester, tmp_path: Path, make, expected) -> None:
    extra = make(tmp_path)
    res = pytester.runpytest(CASES_DIR, *_args(tmp_path), *extra)
    text = res.stdout.str() + res.stderr.str()
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR, text[-3000:]
    assert len(errors) == 1, text[-3000:]
    assert expected.format(tmp=tmp_path) in errors[0], errors[0]
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").rglob("*.jsonl"))


def _db_rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["case_id"]: dict(r) for r in conn.execute("SELECT * FROM results")}
    finally:
        conn.close()


def test_non_finite_metric_fails_its_case_and_every_other_row_is_kept(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Base values beyond float16's range make SQfp16's reconstruction inf: that case fails with the assertion's
    own message and its mse is stored NULL with the reason; the other cases of the sweep are recorded ok."""
    base = RNG.standard_normal((N_BASE, DIM)).astype(np.float32)
    base[:40] *= 1e5  # > 65504
    extra = _toy(tmp_path, base=base)
    extra[extra.index("-k") + 1] = "sq8 or sqfp16"
    res = pytester.runpytest(CASES_DIR, *_args(tmp_path), *extra)
    text = res.stdout.str() + res.stderr.str()
    assert res.ret == pytest.ExitCode.TESTS_FAILED, text[-3000:]
    assert "INTERNALERROR" not in text
    rows = _db_rows(tmp_path / "out" / "bench.db")
    bad, good = rows["toy-sqfp16"], rows["toy-sq8"]
    assert bad["status"] == "failed" and bad["error"] == "mse is not finite: inf"
    assert bad["mse"] is None and "not finite" in json.loads(bad["null_reasons_json"])["mse"]
    assert bad["code_bytes"] == DIM * 2  # what was measured is kept
    assert good["status"] == "ok" and good["mse"] is not None
    (log,) = (tmp_path / "out" / "runs").glob("*/results.jsonl")
    assert len(log.read_text().splitlines()) == 2


def test_questionable_cases_carry_notes_in_row_and_summary(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A code larger than the raw vector, a training sample far below the codec's need, and more threads than
    cores: nothing fails, but nothing is silent either."""
    sweep = _garbage_file(
        tmp_path,
        "big.toml",
        b'[[sweep]]\nmethod = "faiss"\nfactory = "RR64,SQ8"\n\n[[sweep]]\nmethod = "pq"\nM = [4]\nnbits = [8]\n',
    )
    extra = _toy(tmp_path)
    extra[extra.index("-k") + 1] = "faiss or pq"
    threads = len(os.sched_getaffinity(0)) + 1  # a subprocess: the thread count must not leak into this one
    res = pytester.runpytest_subprocess(
        CASES_DIR, *_args(tmp_path), *extra, f"--vq-sweep={sweep}", f"--vq-threads={threads}"
    )
    out = res.stdout.str()
    assert res.ret == pytest.ExitCode.OK, out[-3000:]
    rows = _db_rows(tmp_path / "out" / "bench.db")
    big, small_sample = rows["toy-faiss-factoryRR64.SQ8"], rows["toy-pq-M4-nbits8"]
    assert big["code_bytes"] == 64 and big["compression_ratio"] == 0.5  # 64 B of codes for 32 B of float32
    assert "code (64 B) is larger than the raw vector (32 B)" in big["notes"]
    assert "far below" in small_sample["notes"]
    summary = out.split("vq-benchmark results")[-1]
    assert "larger than the raw vector" in summary and "far below" in summary
    assert f"warning: --vq-threads {threads} exceeds" in out
