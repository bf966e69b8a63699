"""Any set of points on the sphere: weather stations, sensors, a custom mesh.

The pixels are the given points, in the given order; the area of a point is
that of its spherical Voronoi cell (the part of the sphere closer to it than
to any other point), so the areas always sum to ``4 pi``. For a regional
network (say, stations of one country) the cells of the outer points extend
over the unsampled rest of the sphere and are huge: that is what a Voronoi
area means, not a bug; weight with care, or mask them, when integrating.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> rng = np.random.default_rng(0)
>>> lon, lat = rng.uniform(0, 360, 500), np.rad2deg(np.arcsin(rng.uniform(-1, 1, 500)))
>>> s = gs.sampling.Points(lon=lon, lat=lat)
>>> s.npix, bool(np.isclose(s.area.sum(), 4 * np.pi))
(500, True)
>>> coarse, assign = s.coarsen(factor=4, seed=0)       # 125 clusters of 4 points
>>> assign.shape[1], bool(np.all(assign.sum(axis=0) == 1))
(500, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial import SphericalVoronoi, cKDTree

from .base import Sampling, check_lonlat, lonlat_to_xyz, xyz_to_lonlat
from .clustering import balanced_coarsening

__all__ = ["Points"]

#: Points closer than this chord (radians; about 6 m on the Earth) are duplicates,
#: the threshold scipy's SphericalVoronoi uses.
DUPLICATE_TOL = 1e-6


class Points(Sampling):
    """An arbitrary set of points, given by longitude and latitude in degrees.

    Parameters
    ----------
    lon, lat : array-like of float, same length
        Coordinates in degrees; latitude in [-90, 90]. Points closer than
        ``1e-6`` radians (about 6 m on the Earth) are rejected as duplicates:
        average their data first.

    ``full_sphere`` is True in the sense of the ``Sampling`` interface (the
    areas, Voronoi cells, sum to ``4 pi``), whatever part of the sphere the
    points actually cover; see the module docstring about regional networks.

    >>> s = Points(lon=[0, 90, 180, 270, 0, 0], lat=[0, 0, 0, 0, 90, -90])  # octahedron
    >>> np.round(s.area / (4 * np.pi / 6), 12).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, lon, lat):
        lon, lat = check_lonlat(lon, lat)
        if lon.size < 4:
            raise ValueError(f"Points needs at least 4 points to tile the sphere, got {lon.size}")
        xyz = lonlat_to_xyz(lon, lat)
        pairs = cKDTree(xyz).query_pairs(DUPLICATE_TOL, output_type="ndarray")
        if len(pairs):
            i, j = min(map(tuple, pairs.tolist()))
            raise ValueError(
                f"points {i} and {j} are the same location (lon, lat = {lon[i]:g}, {lat[i]:g} and "
                f"{lon[j]:g}, {lat[j]:g}; {len(pairs)} duplicate pair(s) in all); keep one of each, "
                "e.g. by averaging their data")
        self._lon, self._lat, self._xyz = lon, lat, xyz
        for a in (lon, lat, xyz):
            a.setflags(write=False)

    @property
    def npix(self) -> int:
        return int(self._lon.size)

    def _compute_xyz(self) -> np.ndarray:
        return self._xyz

    def _compute_area(self) -> np.ndarray:
        try:
            return SphericalVoronoi(self._xyz, radius=1.0, center=np.zeros(3)).calculate_areas()
        except ValueError as err:  # e.g. every point on one great circle
            raise ValueError(f"cannot compute Voronoi areas of these {self.npix} points ({err}); "
                             "they must not all lie on one circle") from err

    def _params(self) -> dict[str, Any]:
        return {"lon": self._lon.tolist(), "lat": self._lat.tolist()}

    def describe(self) -> str:
        return f"Points(n={self.npix})"

    def coarsen(self, factor: float = 4, seed: int = 0) -> tuple["Points", sp.csr_matrix]:
        """Group the points into ``round(npix / factor)`` clusters of equal size
        (sizes differ by at most one point), spatially compact:
        :func:`graphsphere.sampling.clustering.balanced_clusters` (recursive
        bisection along principal axes, then size-preserving swaps;
        deterministic; ``seed`` breaks ties, as on regular grids).

        The coarse points are the cluster centres (normalised means), in the
        order of the cluster labels; ``assign[j, i] = 1`` when point ``i`` is in
        cluster ``j``. Equal sizes make every coarse vertex stand for the same
        number of stations, whatever the density of the network.

        >>> rng = np.random.default_rng(1)
        >>> s = Points(rng.uniform(0, 360, 200), rng.uniform(-60, 60, 200))
        >>> c, a = s.coarsen(factor=4, seed=0)
        >>> c.npix, sorted(set(np.asarray(a.sum(axis=1)).ravel().tolist()))
        (50, [4.0])
        >>> c2, a2 = s.coarsen(factor=4, seed=0)
        >>> c == c2, (a != a2).nnz
        (True, 0)
        """
        factor = float(factor)
        if not factor > 1:
            raise ValueError(f"factor must be > 1 (how many points per cluster on average), got {factor}")
        k = int(round(self.npix / factor))
        if k < 4:
            raise ValueError(f"coarsening {self.npix} points by factor {factor:g} leaves {k} clusters; "
                             "at least 4 are needed: use a smaller factor")
        centres, assign = balanced_coarsening(self._xyz, k, seed=seed)
        lonlat = xyz_to_lonlat(centres)
        return Points(lonlat[:, 0], lonlat[:, 1]), assign
