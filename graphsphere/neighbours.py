"""Who is joined to whom: the neighbours of every point of a sampling (NumPy/SciPy only).

Three rules, one per ``SphereGraph(neighbours=...)``: the k nearest neighbours of a k-d tree
(:func:`knn`, any sampling), the native HEALPix neighbours (:func:`healpix_neighbours`) and the
4-neighbour grid of a latitude-longitude grid (:func:`grid_neighbours`). Each returns, row by
row, the neighbours' indices and their distances; :mod:`graphsphere.graph` turns them into weights
(:func:`one_way_edges`: the k-NN edges listed one way only, all that symmetrising adds).

>>> import numpy as np
>>> from graphsphere.sampling import HEALPix
>>> cols, sq = knn(HEALPix(nside=4).xyz, 8)
>>> cols.shape, bool((cols != np.arange(192)[:, None]).all())   # 8 per pixel, never itself
((192, 8), True)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import cKDTree

from .sampling import HEALPix
from .sampling.equiangular import RingGrid

__all__ = ["knn", "one_way_edges", "healpix_neighbours", "grid_neighbours", "canonical_order"]

#: Rows per k-d tree query in :func:`knn`: small blocks handed out to the threads one at a time balance
#: the load when other processes take a core, and keep each query's temporaries at ~5 MB.
_KNN_BLOCK = 1 << 16


def _n_threads(workers: int) -> int:
    """Threads for ``workers`` as scipy reads it: -1 (or any negative number) for all usable CPUs."""
    if workers > 0:
        return int(workers)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable + 1 + workers)


def knn(xyz: np.ndarray, k: int, workers: int = -1,
        out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every point (itself excluded).

    Returns ``(cols, sq_dist)``, both (n, k): neighbour indices (int32 below 2**31 points) and
    squared chordal distances. Uses a k-d tree on the unit vectors, O(n log n), queried in
    blocks of rows so that the query's own (n, k + 1) float64 and int64 arrays never exist
    whole (at HEALPix nside 2048, 50 M points, they would take 7 GB). The blocks go to
    ``workers`` threads (-1: all CPUs), one block at a time; each point's answer is its own
    query's, whatever the block or thread, so the result does not depend on ``workers``.
    ``out``: the two (n, k) arrays to fill and return instead of new ones.

    The tree's parameters fix how ties between equidistant points are broken (the order in
    which it meets them): changing them would change saved models' graphs.

    >>> import numpy as np
    >>> cols, sq = knn(np.eye(3), 1)                  # three orthogonal unit vectors
    >>> cols.shape, round(float(sq[0, 0]), 12)        # every other one at chord sqrt(2)
    ((3, 1), 2.0)
    """
    n = len(xyz)
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and npix - 1 = {n - 1}, got k={k}")
    tree = cKDTree(xyz, leafsize=32, balanced_tree=False, compact_nodes=False)
    if out is None:
        out = np.empty((n, k), dtype=np.int32 if n < 2**31 - 1 else np.int64), np.empty((n, k))
    cols, sq = out
    if cols.shape != (n, k) or sq.shape != (n, k) or cols.dtype.kind != "i" or sq.dtype != np.float64:
        raise ValueError(f"out must be an integer and a float64 array of shape {(n, k)}, got "
                         f"{cols.dtype}{cols.shape} and {sq.dtype}{sq.shape}")

    def block(start: int) -> None:
        stop = min(start + _KNN_BLOCK, n)
        dist, c = tree.query(xyz[start:stop], k=k + 1, workers=1)
        # The nearest point is the point itself, except for exact duplicates, where it may
        # come later (or not at all, past k + 1 copies): move self to column 0, then drop it.
        own = np.arange(start, stop)
        odd = np.flatnonzero(c[:, 0] != own)
        if odd.size:
            self_pos = np.argmax(c[odd] == own[odd, None], axis=1)   # 0 where self is missing
            fix, pos = odd[self_pos != 0], self_pos[self_pos != 0]
            c[fix, pos], dist[fix, pos] = c[fix, 0], dist[fix, 0]
        cols[start:stop] = c[:, 1:]
        np.square(dist[:, 1:], out=sq[start:stop])

    starts = range(0, n, _KNN_BLOCK)
    threads = min(_n_threads(workers), len(starts))
    if threads == 1:
        for start in starts:
            block(start)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(block, starts):   # the query and most of NumPy release the GIL
                pass
    return cols, sq


#: Rows per block in :func:`one_way_edges` (bounds its (rows, k, k) temporaries to ~20 MB at k = 8).
_ONE_WAY_BLOCK = 1 << 16


def one_way_edges(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The listed edges i -> j = cols[i, a] that row j does not list back, as (i, a) index arrays
    (ascending i, then a), for full rows of distinct neighbours (:func:`knn`'s).

    >>> rows, pos = one_way_edges(np.array([[1], [2], [1]]))   # 1 and 2 list each other, 0 -> 1 is one-way
    >>> rows.tolist(), pos.tolist()
    ([0], [0])
    """
    n, k = cols.shape
    as_int = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(k)   # a row of k bools as one integer

    def block(start: int) -> tuple[np.ndarray, np.ndarray]:
        c = cols[start:start + _ONE_WAY_BLOCK]
        back = np.take(cols, c, axis=0)                                # (rows, k, k): the rows of the neighbours
        back = np.equal(back, np.arange(start, start + len(c), dtype=cols.dtype)[:, None, None])
        listed_back = back.any(axis=2) if as_int is None else back.view(as_int).reshape(len(c), k) != 0
        i, a = np.nonzero(~listed_back)
        return i + start, a

    starts = range(0, n, _ONE_WAY_BLOCK)
    threads = min(_n_threads(-1), len(starts))
    if threads == 1:
        parts = [block(start) for start in starts]
    else:
        with ThreadPoolExecutor(threads) as pool:   # take, equal and nonzero release the GIL
            parts = list(pool.map(block, starts))
    return np.concatenate([i for i, _ in parts]), np.concatenate([a for _, a in parts])


def healpix_neighbours(sampling: HEALPix) -> tuple[np.ndarray, np.ndarray]:
    """The native HEALPix neighbours of the 2019 paper: 8 per pixel (7 at
    the corners of the base rhombi), from ``healpy.get_all_neighbours``.

    Returns ``(cols, sq_dist)`` of shape (n, 8) with -1 where a pixel has
    no such neighbour or (partial sky) the neighbour is outside the footprint.
    """
    import healpy as hp

    nb = hp.get_all_neighbours(sampling.nside, sampling.pixels, nest=sampling.nest).T  # (n, 8)
    if sampling.full_sphere:
        cols = nb
    else:
        # Map HEALPix ids to positions in the data order; -1 outside.
        order = np.argsort(sampling.indices)
        sorted_ids = sampling.indices[order]
        pos = np.searchsorted(sorted_ids, nb)
        pos = np.clip(pos, 0, len(sorted_ids) - 1)
        inside = (sorted_ids[pos] == nb) & (nb >= 0)
        cols = np.where(inside, order[pos], -1)
    valid = cols >= 0
    xyz = sampling.xyz
    diff = xyz[np.where(valid, cols, 0)] - xyz[:, None, :]
    sq = np.where(valid, np.einsum("nkd,nkd->nk", diff, diff), 0.0)
    return cols, sq


def grid_neighbours(sampling) -> tuple[np.ndarray, np.ndarray]:
    """The 4-neighbour graph of a latitude-longitude grid (``Equiangular``,
    ``GaussLegendre``): north, south, east and west, longitudes wrapping around.

    Returns ``(cols, dist)`` of shape (n, 4): neighbour indices (-1 where a
    pixel has none: the first and last rows have no north or south
    neighbour; pixels that coincide, the pole row of a Driscoll-Healy grid,
    are not joined) and great-circle distances in radians.

    >>> from graphsphere.sampling import Equiangular
    >>> cols, dist = grid_neighbours(Equiangular(8, 16, poles="SOFT"))
    >>> cols.shape, int((cols[0] >= 0).sum()), int((cols[40] >= 0).sum())
    ((128, 4), 3, 4)
    """
    if not isinstance(sampling, RingGrid):
        raise TypeError(f"the grid graph needs a latitude-longitude grid (Equiangular, GaussLegendre), "
                        f"got {sampling.describe()}")
    nlat, nlon = sampling.grid_shape
    if nlon < 3:
        raise ValueError(f"a grid graph needs at least 3 longitudes (east and west neighbours differ), got {nlon}")
    idx = np.arange(nlat * nlon).reshape(nlat, nlon)
    minus = np.full((1, nlon), -1)
    cols = np.stack([np.roll(idx, -1, axis=1), np.roll(idx, 1, axis=1),          # east, west
                     np.concatenate([minus, idx[:-1]]), np.concatenate([idx[1:], minus])],  # north, south
                    axis=-1).reshape(-1, 4)
    xyz = sampling.xyz
    dot = np.clip(np.einsum("nd,nkd->nk", xyz, xyz[np.maximum(cols, 0)]), -1, 1)
    dist = np.arccos(dot)
    cols = np.where((cols >= 0) & (dist > 1e-12), cols, -1)
    return cols, np.where(cols >= 0, dist, 0.0)


def canonical_order(sampling) -> np.ndarray | None:
    """The permutation that sorts a partial HEALPix sky's pixel ids, or None (already sorted, or
    another sampling). Graphs are built in this order and permuted back, so that the order in which
    the pixels are listed (the data's order) cannot change the graph: k-NN breaks distance ties by
    position, and Lanczos starts from a vector given by position."""
    if isinstance(sampling, HEALPix) and sampling.indices is not None and np.any(np.diff(sampling.indices) < 0):
        return np.argsort(sampling.indices, kind="stable")
    return None
