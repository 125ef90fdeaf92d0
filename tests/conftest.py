"""Test-suite wiring: pytester runs `pytest vq_cases` in subprocesses for the end-to-end tests."""

pytest_plugins = ["pytester"]
