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
    front and dominates nothing. Identical points are all on the front together."""
    valid = [
        i
        for i, (x, y) in enumerate(points)
        if x is not None and y is not None and x == x and y == y  # x == x: not NaN
    ]
    front: set[int] = set()
    for i in valid:
        p = points[i]
        if not any(dominates(points[j], p, maximize) for j in valid if j != i):  # type: ignore[arg-type]
            front.add(i)
    return front
