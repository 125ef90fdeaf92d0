"""Scaling of the harness: 2 xdist workers vs 1 process, and the codec cache warm vs cold, in one run.

1. A sweep of small PQ/SQ cases runs as `pytest vq_cases` once with `-n 2` and once without (plus once without
   and with `--vq-threads 1`). Each run has its own fresh database, run dir and codebooks dir and
   `--vq-no-codec-cache`, so every case trains; all share one ground-truth cache, warmed first, so no run pays for
   ground truth. Ratio = t(1 process) / t(2 workers), medians over `--repeat`; target >= 1.7 on 2 cores.
   With the default `--vq-threads 0` the single process gives faiss 2 threads and each worker 1, so the first
   ratio is "2 workers vs faiss's own threading"; the `--vq-threads 1` ratio is the pure scheduling effect.
   Each configuration also runs a one-case sweep (SQ8, ~0.03 s of work): its wall time is the fixed cost of the
   configuration (interpreters, imports, collection, xdist start-up and teardown), which the sweep must amortise.
2. An OPQ-dominated sweep runs twice on one codebooks dir that starts empty: a cold run that trains and writes
   every codec, then a warm run that loads them. Ratio = t(warm) / t(cold); target <= 0.20.

Wall times are of the whole pytest subprocess (imports, worker start-up, dataset opening included), because that
is what a user waits for. Python bytecode is cached under the temp dir and warmed by untimed runs, as it is on a
user's machine after the first run (`--inherit-bytecode-env` keeps e.g. PYTHONDONTWRITEBYTECODE=1 instead, which
makes every process compile the harness and pytest rewrite its asserts again). The machine is shared, so each run
also records the CPU time other processes used while it ran, and the configurations are interleaved so that
drifting load hits all of them alike.

    python benchmarks/scaling.py --repeat 2    # about 4 minutes on 2 cores, most of it the cold OPQ training
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import resource
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_XDIST = 1.7
TARGET_CACHE = 0.20
RUN_TIMEOUT_S = 1800
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")

# 17 cases from 0.02 s to a few seconds each: PQ training grows with M and 2^nbits. Enough cases that the order
# and the hand-out of cases to workers matter, none so long that one case decides the run.
XDIST_SWEEP = """\
[[sweep]]
method = "pq"
M = [4, 8, 16]
nbits = [4, 5, 6, 7, 8]

[[sweep]]
method = "sq8"

[[sweep]]
method = "sq4"
"""

# OPQ training dominates: what the codec cache exists to skip. The PQ cases show the cache on cheaper training.
CACHE_SWEEP = """\
[[sweep]]
method = "opq"
M = [8, 16]
nbits = [8]

[[sweep]]
method = "pq"
M = [8, 16]
nbits = [8]
"""

# One case of negligible work: the wall time of a run of it is the configuration's fixed cost (interpreter, pytest,
# faiss import, collection, opening the dataset, xdist's worker start-up, writing the report).
PROBE_SWEEP = """\
[[sweep]]
method = "sq8"
"""

WARM_GT = (
    "import pathlib, sys; from vq_benchmark.fixtures.registry import BUILTIN; "
    "from vq_benchmark.fixtures.loading import open_dataset; "
    "open_dataset(BUILTIN[sys.argv[1]], pathlib.Path(sys.argv[2]))"
)


@dataclass
class Run:
    """One pytest subprocess: its wall time, the CPU it and others used meanwhile, and its SQLite rows."""

    label: str
    wall_s: float
    own_cpu_s: float
    others_cpu_s: float
    rows: list[dict] = field(default_factory=list)

    @property
    def case_s(self) -> float:
        """Time inside the timed phases of all cases: what a perfect scheduler divides among workers."""
        return sum(_case_s(r) for r in self.rows)

    def busy_by_worker(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for r in self.rows:
            out[r["worker"]] += _case_s(r)
        return dict(sorted(out.items()))


def _case_s(row: dict) -> float:
    return sum(row[k] or 0.0 for k in ("train_s", "encode_s", "search_s"))


def cpu_info() -> str:
    """The machine line: cores we may use, CPU model, memory, and the versions that shape the timings."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    versions = [f"Python {platform.python_version()}"]
    for dist in ("faiss-cpu", "numpy", "pytest", "pytest-xdist"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    return f"{cores} cores (nproc), {model}{mem}, {platform.system()}, {', '.join(versions)}"


def busy_cpu_s() -> float:
    """Machine-wide non-idle CPU seconds so far (/proc/stat; steal excluded: it is time we did not get)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) * TICK_S


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _stop_group(pgid: int) -> bool:
    """End what is left of our own child's process group (its xdist workers included), by its id; True if any."""
    left = False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return left
        left = True
        time.sleep(1.0)
    return left


def run_cmd(label: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run one command in its own process group, print it, and time it; exits on failure."""
    print(f"$ {shlex.join(cmd)}", flush=True)
    cpu0, busy0 = children_cpu_s(), busy_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except BaseException:  # timeout or Ctrl-C: leave no worker behind
        _stop_group(proc.pid)
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    own = children_cpu_s() - cpu0
    others = max(0.0, busy_cpu_s() - busy0 - own)
    if _stop_group(proc.pid):  # normally nothing is left: pytest has reaped its workers
        print(f"  warning: processes of {label} outlived pytest and were stopped", flush=True)
    if proc.returncode != 0:
        sys.exit(f"command failed (exit {proc.returncode}): {shlex.join(cmd)}\n{out[-3000:]}")
    print(f"  {label}: {wall:.2f} s wall, {own:.1f} s CPU, others used {others / wall:.2f} cores", flush=True)
    return Run(label, wall, own, others)


def read_rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY created_at, case_id")]
    finally:
        conn.close()


def pytest_cmd(dataset: str, sweep: Path, out: Path, gt_cache: Path, codebooks: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(REPO / "vq_cases"), "--vq-dataset", dataset, "-p", "no:cacheprovider",
        "-q", "--vq-sweep", str(sweep), "--vq-db-path", str(out / "results.db"), "--vq-run-dir", str(out / "runs"),
        "--vq-cache-dir", str(gt_cache), "--vq-codebooks-dir", str(codebooks), *extra,
    ]  # fmt: skip


def harness_run(label: str, cmd: list[str], out: Path, cwd: Path, env: dict[str, str]) -> Run:
    run = run_cmd(label, cmd, cwd, env)
    run.rows = read_rows(out / "results.db")
    bad = [r["case_id"] for r in run.rows if r["status"] != "ok"]
    if bad:
        sys.exit(f"{label}: cases not ok: {', '.join(bad)}")
    return run


def med(runs: list[Run], attr: str = "wall_s") -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def fmt_runs(runs: list[Run]) -> str:
    return ", ".join(f"{r.wall_s:.2f}" for r in runs)


def print_worker_detail(run: Run) -> None:
    """Which worker ran which case, with its duration: where a 2-worker run lost time. Rows are listed by
    created_at, which has 1 s resolution, so cases ending within one second appear by id."""
    by_worker: dict[str, list[str]] = defaultdict(list)
    for r in run.rows:
        by_worker[r["worker"]].append(f"{r['case_id'].split('-', 1)[1]} {_case_s(r):.2f}")
    for worker, busy in run.busy_by_worker().items():
        print(f"    {worker}: {len(by_worker[worker])} cases, {busy:.2f} s in cases: {'; '.join(by_worker[worker])}")


XDIST_CONFIGS = {  # label: (folder name, options besides the common ones)
    "1 process, default threads": ("p1", []),
    "1 process, --vq-threads 1": ("p1-t1", ["--vq-threads", "1"]),
    "2 workers (-n 2)": ("n2", ["-n", "2"]),
}


def scaling(
    args: argparse.Namespace, tmp: Path, gt_cache: Path, env: dict[str, str]
) -> tuple[dict[str, list[Run]], dict[str, list[Run]]]:
    """Part 1: the sweep as 1 process (2 threads), 1 process (1 thread) and 2 workers, interleaved; each one also
    runs a one-case sweep (SQ8, ~0.03 s of work), whose wall time is that configuration's fixed cost."""
    sweep = Path(args.sweep) if args.sweep else tmp / "xdist_sweep.toml"
    if not args.sweep:
        sweep.write_text(XDIST_SWEEP)
    probe = tmp / "probe_sweep.toml"
    probe.write_text(PROBE_SWEEP)
    runs: dict[str, list[Run]] = {label: [] for label in XDIST_CONFIGS}
    probes: dict[str, list[Run]] = {label: [] for label in XDIST_CONFIGS}
    order = list(XDIST_CONFIGS)
    for label, (folder, extra) in XDIST_CONFIGS.items():  # untimed: bytecode and page cache warm for every config
        out = tmp / "xdist" / f"{folder}-warm-up"
        cmd = pytest_cmd(args.dataset, probe, out, gt_cache, out / "codebooks", ["--vq-no-codec-cache", *extra])
        harness_run(f"{label}, warm-up (not used)", cmd, out, tmp, env)
    for i in range(args.repeat):
        for label in order[i % 3 :] + order[: i % 3]:  # rotate, so no configuration always runs first
            folder, extra = XDIST_CONFIGS[label]
            for kind, file, into in (("sweep", sweep, runs), ("fixed", probe, probes)):
                out = tmp / "xdist" / f"{folder}-{kind}-{i}"
                cmd = pytest_cmd(args.dataset, file, out, gt_cache, out / "codebooks", ["--vq-no-codec-cache", *extra])
                into[label].append(harness_run(f"{label}, {kind}", cmd, out, tmp, env))
    return runs, probes


def codec_cache(args: argparse.Namespace, tmp: Path, gt_cache: Path, env: dict[str, str]) -> dict[str, list[Run]]:
    """Part 2: cold then warm on one codebooks dir that starts empty, `--repeat` times with a new dir each time."""
    sweep = tmp / "cache_sweep.toml"
    sweep.write_text(CACHE_SWEEP)
    runs: dict[str, list[Run]] = {"cold": [], "warm": []}
    for i in range(args.repeat):
        codebooks = tmp / "cache" / f"codebooks-{i}"
        for label in ("cold", "warm"):
            out = tmp / "cache" / f"{i}-{label}"
            run = harness_run(
                f"codec cache {label}", pytest_cmd(args.dataset, sweep, out, gt_cache, codebooks, []), out, tmp, env
            )
            want = 1 if label == "warm" else 0
            wrong = [r["case_id"] for r in run.rows if r["codec_cached"] != want]
            if wrong:
                sys.exit(f"codec cache {label} run: codec_cached != {want} for {', '.join(wrong)}")
            runs[label].append(run)
    return runs


def report_xdist(xd: dict[str, list[Run]], probes: dict[str, list[Run]]) -> tuple[float, float]:
    """The table of part 1 and the numbers that explain the 2-worker ratio; returns the two ratios."""
    one2, one1, two = (xd[k] for k in XDIST_CONFIGS)
    print("\n== 1. xdist: wall time of the whole pytest process (medians; every run in brackets)")
    head = f"{'wall s':>7} {'in cases s':>10} {'CPU s':>6} {'others':>6} {'thr':>3}  {'fixed s':>7}"
    print(f"{'configuration':<28} {head}  all runs s")
    for label, runs in xd.items():
        threads = ",".join(str(t) for t in sorted({r["threads"] for run in runs for r in run.rows}))
        others = statistics.median(r.others_cpu_s / r.wall_s for r in runs)
        print(
            f"{label:<28} {med(runs):>7.2f} {med(runs, 'case_s'):>10.2f} {med(runs, 'own_cpu_s'):>6.1f} "
            f"{others:>6.2f} {threads:>3}  {med(probes[label]):>7.2f}  [{fmt_runs(runs)}]"
        )
    print("  in cases = sum of train_s + encode_s + search_s over the rows (under -n 2: over both workers);")
    print("  CPU = CPU time of the pytest process tree; others = cores used by other processes during the run;")
    print("  fixed = wall time of the same command on a one-case sweep (SQ8): start-up and teardown.")
    for i, run in enumerate(two):
        busy = run.busy_by_worker()
        print(
            f"  -n 2 run {i}: wall {run.wall_s:.2f} s; in cases per worker "
            + ", ".join(f"{w} {s:.2f} s" for w, s in busy.items())
            + f"; outside cases {run.wall_s - max(busy.values()):.2f} s"
        )
        print_worker_detail(run)
    f1, f2 = med(probes["1 process, --vq-threads 1"]), med(probes["2 workers (-n 2)"])
    w1, w2 = med(one1, "case_s"), med(two, "case_s")
    best = (f1 + w1) / (f2 + w1 / 2)
    print(f"  cases under -n 2 took {w2 / w1:.2f}x their time in 1 process with 1 thread ({w2:.2f} s vs {w1:.2f} s).")
    print(f"  fixed cost: {f2:.2f} s with -n 2 vs {f1:.2f} s for 1 process. Even with cases as fast as alone and a")
    print(f"  perfect split, t(1 thread) / t(-n 2) <= ({f1:.2f} + {w1:.2f}) / ({f2:.2f} + {w1:.2f} / 2) = {best:.2f}")
    return med(one2) / med(two), med(one1) / med(two)


def report_cache(cc: dict[str, list[Run]]) -> float:
    print("\n== 2. codec cache (a new, empty codebooks dir for each cold/warm pair)")
    for label, runs in cc.items():
        train = statistics.median(sum(r["train_s"] or 0.0 for r in run.rows) for run in runs)
        print(
            f"  {label}: wall {med(runs):.2f} s [{fmt_runs(runs)}]; sum of train_s {train:.3f} s; "
            f"codec_cached = {1 if label == 'warm' else 0} in all {len(runs[0].rows)} rows of every run"
        )
    return med(cc["warm"]) / med(cc["cold"])


def report_summary(r_xdist: float, r_sched: float, r_cache: float) -> None:
    print("\n== summary")
    print(f"{'ratio (medians)':<46} {'value':>6} {'target':>8}  result")
    for name, value, target, higher in (
        ("t(1 process, 2 faiss threads) / t(-n 2)", r_xdist, TARGET_XDIST, True),
        ("t(1 process, 1 faiss thread) / t(-n 2)", r_sched, TARGET_XDIST, True),
        ("t(warm codec cache) / t(cold)", r_cache, TARGET_CACHE, False),
    ):
        print(
            f"{name:<46} {value:>6.3f} {('>= ' if higher else '<= ') + str(target):>8}  "
            f"{verdict(value, target, higher)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each configuration; medians are reported")
    ap.add_argument("--dataset", default="dummy", help="a built-in dataset (default: dummy, 10,000 x 64)")
    ap.add_argument(
        "--sweep", help="sweep TOML for the xdist part (default: 15 PQ cases M 4,8,16 x nbits 4-8, SQ8, SQ4)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (databases, run dirs) and print its path")
    ap.add_argument(
        "--inherit-bytecode-env",
        action="store_true",
        help="run with PYTHONDONTWRITEBYTECODE / PYTHONPYCACHEPREFIX as inherited instead of a bytecode cache in the "
        "temp dir (with PYTHONDONTWRITEBYTECODE=1 every process compiles the harness and pytest re-rewrites it)",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    # Only the options below may shape the runs: drop settings and pytest options inherited from the environment.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VQ_") and k not in ("PYTEST_ADDOPTS", "DB_PATH", "CODEBOOKS_DIR")
    }
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {cpu_info()}")
    print(f"load average before: {load()}")
    print(f"OMP_WAIT_POLICY: {env.get('OMP_WAIT_POLICY', '(unset: the harness uses PASSIVE)')}")
    tmp = Path(tempfile.mkdtemp(prefix="vq-scaling-"))
    if not args.inherit_bytecode_env:  # as on a user's machine: modules compiled (and assert-rewritten) once
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    dont_write = env.get("PYTHONDONTWRITEBYTECODE") or "(unset)"
    prefix = env.get("PYTHONPYCACHEPREFIX") or "(unset: __pycache__ next to the sources)"
    print(f"bytecode: PYTHONDONTWRITEBYTECODE={dont_write}, PYTHONPYCACHEPREFIX={prefix}")
    try:
        gt_cache = tmp / "gt-cache"
        t0 = time.perf_counter()
        run_cmd(
            "ground truth (warm-up, not timed in the ratios)",
            [sys.executable, "-c", WARM_GT, args.dataset, str(gt_cache)],
            tmp,
            env,
        )
        xd, probes = scaling(args, tmp, gt_cache, env)
        cc = codec_cache(args, tmp, gt_cache, env)
        ratios = report_xdist(xd, probes)
        report_summary(*ratios, report_cache(cc))
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average after: {load()}")
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the running pytest's process group was stopped and the temp dir handled
        sys.exit("interrupted")
