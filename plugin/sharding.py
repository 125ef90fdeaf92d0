"""Split a sweep of cases over N shards (SLURM array tasks or processes), the same way in every process.

Every shard computes the whole assignment from the same case list and keeps its own part, so the functions here are
pure: no randomness, no set/dict iteration order, no salted `hash()` (sha256 instead), and float sums by `math.fsum`
(exactly rounded, hence independent of summation order). Stdlib only: collection must stay light.

Mode "cost" (cases of one dataset share its loading and ground truth, so they should share a shard):
1. Plain LPT: cases by cost descending (ties by case id), each onto the least-loaded shard (ties by lowest index).
2. LPT over groups: whole groups, largest first, each onto the least-loaded shard while that shard stays within
   `min(SLACK * LPT's max load, ideal + max case cost)` (ideal = total / N). Otherwise that shard takes the group's
   largest cases while it stays within the ideal load (at least one case, which always keeps the LPT bound: the
   least-loaded shard holds at most the mean of what is placed) and the rest of the group goes back into the queue.
3. The grouped assignment wins unless its max load exceeds SLACK x plain LPT's; then plain LPT is used.
So the max load is always <= ideal + max case cost and <= SLACK x what LPT achieves, and we pay at most 10% of
balance for locality. A group is never split when its cost * (1 - 1/N) <= min((SLACK - 1) * ideal, max case cost).
On random sweeps a group spans ~0.3 extra shards (plain LPT: ~2.5) at a max load within 3% of LPT's (median).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SLACK = 1.1  # how far over the ideal per-shard load a shard may go to keep a group whole
MODES = ("cost", "hash")


@dataclass(frozen=True)
class ShardItem:
    case_id: str
    group: str  # cases of one group (the dataset) stay together where balance allows
    cost: float  # estimated cost, > 0 (seconds when known, see estimate_cost)


def _check(items: Sequence[ShardItem], num_shards: int, mode: str) -> None:
    """One-line ValueError for anything that would make shards disagree or the balance meaningless."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1, got {num_shards!r}")
    if mode not in MODES:
        raise ValueError(f"unknown shard mode {mode!r}; expected one of: {', '.join(MODES)}")
    seen: set[str] = set()
    for it in items:
        if it.case_id in seen:
            raise ValueError(f"duplicate case id {it.case_id!r} in the shard input")
        seen.add(it.case_id)
        if not (isinstance(it.cost, int | float) and math.isfinite(it.cost) and it.cost > 0):
            raise ValueError(f"case {it.case_id!r}: cost must be a finite number > 0, got {it.cost!r}")


def hash_shard(case_id: str, num_shards: int) -> int:
    """sha256 of the id: a case keeps its shard whatever else is added to or removed from the sweep."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest(), "big") % num_shards


def _by_cost(items: Sequence[ShardItem]) -> tuple[ShardItem, ...]:
    return tuple(sorted(items, key=lambda it: (-it.cost, it.case_id)))


def _split(unit: tuple[ShardItem, ...], load: float, ideal: float) -> tuple[list[ShardItem], list[ShardItem]]:
    """The unit's largest items that fit under the ideal load (always at least the first), and the rest."""
    take, rest, added = [unit[0]], [], unit[0].cost
    for it in unit[1:]:
        if load + added + it.cost <= ideal:
            take.append(it)
            added += it.cost
        else:
            rest.append(it)
    return take, rest


def _place(units: list[tuple[ShardItem, ...]], num_shards: int, whole_limit: float, ideal: float) -> dict[str, int]:
    """Largest unit first onto the least-loaded shard; a unit that would take it past `whole_limit` is split."""
    heap = [(-math.fsum(it.cost for it in unit), unit[0].case_id, unit) for unit in units]  # case ids: unique keys
    heapq.heapify(heap)
    load = [0.0] * num_shards
    shard_of: dict[str, int] = {}
    while heap:
        neg_cost, _, unit = heapq.heappop(heap)
        s = min(range(num_shards), key=lambda i: (load[i], i))
        take, rest = (list(unit), []) if load[s] - neg_cost <= whole_limit else _split(unit, load[s], ideal)
        shard_of.update((it.case_id, s) for it in take)
        load[s] = math.fsum([load[s], *(it.cost for it in take)])
        if rest:
            heapq.heappush(heap, (-math.fsum(it.cost for it in rest), rest[0].case_id, tuple(rest)))
    return shard_of


def _max_load(items: Sequence[ShardItem], shard_of: Mapping[str, int]) -> float:
    loads: dict[int, list[float]] = {}
    for it in items:
        loads.setdefault(shard_of[it.case_id], []).append(it.cost)
    return max(math.fsum(costs) for costs in loads.values())


def _assign_by_cost(items: Sequence[ShardItem], num_shards: int) -> dict[str, int]:
    """Plain LPT, then LPT over groups; the grouped one wins unless it costs more than SLACK (module docstring)."""
    ordered = _by_cost(items)
    ideal = math.fsum(it.cost for it in ordered) / num_shards
    plain = _place([(it,) for it in ordered], num_shards, math.inf, ideal)
    plain_max = _max_load(ordered, plain)
    groups: dict[str, list[ShardItem]] = {}
    for it in ordered:
        groups.setdefault(it.group, []).append(it)
    whole_limit = min(SLACK * plain_max, ideal + ordered[0].cost)
    grouped = _place([tuple(g) for g in groups.values()], num_shards, whole_limit, ideal)
    chosen = grouped if _max_load(ordered, grouped) <= SLACK * plain_max else plain
    return {it.case_id: chosen[it.case_id] for it in items}


def assign_shards(items: Sequence[ShardItem], num_shards: int, *, mode: str = "cost") -> dict[str, int]:
    """case_id -> shard index in [0, num_shards), in the order of `items`.

    "cost" balances estimated cost and keeps groups together (module docstring); "hash" ignores cost and groups
    but never moves a case when the sweep changes. Both depend only on the set of items, not their order."""
    _check(items, num_shards, mode)
    if mode == "hash" or not items:
        return {it.case_id: hash_shard(it.case_id, num_shards) for it in items}
    return _assign_by_cost(items, num_shards)


def select_shard(items: Sequence[ShardItem], shard_id: int, num_shards: int, *, mode: str = "cost") -> list[str]:
    """The case ids of one shard, in the order of `items` (which is the collection order xdist relies on)."""
    _check(items, num_shards, mode)
    if isinstance(shard_id, bool) or not isinstance(shard_id, int) or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard id must be an integer in [0, {num_shards}), got {shard_id!r}")
    assignment = assign_shards(items, num_shards, mode=mode)
    return [it.case_id for it in items if assignment[it.case_id] == shard_id]


def case_list_digest(case_ids: Sequence[str]) -> str:
    """sha256 of the ordered full case list: every shard records it so merge can tell that shards split one sweep."""
    for cid in case_ids:
        if "\n" in cid:
            raise ValueError(f"case id {cid!r} contains a newline; the digest joins ids with newlines")
    return hashlib.sha256("\n".join(case_ids).encode("utf-8")).hexdigest()


# Cost model, in rough seconds (work units / RATE) so that it mixes with recorded durations. Measured on 2 cores,
# 100k x 128 base, 20k train, 1000 queries: PQ8x8 ~3 s (training dominates), OPQ8 ~25 s, SQ8 ~1-2 s (search).
DEFAULT_N_BASE, DEFAULT_DIM, DEFAULT_N_TRAIN = 100_000, 128, 100_000  # neutral values when the data is not opened
RATE = 1e10  # work units per second
SCAN = 1000  # every method searches and scores: a nominal 1000 queries each touching n_base x dim
KMEANS_ITERS, POINTS_PER_CENTROID = 25, 256  # faiss Clustering defaults (it subsamples to 256 points per centroid)
PAIR_OVERHEAD = 8  # per (vector, centroid) pair and sub-space: norm and argmin, so M matters beyond d
OPQ_TRAIN_FACTOR = 10  # faiss OPQMatrix: 50 outer x 4 k-means iterations + 40 initial, then PQ's 25: ~265 / 25


def _positive_or(value: int | None, default: int) -> int:
    return value if value is not None and value > 0 else default


def _int_param(params: Mapping[str, object], name: str, default: int) -> int:
    value = params.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 24 else default


def _pq_work(params: Mapping[str, object], n: int, d: int, t: int, train_factor: float) -> float:
    """k-means on M sub-spaces of d/M dims is ~ points x 2**nbits x (d + overhead x M), for training and encoding."""
    m, k = _int_param(params, "M", 8), 2 ** _int_param(params, "nbits", 8)
    pair = k * (d + PAIR_OVERHEAD * m)
    return train_factor * KMEANS_ITERS * min(t, POINTS_PER_CENTROID * k) * pair + n * pair


def estimate_cost(
    method: str,
    params: Mapping[str, object],
    n_base: int | None,
    dim: int | None,
    n_train: int | None,
    *,
    history: Mapping[str, float] | None = None,
    case_id: str | None = None,
) -> float:
    """Seconds an earlier run recorded for this case when `history` has it; else the model above (> 0).

    The model only has to rank cases (OPQ > PQ with more centroids > PQ > SQ); history corrects it after one run."""
    if history is not None and case_id is not None:
        recorded = history.get(case_id)
        if isinstance(recorded, int | float) and math.isfinite(recorded) and recorded > 0:
            return float(recorded)
    n, d = _positive_or(n_base, DEFAULT_N_BASE), _positive_or(dim, DEFAULT_DIM)
    t = _positive_or(n_train, min(n, DEFAULT_N_TRAIN))
    work = float(SCAN * n * d)
    if method.startswith("sq"):
        work += t * d + n * d  # per-dimension min/max, then one pass to encode
    else:  # pq, opq, and unknown methods priced like pq
        work += _pq_work(params, n, d, t, OPQ_TRAIN_FACTOR if method == "opq" else 1.0)
    return work / RATE
