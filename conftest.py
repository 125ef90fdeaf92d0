"""Repository-root pytest wiring. The vq-benchmark plugin itself is registered by its `pytest11` entry point
(`pip install -e .`); this file only keeps pytest away from generated output folders."""

collect_ignore = ["results", "codebooks", "data", ".vq-cache", "benchmarks"]
