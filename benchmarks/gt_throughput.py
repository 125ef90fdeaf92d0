"""Throughput and memory of `vq-benchmark precompute-gt` on generated base files, against numpy sgemm on this box.

For each shape (default 1M x 128 and 250k x 768 float32, 1000 queries, k=100) a base file is written to a temp
folder (.fbin or .npy, streamed), then `precompute-gt` runs as a subprocess and is measured:

* effective GFLOP/s = 2 * nq * n * d / wall seconds of the whole command (start-up, fingerprint, rescoring and
  writing included), divided by numpy's sgemm GFLOP/s on the same shapes (queries x a block of base rows, the
  best of a few block widths, measured before and after the run: the best figure is used) -> `ratio` (target
  >= 0.85; `ratio_compute` uses the command's own compute time instead of the wall time; `ratio_cpu` compares
  CPU seconds - the child's user+sys against sgemm's - which a busy shared machine disturbs far less);
* peak RSS of the subprocess (its VmHWM from /proc, read as it exits; getrusage(RUSAGE_CHILDREN) where /proc
  is missing) -> target <= 512 MiB, about the same with --scale 4;
* exactness: ids and distances equal a float64 brute force on a query subsample (ranked by (distance, id)).

    python benchmarks/gt_throughput.py                 # the two default shapes
    python benchmarks/gt_throughput.py --scale 4       # 4x larger base files: RSS must stay about the same
    python benchmarks/gt_throughput.py --quick         # small shapes, seconds

The machine is shared and noisy: sgemm and precompute-gt are measured in the same run, alternately.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vq_benchmark.fixtures.formats import open_vectors, write_fbin
from vq_benchmark.fixtures.vector_source import VectorSource

DEFAULT_SHAPES = "1000000x128,250000x768"
QUICK_SHAPES = "200000x128,50000x768"
GEN_ROWS = 65536


class _Generated(VectorSource):
    """Seeded standard-normal rows produced block by block (so writing a multi-GB file needs no RAM)."""

    def __init__(self, n: int, d: int, seed: int) -> None:
        super().__init__(n, d, np.dtype(np.float32), "generated")
        self.seed = seed

    def _read(self, start: int, stop: int) -> np.ndarray:
        # one generator per GEN_ROWS block: any block boundary reproduces the same rows
        out = np.empty((stop - start, self.shape[1]), np.float32)
        pos = start
        while pos < stop:
            b = pos // GEN_ROWS
            rows = np.random.default_rng([self.seed, b]).standard_normal((GEN_ROWS, self.shape[1]), np.float32)
            take = min(stop, (b + 1) * GEN_ROWS) - pos
            out[pos - start : pos - start + take] = rows[pos - b * GEN_ROWS : pos - b * GEN_ROWS + take]
            pos += take
        return out

    def blocks(self, rows: int = GEN_ROWS):  # type: ignore[override]
        for start in range(0, self.shape[0], GEN_ROWS):
            yield start, self._read(start, min(self.shape[0], start + GEN_ROWS))


def write_base(path: Path, n: int, d: int, seed: int) -> None:
    src = _Generated(n, d, seed)
    if path.suffix == ".fbin":
        write_fbin(path, src)
        return
    header = {"descr": "<f4", "fortran_order": False, "shape": (n, d)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for _, block in src.blocks():
            f.write(block.data)


def sgemm_gflops(queries: np.ndarray, base: np.ndarray, repeat: int) -> tuple[float, float]:
    """Best numpy sgemm rate of queries @ block.T over the given base rows, for a few block widths, as
    (GFLOP per wall second, GFLOP per CPU second of this process)."""
    nq, d = queries.shape
    best = best_cpu = 0.0
    flop = 2.0 * nq * len(base) * d / 1e9
    for width in (4096, 16384, 65536):
        out = np.empty((nq, width), np.float32)
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            for s in range(0, len(base), width):
                block = base[s : s + width]
                np.matmul(queries, block.T, out=out[:, : len(block)])
            best = max(best, flop / (time.perf_counter() - t0))
            best_cpu = max(best_cpu, flop / max(1e-9, time.process_time() - c0))
    return best, best_cpu


def brute_force_check(base_path: Path, queries: np.ndarray, ids: np.ndarray, dists: np.ndarray) -> str:
    """ids/dists of a query subsample against float64 brute force (candidates by expansion, then exact)."""
    src = open_vectors(base_path, None, "base")
    k = ids.shape[1]
    q64 = queries.astype(np.float64)
    cand_k = k + 64
    best_key = np.full((len(q64), 0), np.inf)
    best_id = np.zeros((len(q64), 0), np.int64)
    for start, block in src.blocks(65536):
        x = block.astype(np.float64)
        key = (x * x).sum(1)[None, :] - 2.0 * q64 @ x.T
        key = np.concatenate([best_key, key], axis=1)
        cid = np.concatenate([best_id, np.broadcast_to(np.arange(start, start + len(x)), (len(q64), len(x)))], axis=1)
        part = np.argpartition(key, min(cand_k, key.shape[1] - 1), axis=1)[:, :cand_k]
        best_key, best_id = np.take_along_axis(key, part, 1), np.take_along_axis(cid, part, 1)
    x = src.gather(best_id).astype(np.float64)
    exact = ((x - q64[:, None, :]) ** 2).sum(-1)
    order = np.lexsort((best_id, exact), axis=-1)[:, :k]
    ref_i, ref_d = np.take_along_axis(best_id, order, 1), np.take_along_axis(exact, order, 1)
    if not np.array_equal(ref_i, ids):
        return f"MISMATCH: {int((ref_i != ids).sum())} ids differ"
    err = float(np.abs(ref_d.astype(np.float32) - dists).max())
    return "exact" if err == 0 else f"ids exact, max |dist diff| {err:.3g}"


# The child reports its own VmHWM at exit: wait4's ru_maxrss would also count the parent's pages, which a
# vfork'ed child briefly shares before exec.
CHILD = """
import atexit, sys
def _hwm():
    try:
        with open("/proc/self/status") as f:
            sys.stderr.write("".join("VMHWM_KB " + l.split()[1] + "\\n" for l in f if l.startswith("VmHWM")))
    except OSError:
        pass
atexit.register(_hwm)
from vq_benchmark.plugin.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_gt(base_path: Path, queries_path: Path, out: Path, k: int, extra: list[str]) -> dict:
    files = ["--vectors-path", str(base_path), "--queries-path", str(queries_path), "--output-path", str(out)]
    cmd = [sys.executable, "-c", CHILD, "precompute-gt", *files, "--k", str(k), "--quiet", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"precompute-gt failed ({proc.returncode}): {stderr.strip()}")
    m = re.search(r" in ([0-9.]+) s;", stdout)
    hwm = re.search(r"VMHWM_KB (\d+)", stderr)
    rss = int(hwm[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "cpu_s": cpu, "compute_s": float(m[1]) if m else float("nan"), "peak_rss_mib": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=None, help=f"comma-separated NxD (default {DEFAULT_SHAPES})")
    ap.add_argument("--scale", type=int, default=1, help="multiply every base size by this (RSS must stay flat)")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--format", choices=("fbin", "npy"), default="fbin")
    ap.add_argument("--check-queries", type=int, default=20, help="queries checked against float64 brute force")
    ap.add_argument("--repeat", type=int, default=2, help="sgemm repetitions per block width, per measurement")
    ap.add_argument("--runs", type=int, default=1, help="precompute-gt runs per shape (the fastest is reported)")
    ap.add_argument("--quick", action="store_true", help=f"small shapes ({QUICK_SHAPES}), 200 queries")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp folder)")
    ap.add_argument("gt_args", nargs="*", help="extra precompute-gt arguments after --, e.g. -- --threads 2")
    args = ap.parse_args()
    shapes = args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    nq = min(args.nq, 200) if args.quick else args.nq
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for shape in shapes.split(","):
            n, d = (int(v) for v in shape.lower().split("x"))
            n *= args.scale
            base_path = Path(tmp) / f"base-{n}x{d}.{args.format}"
            write_base(base_path, n, d, seed=d)
            queries = np.random.default_rng(1).standard_normal((nq, d), np.float32)
            np.save(Path(tmp) / "q.npy", queries)
            sample = open_vectors(base_path, None, "base")[0 : min(n, 262144)]
            rate, rate_cpu = sgemm_gflops(queries, sample, args.repeat)
            runs = []
            for _ in range(args.runs):  # alternate with sgemm: both see the same (noisy) machine
                runs.append(run_gt(base_path, Path(tmp) / "q.npy", Path(tmp) / "gt.npy", args.k, args.gt_args))
                more = sgemm_gflops(queries, sample, args.repeat)
                rate, rate_cpu = max(rate, more[0]), max(rate_cpu, more[1])
            del sample
            res = min(runs, key=lambda r: r["wall_s"])
            ids, dists = np.load(Path(tmp) / "gt.npy"), np.load(Path(tmp) / "gt.distances.npy")
            pick = np.linspace(0, nq - 1, min(nq, args.check_queries)).astype(int)
            check = brute_force_check(base_path, queries[pick], ids[pick], dists[pick])
            flop = 2.0 * nq * n * d / 1e9
            row = {
                "shape": f"{nq} q x {n} x {d} ({args.format}, {base_path.stat().st_size / 2**20:.0f} MiB), k={args.k}",
                "sgemm_gflops": round(rate, 1),
                "gt_wall_s": round(res["wall_s"], 2),
                "gt_gflops": round(flop / res["wall_s"], 1),
                "ratio": round(flop / res["wall_s"] / rate, 3),
                "ratio_compute": round(flop / res["compute_s"] / rate, 3),
                "ratio_cpu": round(flop / min(r["cpu_s"] for r in runs) / rate_cpu, 3),
                "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
                "check": check,
                "load_avg": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(row), flush=True)
            base_path.unlink()


if __name__ == "__main__":
    main()
