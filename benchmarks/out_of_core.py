"""PQ end to end on a base file larger than the memory the harness is allowed: peak RSS, wall time, recall.

Writes a seeded, clustered low-rank float32 .npy base of --size-gb (streamed, never held in memory) and 1,000
queries, declares them in a datasets TOML file, then runs the harness in child processes, each under the same
memory limit:

1. ground truth: `fixtures.loading.open_dataset` computes exact GT by streaming the base and caches it (what the
   first case of a session would do);
2. each selected case: `python -m pytest --pyargs vq_benchmark.vq_cases --vq-datasets-file F --vq-dataset outofcore
   -k <case id> --vq-cache-dir ...` (default selection: the two plain PQ cases, PQ8x8 and PQ16x8).

The limit is a cgroup made for each child (v2: /sys/fs/cgroup/vqbench-<pid> with memory.max; v1: vqbench-<pid>
under this process's memory cgroup with memory.limit_in_bytes), removed afterwards; where no cgroup can be
written, RLIMIT_AS. RLIMIT_AS caps *virtual* memory (thread stacks, allocator arenas and any memory-mapped file
count in full), so it is far stricter than the same RSS limit and a failure under it proves little.

    python benchmarks/out_of_core.py --quick                 # 1 GiB file, 384 MiB limit
    python benchmarks/out_of_core.py --size-gb 6 --limit-gb 1

For each step it prints the exit status, wall time, peak RSS (ru_maxrss, which also counts mapped library pages),
the sampled peak anonymous RSS, the cgroup's peak (which also counts reclaimable page cache, so it sits at the
limit after any pass over the file) and fixtures/memory_budget.py's estimate; then recall@10 and MSE per case as
read from the SQLite file the runs wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GIB = 1 << 30
ROWS_PER_WRITE = 65536
NAME = "outofcore"
PLAIN_PQ = "(pq-M8-nbits8 or pq-M16-nbits8) and not opq"  # -k matches substrings, case-insensitively
_MB_SPEC = importlib.util.spec_from_file_location(
    "_mb", Path(__file__).resolve().parents[1] / "fixtures" / "memory_budget.py"
)


@functools.cache
def _memory_budget():  # loaded by path so the script also runs against another checkout put on PYTHONPATH
    mod = sys.modules[_MB_SPEC.name] = importlib.util.module_from_spec(_MB_SPEC)
    _MB_SPEC.loader.exec_module(mod)
    return mod


def _fmt(n: float | None) -> str:
    return "n/a" if n is None else _memory_budget().human_bytes(n)


# -- data -------------------------------------------------------------------------------------------------------


def _model(dim: int, seed: int, intrinsic: int = 12, clusters: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    centers = rng.normal(0, 3.0, (clusters, intrinsic)).astype(np.float32)
    proj = (rng.standard_normal((intrinsic, dim)) / np.sqrt(intrinsic)).astype(np.float32)
    return centers, proj


def _rows(centers: np.ndarray, proj: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Clustered points in a low-dimensional subspace plus isotropic noise (so PQ recall is meaningful)."""
    z = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    x = z @ proj
    x += 0.05 * rng.standard_normal(x.shape, dtype=np.float32)
    return x


def write_npy(path: Path, n: int, dim: int, seed: int, stream: int) -> None:
    """n x dim float32 rows written chunk by chunk (each chunk from its own seeded stream: reproducible)."""
    centers, proj = _model(dim, seed)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        for i, start in enumerate(range(0, n, ROWS_PER_WRITE)):
            rng = np.random.default_rng([seed, stream, i])
            f.write(_rows(centers, proj, min(ROWS_PER_WRITE, n - start), rng).tobytes())
    os.replace(tmp, path)


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    try:
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            return shape if dtype == np.float32 else None
    except (OSError, ValueError):
        return None


# -- memory limit -----------------------------------------------------------------------------------------------


class Limit:
    """A memory limit for one child: a cgroup when one can be made, else RLIMIT_AS."""

    def __init__(self, limit: int) -> None:
        self.limit, self.group = limit, None
        self.kind = "RLIMIT_AS (no writable cgroup; it caps virtual memory, far stricter than RSS)"
        me = Path("/proc/self/cgroup").read_text()
        v2root, v1 = Path("/sys/fs/cgroup"), re.search(r"^\d+:[^:]*\bmemory\b[^:]*:(.*)$", me, re.M)
        with contextlib.suppress(OSError):
            # v2: a group right under the root, where the memory controller is enabled for children
            control = v2root / "cgroup.subtree_control"
            if control.is_file() and "memory" in control.read_text().split():
                self._make(v2root / f"vqbench-{os.getpid()}", "memory.max", "cgroup v2 memory.max")
            elif v1 is not None:
                parent = Path("/sys/fs/cgroup/memory", v1[1].strip("/"))
                self._make(
                    parent / f"vqbench-{os.getpid()}", "memory.limit_in_bytes", "cgroup v1 memory.limit_in_bytes"
                )

    def _make(self, group: Path, knob: str, kind: str) -> None:
        group.mkdir()
        try:
            (group / knob).write_text(str(self.limit))
            if int((group / knob).read_text()) > self.limit + 4096:
                raise OSError(f"{group / knob} did not take the limit")
        except (OSError, ValueError):
            group.rmdir()
            raise
        self.group, self.kind = group, f"{kind} ({group})"

    def preexec(self) -> None:
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
        else:
            resource.setrlimit(resource.RLIMIT_AS, (self.limit, self.limit))

    def stats(self) -> dict[str, str]:
        if self.group is None:
            return {}
        g, out = self.group, {}
        for name, f in (
            ("cgroup peak (incl. page cache)", "memory.peak"),
            ("cgroup peak (incl. page cache)", "memory.max_usage_in_bytes"),
        ):
            with contextlib.suppress(OSError, ValueError):
                out[name] = _fmt(int((g / f).read_text()))
        for f in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError):
                kills = re.search(r"^oom_kill (\d+)", (g / f).read_text(), re.M)
                if kills:
                    out["cgroup OOM kills"] = kills[1]
        return out

    def remove(self) -> None:
        for _ in range(50):
            if self.group is None or not self.group.exists():
                return
            try:
                self.group.rmdir()
            except OSError:
                time.sleep(0.1)
        print(f"warning: could not remove {self.group}", file=sys.stderr)


def _sample_anon(pid: int, peak: dict[str, int], done: threading.Event) -> None:
    """Poll the child's RssAnon/RssFile (RSS counts memory-mapped file pages too; anon is the real allocation)."""
    while not done.wait(0.1):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for key in ("RssAnon", "RssFile", "VmRSS"):
            m = re.search(rf"^{key}:\s*(\d+) kB", status, re.M)
            if m:
                peak[key] = max(peak.get(key, 0), int(m[1]) * 1024)


# -- run --------------------------------------------------------------------------------------------------------

GT_SCRIPT = """import sys
from pathlib import Path
from vq_benchmark.fixtures.loading import open_dataset
from vq_benchmark.fixtures.registry import known_datasets
spec = known_datasets(Path(sys.argv[1]), Path(sys.argv[2]))[sys.argv[3]]
print(open_dataset(spec, Path(sys.argv[4]), gt_k=100).gt_source)
"""


def _case_estimate(cid: str, n: int, dim: int, train: int, nq: int):
    m = re.search(r"pq-M(\d+)-nbits(\d+)", cid)
    if not m:
        return None
    mb, big_m, nbits = _memory_budget(), int(m[1]), int(m[2])
    return mb.estimate_case(
        n, dim, -(-big_m * nbits // 8), n_train=train, n_queries=nq, k=100, chunk_rows=65536, gt_k=100,
        codec_bytes=dim * (1 << nbits) * 4, encode_scratch_per_row=mb.pq_encode_scratch(dim, big_m, nbits),
    )  # fmt: skip


def run_limited(cmd: list[str], cwd: Path, limit: int, log: Path) -> dict[str, object]:
    """Run `cmd` under a fresh memory limit; exit status, wall time and memory peaks of that child."""
    lim, peak, done = Limit(limit), {}, threading.Event()
    try:
        with open(log, "w") as out:
            t0 = time.perf_counter()
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=lim.preexec)
            sampler = threading.Thread(target=_sample_anon, args=(child.pid, peak, done), daemon=True)
            sampler.start()
            try:
                _, status, usage = os.wait4(child.pid, 0)
            except BaseException:
                os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
                raise
            wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        return {"rc": os.waitstatus_to_exitcode(status), "wall": wall, "maxrss": usage.ru_maxrss * 1024,
                "anon": peak.get("RssAnon"), "kind": lim.kind, **lim.stats()}  # fmt: skip
    finally:
        lim.remove()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=None, help="base file size in GiB (default 6)")
    ap.add_argument("--limit-gb", type=float, default=None, help="memory limit on the harness, GiB (default 1)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--train-size", type=int, default=None, help="--vq-train-size (harness default 100000)")
    ap.add_argument("-k", dest="select", default=PLAIN_PQ, help=f"pytest -k expression (default {PLAIN_PQ!r})")
    ap.add_argument("--threads", type=int, default=None, help="--vq-threads")
    ap.add_argument("--workdir", type=Path, default=None, help="where files go (kept; a matching base is reused)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--quick", action="store_true", help="defaults for a quick run: 1 GiB file, 384 MiB limit")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when the output goes to a file
    args.size_gb = args.size_gb or (1.0 if args.quick else 6.0)
    args.limit_gb = args.limit_gb or (0.375 if args.quick else 1.0)
    n, limit = int(args.size_gb * GIB) // (args.dim * 4), int(args.limit_gb * GIB)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vq-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    base, queries = work / "base.npy", work / "queries.npy"
    try:
        reuse = _npy_shape(base) == (n, args.dim)
        need = (0 if reuse else n * args.dim * 4) + (256 << 20)
        free = shutil.disk_usage(work).free
        if free < need:
            print(f"refusing: {work} has {_fmt(free)} free; the base file and caches need {_fmt(need)}")
            return 2
        t0 = time.perf_counter()
        if not reuse:
            write_npy(base, n, args.dim, args.seed, stream=1)
        write_npy(queries, args.queries, args.dim, args.seed, stream=2)
        print(f"base {base}: {n:,} x {args.dim} float32 = {_fmt(base.stat().st_size)}"
              f" ({'reused' if reuse else f'written in {time.perf_counter() - t0:.1f} s'})")  # fmt: skip
        (work / "datasets.toml").write_text(
            f'[datasets.{NAME}]\nformat = "npy"\nbase = "{base}"\nqueries = "{queries}"\nmetric = "l2"\n'
            f'description = "out-of-core benchmark, seed {args.seed}"\n'
        )
        return _run(args, work, n, limit)
    finally:
        if not (args.keep or args.workdir is not None):
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, n: int, limit: int) -> int:
    """Ground truth in one child, then each case in its own child (so each gets its own peak), same limit."""
    db = work / "results.db"
    db.unlink(missing_ok=True)
    for old in ("cache", "codebooks", "runs"):  # ground truth is computed afresh: it is part of the run
        shutil.rmtree(work / old, ignore_errors=True)
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "vq_benchmark.vq_cases", "-p", "no:cacheprovider",
           "--vq-datasets-file", str(work / "datasets.toml"), "--vq-dataset", NAME, "--vq-db-path", str(db),
           "--vq-run-dir", str(work / "runs"), "--vq-cache-dir", str(work / "cache"),
           "--vq-codebooks-dir", str(work / "codebooks"), "--vq-no-codec-cache"]  # fmt: skip
    cmd += ["--vq-train-size", str(args.train_size)] if args.train_size else []
    cmd += ["--vq-threads", str(args.threads)] if args.threads is not None else []
    collected = subprocess.run([*cmd, "-k", args.select, "--collect-only", "-q"], capture_output=True, text=True)
    ids = re.findall(r"test_case\[([^\]]+)\]", collected.stdout)
    if not ids:
        print(f"no case matches -k {args.select!r}:", collected.stdout[-2000:], collected.stderr[-2000:], sep="\n")
        return 1
    gt_cmd = [sys.executable, "-c", GT_SCRIPT, str(work / "datasets.toml"), str(work), NAME, str(work / "cache")]
    steps = [("ground truth", gt_cmd, _memory_budget().estimate_gt(n, args.dim, args.queries, 100))]
    train = min(n, args.train_size or 100_000)
    steps += [(cid, [*cmd, "-k", cid], _case_estimate(cid, n, args.dim, train, args.queries)) for cid in ids]
    print(f"limit {_fmt(limit)} on each step; file is {args.size_gb * GIB / limit:.1f}x the limit")
    worst = 0
    for i, (name, step_cmd, est) in enumerate(steps):
        log = work / f"step{i}.log"
        res = run_limited(step_cmd, work, limit, log)
        if i == 0:
            print(f"limit set via {res['kind']}")
        rc = int(res["rc"])  # type: ignore[call-overload]
        worst = worst or rc
        print(f"\n== {name}: exit {rc}{' (killed: out of memory)' if rc == -9 else ''}, wall {res['wall']:.1f} s")
        print(f"   peak RSS (ru_maxrss) {_fmt(res['maxrss'])}, sampled peak anon RSS {_fmt(res['anon'])}, "
              f"{', '.join(f'{k} {v}' for k, v in res.items() if k.startswith('cgroup'))}")  # fmt: skip
        print(f"   estimate {est.describe(5) if est is not None else 'n/a (not a PQ case)'}")
        if rc not in (0, -9):
            print("   log tail:", *log.read_text().splitlines()[-8:], sep="\n   ")
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as con:
        query = "SELECT case_id, status, error, recall_at_10, mse, train_s, encode_s, search_s FROM results"
        print("\nresults table rows:")
        for cid, status, error, *nums in con.execute(query):
            if status != "ok":
                print(f"   {cid} {status}: {error}")
                continue
            r10, mse, tr, enc, se = (("n/a" if v is None else f"{v:.4g}") for v in nums)
            print(f"   {cid} ok: recall@10 {r10}, mse {mse}, train {tr} s, encode {enc} s, search {se} s")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
