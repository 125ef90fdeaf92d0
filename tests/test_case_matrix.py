"""The shape of the case matrix: several datasets in one run, equal-budget sweeps (bits_per_dim), search-time
parameters over one trained codec, and training seeds (--vq-repeats / `seeds`) summarised as mean ± std.

End-to-end runs are in-process (pytester) on dummy-small / dummy with tiny sweeps; a small plugin object grabs the
session's dataset pool and codec memo at the end, so the tests can see what was opened and trained."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sweeps import QUIET_PLUGINS

from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.fixtures.session import DatasetPool
from vq_benchmark.plugin.pytest_plugin import STATE_KEY
from vq_benchmark.reports.summary import repeats_table
from vq_benchmark.vq_cases.budget import Unmappable, map_budget
from vq_benchmark.vq_cases.codec_memo import CodecMemo
from vq_benchmark.vq_cases.methods import METHODS, MethodError, check_params
from vq_benchmark.vq_cases.runner import CaseOutputs, run_case
from vq_benchmark.vq_cases.sweep import Case, expand_sweep

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")


def _out_args(tmp: Path) -> list[str]:
    return [
        f"--vq-db-path={tmp / 'out' / 'bench.db'}",
        f"--vq-run-dir={tmp / 'out' / 'runs'}",
        f"--vq-cache-dir={tmp / 'cache'}",
        f"--vq-codebooks-dir={tmp / 'codebooks'}",
        "--vq-threads=1",
        *QUIET_PLUGINS,
    ]


def _rows(tmp: Path) -> list[dict]:
    conn = sqlite3.connect(tmp / "out" / "bench.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM results")]
    finally:
        conn.close()


def _sweep(tmp: Path, text: str) -> str:
    path = tmp / "sweep.toml"
    path.write_text(text)
    return f"--vq-sweep={path}"


class Grab:
    """Keeps the session's BenchSession when the run ends, and the order in which cases were reported."""

    def __init__(self) -> None:
        self.bench = None
        self.order: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and report.skipped):
            self.order.append(report.nodeid.split("[", 1)[1].rstrip("]"))

    def pytest_sessionfinish(self, session) -> None:
        self.bench = session.config.stash[STATE_KEY].bench


def _run(pytester: pytest.Pytester, tmp: Path, *args: str) -> tuple[pytest.RunResult, Grab]:
    grab = Grab()
    res = pytester.runpytest(CASES_DIR, *args, *_out_args(tmp), plugins=[grab])
    return res, grab


# ---------------------------------------------------------------- several datasets


def test_two_datasets_run_one_after_the_other_each_opened_once(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """pq M=48 does not fit d=32 (dummy-small): skipped there with the reason, run on dummy (d=64)."""
    sweep = _sweep(tmp_path, '[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "pq"\nM = 48\nnbits = 4\n')
    res, grab = _run(pytester, tmp_path, "--vq-dataset=dummy-small,dummy", sweep, "--vq-train-size=1000")
    assert res.ret == 0, res.stdout.str()
    rows = {r["case_id"]: r for r in _rows(tmp_path)}
    assert sorted(rows) == ["dummy-pq-M48-nbits4", "dummy-small-pq-M48-nbits4", "dummy-small-sq8", "dummy-sq8"]
    assert rows["dummy-pq-M48-nbits4"]["status"] == "ok" and rows["dummy-pq-M48-nbits4"]["dim"] == 64
    skipped = rows["dummy-small-pq-M48-nbits4"]
    assert skipped["status"] == "skipped" and "M=48 > d=32" in skipped["error"]
    assert rows["dummy-small-sq8"]["n_base"] == 2000 and rows["dummy-sq8"]["n_base"] == 10000
    assert rows["dummy-sq8"]["dataset_fingerprint"] != rows["dummy-small-sq8"]["dataset_fingerprint"]
    # dataset by dataset, in --vq-dataset order
    assert [cid.startswith("dummy-small-") for cid in grab.order] == [True, True, False, False]
    pool = grab.bench.pool
    assert pool.max_open == 1  # memory held one dataset at a time
    # before the first case both were validated (the first case's dataset kept open); then each ran once
    assert pool.events == [
        ("open", "dummy"),
        ("release", "dummy"),
        ("open", "dummy-small"),
        ("release", "dummy-small"),
        ("open", "dummy"),
        ("release", "dummy"),
    ]


def test_collect_only_reads_no_vectors_for_any_dataset(pytester: pytest.Pytester, tmp_path: Path) -> None:
    dsfile = tmp_path / "datasets.toml"
    dsfile.write_text(
        '[datasets.ghost]\nbase = "nope/base.npy"\nqueries = "nope/q.npy"\n\n'
        '[datasets.phantom]\nbase = "nope/b.fbin"\nqueries = "nope/q.fbin"\n'
    )
    sweep = _sweep(tmp_path, '[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "pq"\nM = 4\ndatasets = ["phantom"]\n')
    res = pytester.runpytest(
        CASES_DIR, "--collect-only", "-q", "--vq-dataset=ghost,phantom", f"--vq-datasets-file={dsfile}", sweep,
        *_out_args(tmp_path),
    )  # fmt: skip
    assert res.ret == 0, res.stdout.str()
    ids = [line.split("[", 1)[1].rstrip("]") for line in res.outlines if "::test_case[" in line]
    assert ids == ["ghost-sq8", "phantom-pq-M4-nbits8", "phantom-sq8"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_sweep_entries_name_the_datasets_when_no_option_does(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("VQ_DATASET", raising=False)
    sweep = _sweep(
        tmp_path,
        '[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "sq4"\ndatasets = ["dummy-small"]\n\n'
        '[[sweep]]\nmethod = "sqfp16"\ndatasets = ["dummy", "dummy-small"]\n',
    )
    res = pytester.runpytest(CASES_DIR, "--collect-only", "-q", sweep, *_out_args(tmp_path))
    ids = [line.split("[", 1)[1].rstrip("]") for line in res.outlines if "::test_case[" in line]
    assert sorted(ids) == ["dummy-small-sq4", "dummy-small-sq8", "dummy-small-sqfp16", "dummy-sq8", "dummy-sqfp16"]
    assert ids.index("dummy-small-sqfp16") < ids.index("dummy-sq8")  # dataset by dataset, first named first


@pytest.mark.parametrize(
    ("args", "sweep_text", "expected"),
    [
        (["--vq-dataset=dummy-small,,dummy"], None, "expected comma-separated dataset names"),
        (["--vq-dataset=dummy-small,nosuch"], None, "unknown dataset 'nosuch'"),
        (["--vq-dataset=dummy-small"], '[[sweep]]\nmethod = "sq8"\ndatasets = ["dummy", "nosuch"]\n', "datasets:"),
        (["--vq-dataset=dummy-small"], '[[sweep]]\nmethod = "pq"\nM = 4\nsearch.nprobe = [1, 2]\n', "nprobe"),
    ],
    ids=["empty-name", "unknown-option", "unknown-in-sweep", "search-param-pq"],
)
def test_usage_errors_are_one_line(
    pytester: pytest.Pytester, tmp_path: Path, args: list[str], sweep_text: str | None, expected: str
) -> None:
    extra = [_sweep(tmp_path, sweep_text)] if sweep_text else []
    res = pytester.runpytest(CASES_DIR, *args, *extra, *_out_args(tmp_path))
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR, res.stdout.str()
    assert len(errors) == 1 and expected in errors[0], errors
    assert "Traceback" not in res.stdout.str() + res.stderr.str()


def test_bad_data_of_the_second_dataset_stops_the_run_before_the_first_case(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    np.save(data / "base.npy", rng.standard_normal((300, 8)).astype(np.float32))
    np.save(data / "queries.npy", rng.standard_normal((10, 8)).astype(np.float32))
    np.save(data / "gt.npy", np.zeros((9, 10), dtype=np.int64))  # 9 rows for 10 queries
    dsfile = tmp_path / "ds.toml"
    dsfile.write_text('[datasets.toy]\nbase = "base.npy"\nqueries = "queries.npy"\nground_truth = "gt.npy"\n')
    args = ["--vq-dataset=dummy-small,toy", f"--vq-datasets-file={dsfile}", f"--vq-data-dir={data}", "-k", "sq8"]
    res = pytester.runpytest(CASES_DIR, *args, *_out_args(tmp_path))
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR, res.stdout.str()
    assert len(errors) == 1 and "gt.npy" in errors[0]
    assert not list((tmp_path / "out").rglob("results.jsonl"))


def test_resume_looks_rows_up_per_dataset(pytester: pytest.Pytester, tmp_path: Path) -> None:
    args = ["--vq-dataset=dummy-small,dummy", "-k", "sq8"]
    first, _ = _run(pytester, tmp_path, *args, "--vq-run-id=first")
    assert first.ret == 0, first.stdout.str()
    second, _ = _run(pytester, tmp_path, *args, "--vq-run-id=second", "--vq-resume", "-rs")
    assert second.ret == 0, second.stdout.str()
    assert second.parseoutcomes() == {"skipped": 2, "deselected": 16}
    assert "resumed: an ok row for this case and data exists in run first" in second.stdout.str()


# ---------------------------------------------------------------- equal budgets


_EXACT = {"pq": (1, 2, 4, 8), "opq": (1, 2, 4, 8), "pqfs": (1, 2, 4), "sq": (4, 6, 8, 16), "itq_lsh": (1,)}


@settings(max_examples=60, deadline=None, database=None)
@given(method=st.sampled_from(sorted(_EXACT)), dim=st.integers(1, 96), data=st.data())
def test_budget_code_bytes_equal_d_times_b_over_8(method: str, dim: int, data) -> None:
    bits = data.draw(st.sampled_from(_EXACT[method]))
    if method == "pqfs":
        dim = 2 * ((dim + 1) // 2)  # fast-scan packs two 4-bit codes per byte
    name, mapped, notes = map_budget(method, {}, dim, bits)
    params = check_params(METHODS[name], mapped, "test")
    code = METHODS[name].build(params, dim, "l2").codec.code_bytes
    if dim * bits % 8 == 0:
        assert code == dim * bits // 8 and not notes
    else:  # the nearest valid configuration, and a note saying what it spends
        assert abs(code - dim * bits / 8) <= 1 + (method == "pqfs"), (code, dim, bits)
        assert notes or method in ("sq", "itq_lsh", "pqfs")


def test_budgets_that_cannot_be_expressed_raise_the_skip_reason() -> None:
    with pytest.raises(Unmappable, match="sq has no 2-bit variant"):
        map_budget("sq", {}, 32, 2)
    with pytest.raises(Unmappable, match="more than 32"):
        map_budget("pq", {}, 32, 16)
    assert map_budget("rabitq", {}, 32, 4) == ("rabitq", {"nbits": 4}, [])
    assert map_budget("python", {"quantizer": "lvq"}, 32, 2) == ("python", {"bits": 2}, [])
    assert map_budget("ivf", {"inner": "sq", "nlist": 8}, 32, 8)[:2] == ("ivf", {"inner": "sq8"})
    assert map_budget("prq", {"nsplits": 2, "nbits": 8}, 32, 2)[1] == {"M": 4}


def test_budget_sweep_ids_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[[sweep]]\nmethod = "pq"\nbits_per_dim = [1, 2, 4]\n\n'
        '[[sweep]]\nmethod = "sq"\nbits_per_dim = [1, 4, 8]\n\n'
        '[[sweep]]\nmethod = "python"\nquantizer = "lvq"\nbits_per_dim = [4]\n'
    )
    cases = expand_sweep(path, ["tiny", "wide"], dim_of={"tiny": 4, "wide": 64}.__getitem__)
    by_id = {c.case_id: c for c in cases}
    # d=4: 1 and 2 bits/dim both round to M=1 (0.5 -> 1, 1.0): one case, the first budget recorded, a note
    assert [c.case_id for c in cases if c.dataset == "tiny" and c.method == "pq"] == [
        "tiny-pq-M1-nbits8",
        "tiny-pq-M2-nbits8",
    ]
    merged = by_id["tiny-pq-M1-nbits8"]
    assert merged.bits_per_dim == 1 and any("bits_per_dim=2 maps to this configuration too" in n for n in merged.notes)
    assert by_id["wide-pq-M32-nbits8"].bits_per_dim == 4 and by_id["wide-pq-M8-nbits8"].notes == ()
    assert by_id["wide-sq4"].bits_per_dim == 4 and by_id["wide-sq8"].bits_per_dim == 8
    assert by_id["wide-sq-bpd1"].skip is not None and "1-bit" in by_id["wide-sq-bpd1"].skip
    assert by_id["wide-python-quantizerlvq-bits4"].params == (("quantizer", "lvq"), ("bits", 4))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('method = "faiss"\nfactory = "PQ4"\nbits_per_dim = [4]', "has no bits_per_dim mapping"),
        ('method = "pq"\nM = 4\nbits_per_dim = [4]', "bits_per_dim sets M for pq"),
        ('method = "sq"', "needs bits_per_dim"),
        ('method = "pq"\nbits_per_dim = [0]', "bits_per_dim must hold integers in [1, 32]"),
        ('method = "pq"\nM = 4\nseeds = [-1]', "seeds must hold integers"),
        ('method = "pq"\nM = 4\nsearch = 3', "search must be a table"),
        ('method = "rabitq"\nsearch.qb = [9]', "search.qb=9 outside [0, 8]"),
        ('method = "ivf"\nnlist = 8\ninner = "pq"\nM = 4\nsearch.qb = [2]', "no search parameter 'qb'"),
        ('method = "ivf"\nnlist = 8\ninner = "sq8"\nsearch.nlist = [2]', "is a training parameter"),
        ('method = "python"\nquantizer = "uniform_sq"\nsearch.ef = [2]', "has no search()"),
        ('method = "sq8"\ndatasets = []', "has an empty list"),
    ],
)
def test_matrix_keys_are_checked_when_the_sweep_is_read(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f"[[sweep]]\n{text}\n")
    with pytest.raises(MethodError) as info:
        expand_sweep(path, "d", dim_of=lambda _: 8)
    assert fragment in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)


def test_budget_run_records_the_budget(pytester: pytest.Pytester, tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, '[[sweep]]\nmethod = "sq"\nbits_per_dim = [2, 4, 8]\n')
    res, _ = _run(pytester, tmp_path, "--vq-dataset=dummy-small", sweep)
    assert res.ret == 0, res.stdout.str()
    rows = {r["case_id"]: r for r in _rows(tmp_path)}
    assert rows["dummy-small-sq4"]["code_bytes"] == 32 * 4 // 8 and rows["dummy-small-sq4"]["bits_per_dim"] == 4
    assert rows["dummy-small-sq8"]["code_bytes"] == 32 and rows["dummy-small-sq8"]["bits_per_dim"] == 8
    assert rows["dummy-small-sq-bpd2"]["status"] == "skipped" and rows["dummy-small-sq-bpd2"]["bits_per_dim"] == 2


# ---------------------------------------------------------------- search parameters


def test_search_params_reuse_one_training(pytester: pytest.Pytester, tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, '[[sweep]]\nmethod = "ivf"\nnlist = 16\ninner = "sq8"\nsearch.nprobe = [1, 4, 16]\n')
    res, grab = _run(pytester, tmp_path, "--vq-dataset=dummy-small", sweep)
    assert res.ret == 0, res.stdout.str()
    ids = ["dummy-small-ivf-nlist16-innersq8-nprobe1", "dummy-small-ivf-nlist16-innersq8-nprobe4",
           "dummy-small-ivf-nlist16-innersq8-nprobe16"]  # fmt: skip
    assert grab.order == ids  # the variants of one training run one after another, in sweep order
    rows = {r["case_id"]: r for r in _rows(tmp_path)}
    first, *others = (rows[i] for i in ids)
    assert first["codec_reused"] == 0 and first["train_s"] > 0
    assert all(r["codec_reused"] == 1 and r["train_s"] == 0 for r in others)
    assert all(r["original_train_s"] == first["original_train_s"] for r in others)
    assert [json.loads(rows[i]["search_params_json"]) for i in ids] == [{"nprobe": n} for n in (1, 4, 16)]
    assert {r["params_json"] for r in rows.values()} == {'{"nlist":16,"inner":"sq8"}'}
    recalls = [rows[i]["recall_at_10"] for i in ids]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]
    assert grab.bench.memo.stored == 1 and grab.bench.memo.hits == 2  # trained and encoded once
    assert len(list((tmp_path / "codebooks").rglob("*.faissindex"))) == 1  # one codec cache file for all three


def test_under_xdist_a_training_group_goes_to_one_worker(pytester: pytest.Pytester, tmp_path: Path) -> None:
    sweep = _sweep(
        tmp_path,
        '[[sweep]]\nmethod = "ivf"\nnlist = [8, 16]\ninner = "sq8"\nsearch.nprobe = [1, 2, 8]\n\n'
        '[[sweep]]\nmethod = "sq4"\n',
    )
    res = pytester.runpytest(CASES_DIR, "--vq-dataset=dummy-small,dummy", sweep, "-n", "2", *_out_args(tmp_path))
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path)
    assert len(rows) == 14 and {r["status"] for r in rows} == {"ok"}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["method"] == "ivf":
            groups.setdefault((r["dataset"], r["params_json"]), []).append(r)
    for members in groups.values():
        assert len({r["worker"] for r in members}) == 1  # trained and encoded once, on one worker
        assert sorted(r["codec_reused"] for r in members) == [0, 1, 1]


def _small(n: int = 1500, d: int = 16, seed: int = 0):
    from vq_benchmark.fixtures.loading import LoadedDataset
    from vq_benchmark.fixtures.registry import DatasetSpec
    from vq_benchmark.fixtures.synthetic import make_low_rank_dataset

    base, queries = make_low_rank_dataset(n, 30, d, intrinsic_dim=6, n_clusters=8, seed=seed)
    dist = ((queries[:, None, :] - base[None]) ** 2).sum(-1)
    ids = np.argsort(dist, axis=1)[:, :100]
    spec = DatasetSpec("tiny", "l2", "test", "test")
    ds = LoadedDataset(spec, base, queries, ids, np.take_along_axis(dist, ids, 1).astype(np.float32), "test", "fp")
    return ds, base


def test_max_beam_size_re_encodes_without_retraining(tmp_path: Path) -> None:
    ds, base = _small()
    memo = CodecMemo()
    params = (("M", 2), ("nbits", 4))
    rows = [
        run_case(Case("tiny", "rq", params, (("max_beam_size", b),)), ds, base, CaseOutputs(None, None), memo=memo)
        for b in (1, 8, 1)
    ]
    assert [r["codec_reused"] for r in rows] == [0, 1, 1] and memo.stored == 1
    assert rows[1]["encode_s"] > 0 and rows[1]["train_s"] == 0
    assert rows[1]["mse"] <= rows[0]["mse"] * 1.0001  # a wider beam encodes at least as well
    assert rows[2]["mse"] == pytest.approx(rows[0]["mse"])  # back to beam 1: the same codes again


def test_faiss_set_search_params_sets_and_restores() -> None:
    _, base = _small(d=16)
    codec = METHODS["ivf"].build({"nlist": 8, "inner": "rabitq"}, 16, "l2").codec
    codec.train(base)
    ivf = faiss.extract_index_ivf(codec.index)
    codec.set_search_params({"nprobe": 4, "qb": 2})
    assert ivf.nprobe == 4 and faiss.downcast_index(codec.index).qb == 2
    codec.set_search_params({"nprobe": 8})
    assert ivf.nprobe == 8 and faiss.downcast_index(codec.index).qb == 4  # qb back to faiss's default
    codec.set_search_params({})
    assert ivf.nprobe == 1
    from vq_benchmark.vq_cases.codec import CodecError

    sq = METHODS["sq8"].build({}, 16, "l2").codec
    with pytest.raises(CodecError, match="no search parameter 'nprobe'"):
        sq.set_search_params({"nprobe": 2})


def test_python_quantizer_search_keywords(tmp_path: Path) -> None:
    (tmp_path / "scaled.py").write_text(
        "import numpy as np\n"
        "class Scaled:\n"
        "    def __init__(self, metric='l2'):\n"
        "        self.codes = None\n"
        "    def fit(self, x):\n"
        "        pass\n"
        "    def compress(self, x):\n"
        "        return np.clip(np.rint(x * 10 + 128), 0, 255).astype(np.uint8)\n"
        "    def decompress(self, c):\n"
        "        return (c.astype(np.float32) - 128) / 10\n"
        "    def add(self, codes):\n"
        "        self.codes = self.decompress(codes)\n"
        "    def search(self, q, k, *, farthest=0):\n"
        "        d = ((q[:, None, :] - self.codes[None]) ** 2).sum(-1)\n"
        "        order = np.argsort(d, axis=1)\n"
        "        ids = (order[:, ::-1] if farthest else order)[:, :k]\n"
        "        return np.take_along_axis(d, ids, 1), ids\n"
    )
    path = tmp_path / "s.toml"
    path.write_text('[[sweep]]\nmethod = "python"\nquantizer = "scaled.py:Scaled"\nsearch.farthest = [0, 1]\n')
    cases = expand_sweep(path, "tiny")
    assert [c.case_id for c in cases] == ["tiny-python-quantizerscaled.py_Scaled-farthest0",
                                          "tiny-python-quantizerscaled.py_Scaled-farthest1"]  # fmt: skip
    ds, base = _small()
    memo = CodecMemo()
    rows = [run_case(c, ds, base, CaseOutputs(None, None), memo=memo) for c in cases]
    assert [r["codec_reused"] for r in rows] == [0, 1]
    assert rows[0]["recall_at_10"] > 0.5 and rows[1]["recall_at_10"] == 0  # the keyword reached search()
    path.write_text('[[sweep]]\nmethod = "python"\nquantizer = "scaled.py:Scaled"\nsearch.other = [1]\n')
    with pytest.raises(MethodError, match="takes no keyword 'other'; allowed: farthest"):
        expand_sweep(path, "tiny")


# ---------------------------------------------------------------- training seeds


def test_repeats_make_one_case_per_seed_and_the_summary_shows_mean_and_std(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    sweep = _sweep(tmp_path, '[[sweep]]\nmethod = "pq"\nM = 4\nnbits = 4\n\n[[sweep]]\nmethod = "sqfp16"\n')
    res, _ = _run(pytester, tmp_path, "--vq-dataset=dummy-small", sweep, "--vq-repeats=3", "--vq-train-size=500")
    assert res.ret == 0, res.stdout.str()
    rows = {r["case_id"]: r for r in _rows(tmp_path)}
    assert sorted(rows) == [*(f"dummy-small-pq-M4-nbits4-seed{s}" for s in range(3)), "dummy-small-sqfp16"]
    assert [rows[f"dummy-small-pq-M4-nbits4-seed{s}"]["seed"] for s in range(3)] == [0, 1, 2]
    assert len({rows[f"dummy-small-pq-M4-nbits4-seed{s}"]["mse"] for s in range(3)}) == 3  # other codebooks
    out = res.stdout.str()
    assert "across training seeds" in out
    (line,) = [x for x in out.splitlines() if x.startswith("dummy-small") and "0,1,2" in x]
    mses = [rows[f"dummy-small-pq-M4-nbits4-seed{s}"]["mse"] for s in range(3)]
    mean = sum(mses) / 3
    std = math.sqrt(sum((m - mean) ** 2 for m in mses) / 2)
    assert f"{mean:.4g} ± {std:.2g}" in line


@pytest.mark.parametrize(("method", "params"), [("pq", {"M": 4, "nbits": 4}), ("ivf", {"nlist": 8, "inner": "sq8"})])
def test_the_training_seed_seeds_faiss_k_means(method: str, params: dict) -> None:
    from vq_benchmark.vq_cases.codec import training_seed

    _, base = _small(d=16)
    codes = []
    for seed in (1, 1, 2):
        codec = METHODS[method].build(check_params(METHODS[method], params, "t"), 16, "l2").codec
        with training_seed(seed):
            codec.train(base)  # the same sample each time: only faiss's own seed differs
        codes.append(codec.encode(base[:300]))
    assert np.array_equal(codes[0], codes[1]) and not np.array_equal(codes[0], codes[2])


def test_seeds_in_the_sweep_and_the_repeats_table(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[sweep]]\nmethod = "sqfp16"\nseeds = [5, 7]\n\n[[sweep]]\nmethod = "sq8"\n')
    cases = expand_sweep(path, "d", repeats=2, base_seed=10)
    assert [c.case_id for c in cases] == ["d-sqfp16-seed5", "d-sqfp16-seed7", "d-sq8-seed10", "d-sq8-seed11"]
    rows = [
        {"case_id": f"x-{s}", "status": "ok", "dataset": "x", "method": "pq", "params_json": "{}", "seed": s,
         "mse": m, "recall_at_10": r, "qps": 100.0}
        for s, m, r in ((0, 1.0, 0.5), (1, 3.0, 0.7))
    ]  # fmt: skip
    table = repeats_table(rows)
    assert "2 ± 1.4" in table and "0.6000 ± 0.1414" in table
    assert repeats_table(rows[:1]) == ""


def test_dimension_comes_from_headers_without_reading_vectors(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", np.zeros((50, 12), dtype=np.float32))
    (tmp_path / "ds.toml").write_text('[datasets.toy]\nbase = "b.npy"\nqueries = "b.npy"\n')
    pool = DatasetPool(tmp_path / "ds.toml", tmp_path, tmp_path / "cache", gt_k=10)
    assert pool.dim("toy") == 12 and pool.dim("dummy") == BUILTIN["dummy"].synthetic.dim
    assert pool.events == [] and not (tmp_path / "cache").exists()
