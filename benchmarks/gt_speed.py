"""Exact ground truth speed vs the bare BLAS product it is built on, measured in the same run.

`exact_knn` = numpy sgemm + running top-k + float64 rescoring; the floor is numpy's `q @ x.T` of the same size.
faiss.knn is timed too (its bundled OpenBLAS may pick a slow kernel on some CPUs).

    python benchmarks/gt_speed.py --n 400000 --d 50 --nq 1000 --k 100
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import faiss
import numpy as np

from vq_benchmark.fixtures.ground_truth import exact_knn


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.n, args.d), dtype=np.float32)
    xq = rng.standard_normal((args.nq, args.d), dtype=np.float32)
    sgemm = _best(lambda: xq @ xb.T, args.repeat)
    ours = _best(lambda: exact_knn(xb, xq, args.k, "l2"), args.repeat)
    fk = _best(lambda: faiss.knn(xq, xb, args.k), args.repeat)
    gflop = 2 * args.n * args.nq * args.d / 1e9
    print(json.dumps({
        "shape": f"{args.nq} q x {args.n} x {args.d}, k={args.k}",
        "numpy_sgemm_s": round(sgemm, 3),
        "numpy_sgemm_gflops": round(gflop / sgemm, 1),
        "exact_knn_s": round(ours, 3),
        "exact_knn_over_sgemm": round(ours / sgemm, 2),
        "faiss_knn_s": round(fk, 3),
        "faiss_knn_over_exact_knn": round(fk / ours, 2),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
