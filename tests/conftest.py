"""Test-suite wiring: pytester runs `pytest vq_cases` in-process and in subprocesses for the end-to-end tests.

faiss is imported here, before any in-process run: pytester restores `sys.modules` after each run, so a faiss first
imported inside one run would be dropped and imported again by the next, and its SWIG objects from the first
import then crash the process when they are freed. Imported once up front, it stays.
"""

import faiss  # noqa: F401

import vq_benchmark.plugin.bench_session  # noqa: F401  (imports the whole engine once, for the same reason)

pytest_plugins = ["pytester"]
