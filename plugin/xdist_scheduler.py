"""xdist scheduling for a sweep: the longest case first, one case at a time, to whichever worker is free.

xdist's `load` scheduler starts every worker on a chunk of consecutive items. With cases ordered longest first
that put both OPQ cases of the default sweep on one worker while the other idled (`-n 2` slower than one
process). For a collection of vq-benchmark cases this scheduler deals the first cases round-robin and then
refills one case per finished case, so each worker runs one case with one queued (xdist needs the next item to
finish the current one) - greedy longest-processing-time-first. Any other collection is scheduled exactly as
`load` does.
"""

from __future__ import annotations

from itertools import cycle

from xdist.scheduler import LoadScheduling

from vq_benchmark.plugin.pytest_plugin import CASE_NODEID


class LongestFirstScheduling(LoadScheduling):
    def schedule(self) -> None:
        if self.collection is not None or not self._holds_cases():
            super().schedule()
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        self.pending[:] = range(len(self.collection))
        self.maxschedchunk = 1  # refill one case at a time (LoadScheduling.check_schedule reads it)
        nodes = cycle(self.nodes)
        for _ in range(min(len(self.pending), 2 * len(self.nodes))):
            self._send_tests(next(nodes), 1)
        if not self.pending:
            for node in self.nodes:
                node.shutdown()

    def _holds_cases(self) -> bool:
        ids = next(iter(self.node2collection.values()), [])
        return any(CASE_NODEID.search(nodeid) for nodeid in ids)
