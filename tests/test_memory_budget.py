"""fixtures.memory_budget: limits read from fake /proc and cgroup trees and the environment, estimates, check_fits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vq_benchmark.fixtures.memory_budget import (
    INTERPRETER_BYTES,
    UNLIMITED,
    Budget,
    MemoryBudgetError,
    available_memory,
    check_fits,
    estimate_case,
    estimate_gt,
    human_bytes,
    parse_size,
    pq_encode_scratch,
)

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def fake_proc(
    root: Path, *, available_kib: int | None = None, anon_kib: int = 0, cgroup: str = "0::/\n", meminfo: str = ""
) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    text = meminfo or "MemTotal:       24684084 kB\nMemFree:        22696580 kB\n"
    if available_kib is not None:
        text += f"MemAvailable:   {available_kib} kB\nBuffers:           19540 kB\n"
    (proc / "meminfo").write_text(text)
    (proc / "self" / "status").write_text(f"Name:\tpython\nVmRSS:\t{anon_kib + 30000} kB\nRssAnon:\t{anon_kib} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def write_files(d: Path, **files: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name.replace("_", ".", 1)).write_text(text)


def budget(tmp_path: Path, env: dict[str, str] | None = None, **proc: object) -> Budget:
    return available_memory(env or {}, proc_root=fake_proc(tmp_path, **proc), cgroup_root=tmp_path / "cg")  # type: ignore[arg-type]


# -- /proc/meminfo -----------------------------------------------------------------------------------------------


def test_mem_available_plus_own_rss(tmp_path: Path) -> None:
    b = budget(tmp_path, available_kib=4 * 1024 * 1024, anon_kib=100 * 1024)
    assert b == Budget(4 * GIB + 100 * MIB, "MemAvailable")
    assert b.describe() == "4.1 GiB (MemAvailable)"


def test_nothing_found_is_unlimited(tmp_path: Path) -> None:
    b = available_memory({}, proc_root=tmp_path / "no-proc", cgroup_root=tmp_path / "no-cgroup")
    assert b.bytes == UNLIMITED
    assert "no memory limit found" in b.describe()


# -- cgroups -----------------------------------------------------------------------------------------------------


def test_cgroup_v2_limit_minus_usage_not_counting_page_cache(tmp_path: Path) -> None:
    job = tmp_path / "cg" / "user.slice" / "job-1"
    write_files(
        job, memory_max=f"{GIB}\n", memory_current=f"{300 * MIB}\n", memory_stat=f"anon 1\ninactive_file {100 * MIB}\n"
    )
    b = budget(tmp_path, available_kib=16 * 1024 * 1024, anon_kib=50 * 1024, cgroup="0::/user.slice/job-1\n")
    assert b.bytes == GIB - 200 * MIB + 50 * MIB
    assert b.source == f"cgroup memory.max ({job})"
    assert [name for name, _ in b.limits] == [b.source, "MemAvailable"]


def test_cgroup_v2_max_means_unlimited_and_ancestors_count(tmp_path: Path) -> None:
    parent = tmp_path / "cg" / "user.slice"
    write_files(parent / "job-1", memory_max="max\n", memory_current=f"{10 * MIB}\n")
    b = budget(tmp_path, available_kib=1024 * 1024, cgroup="0::/user.slice/job-1\n")
    assert b.source == "MemAvailable"
    write_files(parent, memory_max=f"{512 * MIB}\n", memory_current=f"{12 * MIB}\n")
    b = budget(tmp_path, available_kib=1024 * 1024, cgroup="0::/user.slice/job-1\n")
    assert (b.bytes, b.source) == (500 * MIB, f"cgroup memory.max ({parent})")


def test_cgroup_v2_in_a_hybrid_tree(tmp_path: Path) -> None:
    write_files(tmp_path / "cg" / "unified" / "app", memory_max=f"{2 * GIB}", memory_current=f"{GIB}")
    b = budget(tmp_path, available_kib=8 * 1024 * 1024, cgroup="1:name=systemd:/\n0::/app\n")
    assert b.bytes == GIB
    assert "unified" in b.source


def test_cgroup_v1_limit_and_huge_value_is_unlimited(tmp_path: Path) -> None:
    mem = tmp_path / "cg" / "memory"
    write_files(mem, memory_limit_in_bytes="9223372036854771712\n", memory_usage_in_bytes=f"{5 * GIB}\n")
    write_files(
        mem / "docker" / "abc",
        memory_limit_in_bytes=f"{3 * GIB}\n",
        memory_usage_in_bytes=f"{GIB}\n",
        memory_stat=f"cache 5\ntotal_inactive_file {GIB // 2}\n",
    )
    cgroup = "9:name=systemd:/\n4:memory:/docker/abc\n3:cpuset:/\n0::/\n"
    b = budget(tmp_path, available_kib=20 * 1024 * 1024, anon_kib=0, cgroup=cgroup)
    assert (b.bytes, b.source) == (3 * GIB - GIB // 2, f"cgroup memory.limit_in_bytes ({mem / 'docker' / 'abc'})")


def test_cgroup_over_its_limit_leaves_nothing(tmp_path: Path) -> None:
    write_files(tmp_path / "cg" / "memory" / "x", memory_limit_in_bytes=f"{GIB}", memory_usage_in_bytes=f"{2 * GIB}")
    b = budget(tmp_path, available_kib=20 * 1024 * 1024, anon_kib=1024, cgroup="4:memory:/x\n")
    assert b.bytes == MIB


# -- SLURM -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected", "source"),
    [
        ({"SLURM_MEM_PER_NODE": "2048"}, 2 * GIB, "SLURM_MEM_PER_NODE=2048"),
        ({"SLURM_MEM_PER_NODE": "3G"}, 3 * GIB, "SLURM_MEM_PER_NODE=3G"),
        ({"SLURM_MEM_PER_CPU": "1024", "SLURM_CPUS_ON_NODE": "4"}, 4 * GIB, "SLURM_MEM_PER_CPU=1024 x 4 CPUs"),
        ({"SLURM_MEM_PER_CPU": "1024", "SLURM_CPUS_PER_TASK": "2"}, 2 * GIB, "SLURM_MEM_PER_CPU=1024 x 2 CPUs"),
        ({"SLURM_MEM_PER_CPU": "1536"}, 1536 * MIB, "SLURM_MEM_PER_CPU=1536 x 1 CPUs"),
        (
            {"SLURM_MEM_PER_NODE": "4096", "PYTEST_XDIST_WORKER_COUNT": "2"},
            2 * GIB,
            "SLURM_MEM_PER_NODE=4096 / 2 xdist workers",
        ),
    ],
)
def test_slurm_limits(tmp_path: Path, env: dict[str, str], expected: int, source: str) -> None:
    b = budget(tmp_path, env, available_kib=64 * 1024 * 1024)
    assert (b.bytes, b.source) == (expected, source)


def test_slurm_zero_means_the_whole_node(tmp_path: Path) -> None:
    assert budget(tmp_path, {"SLURM_MEM_PER_NODE": "0"}, available_kib=1024).source == "MemAvailable"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SLURM_MEM_PER_NODE": "lots"}, "SLURM_MEM_PER_NODE"),
        ({"SLURM_MEM_PER_CPU": "1024", "SLURM_CPUS_ON_NODE": "x"}, "SLURM_CPUS_ON_NODE"),
    ],
)
def test_bad_slurm_values_name_the_variable(tmp_path: Path, env: dict[str, str], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: ") as info:
        budget(tmp_path, env, available_kib=1024)
    assert "\n" not in str(info.value)


# -- VQ_MEMORY_LIMIT ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2G", 2 * GIB),
        ("512M", 512 * MIB),
        ("1500000000", 1_500_000_000),
        ("1.5g", 3 * GIB // 2),
        ("64KiB", 64 * KIB),
        (" 3 GB ", 3 * GIB),
        ("1T", 1 << 40),
    ],
)
def test_vq_memory_limit_parsing(tmp_path: Path, text: str, expected: int) -> None:
    b = budget(tmp_path, {"VQ_MEMORY_LIMIT": text}, available_kib=16 * 1024 * 1024 * 1024)
    assert (b.bytes, b.source) == (expected, f"VQ_MEMORY_LIMIT={text.strip()}")


@pytest.mark.parametrize("text", ["abc", "-1G", "0", "2X", "1e9", "G", "2 G B", "0.1"])
def test_bad_vq_memory_limit_is_one_line_naming_it(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match=r"^VQ_MEMORY_LIMIT: expected a positive size") as info:
        budget(tmp_path, {"VQ_MEMORY_LIMIT": text}, available_kib=1024)
    assert "\n" not in str(info.value)
    assert repr(text) in str(info.value)


def test_empty_vq_memory_limit_is_unset(tmp_path: Path) -> None:
    assert budget(tmp_path, {"VQ_MEMORY_LIMIT": " "}, available_kib=1024).source == "MemAvailable"


def test_parse_size_default_unit() -> None:
    assert parse_size("100", "X", unit=MIB) == 100 * MIB
    assert parse_size("100k", "X", unit=MIB) == 100 * KIB


# -- the minimum wins --------------------------------------------------------------------------------------------


def test_smallest_limit_is_chosen_and_named(tmp_path: Path) -> None:
    write_files(tmp_path / "cg" / "job", memory_max=f"{4 * GIB}", memory_current="0")
    env = {"SLURM_MEM_PER_NODE": "2048", "VQ_MEMORY_LIMIT": "3G"}
    b = budget(tmp_path, env, available_kib=8 * 1024 * 1024, cgroup="0::/job\n")
    assert (b.bytes, b.source) == (2 * GIB, "SLURM_MEM_PER_NODE=2048")
    assert [v for _, v in b.limits] == [2 * GIB, 3 * GIB, 4 * GIB, 8 * GIB]
    env["VQ_MEMORY_LIMIT"] = "1G"
    assert budget(tmp_path, env, available_kib=8 * 1024 * 1024, cgroup="0::/job\n").describe() == (
        "1.0 GiB (VQ_MEMORY_LIMIT=1G)"
    )


def test_the_real_machine_gives_a_positive_budget() -> None:
    b = available_memory({})
    assert b.bytes > 0
    assert b.source


# -- estimates ---------------------------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=10**10)


@given(n=sizes, extra=sizes, dim=st.integers(1, 4096), code=st.integers(1, 512), train=sizes, nq=st.integers(1, 10**5))
def test_estimates_grow_with_n_base(n: int, extra: int, dim: int, code: int, train: int, nq: int) -> None:
    kw = dict(n_train=train, n_queries=nq, k=100, chunk_rows=65536, gt_k=100)
    small, big = estimate_case(n, dim, code, **kw), estimate_case(n + extra, dim, code, **kw)
    assert small.total <= big.total
    assert all(v >= 0 for v in big.parts.values())
    assert estimate_gt(n, dim, nq, min(n, 100)).total <= estimate_gt(n + extra, dim, nq, min(n, 100)).total


def test_case_estimate_parts() -> None:
    e = estimate_case(10_000_000, 128, 16, n_train=100_000, n_queries=1000, k=100, chunk_rows=65536, gt_k=100)
    assert e.parts["codes"] == 10_000_000 * 16
    chunk, read = e.parts["encode chunk"], 65536 * 128 * 4
    assert e.parts["faiss codes copy"] == 10_000_000 * 16 + read - chunk  # add_sa_codes' copy beside the last read
    assert e.parts["training sample"] == 100_000 * 128 * 4
    assert e.parts["ground truth"] == 1000 * 100 * 12
    assert e.parts["interpreter + faiss"] == INTERPRETER_BYTES
    assert e.total == sum(e.parts.values())
    assert e.describe(2) == f"~{human_bytes(e.total)} (codes 153 MiB, encode chunk 145 MiB)"


def test_pq_encode_scratch_follows_faiss_blas_rule() -> None:
    assert pq_encode_scratch(128, 8) == 8 * 256 * 4  # 16-d sub-vectors: faiss builds distance tables
    assert pq_encode_scratch(128, 16) == 0  # 8-d sub-vectors: direct computation
    e = estimate_case(
        10**6, 128, 8, n_train=1, n_queries=1, k=1, chunk_rows=65536, gt_k=1, encode_scratch_per_row=8 * 1024
    )
    assert e.parts["encode scratch"] == 512 * MIB
    assert e.parts["faiss codes copy"] == 0  # encoding's transients outweigh the copy add_sa_codes makes later


def test_gt_estimate_is_bounded_by_chunks_not_the_base() -> None:
    small, huge = estimate_gt(10**7, 128, 1000, 100), estimate_gt(10**9, 128, 1000, 100)
    assert small.total == huge.total < GIB  # streaming: nothing in it grows with n_base


def test_interpreter_allowance_covers_importing_faiss() -> None:
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss keeps the parent's peak across exec (the pytest worker's)
    code = "import faiss, numpy; print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    rss = int(out.stdout) * 1024
    assert rss < INTERPRETER_BYTES, f"import faiss, numpy peaked at {rss >> 20} MiB"


# -- check_fits --------------------------------------------------------------------------------------------------


def test_check_fits_raises_with_both_numbers() -> None:
    e = estimate_case(10**9, 128, 8, n_train=100_000, n_queries=1000, k=100, chunk_rows=65536, gt_k=100)
    with pytest.raises(MemoryBudgetError) as info:
        check_fits(e, Budget(GIB, "VQ_MEMORY_LIMIT=1G"), "case glove-pq-M8")
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert msg.startswith("case glove-pq-M8 needs ~15.1 GiB (codes 7.5 GiB, faiss codes copy 7.3 GiB, ")
    assert msg.endswith("but only 1.0 GiB is available (VQ_MEMORY_LIMIT=1G)")
    assert "\n" not in msg


def test_check_fits_passes_when_it_fits() -> None:
    e = estimate_gt(10**6, 64, 100, 10)
    check_fits(e, Budget(e.total, "MemAvailable"), "ground truth")


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MIB - 1, "1.0 MiB"),
        (150 * MIB, "150 MiB"),
        (3.1 * GIB, "3.1 GiB"),
    ],
)
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text
