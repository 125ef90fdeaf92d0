"""Registers the session fixtures where the cases live, so pytest sessions that never collect a vq-benchmark
case never see them (the plugin stays dormant there)."""

from vq_benchmark.fixtures.session import vq_dataset, vq_train_sample

__all__ = ["vq_dataset", "vq_train_sample"]
