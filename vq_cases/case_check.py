"""Before a case runs: can it run on this dataset at all, and does it fit in memory?

Both answers are skip reasons (one line), so a sweep over several datasets or a big base skips what cannot run
with the reason in its row instead of failing after minutes of training, or being killed by the OOM killer.
"""

from __future__ import annotations

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.fixtures.memory_budget import (
    Budget,
    MemoryBudgetError,
    available_memory,
    check_fits,
    estimate_case,
    pq_encode_scratch,
)
from vq_benchmark.vq_cases.methods import METHODS, skip_reason
from vq_benchmark.vq_cases.metrics import RECALL_KS
from vq_benchmark.vq_cases.phases import ENCODE_CHUNK_ROWS, ENCODE_SCRATCH_BYTES
from vq_benchmark.vq_cases.sweep import Case


def case_skip_reason(case: Case, ds: LoadedDataset, n_train: int, budget: Budget | None = None) -> str | None:
    """Why `case` cannot run on `ds` (parameters that do not fit the data, or not enough memory), else None.

    Building the codec to learn its code size is cheap (no training); a build error is left for the case itself
    to report as its failure.
    """
    params = dict(case.params)
    reason = skip_reason(case.method, params, ds.dim, n_train, ds.search_metric)
    if reason is not None:
        return reason
    try:
        code_bytes = METHODS[case.method].build(params, ds.dim, ds.search_metric).codec.code_bytes
    except Exception:  # the case's own run reports the build error as its failure, with the method's message
        return None
    m, nbits = params.get("M"), params.get("nbits", 8)
    scratch = pq_encode_scratch(ds.dim, m, nbits) if isinstance(m, int) and isinstance(nbits, int) else 0
    scratch = min(scratch, ENCODE_SCRATCH_BYTES // ENCODE_CHUNK_ROWS + 1) if scratch else 0  # calls are cut (phases)
    estimate = estimate_case(
        ds.n_base,
        ds.dim,
        code_bytes,
        n_train=n_train,
        n_queries=ds.n_queries,
        k=min(max(RECALL_KS), ds.n_base),
        chunk_rows=ENCODE_CHUNK_ROWS,
        gt_k=ds.gt_k,
        base_itemsize=ds.base.dtype.itemsize,
        encode_scratch_per_row=scratch,
    )
    try:
        check_fits(estimate, budget if budget is not None else available_memory(), f"case {case.case_id}")
    except MemoryBudgetError as exc:
        return str(exc)
    return None
