"""Graphs on a station network: the paper's kernel width, and a check that the graph looks like a
Laplacian on the region.

**Kernel width.** The graph joins each station to its ``k`` nearest ones (k = 5 in the paper) with
weights ``w = exp(-d^2 / (4 t))`` (``d`` the chord between unit vectors). The paper's rule (the
k-NN heuristic of PyGSP that its GHCN code used) sets ``sigma`` to the mean neighbour distance in
``w = exp(-ln 2 d^2 / sigma^2)``: a neighbour at the mean distance weighs 1/2. In graphsphere's
units, ``t = mean(d)^2 / (4 ln 2)``: :func:`paper_kernel_width`. graphsphere's ``kernel_width="mean"``
is the 2019 HEALPix heuristic, ``t = mean(d^2) / 2``; since ``mean(d^2) >= mean(d)^2``, it is at least
``2 ln 2 = 1.39`` times wider (1.67 times on the Colorado network: a neighbour at the mean distance
weighs 0.66 instead of 0.5). No equivariance tuning applies here: a regional network has no
rotation that maps it onto itself, so there is nothing to be equivariant to.

**Spectral check.** On a region of area ``A`` the Laplacian's eigenvalues grow linearly, ``N(lambda)
~ A lambda / (4 pi)`` (Weyl's law in two dimensions), and on a rectangle with free (Neumann) edges
they are ``pi^2 (m^2 / a^2 + n^2 / b^2)`` with eigenfunctions ``cos(m pi x / a) cos(n pi y / b)``. A
graph whose low spectrum behaves like that, up to one scale factor, sees the region as a region:
:func:`spectral_check` fits the scale and compares, and correlates the first eigenvectors with the
rectangle's modes.

>>> import numpy as np, graphsphere as gs
>>> rng = np.random.default_rng(0)
>>> s = gs.sampling.Points(rng.uniform(-109, -102, 200), rng.uniform(37, 41, 200))
>>> t = paper_kernel_width(s, k=5)
>>> round(float(np.exp(-np.mean(neighbour_distances(s, 5)) ** 2 / (4 * t))), 6)  # at the mean distance
0.5
>>> round(float(mean_kernel_width(s, k=5) / t), 2)                       # the 2019 heuristic: wider
1.66
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from ...sampling import Sampling

__all__ = [
    "KERNEL_WIDTHS",
    "local_coordinates",
    "mean_kernel_width",
    "neighbour_distances",
    "paper_kernel_width",
    "region_area",
    "resolve_kernel_width",
    "spectral_check",
    "station_graph",
    "weyl_eigenvalues",
]

#: The named width rules of the stations experiment (a number is also accepted).
KERNEL_WIDTHS = ("paper", "mean")


def _xyz(points) -> np.ndarray:
    xyz = np.asarray(points.xyz if isinstance(points, Sampling) else points, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"expected a sampling or unit vectors (n, 3), got shape {xyz.shape}")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("the points have NaN or infinite coordinates; drop those stations first")
    return xyz


def neighbour_distances(points, k: int = 5) -> np.ndarray:
    """Chord distances (n, k) from each point to its ``k`` nearest others (unit sphere: radians for
    small distances). ``points``: a sampling or unit vectors.

    >>> neighbour_distances(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), 1).round(4).ravel().tolist()
    [1.4142, 1.4142, 1.4142]
    """
    xyz = _xyz(points)
    k = int(k)
    if not 1 <= k < len(xyz):
        raise ValueError(f"{len(xyz)} points cannot have {k} nearest neighbours each: use k < {len(xyz)} "
                         "(or keep more stations)")
    d, _ = cKDTree(xyz).query(xyz, k + 1)
    return d[:, 1:]


def paper_kernel_width(points, k: int = 5) -> float:
    """The paper's width as graphsphere's ``t``: ``sigma = mean`` distance to the ``k`` nearest
    neighbours, ``w = exp(-ln 2 d^2 / sigma^2)``, so ``t = sigma^2 / (4 ln 2)``.

    >>> xyz = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]])
    >>> round(float(paper_kernel_width(xyz, 1) / (2 / (4 * np.log(2)))), 12)  # every neighbour at sqrt(2)
    1.0
    """
    sigma = float(np.mean(neighbour_distances(points, k)))
    return sigma**2 / (4 * np.log(2))


def mean_kernel_width(points, k: int = 5) -> float:
    """graphsphere's ``kernel_width="mean"`` (the 2019 heuristic) for the same neighbours:
    ``t = mean(d^2) / 2``, for comparison with :func:`paper_kernel_width`."""
    return float(np.mean(neighbour_distances(points, k) ** 2)) / 2


def resolve_kernel_width(points, k: int, kernel_width) -> float | str:
    """``"paper"`` -> :func:`paper_kernel_width`; ``"mean"`` and numbers pass through (SphereGraph reads them)."""
    if isinstance(kernel_width, str):
        if kernel_width == "paper":
            return paper_kernel_width(points, k)
        if kernel_width == "mean":
            return "mean"
        raise ValueError(f"kernel_width must be one of {KERNEL_WIDTHS} or a positive number, got {kernel_width!r}")
    t = float(kernel_width)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
    return t


def station_graph(points, k: int = 5, kernel_width="paper", laplacian: str = "normalized"):
    """The k-NN graph of a station network (:class:`graphsphere.SphereGraph`) with the width of
    ``kernel_width`` (``"paper"``, ``"mean"`` or a ``t``)."""
    from ...graph import SphereGraph

    neighbour_distances(points, k)  # a clear error for too few stations, before SphereGraph's
    return SphereGraph(points, k=k, kernel_width=resolve_kernel_width(points, k, kernel_width), laplacian=laplacian)


def local_coordinates(lon, lat) -> np.ndarray:
    """Lambert azimuthal equal-area coordinates (n, 2), in radians of the unit sphere, about the
    network's centre: areas on this plane are areas on the sphere, and distances near the centre
    are great-circle distances. x points east, y north."""
    lon, lat = np.deg2rad(np.asarray(lon, float)), np.deg2rad(np.asarray(lat, float))
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    c = xyz.mean(axis=0)
    c /= np.linalg.norm(c)
    east = np.cross([0.0, 0.0, 1.0], c)
    east /= np.linalg.norm(east)
    north = np.cross(c, east)
    cos_angle = np.clip(xyz @ c, -1, 1)
    scale = np.sqrt(2 / (1 + cos_angle))            # equal-area radial scale
    return np.stack([xyz @ east, xyz @ north], axis=1) * scale[:, None]


def region_area(lon, lat) -> tuple[float, float]:
    """Area (steradians) and perimeter (radians) of the convex hull of the stations, on the
    equal-area plane of :func:`local_coordinates`."""
    hull = ConvexHull(local_coordinates(lon, lat))
    return float(hull.volume), float(hull.area)   # in two dimensions scipy's volume is the area, area the perimeter


def weyl_eigenvalues(area: float, perimeter: float, n: int) -> np.ndarray:
    """The first ``n`` Laplacian eigenvalues of a region with free (Neumann) edges by the two-term
    Weyl law ``N(lambda) = (A lambda + P sqrt(lambda)) / (4 pi)``, the ``j``-th read at ``N = j + 1/2``.

    >>> a, b = 2.0, 1.0                           # a 2 x 1 rectangle: exactly 0, 2.47, 9.87, 9.87, 12.3
    >>> weyl_eigenvalues(a * b, 2 * (a + b), 5).round(1).tolist()
    [0.7, 3.7, 7.5, 11.7, 16.2]
    """
    count = np.arange(n) + 0.5
    root = (-perimeter + np.sqrt(perimeter**2 + 16 * np.pi * area * count)) / (2 * area)
    return root**2


def _rectangle_modes(uv: np.ndarray, n: int):
    """Eigenvalues and eigenfunctions (at uv) of the Neumann Laplacian on the bounding rectangle of
    uv in its principal axes, the n lowest."""
    centred = uv - uv.mean(axis=0)
    axes = np.linalg.svd(centred, full_matrices=False)[2]
    p = centred @ axes.T
    lo, hi = p.min(axis=0), p.max(axis=0)
    a, b = hi - lo
    m = int(np.ceil(np.sqrt(n))) + 3
    pairs = [(i, j) for i in range(m) for j in range(m)]
    lam = np.array([np.pi**2 * (i * i / a**2 + j * j / b**2) for i, j in pairs])
    order = np.argsort(lam, kind="stable")[:n]
    modes = np.stack([np.cos(pairs[o][0] * np.pi * (p[:, 0] - lo[0]) / a)
                      * np.cos(pairs[o][1] * np.pi * (p[:, 1] - lo[1]) / b) for o in order], axis=1)
    return lam[order], modes, (float(a), float(b)), [pairs[o] for o in order]


def _r2(model: np.ndarray, obs: np.ndarray) -> float:
    return float(1 - np.sum((obs - model) ** 2) / np.sum((obs - obs.mean()) ** 2))


def spectral_check(graph, lon, lat, n: int = 20) -> dict:
    """Does the graph's low spectrum look like a Laplacian on the stations' region?

    From the ``n`` lowest eigenpairs of ``graph.L``:

    - **growth** (Weyl's law): the graph's eigenvalues times the one ``scale`` that fits best (least
      squares over eigenvalues 1..n-1) against :func:`weyl_eigenvalues` of the stations' convex hull
      (its area and perimeter); ``weyl_r2`` is the fit's coefficient of determination;
    - **pattern** (the Neumann rectangle that bounds the stations along their principal axes): the
      scale-free ratios ``lambda_j / lambda_1`` of the graph against the rectangle's
      ``(i^2/a^2 + j^2/b^2) / (1/a^2)``; ``rect_r2`` compares them;
    - **modes**: ``mode_corr[j - 1]`` (j = 1, 2, 3) is the fraction of graph eigenvector ``j`` (its
      norm, mean removed) that lies in the span of the rectangle's eigenfunctions ``j - 1 .. j + 1``
      sampled at the stations: 1 when the eigenvector is a smooth rectangle mode.

    Returns plain numbers and lists: ``eigenvalues``, ``scaled``, ``weyl``, ``scale``, ``weyl_r2``,
    ``ratios``, ``rectangle_ratios``, ``rectangle``, ``rectangle_modes``, ``rect_r2``, ``mode_corr``,
    ``rectangle_sides``, ``area``, ``perimeter``, ``eigenvectors`` (the first 5, per station).
    """
    import scipy.linalg

    npix = graph.npix
    n = int(min(n, npix - 1))
    if n < 4:
        raise ValueError(f"the spectral check needs at least 5 stations, got {npix}")
    vals, vecs = scipy.linalg.eigh(graph.L.toarray(), subset_by_index=[0, n - 1])
    uv = local_coordinates(lon, lat)
    rect, modes, sides, pairs = _rectangle_modes(uv, n)
    area, perimeter = region_area(lon, lat)
    weyl = weyl_eigenvalues(area, perimeter, n)
    j = np.arange(1, n)
    scale = float(np.dot(vals[j], weyl[j]) / np.dot(vals[j], vals[j]))
    ratios, rect_ratios = vals / vals[1], rect / rect[1]
    corr = []
    for i in (1, 2, 3):
        span = modes[:, max(1, i - 1):i + 2]
        q, _ = np.linalg.qr(span - span.mean(axis=0))
        v = vecs[:, i] - vecs[:, i].mean()
        corr.append(float(np.linalg.norm(q.T @ v) / np.linalg.norm(v)))
    return {"eigenvalues": vals.tolist(), "scaled": (scale * vals).tolist(), "weyl": weyl.tolist(), "scale": scale,
            "weyl_r2": _r2(weyl[j], scale * vals[j]), "ratios": ratios.tolist(),
            "rectangle_ratios": rect_ratios.tolist(), "rectangle": rect.tolist(),
            "rectangle_modes": [list(p) for p in pairs], "rect_r2": _r2(rect_ratios[j], ratios[j]),
            "mode_corr": corr, "rectangle_sides": list(sides),
            "area": area, "perimeter": perimeter, "eigenvectors": vecs[:, :5].tolist()}
