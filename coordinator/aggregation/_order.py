"""Order statistics per coordinate, one column block at a time.

Median and trimmed mean need, for every coordinate, some sorted positions of the K
values in that column. ``np.partition`` along the K axis works one short column at a
time (about 120 ns a column for K=10 here), so instead:

* K <= NETWORK_MAX_ROWS (32, the crossover measured here): the block's rows are copied
  into a (K+1, B) scratch and sorted *across rows* by Batcher's odd-even merge sorting
  network, each comparator one ``np.minimum`` and one ``np.maximum`` over B contiguous
  floats (SIMD, in L2). The network is pruned to the comparators that feed the positions
  asked for. About 11 ns a column at K=10.
* larger K: the block is copied transposed into a (B, K) scratch and each short row
  sorted in place (numpy's SIMD sort), about 3x faster than partitioning it.

Either way memory stays O(K x B): the (K, P) selection is never materialised.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from coordinator.aggregation._inputs import columns_for

NETWORK_MAX_ROWS = 32
# Scratch per block: about 1 MiB (L2-sized) for the network, 4 MiB for the sort.
NETWORK_BYTES = 1 << 20
SORT_BYTES = 4 << 20


def batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for any n (Knuth 5.3.4)."""
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@lru_cache(maxsize=64)
def pruned_pairs(n: int, needed: frozenset[int]) -> tuple[tuple[int, int], ...]:
    """The comparators of the n-sorter that influence the output positions ``needed``."""
    live = set(needed)
    kept: list[tuple[int, int]] = []
    for i, j in reversed(batcher_pairs(n)):
        if i in live or j in live:
            kept.append((i, j))
            live.update((i, j))
    return tuple(reversed(kept))


class SortedBlock:
    """One column block c0:c1 with its values in sorted order per column (views, valid
    until the next block is produced). Exact only at the positions that were asked for."""

    def __init__(self, c0: int, c1: int, rows: list[np.ndarray] | np.ndarray) -> None:
        self.c0, self.c1 = c0, c1
        self._rows = rows  # network: list of (B,) slots; sort: (B, K) table

    def at(self, p: int) -> np.ndarray:
        """The p-th smallest value of each column."""
        if isinstance(self._rows, list):
            return self._rows[p]
        return self._rows[:, p]

    def sum_range(self, lo: int, hi: int, out: np.ndarray) -> None:
        """out = sum of the lo-th to (hi-1)-th smallest values of each column, in float32."""
        if isinstance(self._rows, list):
            np.copyto(out, self._rows[lo])
            for p in range(lo + 1, hi):
                out += self._rows[p]
        else:
            np.sum(self._rows[:, lo:hi], axis=1, out=out)


def sorted_blocks(
    data: np.ndarray, idx: np.ndarray, needed: frozenset[int], columns: int | None
) -> Iterator[SortedBlock]:
    """Sort the rows ``idx`` of ``data`` per column, one column block at a time.

    Positions in ``needed`` are exact; the others are only as sorted as the pruned
    network left them.
    """
    n, num_params = idx.size, data.shape[1]
    if n <= NETWORK_MAX_ROWS:
        width = columns_for(num_params, n + 1, 4, NETWORK_BYTES, columns)
        scratch = np.empty((n + 1, width), dtype=np.float32)
        pairs = pruned_pairs(n, needed)
        for c0 in range(0, num_params, width):
            c1 = min(c0 + width, num_params)
            slots = [scratch[s, : c1 - c0] for s in range(n + 1)]
            for p, r in enumerate(idx):
                slots[p][...] = data[r, c0:c1]
            spare = slots.pop()
            for i, j in pairs:
                low, high = slots[i], slots[j]
                np.minimum(low, high, out=spare)
                np.maximum(low, high, out=high)
                slots[i], spare = spare, low
            yield SortedBlock(c0, c1, slots)
    else:
        width = columns_for(num_params, n, 4, SORT_BYTES, columns)
        table = np.empty((width, n), dtype=np.float32)
        for c0 in range(0, num_params, width):
            c1 = min(c0 + width, num_params)
            block = table[: c1 - c0]
            for p, r in enumerate(idx):
                block[:, p] = data[r, c0:c1]
            block.sort(axis=1)
            yield SortedBlock(c0, c1, block)
