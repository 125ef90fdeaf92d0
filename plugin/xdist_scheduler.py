"""xdist scheduling for a sweep: the longest training first, one training group at a time, to whichever worker is
free.

xdist's `load` scheduler starts every worker on a chunk of consecutive items. With cases ordered longest first
that put both OPQ cases of the default sweep on one worker while the other idled (`-n 2` slower than one
process). For a collection of vq-benchmark cases this scheduler deals the first cases round-robin and then
refills one case per finished case, so each worker runs one case with one queued (xdist needs the next item to
finish the current one) - greedy longest-processing-time-first.

A "case" here is a training group: the cases that differ only in search parameters (`search.nprobe = [...]`)
go to one worker together, so it trains and encodes once and the others reuse the codec from its memory
(vq_cases/codec_memo.py) instead of each worker encoding the base again. The collection order is the run order
(dataset by dataset, plugin/selection.py), and workers take from its front, so a worker never goes back to a
dataset it has left. Any other collection is scheduled exactly as `load` does.
"""

from __future__ import annotations

from itertools import cycle

from xdist.scheduler import LoadScheduling

from vq_benchmark.plugin.pytest_plugin import CASE_NODEID, STATE_KEY


class LongestFirstScheduling(LoadScheduling):
    _groups: list[str] | None = None

    def schedule(self) -> None:
        if self.collection is not None or not self._holds_cases():
            super().schedule()
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        self._groups = [self._group_of(nodeid) for nodeid in self.collection]
        self.pending[:] = range(len(self.collection))
        self.maxschedchunk = 1  # refill one case at a time (LoadScheduling.check_schedule reads it)
        nodes = cycle(self.nodes)
        for _ in range(min(len(self.pending), 2 * len(self.nodes))):
            self._send_tests(next(nodes), 1)
        if not self.pending:
            for node in self.nodes:
                node.shutdown()

    def _send_tests(self, node, num: int) -> None:
        """Send `num` items, extended to the end of the training group the last of them belongs to."""
        groups = self._groups
        if groups is not None and 0 < num < len(self.pending):
            while num < len(self.pending) and groups[self.pending[num]] == groups[self.pending[num - 1]]:
                num += 1
        super()._send_tests(node, num)

    def _group_of(self, nodeid: str) -> str:
        """The training group of a case node id (its id without search parameters), else the node id itself."""
        match = CASE_NODEID.search(nodeid)
        bench = self.config.stash[STATE_KEY].bench if STATE_KEY in self.config.stash else None
        case = bench.case(match["case"]) if match and bench is not None else None
        return case.training_id if case is not None else nodeid

    def _holds_cases(self) -> bool:
        ids = next(iter(self.node2collection.values()), [])
        return any(CASE_NODEID.search(nodeid) for nodeid in ids)
