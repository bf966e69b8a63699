"""Gauss-Legendre grids: latitude rings at the Gauss-Legendre nodes.

The rings sit at ``cos(theta) = x_k``, the roots of the Legendre polynomial
``P_nlat``; with ``nlon`` equally spaced longitudes, the pixel areas (the
quadrature weight times ``2 pi / nlon``) integrate any band-limited function
whose latitude part is a polynomial in ``cos(theta)`` of degree up to
``2 nlat - 1`` exactly. Pixel order is row-major ``(lat, lon)``, rings from
north to south, longitudes ``2 pi i / nlon`` from 0 eastward, as for
``Equiangular``.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> s = gs.sampling.GaussLegendre(nlat=6)                       # nlon = 2 * nlat
>>> s.grid_shape, s.npix
((6, 12), 72)
>>> z = s.xyz[:, 2]
>>> bool(np.isclose((s.area * z**10).sum(), 4 * np.pi / 11))   # exact up to degree 11
True
>>> coarse, assign = s.coarsen()
>>> coarse.grid_shape, assign.shape
((3, 6), (18, 72))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.polynomial.legendre import leggauss

from .equiangular import RingGrid, _block_assign, _check_count, _counts

__all__ = ["GaussLegendre"]


class GaussLegendre(RingGrid):
    """Gauss-Legendre grid: ``nlat`` rings at the Gauss-Legendre nodes times
    ``nlon`` longitudes.

    Parameters
    ----------
    nlat : int
        Number of rings (the quadrature order).
    nlon : int, optional
        Number of longitudes per ring; default ``2 * nlat``.

    The ``area`` of a pixel is its ring's Gauss-Legendre weight times
    ``2 pi / nlon`` (the weights sum to 2, so the areas sum to ``4 pi``): it is
    a quadrature weight, equal to the solid angle of the band whose
    boundaries are the cumulative weights.

    >>> s = GaussLegendre(nlat=2, nlon=4)
    >>> np.round(s.lonlat[::4, 1], 4).tolist()                   # latitudes, degrees
    [35.2644, -35.2644]
    """

    ARG_CHECKS = {**_counts("nlat"), **_counts("nlon", optional=True)}

    def __init__(self, nlat: int, nlon: int | None = None):
        self.nlat = _check_count(nlat, "nlat")
        self.nlon = 2 * self.nlat if nlon is None else _check_count(nlon, "nlon")
        nodes, weights = leggauss(self.nlat)
        # leggauss returns cos(theta) increasing, i.e. south to north; flip to north first.
        self._nodes, self._weights = nodes[::-1].copy(), weights[::-1].copy()

    @property
    def colatitudes(self) -> np.ndarray:
        """Colatitude of each ring in radians, (nlat,), north to south."""
        return np.arccos(self._nodes)

    @property
    def weights(self) -> np.ndarray:
        """Gauss-Legendre weight of each ring (sum 2), north to south."""
        return self._weights.copy()

    def _compute_xyz(self) -> np.ndarray:
        # z is the node itself (more accurate than cos(arccos(node))).
        xyz = super()._compute_xyz()
        xyz[:, 2] = np.repeat(self._nodes, self.nlon)
        return xyz

    def _ring_areas(self) -> np.ndarray:
        return self._weights * (2 * np.pi / self.nlon)

    def _params(self) -> dict[str, Any]:
        return {"nlat": self.nlat, "nlon": self.nlon}

    @property
    def family(self) -> str | None:
        # Other aspect ratios have other neighbourhoods: no shared kernel width.
        return "GaussLegendre" if self.nlon == 2 * self.nlat else None

    def coarsen(self) -> tuple["GaussLegendre", sp.csr_matrix]:
        """The ``(nlat/2, nlon/2)`` Gauss-Legendre grid; each 2x2 block -> 1 pixel.

        Fine rings ``2J, 2J+1`` and columns ``2I, 2I+1`` go to coarse pixel
        ``(J, I)``. In latitude this block rule is the nearest-ring rule: coarse
        ring ``J`` lies strictly between fine rings ``2J`` and ``2J+1`` and is
        the nearest coarse ring to both (checked for every even ``nlat`` up to
        600; the tests check a range). Their two weights add up to the coarse
        ring's weight within 17% (worst at the poles). In longitude, coarse
        column ``I`` has the longitude of fine column ``2I``; fine column
        ``2I+1``, halfway between coarse columns ``I`` and ``I+1``, goes to
        ``I`` by the block convention (as on ``Equiangular`` grids).

        >>> c, a = GaussLegendre(4).coarsen()
        >>> c, a.sum(axis=0).min()
        (GaussLegendre(nlat=2, nlon=4) [npix=8], np.float64(1.0))
        """
        self._check_coarsenable()
        return GaussLegendre(self.nlat // 2, self.nlon // 2), _block_assign(self.nlat, self.nlon)
