"""Equiangular (latitude-longitude) grids, and what every ring grid shares.

Pixels are ordered row-major on the ``(lat, lon)`` grid, rows from north to
south and, within a row, longitudes increasing eastward from 0: pixel
``j * nlon + i`` sits on latitude row ``j`` and longitude column ``i``, so a
map reshapes to an image with ``m.reshape(s.grid_shape)``.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> s = gs.sampling.Equiangular(nlat=8, nlon=16)                   # Driscoll-Healy
>>> s.npix, s.grid_shape, s.lonlat[0].tolist()                    # first pixel: north pole
(128, (8, 16), [0.0, 90.0])
>>> coarse, assign = s.coarsen()                                  # 2x2 blocks -> 1
>>> coarse.grid_shape, assign.shape
((4, 8), (32, 128))
>>> bool(np.isclose(s.area.sum(), 4 * np.pi))
True
"""

from __future__ import annotations

import operator
from abc import abstractmethod
from functools import cached_property
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .base import Sampling

__all__ = ["Equiangular"]


def _check_count(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise a clear error."""
    try:
        n = operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            n = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return n


def _counts(*names: str, optional: bool = False) -> dict[str, Callable[[Any], Any]]:
    """``ARG_CHECKS`` entries: each argument an integer >= 1 (or None when ``optional``)."""
    return {name: (lambda v, name=name: None if optional and v is None else _check_count(v, name))
            for name in names}


def _check_poles(poles) -> str:
    key = str(poles).upper()
    if key not in Equiangular.POLES:
        raise ValueError(f"poles must be one of {Equiangular.POLES} (Driscoll-Healy or SOFT), got {poles!r}")
    return key


def _block_assign(nlat: int, nlon: int) -> sp.csr_matrix:
    """Assignment of a (nlat, nlon) row-major grid to its (nlat/2, nlon/2)
    grid of 2x2 blocks: fine pixel (j, i) -> coarse pixel (j // 2, i // 2)."""
    j, i = np.divmod(np.arange(nlat * nlon), nlon)
    rows = (j // 2) * (nlon // 2) + i // 2
    return sp.csr_matrix((np.ones(nlat * nlon), (rows, np.arange(nlat * nlon))),
                         shape=(nlat * nlon // 4, nlat * nlon))


class RingGrid(Sampling):
    """A latitude-longitude grid: ``nlat`` latitude rings, each with ``nlon``
    equally spaced longitudes ``2 pi i / nlon`` (first at 0); rows north to
    south. The base of :class:`Equiangular` and :class:`GaussLegendre`.

    Subclasses set ``self.nlat``, ``self.nlon`` and implement ``colatitudes``
    (radians, increasing) and ``_ring_areas`` (solid angle of one pixel of
    each ring).
    """

    nlat: int
    nlon: int

    @property
    def npix(self) -> int:
        return self.nlat * self.nlon

    @property
    def native_resolution(self) -> int:
        return self.nlat

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(nlat, nlon)``: ``m.reshape(grid_shape)`` is the map as an image, north up."""
        return (self.nlat, self.nlon)

    @property
    @abstractmethod
    def colatitudes(self) -> np.ndarray:
        """Colatitude of each ring in radians, (nlat,), north to south."""

    @property
    def longitudes(self) -> np.ndarray:
        """Longitude of each column in radians, (nlon,)."""
        return 2 * np.pi * np.arange(self.nlon) / self.nlon

    @abstractmethod
    def _ring_areas(self) -> np.ndarray:
        """Solid angle of one pixel of each ring, (nlat,)."""

    def _compute_xyz(self) -> np.ndarray:
        # From the angles directly (not via degrees) so that a pole is exactly (0, 0, +-1).
        theta, phi = np.meshgrid(self.colatitudes, self.longitudes, indexing="ij")
        st = np.sin(theta)
        return np.stack([st * np.cos(phi), st * np.sin(phi), np.cos(theta)], axis=-1).reshape(-1, 3)

    @cached_property
    def lonlat(self) -> np.ndarray:
        """Longitude in [0, 360) and latitude in [-90, 90], degrees, (npix, 2).

        Exact grid values (a pixel on a pole keeps its column's longitude).
        """
        lat, lon = np.meshgrid(90.0 - np.rad2deg(self.colatitudes), np.rad2deg(self.longitudes),
                               indexing="ij")
        ll = np.stack([lon.ravel(), lat.ravel()], axis=-1)
        ll.setflags(write=False)
        return ll

    def _compute_area(self) -> np.ndarray:
        return np.repeat(self._ring_areas(), self.nlon)

    def _check_coarsenable(self) -> None:
        if self.nlat % 2 or self.nlon % 2:
            raise ValueError(
                f"{self.describe()} cannot be coarsened: pooling takes 2x2 blocks, so nlat and nlon "
                f"must both be even (got nlat={self.nlat}, nlon={self.nlon}); build the grid with even "
                "sizes, e.g. powers of two")


class Equiangular(RingGrid):
    """Equiangular latitude-longitude grid, ``nlat * nlon`` pixels.

    Parameters
    ----------
    nlat, nlon : int
        Number of latitude rows and longitude columns.
    poles : {"DH", "SOFT"}
        Latitude convention. ``"DH"`` (Driscoll-Healy): colatitudes
        ``theta_j = pi j / nlat``, j = 0..nlat-1, so the first row sits on the
        north pole (its ``nlon`` pixels are the same point) and the south pole
        is not sampled. ``"SOFT"``: ``theta_j = pi (2j + 1) / (2 nlat)``,
        symmetric about the equator, no pixel on a pole.

    Longitudes are ``2 pi i / nlon``, i = 0..nlon-1. Pixel order is row-major
    ``(lat, lon)``, north to south (see the module docstring).

    Areas are exact solid angles: a pixel is the latitude band between the
    midpoints of its ring and its neighbours' (the first and last bands reach
    the poles) times ``2 pi / nlon`` of longitude, so they sum to ``4 pi``.

    >>> s = Equiangular(nlat=4, nlon=8, poles="SOFT")
    >>> (90 - s.lonlat[::8, 1]).tolist()                    # colatitudes, degrees
    [22.5, 67.5, 112.5, 157.5]
    """

    POLES = ("DH", "SOFT")
    ARG_CHECKS = {**_counts("nlat", "nlon"), "poles": _check_poles}

    def __init__(self, nlat: int, nlon: int, poles: str = "DH"):
        self.nlat = _check_count(nlat, "nlat")
        self.nlon = _check_count(nlon, "nlon")
        self.poles = _check_poles(poles)

    @property
    def colatitudes(self) -> np.ndarray:
        """Colatitude of each ring in radians, (nlat,), north to south."""
        j = np.arange(self.nlat)
        if self.poles == "DH":
            return np.pi * j / self.nlat
        return np.pi * (2 * j + 1) / (2 * self.nlat)

    def _ring_areas(self) -> np.ndarray:
        theta = self.colatitudes
        edges = np.concatenate([[0.0], (theta[:-1] + theta[1:]) / 2, [np.pi]])
        return (np.cos(edges[:-1]) - np.cos(edges[1:])) * (2 * np.pi / self.nlon)

    def _params(self) -> dict[str, Any]:
        return {"nlat": self.nlat, "nlon": self.nlon, "poles": self.poles}

    @property
    def family(self) -> str | None:
        # Other aspect ratios have other neighbourhoods: no shared kernel width.
        return f"Equiangular-{self.poles}" if self.nlon == 2 * self.nlat else None

    def coarsen(self) -> tuple["Equiangular", sp.csr_matrix]:
        """Half the resolution, same convention: each 2x2 block -> 1 pixel.

        Fine rows ``2J, 2J+1`` and columns ``2I, 2I+1`` go to coarse pixel
        ``(J, I)``, i.e. ``m.reshape(nlat/2, 2, nlon/2, 2)`` pooling, as in the
        DeepSphere equiangular experiments. Coarse ring ``J`` has colatitude
        equal to that of fine ring ``2J`` (DH) or halfway between fine rings
        ``2J`` and ``2J+1`` (SOFT); coarse column ``I`` has the longitude of
        fine column ``2I``.

        >>> c, a = Equiangular(4, 8).coarsen()
        >>> c, a.sum(axis=0).min()
        (Equiangular(nlat=2, nlon=4, poles=DH) [npix=8], np.float64(1.0))
        """
        self._check_coarsenable()
        return Equiangular(self.nlat // 2, self.nlon // 2, self.poles), _block_assign(self.nlat, self.nlon)
