"""A seeded, stratified item sample (``run --sample N``): pure functions, no I/O.

``--limit N`` takes the first N rows, which for MMLU are all abstract algebra; a sample stratified by
subject (or sub-task) is a fair small version of the whole split. The rule, so that anyone can redraw it:

* **Allocation** (proportional, exact arithmetic): stratum ``s`` of size ``n_s`` out of ``total`` gets
  ``floor(N * n_s / total)`` items, plus one more for the strata picked by *systematic sampling* over the
  fractional parts: strata in a seeded random order, a seeded start ``u`` in ``[0, 1)``, points ``u, u+1,
  ...``; a stratum whose fractional part holds a point gets one more. Every stratum's count is the floor or
  the ceiling of its exact quota, the counts sum to N, and each stratum's expected count is exactly its
  quota (a largest-remainder rule would, when N is below the number of strata, always pick the biggest
  subjects whatever the seed).
* **Draw**: within a stratum, ``random.Random(f"{seed}/{stratum}").sample`` of the stratum's items, so
  one stratum's draw does not depend on the others'.
* The result keeps the source order. ``N >= total`` keeps every item.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from fractions import Fraction
from typing import Hashable, Sequence, TypeVar

T = TypeVar("T")


def allocate(sizes: dict[str, int], n: int, seed: int) -> dict[str, int]:
    """Items per stratum for a sample of ``n`` (see the module docstring for the rule)."""
    if n < 1:
        raise ValueError(f"sample size must be at least 1, got {n}")
    bad = {s: k for s, k in sizes.items() if k < 0}
    if bad:
        raise ValueError(f"stratum sizes must be non-negative, got {bad}")
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    quota = {s: Fraction(n * k, total) for s, k in sizes.items()}
    counts = {s: math.floor(q) for s, q in quota.items()}
    rng = random.Random(f"{seed}/allocation")
    order = sorted(sizes)
    rng.shuffle(order)
    u = Fraction(rng.randrange(total), total)
    cum = Fraction(0)
    for s in order:
        lo, hi = cum, cum + quota[s] - counts[s]
        # points u + k (k = 0, 1, ...) inside [lo, hi): at most one, since the fraction is below 1
        counts[s] += math.ceil(hi - u) - math.ceil(lo - u)
        cum = hi
    assert sum(counts.values()) == n, (counts, n)
    return counts


def stratified_sample(items: Sequence[T], strata: Sequence[Hashable], n: int, seed: int) -> list[T]:
    """``n`` of ``items`` (``strata[i]`` is item i's stratum), proportionally allocated and seeded, in
    source order."""
    if len(items) != len(strata):
        raise ValueError(f"{len(items)} items but {len(strata)} stratum labels")
    members: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        members[str(s)].append(i)
    counts = allocate({s: len(ix) for s, ix in members.items()}, n, seed)
    keep: list[int] = []
    for s, ix in members.items():
        keep += random.Random(f"{seed}/{s}").sample(ix, counts[s])
    return [items[i] for i in sorted(keep)]
