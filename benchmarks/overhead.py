"""Harness overhead: the default sweep through `pytest vq_cases` vs a plain faiss script doing the same work.

Both sides run as fresh Python processes (imports included) on the same dataset, training sample size and seed,
with the same faiss indexes (built by the sweep's own method builders). The plain side does what a minimal
script would: train, add, search. The harness side also decodes for MSE, scores recall, writes the SQLite/JSON
rows, the neighbour arrays and the trained codecs. Ground truth is warmed first (it is computed once per dataset
and cached, so it is not a per-sweep cost); its cold cost is printed separately.

    python benchmarks/overhead.py --dataset glove-50d --repeat 2

Target: harness / plain wall-time ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLAIN_SCRIPT = r"""
import sys, time, json
import numpy as np
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.fixtures.loading import searched_vectors
from vq_benchmark.vq_cases.methods import METHODS
from vq_benchmark.vq_cases.sweep import DEFAULT_SWEEP, expand_sweep

dataset, cache_dir, train_size, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec = BUILTIN[dataset]
sv = searched_vectors(spec, __import__("pathlib").Path(cache_dir))  # cosine: unit vectors, as the harness
base, queries, metric = sv.base, sv.queries, sv.spec.search_metric
n = base.shape[0]
if train_size >= n:
    xt = np.ascontiguousarray(base, dtype=np.float32)
else:
    idx = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
    xt = np.ascontiguousarray(base[idx], dtype=np.float32)
xb = np.ascontiguousarray(base, dtype=np.float32)
for case in expand_sweep(DEFAULT_SWEEP, dataset):
    index = METHODS[case.method].build(dict(case.params), base.shape[1], metric).codec.index
    index.train(xt)
    index.add(xb)
    D, I = index.search(queries, min(100, n))
"""

WARM_SCRIPT = (
    "import sys, pathlib; from vq_benchmark.fixtures.registry import BUILTIN; "
    "from vq_benchmark.fixtures.loading import open_dataset; "
    "open_dataset(BUILTIN[sys.argv[1]], pathlib.Path(sys.argv[2]))"
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="glove-50d", help="a built-in dataset (default: glove-50d)")
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs of each side; the minimum is kept")
    ap.add_argument("--train-size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vq-overhead-") as tmp_s:
        tmp = Path(tmp_s)
        env = dict(os.environ, VQ_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(REPO))
        harness = [
            sys.executable, "-m", "pytest", str(REPO / "vq_cases"), "-q", "-p", "no:cacheprovider",
            f"--vq-dataset={args.dataset}", f"--vq-train-size={args.train_size}", f"--vq-seed={args.seed}",
            f"--vq-db-path={tmp / 'bench.db'}", f"--vq-run-dir={tmp / 'runs'}", f"--vq-codebooks-dir={tmp / 'cb'}",
        ]  # fmt: skip
        plain = [sys.executable, "-c", PLAIN_SCRIPT, args.dataset, str(tmp / "cache"), str(args.train_size),
                 str(args.seed)]  # fmt: skip
        warm = [sys.executable, "-c", WARM_SCRIPT, args.dataset, str(tmp / "cache")]
        cold_gt = _run(warm, REPO, env)
        h_times, p_times = [], []
        for _ in range(args.repeat):
            p_times.append(_run(plain, tmp, env))
            h_times.append(_run(harness, tmp, env))
        result = {
            "dataset": args.dataset,
            "cases": "default sweep",
            "plain_faiss_s": round(min(p_times), 2),
            "harness_s": round(min(h_times), 2),
            "ratio": round(min(h_times) / min(p_times), 3),
            "first_open_with_gt_s": round(cold_gt, 2),
            "all_plain_s": [round(t, 2) for t in p_times],
            "all_harness_s": [round(t, 2) for t in h_times],
        }
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
