"""Do `vq-benchmark report` (table, plots, HTML page) and `vq-benchmark compare` stay fast on a big sweep?

Writes a results database of N realistic rows (benchmarks/recording.py's rows, one run) for a small and a large N,
times each command in-process on both, and prints seconds and the per-row cost ratio large/small. Target: the
per-row cost of the large database at most 1.5x that of the small one (no quadratic step: Pareto marking used to
compare all pairs), and the large HTML page under 20 s.

    python benchmarks/report_scale.py                     # 200 and 5,000 rows
    python benchmarks/report_scale.py --small 500 --large 20000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from recording import realistic_row

from vq_benchmark.plugin.cli import main
from vq_benchmark.reports.sqlite_store import SqliteStore

TARGET_RATIO = 1.5
TARGET_HTML_S = 20.0


def make_db(path: Path, n: int) -> Path:
    store = SqliteStore(path)
    try:
        store.write(realistic_row(i) for i in range(n))
    finally:
        store.close()
    return path


def timed(argv: list[str]) -> float:
    """Seconds of one `vq-benchmark` command run in-process, its output discarded."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    secs = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"vq-benchmark {' '.join(argv)} exited {rc}")
    return secs


def commands(db: Path, out: Path) -> dict[str, Callable[[], float]]:
    return {
        "report (table)": lambda: timed(["report", str(db)]),
        "report --plots": lambda: timed(["report", str(db), "--plots", str(out / "plots")]),
        "report --html": lambda: timed(["report", str(db), "--html", str(out / "page.html"), "--run-dir", str(out)]),
        "compare (itself)": lambda: timed(["compare", str(db), str(db)]),
    }


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=5000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results: dict[int, dict[str, float]] = {}
        for n in (args.small, args.large):
            db = make_db(root / f"rows{n}.db", n)
            cmds = commands(db, root / f"out{n}")
            cmds["report (table)"]()  # warm imports (tabulate, matplotlib) outside the timings
            results[n] = {name: run() for name, run in cmds.items()}
        page = (root / f"out{args.large}" / "page.html").stat().st_size
    print(f"{'command':<18} {args.small:>8,} rows  {args.large:>8,} rows  per-row ratio (target <= {TARGET_RATIO})")
    ok = True
    for name in results[args.small]:
        small, large = results[args.small][name], results[args.large][name]
        ratio = (large / args.large) / (small / args.small)
        ok &= ratio <= TARGET_RATIO
        print(f"{name:<18} {small:>10.2f} s  {large:>10.2f} s  {ratio:.2f}")
    html_s = results[args.large]["report --html"]
    ok &= html_s <= TARGET_HTML_S
    print(f"HTML page of {args.large:,} rows: {page / 1e6:.1f} MB in {html_s:.1f} s (target <= {TARGET_HTML_S:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main_())
