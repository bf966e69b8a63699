"""Balanced clustering of points on the sphere, for pooling on irregular samplings.

A pooling layer averages the children of each coarse vertex; with k-means the
number of children follows the density of the points (from 1 to a dozen or more
at four points per cluster), so a coarse vertex may stand for one station or for
a whole city. ``balanced_clusters`` makes clusters of *equal* size (sizes differ
by at most one point) that are still spatially compact:

1. **Recursive bisection along principal axes.** A group of points destined for
   ``k`` clusters is split, across its axis of largest spread (the principal
   axis of its unit vectors), into two groups destined for ``k // 2`` and
   ``k - k // 2`` clusters; the cut falls at the rank that gives each side
   exactly the points its clusters will hold. All groups of one depth are split
   at once (vectorised), so the cost is ``O(n log n log k)``.
2. **Size-preserving refinement.** Points of two neighbouring clusters that
   would each be closer to the other's centre are swapped, pair for pair (so
   sizes never change), as long as the swap lowers the sum of squared
   distances to the centres; a few rounds, each ``O(n log k)``.

Measured on 10,000 random points on the sphere (two shared CPU cores): a full
pyramid 10,000 -> 2,500 -> 625 -> 156 -> 39 -> 10 takes about 0.1 s (scipy's
k-means: 1 s). The mean over clusters of the angular radius (largest
centre-to-member angle) is 1.45x that of k-means at 4 points per cluster and
1.15-1.25x at 16 to 1,000 points per cluster; k-means buys its smaller radii by
making the clusters unequal (sizes 1 to 13 where these are all 4). On clumpy
networks (dense cities, sparse countryside) the ratio grows to about 2 at the
coarsest levels: equal sizes force large clusters over the sparse parts.

The cluster labels are ordered along the bisection tree, so clusters with
nearby labels are nearby on the sphere.

Example
-------
>>> import numpy as np
>>> from graphsphere.sampling import lonlat_to_xyz
>>> from graphsphere.sampling.clustering import balanced_clusters, assignment_matrix, cluster_centres
>>> rng = np.random.default_rng(0)
>>> xyz = lonlat_to_xyz(rng.uniform(-109, -102, 1000), rng.uniform(37, 41, 1000))  # a Colorado-like patch
>>> labels = balanced_clusters(xyz, 250, seed=0)
>>> np.bincount(labels).min(), np.bincount(labels).max()
(np.int64(4), np.int64(4))
>>> assign = assignment_matrix(labels, 250)   # (250, 1000) CSR, one 1 per column
>>> assign.shape, bool(np.all(assign.sum(axis=0) == 1))
((250, 1000), True)
>>> centres = cluster_centres(xyz, labels, 250)  # unit vectors (250, 3)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

__all__ = ["assignment_matrix", "balanced_clusters", "balanced_coarsening", "cluster_centres", "cluster_radii"]

#: How far from unit length an input vector may be (points must lie on the unit sphere).
UNIT_TOL = 1e-6
#: Candidate clusters looked at per point during refinement (its own plus the nearest others).
_CANDIDATES = 6
#: A swap must lower the sum of squared chord distances by more than this (stops float-noise cycles).
_MIN_GAIN = 1e-14


def _check_xyz(xyz) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be an array of unit vectors of shape (npoints, 3), got shape {xyz.shape}")
    if not np.all(np.isfinite(xyz)):
        i = int(np.argmax(~np.isfinite(xyz).all(axis=1)))
        raise ValueError(f"xyz has NaN or infinite coordinates (first at row {i}); drop those points first")
    norm = np.linalg.norm(xyz, axis=1)
    if xyz.size and np.max(np.abs(norm - 1)) > UNIT_TOL:
        i = int(np.argmax(np.abs(norm - 1)))
        raise ValueError(f"xyz must hold unit vectors, but row {i} has length {norm[i]:.6g}; "
                         "build them with graphsphere.sampling.lonlat_to_xyz or divide by their norms")
    return xyz


def _check_n_clusters(n_clusters, npoints: int) -> int:
    if isinstance(n_clusters, bool) or not float(n_clusters).is_integer():
        raise ValueError(f"n_clusters must be a whole number, got {n_clusters!r}")
    k = int(n_clusters)
    if k < 1:
        raise ValueError(f"n_clusters must be at least 1, got {k}")
    if k >= npoints:
        raise ValueError(f"n_clusters ({k}) must be smaller than the number of points ({npoints}): "
                         "clustering must merge points; use fewer clusters")
    return k


def _check_labels(labels, n_clusters: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {labels.dtype} and shape {labels.shape}")
    if n_clusters is None:
        n_clusters = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise ValueError(f"labels must lie in [0, {n_clusters}), got values from {labels.min()} to {labels.max()}")
    return labels.astype(np.int64, copy=False), int(n_clusters)


def _bincount3(labels: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Per-label sums of the rows of x (n_labels, 3)."""
    return np.stack([np.bincount(labels, weights=x[:, i], minlength=n) for i in range(3)], axis=1)


def _bisect(xyz: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Labels from recursive principal-axis bisection; cluster sizes are floor or ceil of n / k."""
    n = len(xyz)
    # Exact target size of each final cluster; a group's size is always the sum of its clusters'
    # targets, so rounding never accumulates down the tree.
    target = np.full(k, n // k, dtype=np.int64)
    target[: n % k] += 1
    cum_target = np.concatenate([[0], np.cumsum(target)])
    # A group is named by its first cluster label; n_leaves[first] is how many clusters it will become.
    n_leaves = np.zeros(k + 1, dtype=np.int64)
    n_leaves[0] = k
    first = np.zeros(n, dtype=np.int64)
    # Ties in the projection (points on a regular grid) are broken by a seeded random order.
    tiebreak = np.random.default_rng(seed).permutation(n)
    while True:
        active = np.flatnonzero(n_leaves[first] > 1)
        if active.size == 0:
            return first
        groups, g = np.unique(first[active], return_inverse=True)
        ng = groups.size
        x = xyz[active]
        size = np.bincount(g, minlength=ng)
        dev = x - (_bincount3(g, x, ng) / size[:, None])[g]
        cov = np.empty((ng, 3, 3))
        for i in range(3):
            for j in range(i, 3):
                cov[:, i, j] = cov[:, j, i] = np.bincount(g, weights=dev[:, i] * dev[:, j], minlength=ng)
        axis = np.linalg.eigh(cov)[1][:, :, -1]
        # eigh's sign is arbitrary; fix it so results do not depend on the LAPACK build.
        axis *= np.sign(axis[np.arange(ng), np.argmax(np.abs(axis), axis=1)])[:, None]
        proj = np.einsum("ij,ij->i", dev, axis[g])
        order = np.lexsort((tiebreak[active], proj, g))
        group_start = np.concatenate([[0], np.cumsum(size)[:-1]])
        rank = np.empty(active.size, dtype=np.int64)
        rank[order] = np.arange(active.size) - group_start[g[order]]
        leaves = n_leaves[groups]
        left_leaves = leaves // 2
        left_size = cum_target[groups + left_leaves] - cum_target[groups]
        go_right = rank >= left_size[g]
        n_leaves[groups] = left_leaves
        n_leaves[groups + left_leaves] = leaves - left_leaves
        first[active] += np.where(go_right, left_leaves[g], 0)


def _refine(xyz: np.ndarray, labels: np.ndarray, k: int, rounds: int) -> np.ndarray:
    """Swap points pairwise between clusters while it lowers the squared distances to the centres."""
    n = len(xyz)
    m = min(_CANDIDATES, k)
    if m < 2:
        return labels
    labels = labels.copy()
    rows = np.arange(n)
    for _ in range(rounds):
        centres = _bincount3(labels, xyz, k)
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-300)
        dist, near = cKDTree(centres).query(xyz, m)
        own = np.sum((xyz - centres[labels]) ** 2, axis=1)
        other = np.where(near == labels[:, None], np.inf, dist ** 2)
        best = np.argmin(other, axis=1)
        dest = near[rows, best]
        gain = own - other[rows, best]  # how much the point alone would gain by moving; may be negative
        # Group the wishes by unordered pair of clusters and by direction, best gain first.
        lo, hi = np.minimum(labels, dest), np.maximum(labels, dest)
        pair = np.unique(lo * k + hi, return_inverse=True)[1]
        direction = (labels > dest).astype(np.int64)
        order = np.lexsort((-gain, direction, pair))
        bucket = (pair * 2 + direction)[order]
        new = np.r_[True, bucket[1:] != bucket[:-1]]
        rank = np.arange(n) - np.maximum.accumulate(np.where(new, np.arange(n), 0))
        # The t-th best of a -> b is matched with the t-th best of b -> a.
        fwd, bwd = order[direction[order] == 0], order[direction[order] == 1]
        code_f = pair[fwd] * (n + 1) + rank[direction[order] == 0]
        code_b = pair[bwd] * (n + 1) + rank[direction[order] == 1]
        if code_b.size == 0:
            break
        sort_b = np.argsort(code_b)
        pos = np.minimum(np.searchsorted(code_b[sort_b], code_f), code_b.size - 1)
        hit = code_b[sort_b][pos] == code_f
        a, b = fwd[hit], bwd[sort_b[pos[hit]]]
        # With the centres held fixed, the swap changes the sum by -(gain_a + gain_b); moving the
        # centres to the new means afterwards can only lower it further, so the rounds converge.
        keep = gain[a] + gain[b] > _MIN_GAIN
        a, b = a[keep], b[keep]
        if a.size == 0:
            break
        labels[a], labels[b] = labels[b], labels[a].copy()
    return labels


def balanced_clusters(xyz, n_clusters: int, seed: int = 0, refine: int = 10) -> np.ndarray:
    """Split points on the sphere into ``n_clusters`` compact clusters of equal size.

    Parameters
    ----------
    xyz : array (npoints, 3)
        Unit vectors (a full sphere, a region, clumpy or uniform: any set).
    n_clusters : int
        Number of clusters, ``1 <= n_clusters < npoints``.
    seed : int
        Breaks ties where the geometry leaves a choice (points with equal
        projections, as on a regular grid); the result is a deterministic
        function of ``(xyz, n_clusters, seed, refine)``.
    refine : int
        Largest number of size-preserving swap rounds after the bisection
        (0: bisection only). They converge in 4 to 10 rounds and make the
        clusters about 5% tighter.

    Returns
    -------
    labels : int64 array (npoints,)
        Cluster of each point, in ``0 .. n_clusters - 1``; every cluster has
        ``npoints // n_clusters`` or one more point.

    >>> import numpy as np
    >>> from graphsphere.sampling import lonlat_to_xyz
    >>> xyz = lonlat_to_xyz(np.arange(0, 360, 30.0), np.zeros(12))  # 12 points on the equator
    >>> labels = balanced_clusters(xyz, 5)
    >>> np.bincount(labels).tolist()                                     # 12 = 3 + 3 + 2 + 2 + 2
    [3, 3, 2, 2, 2]
    >>> int(np.sum(labels != np.roll(labels, 1)))                        # 5 arcs of neighbours
    5
    """
    xyz = _check_xyz(xyz)
    k = _check_n_clusters(n_clusters, len(xyz))
    rounds = int(refine)
    if rounds < 0:
        raise ValueError(f"refine must be >= 0 (number of swap rounds), got {refine}")
    labels = _bisect(xyz, k, int(seed))
    return _refine(xyz, labels, k, rounds) if rounds else labels


def assignment_matrix(labels, n_clusters: int | None = None) -> sp.csr_matrix:
    """The fine-to-coarse assignment of ``Sampling.coarsen``: CSR ``(n_clusters, npoints)``
    with ``A[labels[i], i] = 1`` (one 1 per column), so ``A @ x`` sums each cluster.

    >>> assignment_matrix(np.array([1, 0, 1]), 2).toarray()
    array([[0., 1., 0.],
           [1., 0., 1.]])
    """
    labels, k = _check_labels(labels, n_clusters)
    n = labels.size
    return sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))


def cluster_centres(xyz, labels, n_clusters: int | None = None) -> np.ndarray:
    """Centre of each cluster: the normalised mean of its members' unit vectors, (n_clusters, 3).

    Raises ``ValueError`` for an empty cluster, or one whose members cancel out
    (spread around the whole sphere, so that it has no centre).

    >>> xyz = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    >>> cluster_centres(xyz, np.array([0, 0, 1, 1])).round(4)
    array([[0.7071, 0.7071, 0.    ],
           [0.    , 0.    , 1.    ]])
    """
    xyz = _check_xyz(xyz)
    labels, k = _check_labels(labels, n_clusters)
    if labels.size != len(xyz):
        raise ValueError(f"labels has {labels.size} entries but xyz has {len(xyz)} points")
    count = np.bincount(labels, minlength=k)
    if np.any(count == 0):
        raise ValueError(f"cluster {int(np.argmin(count))} is empty ({int(np.sum(count == 0))} empty in all)")
    total = _bincount3(labels, xyz, k)
    norm = np.linalg.norm(total, axis=1)
    if np.any(norm < 1e-9 * count):
        j = int(np.argmin(norm / count))
        raise ValueError(f"the points of cluster {j} cancel out (they surround the centre of the sphere), "
                         "so it has no centre; use more clusters")
    return total / norm[:, None]


def cluster_radii(xyz, labels, n_clusters: int | None = None) -> np.ndarray:
    """Angular radius of each cluster in radians: the largest angle between its centre
    (``cluster_centres``) and a member. Its mean over clusters measures compactness.

    >>> xyz = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    >>> np.rad2deg(cluster_radii(xyz, np.array([0, 0, 1, 1]))).round(6).tolist()
    [45.0, 0.0]
    """
    xyz = _check_xyz(xyz)
    labels, k = _check_labels(labels, n_clusters)
    centres = cluster_centres(xyz, labels, k)
    # arctan2 of |cross| and dot keeps full precision at small angles, where arccos loses it.
    c = centres[labels]
    angle = np.arctan2(np.linalg.norm(np.cross(xyz, c), axis=1), np.einsum("ij,ij->i", xyz, c))
    radius = np.zeros(k)
    np.maximum.at(radius, labels, angle)
    return radius


def balanced_coarsening(xyz, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, sp.csr_matrix]:
    """One level of a pyramid: ``(centres, assign)`` for ``balanced_clusters(xyz, n_clusters, seed)``,
    the coarse points (unit vectors, in label order) and the ``(n_clusters, npoints)`` assignment.

    >>> from graphsphere.sampling import lonlat_to_xyz
    >>> rng = np.random.default_rng(0)
    >>> xyz = lonlat_to_xyz(rng.uniform(0, 360, 400), np.rad2deg(np.arcsin(rng.uniform(-1, 1, 400))))
    >>> centres, assign = balanced_coarsening(xyz, 100)
    >>> centres.shape, assign.shape, sorted(set(np.asarray(assign.sum(axis=1)).ravel().tolist()))
    ((100, 3), (100, 400), [4.0])
    """
    labels = balanced_clusters(xyz, n_clusters, seed=seed)
    return cluster_centres(xyz, labels, n_clusters), assignment_matrix(labels, n_clusters)
