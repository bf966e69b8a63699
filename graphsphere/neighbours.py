"""Who is joined to whom: the neighbours of every point of a sampling (NumPy/SciPy only).

Three rules, one per ``SphereGraph(neighbours=...)``: the k nearest neighbours of a k-d tree
(:func:`knn`, any sampling), the native HEALPix neighbours (:func:`healpix_neighbours`) and the
4-neighbour grid of a latitude-longitude grid (:func:`grid_neighbours`). Each returns, row by
row, the neighbours' indices and their distances; :mod:`graphsphere.graph` turns them into weights.

>>> import numpy as np
>>> from graphsphere.sampling import HEALPix
>>> cols, sq = knn(HEALPix(nside=4).xyz, 8)
>>> cols.shape, bool((cols != np.arange(192)[:, None]).all())   # 8 per pixel, never itself
((192, 8), True)
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .sampling import HEALPix
from .sampling.equiangular import RingGrid

__all__ = ["knn", "healpix_neighbours", "grid_neighbours", "canonical_order"]

#: Rows per k-d tree query in :func:`knn` (bounds the query's temporary arrays to ~20 MB per neighbour).
_KNN_BLOCK = 1 << 18


def knn(xyz: np.ndarray, k: int, workers: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every point (itself excluded).

    Returns ``(cols, sq_dist)``, both (n, k): neighbour indices (int32 below 2**31 points) and
    squared chordal distances. Uses a k-d tree on the unit vectors, O(n log n), queried in
    blocks of rows so that the query's own (n, k + 1) float64 and int64 arrays never exist
    whole (at HEALPix nside 2048, 50 M points, they would take 7 GB).

    >>> import numpy as np
    >>> cols, sq = knn(np.eye(3), 1)                  # three orthogonal unit vectors
    >>> cols.shape, round(float(sq[0, 0]), 12)        # every other one at chord sqrt(2)
    ((3, 1), 2.0)
    """
    n = len(xyz)
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and npix - 1 = {n - 1}, got k={k}")
    tree = cKDTree(xyz, leafsize=32, balanced_tree=False, compact_nodes=False)
    cols = np.empty((n, k), dtype=np.int32 if n < 2**31 - 1 else np.int64)
    sq = np.empty((n, k))
    for start in range(0, n, _KNN_BLOCK):
        stop = min(start + _KNN_BLOCK, n)
        dist, c = tree.query(xyz[start:stop], k=k + 1, workers=workers)
        # The nearest point is the point itself, except for exact duplicates,
        # where it may come second: drop column 0 only after moving self there.
        self_pos = np.argmax(c == np.arange(start, stop)[:, None], axis=1)
        fix = np.flatnonzero(self_pos != 0)
        if fix.size:
            c[fix, self_pos[fix]], dist[fix, self_pos[fix]] = c[fix, 0], dist[fix, 0]
        cols[start:stop] = c[:, 1:]
        np.square(dist[:, 1:], out=sq[start:stop])
    return cols, sq


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
