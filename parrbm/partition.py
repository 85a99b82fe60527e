"""How units are split over K workers: sizes differ by at most one (docs/design.md section 4)."""

from __future__ import annotations

import numpy as np


class Partition:
    """K parts of range(n). Part k is a slice (contiguous partition) or a sorted int64
    index array (random partition: a seeded permutation, then contiguous cuts).

    Parameters
    ----------
    n : int
        Number of units.
    parts : list of slice or ndarray
    """

    def __init__(self, n: int, parts: list):
        self.n = n
        self.parts = parts
        self.K = len(parts)
        self._sizes = [(p.stop - p.start) if isinstance(p, slice) else len(p) for p in parts]
        self._index: list[np.ndarray | None] = [None if isinstance(p, slice) else p for p in parts]

    @staticmethod
    def cuts(n: int, K: int) -> list[int]:
        """Boundaries of K contiguous parts of range(n), the first n % K one unit larger."""
        base, extra = divmod(n, K)
        return [k * base + min(k, extra) for k in range(K + 1)]

    @staticmethod
    def cuts_sizes(n: int, K: int) -> list[int]:
        """Part sizes (the same for contiguous and random partitions)."""
        base, extra = divmod(n, K)
        return [base + 1] * extra + [base] * (K - extra)

    @staticmethod
    def part_size(n: int, K: int, k: int) -> int:
        """The size of part k alone."""
        base, extra = divmod(n, K)
        return base + (1 if k < extra else 0)

    @staticmethod
    def distinct_ranks(K: int, *ns: int) -> list[int]:
        """Ranks that between them show every combination of part sizes of ``ns`` split
        K ways (part sizes change only where k crosses n % K): a closed-form account
        need not visit all K ranks."""
        edges = {0, K - 1}
        for n in ns:
            extra = n % K
            edges.update(r for r in (extra - 1, extra) if 0 <= r < K)
        return sorted(edges)

    @staticmethod
    def row_chunks(rows: int, chunks: int, align: int = 8) -> list[slice]:
        """``rows`` rows in at most ``chunks`` contiguous ranges of a multiple of ``align``
        rows each, the last one taking the rest. With ``align`` a multiple of 8, the
        chunks' bit-packed messages add up to the whole block's bytes: no padding but the
        last chunk's, which is the block's own."""
        size = -(-max(rows, 1) // max(1, chunks))
        size = -(-size // align) * align
        return [slice(s, min(s + size, rows)) for s in range(0, rows, size)] or [slice(0, 0)]

    @classmethod
    def contiguous(cls, n: int, K: int) -> "Partition":
        b = cls.cuts(n, K)
        return cls(n, [slice(b[k], b[k + 1]) for k in range(K)])

    @classmethod
    def random(cls, n: int, K: int, seed: int) -> "Partition":
        perm = np.random.default_rng([seed, 0x9A97]).permutation(n)
        b = cls.cuts(n, K)
        return cls(n, [np.sort(perm[b[k] : b[k + 1]]).astype(np.int64) for k in range(K)])

    @classmethod
    def make(cls, kind: str, n: int, K: int, seed: int = 0) -> "Partition":
        if kind == "contiguous":
            return cls.contiguous(n, K)
        if kind == "random":
            return cls.random(n, K, seed)
        raise ValueError(f"partition must be 'contiguous' or 'random', got {kind!r}")

    @property
    def is_contiguous(self) -> bool:
        return all(isinstance(p, slice) for p in self.parts)

    def size(self, k: int) -> int:
        return self._sizes[k]

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def index(self, k: int) -> np.ndarray:
        """Global unit indices of part k, int64, sorted."""
        if self._index[k] is None:
            p = self.parts[k]
            self._index[k] = np.arange(p.start, p.stop, dtype=np.int64)
        return self._index[k]

    def units(self, k: int) -> dict:
        """Keyword arguments naming part k's global units for the core's samplers."""
        p = self.parts[k]
        if isinstance(p, slice):
            return {"unit0": p.start}
        return {"unit0": 0, "unit_index": p}

    def take(self, a: np.ndarray, k: int, axis: int = 1) -> np.ndarray:
        """Part k of a along axis: a view for a slice, a C-contiguous copy for scattered
        units."""
        p = self.parts[k]
        if isinstance(p, slice):
            idx = [slice(None)] * a.ndim
            idx[axis] = p
            return a[tuple(idx)]
        return np.take(a, p, axis=axis)

    def view(self, a: np.ndarray, k: int):
        """a[:, part k] as a writable view, or None if the part is scattered."""
        p = self.parts[k]
        return a[:, p] if isinstance(p, slice) else None

    def put(self, a: np.ndarray, k: int, block: np.ndarray, axis: int = 1) -> None:
        idx = [slice(None)] * a.ndim
        idx[axis] = self.parts[k]
        a[tuple(idx)] = block
