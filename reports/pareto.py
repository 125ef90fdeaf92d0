"""Pareto fronts of two-objective points: which cases no other case beats on both axes at once."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["dominates", "pareto_front"]


def _better_or_equal(a: float, b: float, maximize: bool) -> bool:
    return a >= b if maximize else a <= b


def dominates(p: Sequence[float], q: Sequence[float], maximize: tuple[bool, bool]) -> bool:
    """True when `p` is at least as good as `q` in both objectives and strictly better in one."""
    at_least = all(_better_or_equal(p[i], q[i], maximize[i]) for i in range(2))
    return at_least and any(p[i] != q[i] for i in range(2))


def pareto_front(points: Sequence[tuple[float | None, float | None]], maximize: tuple[bool, bool]) -> set[int]:
    """Indices of the points no other point dominates; a point with a None (or NaN) coordinate is never on the
    front and dominates nothing. Identical points are all on the front together.

    One sort and one sweep (O(n log n)), so a report of a sweep with thousands of cases stays instant: with both
    objectives turned into "lower is better", a point is on the front when it has the lowest second coordinate
    among the points of its first coordinate, and that is strictly lower than any point with a smaller first one.
    """
    sign = tuple(-1.0 if m else 1.0 for m in maximize)
    keyed = sorted(
        (sign[0] * float(x), sign[1] * float(y), i)
        for i, (x, y) in enumerate(points)
        if x is not None and y is not None and x == x and y == y  # x == x: not NaN
    )
    front: set[int] = set()
    best = float("inf")  # lowest second coordinate among points with a smaller first coordinate
    start = 0
    while start < len(keyed):
        end = start
        while end < len(keyed) and keyed[end][0] == keyed[start][0]:
            end += 1
        lowest = keyed[start][1]  # sorted: the group's first point has its lowest second coordinate
        if lowest < best:
            front.update(i for _, y, i in keyed[start:end] if y == lowest)
            best = lowest
        start = end
    return front
