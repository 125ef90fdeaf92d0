"""Tests for plugin.sharding: shards partition the sweep, agree across processes, balance cost, keep datasets whole."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import string
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vq_benchmark.plugin.sharding import (
    SLACK,
    ShardItem,
    assign_shards,
    case_list_digest,
    estimate_cost,
    select_shard,
)

pytestmark = pytest.mark.smoke

IDS = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=12)
GROUPS = st.sampled_from(["glove-50d", "sift-128", "deep-96", "dummy", "msmarco", "gist-960"])
COSTS = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
ITEMS = st.lists(st.tuples(IDS, GROUPS, COSTS), unique_by=lambda t: t[0], max_size=60).map(
    lambda rows: [ShardItem(*row) for row in rows]
)
SHARDS = st.integers(min_value=1, max_value=12)
MODE = st.sampled_from(["cost", "hash"])


def _loads(items: Sequence[ShardItem], assignment: dict[str, int], num_shards: int) -> list[float]:
    per_shard: list[list[float]] = [[] for _ in range(num_shards)]
    for it in items:
        per_shard[assignment[it.case_id]].append(it.cost)
    return [math.fsum(costs) for costs in per_shard]


def _plain_lpt_max(items: Sequence[ShardItem], num_shards: int) -> float:
    """Reference LPT, written independently of the module: largest first onto the least-loaded shard."""
    load = [0.0] * num_shards
    for it in sorted(items, key=lambda it: (-it.cost, it.case_id)):
        s = load.index(min(load))
        load[s] += it.cost
    return max(load)


def _shards_of_groups(items: Sequence[ShardItem], assignment: dict[str, int]) -> dict[str, set[int]]:
    shards: dict[str, set[int]] = {}
    for it in items:
        shards.setdefault(it.group, set()).add(assignment[it.case_id])
    return shards


@settings(max_examples=150)
@given(items=ITEMS, num_shards=SHARDS, mode=MODE)
def test_shards_partition_the_selection(items: list[ShardItem], num_shards: int, mode: str) -> None:
    assignment = assign_shards(items, num_shards, mode=mode)
    assert list(assignment) == [it.case_id for it in items]
    assert all(0 <= s < num_shards for s in assignment.values())
    shards = [select_shard(items, s, num_shards, mode=mode) for s in range(num_shards)]
    assert sum(len(shard) for shard in shards) == len(items)  # disjoint ...
    assert set().union(*shards) == {it.case_id for it in items}  # ... and together the whole selection
    for s, shard in enumerate(shards):
        assert all(assignment[cid] == s for cid in shard)


@given(items=ITEMS, num_shards=SHARDS, mode=MODE, rnd=st.randoms(use_true_random=False))
def test_assignment_is_a_function_of_the_set_of_cases(
    items: list[ShardItem], num_shards: int, mode: str, rnd: random.Random
) -> None:
    first = assign_shards(items, num_shards, mode=mode)
    assert assign_shards(list(items), num_shards, mode=mode) == first
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert assign_shards(shuffled, num_shards, mode=mode) == first  # dict equality: same case -> same shard


@given(items=ITEMS, extra=ITEMS, num_shards=SHARDS)
def test_hash_mode_never_moves_a_case_when_the_sweep_changes(
    items: list[ShardItem], extra: list[ShardItem], num_shards: int
) -> None:
    ids = {it.case_id for it in items}
    grown = items + [it for it in extra if it.case_id not in ids]
    before = assign_shards(items, num_shards, mode="hash")
    after = assign_shards(grown, num_shards, mode="hash")
    assert {cid: after[cid] for cid in before} == before
    shrunk = assign_shards(items[::2], num_shards, mode="hash")
    assert all(shrunk[cid] == before[cid] for cid in shrunk)


def test_hash_mode_is_sha256_of_the_case_id() -> None:
    items = [ShardItem(f"dummy-pq-M{m}-nbits8", "dummy", 1.0) for m in (4, 8, 16, 32)]
    expected = {it.case_id: int(hashlib.sha256(it.case_id.encode()).hexdigest(), 16) % 7 for it in items}
    assert assign_shards(items, 7, mode="hash") == expected


@settings(max_examples=200)
@given(items=ITEMS.filter(bool), num_shards=SHARDS)
def test_cost_mode_keeps_the_lpt_bound_and_stays_near_lpt(items: list[ShardItem], num_shards: int) -> None:
    loads = _loads(items, assign_shards(items, num_shards), num_shards)
    total = math.fsum(it.cost for it in items)
    tolerance = 1e-9 * total
    assert max(loads) <= total / num_shards + max(it.cost for it in items) + tolerance
    assert max(loads) <= SLACK * _plain_lpt_max(items, num_shards) + tolerance


@given(seed=st.integers(0, 2**32 - 1), num_shards=SHARDS)
def test_groups_small_against_the_shard_load_stay_on_one_shard(seed: int, num_shards: int) -> None:
    rnd = random.Random(seed)
    groups = 25 * num_shards
    items = [ShardItem("anchor", "anchor", 6.0)]  # one heavy case: the LPT bound leaves room for whole groups
    for g in range(groups):
        items += [ShardItem(f"g{g}-c{c}", f"g{g}", rnd.uniform(1.0, 2.0)) for c in range(rnd.randint(1, 3))]
    rnd.shuffle(items)
    total, heaviest = math.fsum(it.cost for it in items), max(it.cost for it in items)
    group_cost: dict[str, float] = {}
    for it in items:
        group_cost[it.group] = group_cost.get(it.group, 0.0) + it.cost
    bound = min((SLACK - 1) * total / num_shards, heaviest)  # the documented condition under which none is split
    assert all(cost * (1 - 1 / num_shards) <= bound for cost in group_cost.values())
    shards = _shards_of_groups(items, assign_shards(items, num_shards))
    assert all(len(s) == 1 for s in shards.values()), {g: s for g, s in shards.items() if len(s) > 1}


def test_equal_datasets_get_a_shard_each_or_split_evenly() -> None:
    items = [ShardItem(f"{ds}-pq-M{m}", ds, 1.0) for ds in ("a", "b", "c", "d") for m in range(10)]
    four = assign_shards(items, 4)
    assert sorted(min(s) for s in _shards_of_groups(items, four).values()) == [0, 1, 2, 3]
    assert all(len(s) == 1 for s in _shards_of_groups(items, four).values())
    two_datasets = items[:20]
    on_four = assign_shards(two_datasets, 4)
    assert _loads(two_datasets, on_four, 4) == [5.0, 5.0, 5.0, 5.0]
    assert all(len(s) == 2 for s in _shards_of_groups(two_datasets, on_four).values())


def test_one_case_per_group_is_plain_lpt_with_documented_ties() -> None:
    items = [ShardItem(f"c{c:.0f}", f"g{c:.0f}", c) for c in (3.0, 7.0, 2.0, 5.0, 6.0, 4.0)]
    assert assign_shards(items, 3) == {"c3": 1, "c7": 0, "c2": 0, "c5": 2, "c6": 1, "c4": 2}
    ties = [ShardItem(cid, cid, 1.0) for cid in ("b", "c", "a")]
    assert assign_shards(ties, 3) == {"b": 1, "c": 2, "a": 0}  # equal costs: by case id onto the lowest index


def test_a_group_is_split_only_where_keeping_it_whole_breaks_balance() -> None:
    items = [ShardItem(f"g{g}-c{c}", f"g{g}", 0.5) for g in range(5) for c in range(4)]
    assignment = assign_shards(items, 2)
    assert _loads(items, assignment, 2) == [5.0, 5.0]  # whole groups would give 6 + 4
    spans = sorted(len(s) for s in _shards_of_groups(items, assignment).values())
    assert spans == [1, 1, 1, 1, 2]


@given(items=ITEMS, num_shards=SHARDS, mode=MODE)
def test_select_shard_keeps_the_input_order(items: list[ShardItem], num_shards: int, mode: str) -> None:
    position = {it.case_id: i for i, it in enumerate(items)}
    for s in range(num_shards):
        order = [position[cid] for cid in select_shard(items, s, num_shards, mode=mode)]
        assert order == sorted(order)


GOOD = [ShardItem("a", "x", 1.0), ShardItem("b", "x", 2.0)]


@pytest.mark.parametrize(
    ("items", "num_shards", "mode", "message"),
    [
        (GOOD, 0, "cost", "num_shards must be an integer >= 1"),
        (GOOD, -3, "hash", "num_shards must be an integer >= 1"),
        (GOOD, 2.0, "cost", "num_shards must be an integer >= 1"),
        (GOOD, True, "cost", "num_shards must be an integer >= 1"),
        ([*GOOD, ShardItem("a", "y", 1.0)], 2, "cost", "duplicate case id 'a'"),
        (GOOD, 2, "random", "unknown shard mode 'random'"),
        ([ShardItem("a", "x", 0.0)], 2, "cost", "case 'a': cost must be a finite number > 0"),
        ([ShardItem("a", "x", -1.0)], 2, "hash", "case 'a': cost must be a finite number > 0"),
        ([ShardItem("a", "x", math.nan)], 2, "cost", "cost must be a finite number > 0"),
        ([ShardItem("a", "x", math.inf)], 2, "cost", "cost must be a finite number > 0"),
    ],
)
def test_bad_input_is_one_line(items: list[ShardItem], num_shards: int, mode: str, message: str) -> None:
    calls = (lambda: assign_shards(items, num_shards, mode=mode), lambda: select_shard(items, 0, num_shards, mode=mode))
    for call in calls:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("shard_id", [-1, 3, 4, True, 1.0])
def test_select_shard_refuses_a_shard_id_out_of_range(shard_id: int) -> None:
    with pytest.raises(ValueError, match=r"shard id must be an integer in \[0, 3\)"):
        select_shard(GOOD, shard_id, 3)


def test_no_cases_no_shards_content() -> None:
    assert assign_shards([], 4) == {}
    assert select_shard([], 3, 4, mode="hash") == []


def test_case_list_digest_names_the_ordered_list() -> None:
    ids = ["glove-50d-pq-M8-nbits8", "glove-50d-sq8"]
    assert case_list_digest(ids) == hashlib.sha256(b"glove-50d-pq-M8-nbits8\nglove-50d-sq8").hexdigest()
    assert case_list_digest(ids) == case_list_digest(tuple(ids))
    assert case_list_digest(ids[::-1]) != case_list_digest(ids)
    assert case_list_digest([*ids, "glove-50d-sq4"]) != case_list_digest(ids)
    assert case_list_digest(["ab"]) != case_list_digest(["a", "b"])
    with pytest.raises(ValueError, match="contains a newline"):
        case_list_digest(["a\nb"])


_CHILD = """
import json
from vq_benchmark.plugin.sharding import ShardItem, assign_shards
groups = ("glove", "sift", "deep", "gist", "dummy")
items = [ShardItem(f"{g}-m{m}", g, 1.0 + (m * 7 % 5)) for g in groups for m in range(9)]
print(json.dumps({mode: assign_shards(items, 4, mode=mode) for mode in ("cost", "hash")}))
"""


def test_every_process_computes_the_same_shards() -> None:
    outputs = []
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, check=True)
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(set(outputs[0]["cost"].values())) == 4


def test_the_module_imports_no_heavy_dependency() -> None:
    code = "import sys, vq_benchmark.plugin.sharding; print(sorted({'numpy', 'faiss', 'pytest'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("sizes", [(None, None, None), (400_000, 50, 100_000), (1_000, 16, 1_000), (10**6, 768, 10**5)])
def test_estimate_cost_ranks_methods(sizes: tuple[int | None, int | None, int | None]) -> None:
    def cost(method: str, **params: object) -> float:
        return estimate_cost(method, params, *sizes)

    assert cost("opq", M=8, nbits=8) > cost("pq", M=8, nbits=10) > cost("pq", M=8, nbits=8) > cost("sq8") > 0
    assert cost("pq", M=16, nbits=8) > cost("pq", M=8, nbits=8)
    assert cost("rabitq") == cost("pq")  # unknown methods are priced like PQ with its defaults
    assert cost("sq4") > 0 and math.isfinite(cost("opq", M=64, nbits=16))


def test_estimate_cost_grows_with_the_data() -> None:
    small = estimate_cost("pq", {"M": 8, "nbits": 8}, 10_000, 64, 10_000)
    assert estimate_cost("pq", {"M": 8, "nbits": 8}, 100_000, 64, 10_000) > small
    assert estimate_cost("pq", {"M": 8, "nbits": 8}, 10_000, 128, 10_000) > small
    assert estimate_cost("pq", {"M": 8, "nbits": 8}, 10_000, 64, 1_000) < small


def test_estimate_cost_prefers_the_recorded_duration() -> None:
    history = {"glove-pq-M8": 12.5, "glove-zero": 0.0, "glove-nan": math.nan}
    model = estimate_cost("pq", {"M": 8}, 1000, 50, 1000)
    assert estimate_cost("pq", {"M": 8}, 1000, 50, 1000, history=history, case_id="glove-pq-M8") == 12.5
    assert estimate_cost("pq", {"M": 8}, 1000, 50, 1000, history=history, case_id="other") == model
    assert estimate_cost("pq", {"M": 8}, 1000, 50, 1000, history=history) == model  # no case id: no lookup
    for unusable in ("glove-zero", "glove-nan"):
        assert estimate_cost("pq", {"M": 8}, 1000, 50, 1000, history=history, case_id=unusable) == model
