"""Which collected cases this process runs, and in which order: `--vq-case`, the shard, dataset by dataset and
longest first within a dataset.

Every process (plain session, each xdist worker, each SLURM array task) computes the same answer from the same
inputs - the collected cases after `-k`/`-m`, the settings, and durations an earlier run recorded - so shards are
disjoint and xdist workers collect identical lists.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vq_benchmark.plugin.layout import query_read_only
from vq_benchmark.plugin.settings import Settings
from vq_benchmark.plugin.sharding import ShardItem, case_list_digest, estimate_cost, select_shard
from vq_benchmark.reports.atomic import atomic_write_bytes
from vq_benchmark.vq_cases.sweep import Case

DURATIONS_NAME = "durations.json"


@dataclass(frozen=True)
class Selection:
    """The run's case list before sharding (in run order), this process's share of it, and its digest."""

    all_ids: tuple[str, ...]
    selected: tuple[str, ...]

    @property
    def digest(self) -> str:
        return case_list_digest(self.all_ids)


def recorded_durations(db_path: Path, exclude_run: str) -> dict[str, float]:
    """Seconds each case took in earlier runs (latest ok row per case), read-only; empty when unavailable.

    Rows of the current run are left out: they appear while it runs, and a process that starts later (a
    replacement xdist worker, a throttled array task) must still order and shard the cases exactly as the
    others did."""
    rows = query_read_only(
        db_path,
        "SELECT case_id, COALESCE(train_s, 0) + COALESCE(encode_s, 0) + COALESCE(search_s, 0) AS s "
        "FROM results WHERE status = 'ok' AND run_id != ? ORDER BY created_at",
        (exclude_run,),
    )
    return {str(r["case_id"]): float(r["s"]) for r in rows if r["s"] and r["s"] > 0}


def run_durations(run_path: Path, db_path: Path, run_id: str, *, freeze: bool) -> dict[str, float]:
    """The durations this run orders and shards by, frozen in `<run>/durations.json` by the first process that
    needs them: a shard resubmitted later, or a replacement xdist worker, must split the cases exactly as the
    first processes did, whatever other runs wrote to the database since (`freeze=False` only reads)."""
    snapshot = Path(run_path) / DURATIONS_NAME
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(snapshot.read_text())
        if isinstance(data, dict) and all(isinstance(v, int | float) for v in data.values()):
            return {str(k): float(v) for k, v in data.items()}
    history = recorded_durations(db_path, exclude_run=run_id)
    if freeze:
        with contextlib.suppress(OSError):
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(snapshot, json.dumps(history, sort_keys=True).encode())
    return history


def order_and_select(
    cases: Sequence[Case], settings: Settings, history: Mapping[str, float], only: Sequence[str] = ()
) -> Selection:
    """The cases left after `--vq-case` in run order, then this process's shard.

    Run order: dataset by dataset (in the order the case list names them), so each dataset is opened once and
    released after its last case; within a dataset, trainings longest first (a training's cost is the sum of its
    cases'), ties by training id; the search-parameter variants of one training stay adjacent, in sweep order, so
    they reuse one trained and encoded codec."""
    if only:
        wanted = set(only)
        cases = [c for c in cases if c.case_id in wanted]
    rank = {name: i for i, name in enumerate(dict.fromkeys(c.dataset for c in cases))}
    cost = {
        c.case_id: estimate_cost(c.method, dict(c.params), None, None, None, history=history, case_id=c.case_id)
        for c in cases
    }
    training_cost: dict[str, float] = {}
    for c in cases:
        training_cost[c.training_id] = training_cost.get(c.training_id, 0.0) + cost[c.case_id]
    position = {c.case_id: i for i, c in enumerate(cases)}
    ordered = sorted(
        cases,
        key=lambda c: (rank[c.dataset], -training_cost[c.training_id], c.training_id, position[c.case_id]),
    )
    items = [ShardItem(c.case_id, c.dataset, cost[c.case_id]) for c in ordered]
    all_ids = tuple(it.case_id for it in items)
    if not settings.num_shards or settings.shard_id is None:
        return Selection(all_ids, all_ids)
    chosen = select_shard(items, settings.shard_id, settings.num_shards, mode=settings.shard_mode)
    return Selection(all_ids, tuple(chosen))
