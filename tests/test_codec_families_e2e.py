"""End to end: one `pytest vq_cases` run with a case of every codec family on dummy-small, checked row by row.

The expectations are the ones theory and faiss's own tests give: code bytes equal the saved codec's own
`sa_code_size` (the IVF list id included); more bits never lose recall within a family (SQfp16 >= SQ8 >= SQ4,
RaBitQ 1 < 4 < 8 bits); a residual quantizer reconstructs better than PQ at equal bits (faiss asserts RQ error
< 1.2 x PQ's); distortion is NULL exactly where decoding is not faithful; the search-parameter cases of one
training ran one training.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import faiss
import pytest

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")

SWEEP = """
[[sweep]]
method = "pq"
M = [8]
nbits = [4, 8]

[[sweep]]
method = "pqfs"
M = [16]

[[sweep]]
method = "opq"
M = [8]

[[sweep]]
method = "sq"
bits_per_dim = [4, 6, 8, 16]

[[sweep]]
method = "sqbf16"

[[sweep]]
method = "rq"
M = [8]

[[sweep]]
method = "lsq"  # 6-bit codebooks: LSQ's encoding search is ~7x faster than at 8 bits (2.2 s -> 0.3 s here)
M = [4]
nbits = [6]

[[sweep]]
method = "prq"
nsplits = [2]
M = [2]
nbits = [6]

[[sweep]]
method = "plsq"
nsplits = [2]
M = [2]
nbits = [6]

[[sweep]]
method = "rabitq"
nbits = [1, 4, 8]

[[sweep]]
method = "rabitqfs"
nbits = [1]

[[sweep]]
method = "ivf"
nlist = [16]
inner = ["sq8"]
search.nprobe = [1, 4, 16]

[[sweep]]
method = "itq_lsh"
nbits = [32]

[[sweep]]
method = "faiss"
factory = ["OPQ8_32,IVF16,PQ8x4fs"]

[[sweep]]
method = "python"
quantizer = ["lvq", "uniform_sq"]
bits = [4]
"""


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("families")
    sweep = tmp / "sweep.toml"
    sweep.write_text(SWEEP)
    pytester_args = [
        CASES_DIR,
        "--vq-dataset=dummy-small",
        f"--vq-sweep={sweep}",
        "--vq-search-rounds=1",
        "--vq-train-size=600",  # OPQ, LSQ and RQ train in seconds; far below faiss's advice, flagged in notes
        f"--vq-db-path={tmp / 'bench.db'}",
        f"--vq-run-dir={tmp / 'runs'}",
        f"--vq-cache-dir={tmp / 'cache'}",
        f"--vq-codebooks-dir={tmp / 'codebooks'}",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    assert pytest.main(pytester_args) == 0
    conn = sqlite3.connect(tmp / "bench.db")
    conn.row_factory = sqlite3.Row
    try:
        return {r["case_id"]: dict(r) for r in conn.execute("SELECT * FROM results")}
    finally:
        conn.close()


def test_every_family_ran(rows: dict[str, dict]) -> None:
    methods = {r["method"] for r in rows.values() if r["status"] == "ok"}
    assert methods >= {"pq", "pqfs", "opq", "sq4", "sq6", "sq8", "sqfp16", "sqbf16", "rq", "lsq", "prq", "plsq"}
    assert methods >= {"rabitq", "rabitqfs", "ivf", "itq_lsh", "faiss", "python"}
    assert all(r["status"] == "ok" for r in rows.values()), {c: r["error"] for c, r in rows.items() if r["error"]}


def test_code_bytes_are_the_codecs_own(rows: dict[str, dict]) -> None:
    for case_id, row in rows.items():
        if row["codec_path"] is None:  # a python quantizer: its own code_bytes, ceil(d*b/8) (+ 8 for LVQ's lo/step)
            assert row["method"] == "python" and row["search_mode"] in ("asymmetric", "decode-then-search")
            assert row["code_bytes"] == 32 * 4 // 8 + (8 if "lvq" in case_id else 0), case_id
            continue
        index = faiss.read_index(row["codec_path"])
        assert row["code_bytes"] == index.sa_code_size(), case_id
    assert rows["dummy-small-ivf-nlist16-innersq8-nprobe1"]["code_bytes"] == 1 + 32  # list id + SQ8 code


def test_recall_orders_as_theory_says(rows: dict[str, dict]) -> None:
    r10 = {c: r["recall_at_10"] for c, r in rows.items()}
    assert r10["dummy-small-sqfp16"] >= r10["dummy-small-sq8"] >= r10["dummy-small-sq4"]
    assert r10["dummy-small-pq-M8-nbits8"] >= r10["dummy-small-pq-M8-nbits4"]
    assert r10["dummy-small-rabitq-nbits1"] < r10["dummy-small-rabitq-nbits4"] < r10["dummy-small-rabitq-nbits8"]
    nprobe = [r10[f"dummy-small-ivf-nlist16-innersq8-nprobe{p}"] for p in (1, 4, 16)]
    assert nprobe == sorted(nprobe) and nprobe[-1] > nprobe[0]


def test_python_quantizers_from_the_sweep(rows: dict[str, dict]) -> None:
    lvq, usq = rows["dummy-small-python-quantizerlvq-bits4"], rows["dummy-small-python-quantizeruniform_sq-bits4"]
    assert lvq["search_mode"] == "asymmetric" and usq["search_mode"] == "decode-then-search"
    assert lvq["mse"] < usq["mse"]  # per-vector ranges fit better than one global range per dimension
    assert rows["dummy-small-sq4"]["mse"] == pytest.approx(usq["mse"], rel=0.05)  # faiss SQ4 is the same scheme


def test_residual_quantizer_beats_pq_at_equal_bits(rows: dict[str, dict]) -> None:
    rq, pq = rows["dummy-small-rq-M8-nbits8"], rows["dummy-small-pq-M8-nbits8"]
    assert rq["mse"] < 1.2 * pq["mse"]


def test_distortion_is_null_exactly_where_decoding_is_not_faithful(rows: dict[str, dict]) -> None:
    unfaithful = {c for c, r in rows.items() if r["method"] in ("rabitq", "rabitqfs", "itq_lsh")}
    for case_id, row in rows.items():
        if case_id in unfaithful:
            assert row["mse"] is None and row["pair_distortion_mean"] is None, case_id
            assert "mse" in json.loads(row["null_reasons_json"]), case_id
        else:
            assert row["mse"] is not None and row["pair_distortion_mean"] is not None, case_id


def test_search_parameter_cases_share_one_training(rows: dict[str, dict]) -> None:
    cases = [rows[f"dummy-small-ivf-nlist16-innersq8-nprobe{p}"] for p in (1, 4, 16)]
    assert [c["codec_reused"] for c in cases] == [0, 1, 1]
    assert cases[0]["train_s"] > 0 and cases[1]["train_s"] == cases[2]["train_s"] == 0
    assert [json.loads(c["search_params_json"]) for c in cases] == [{"nprobe": 1}, {"nprobe": 4}, {"nprobe": 16}]
    assert len({c["codec_path"] for c in cases}) == 1


def test_equal_budget_maps_to_the_sq_family(rows: dict[str, dict]) -> None:
    by_bits = {r["bits_per_dim"]: r for r in rows.values() if r["bits_per_dim"] is not None}
    assert {b: r["method"] for b, r in by_bits.items()} == {4: "sq4", 6: "sq6", 8: "sq8", 16: "sqfp16"}
    for bits, row in by_bits.items():
        assert row["code_bytes"] * 8 == bits * row["dim"]
