"""Latitude-longitude grids (:class:`LatLonGrid`), and the normalised view of a grid or a sampling
that the regridder works on (its cells, their exact areas, how to find the cell of a point)."""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["LatLonGrid"]


def _as_1d(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of degrees, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or infinite values (first at index {int(np.argmin(np.isfinite(a)))})")
    return a


def _unwrap_lon(lon: np.ndarray, name: str) -> np.ndarray:
    """Longitudes made increasing across the 360 -> 0 seam (e.g. 180..357.5, 0..177.5)."""
    jumps = np.diff(lon) < -180
    if jumps.sum() > 1:
        raise ValueError(f"{name} wraps around the circle more than once; give each longitude once, in order")
    out = lon + 360.0 * np.concatenate([[0], np.cumsum(jumps)])
    d = np.diff(out)
    if (d <= 0).any():
        i = int(np.argmax(d <= 0))
        raise ValueError(
            f"{name} must increase eastward; {name}[{i}] = {lon[i]:g} is followed by {lon[i + 1]:g}. "
            "If your longitudes decrease, reverse them and the field's last axis (field[..., ::-1])")
    return out


def _outer_edge(centre: float, spacing: float) -> float:
    """Edge half a spacing beyond an outer row, moved onto the pole when the pole is less than one
    spacing away (a further row would be cut by the pole anyway: Gaussian grids, pole rows)."""
    edge = centre + spacing / 2
    pole = math.copysign(90.0, spacing)
    return pole if abs(pole - edge) < abs(spacing) or abs(edge) > 90 else edge


class LatLonGrid:
    """A latitude-longitude grid: cells bounded by two meridians and two parallels.

    Parameters
    ----------
    lat : array of float, (nlat,)
        Latitudes of the row centres in degrees, strictly increasing or strictly decreasing: regular
        or Gaussian, with or without rows on the poles.
    lon : array of float, (nlon,)
        Longitudes of the column centres in degrees, increasing eastward: 0..360, -180..180, or any
        start (20..377.5 as in the FNOC files); one crossing of the 360 -> 0 seam is unwrapped. A
        last column that repeats the first 360 degrees on is an error (drop it from the data).
    lat_edges, lon_edges : array of float, (nlat + 1,) and (nlon + 1,), optional
        Cell boundaries, in the same order as the centres. By default the midpoints between centres;
        an outer latitude edge is half a spacing beyond its row and goes onto the pole when the pole
        is less than a spacing away (so pole rows get a half-height polar cap cell and a Gaussian
        grid's first row reaches the pole); outer longitude edges close the circle halfway across the
        seam when the grid is periodic.
    periodic : bool, optional
        Whether the columns go round the whole circle. Default: yes when the gap between the last and
        the first longitude is at most 1.5 column spacings (or the given edges span 360 degrees).

    A field on the grid is an array ``[..., nlat, nlon]`` in the order of ``lat`` and ``lon``;
    flattened pixel ``i * nlon + j`` is row ``i``, column ``j``.

    >>> g = LatLonGrid(lat=[60, 20, -20, -60], lon=[-135, -45, 45, 135])
    >>> g.shape, g.periodic, g.covers_sphere, g.lat_edges.tolist()
    ((4, 4), True, True, [90.0, 40.0, 0.0, -40.0, -90.0])
    >>> bool(np.isclose(g.area.sum(), 4 * np.pi))
    True
    """

    def __init__(self, lat, lon, lat_edges=None, lon_edges=None, periodic: bool | None = None):
        lat = _as_1d(lat, "lat")
        lon = _as_1d(lon, "lon")
        if np.abs(lat).max() > 90:
            i = int(np.argmax(np.abs(lat) > 90))
            raise ValueError(f"lat[{i}] = {lat[i]:g} is outside [-90, 90] degrees; did you swap lat and lon, "
                             "or pass radians or colatitudes?")
        dlat = np.diff(lat)
        if lat.size > 1 and not ((dlat > 0).all() or (dlat < 0).all()):
            raise ValueError("lat must be strictly increasing or strictly decreasing (no repeated rows)")
        lon_u = _unwrap_lon(lon, "lon")
        self.lat, self.lon = lat, lon
        self._lon_u = lon_u
        self.lat_edges = self._lat_edges(lat, lat_edges)
        self.lon_edges, self.periodic = self._lon_edges(lon_u, lon_edges, periodic)
        for a in (self.lat, self.lon, self._lon_u, self.lat_edges, self.lon_edges):
            a.setflags(write=False)

    # -- construction helpers ----------------------------------------------------------------------
    @staticmethod
    def _lat_edges(lat: np.ndarray, given) -> np.ndarray:
        if given is None:
            if lat.size < 2:
                raise ValueError("a grid with a single latitude row needs lat_edges")
            d = np.diff(lat)
            return np.concatenate([[_outer_edge(lat[0], -d[0])], (lat[:-1] + lat[1:]) / 2,
                                   [_outer_edge(lat[-1], d[-1])]])
        e = _as_1d(given, "lat_edges")
        if e.size != lat.size + 1:
            raise ValueError(f"lat_edges must have nlat + 1 = {lat.size + 1} values, got {e.size}")
        if np.abs(e).max() > 90 + 1e-9:
            raise ValueError("lat_edges must lie in [-90, 90] degrees")
        e = np.clip(e, -90, 90)
        lo, hi = np.minimum(e[:-1], e[1:]), np.maximum(e[:-1], e[1:])
        d = np.diff(e)
        if not ((d > 0).all() or (d < 0).all()) or ((lat < lo) | (lat > hi)).any():
            raise ValueError("lat_edges must be monotonic like lat, with each row's centre between its two edges")
        return e

    @staticmethod
    def _lon_edges(lon_u: np.ndarray, given, periodic: bool | None) -> tuple[np.ndarray, bool]:
        if given is not None:
            e = _unwrap_lon(_as_1d(given, "lon_edges"), "lon_edges")
            if e.size != lon_u.size + 1:
                raise ValueError(f"lon_edges must have nlon + 1 = {lon_u.size + 1} values, got {e.size}")
            span = e[-1] - e[0]
            if span > 360 + 1e-6:
                raise ValueError(f"lon_edges span {span:g} > 360 degrees: cells overlap across the seam")
            # Centres may be given modulo 360 relative to the edges: bring them into the edges' frame.
            centres = e[0] + (lon_u - e[0]) % 360
            if ((centres < e[:-1] - 1e-9) | (centres > e[1:] + 1e-9)).any():
                raise ValueError("each longitude must lie between its two lon_edges")
            is_periodic = bool(abs(span - 360) < 1e-6) if periodic is None else bool(periodic)
            if is_periodic:
                e = e.copy()
                e[-1] = e[0] + 360.0
            return e, is_periodic
        if lon_u.size < 2:
            raise ValueError("a grid with a single longitude column needs lon_edges")
        d = np.diff(lon_u)
        gap = lon_u[0] + 360 - lon_u[-1]
        if gap < 0.5 * d.min():
            raise ValueError(
                f"the last longitude ({lon_u[-1] % 360:g}) repeats the first ({lon_u[0]:g}) one turn on: "
                "drop the repeated column from the coordinates and the data (lon[:-1], field[..., :-1])")
        is_periodic = bool(gap <= 1.5 * d.max()) if periodic is None else bool(periodic)
        if is_periodic:
            seam = lon_u[-1] + gap / 2
            e = np.concatenate([[seam - 360], (lon_u[:-1] + lon_u[1:]) / 2, [seam]])
        else:
            e = np.concatenate([[lon_u[0] - d[0] / 2], (lon_u[:-1] + lon_u[1:]) / 2, [lon_u[-1] + d[-1] / 2]])
            if e[-1] - e[0] > 360:
                raise ValueError("non-periodic longitudes whose cells would span more than 360 degrees")
        return e, is_periodic

    @classmethod
    def regular(cls, step: float, lon_step: float | None = None, poles: bool = True,
                lon_start: float = 0.0) -> LatLonGrid:
        """A regular global grid of ``step`` degrees, rows from south to north.

        ``poles=True`` puts rows on the poles (-90, -90 + step, ..., 90; the 2.5-degree FNOC layout);
        ``poles=False`` centres the rows in their cells (-90 + step/2, ..., 90 - step/2).

        >>> LatLonGrid.regular(2.5).shape, LatLonGrid.regular(1.0, poles=False).shape
        ((73, 144), (180, 360))
        """
        lon_step = step if lon_step is None else lon_step
        nlat, nlon = 180 / step, 360 / lon_step
        if abs(nlat - round(nlat)) > 1e-9 or abs(nlon - round(nlon)) > 1e-9:
            raise ValueError(f"step ({step}) and lon_step ({lon_step}) must divide 180 and 360 degrees")
        nlat, nlon = round(nlat), round(nlon)
        if poles:
            lat = np.linspace(-90, 90, nlat + 1)
            lat_edges = np.concatenate([[-90], (lat[:-1] + lat[1:]) / 2, [90]])
        else:
            lat_edges = np.linspace(-90, 90, nlat + 1)
            lat = (lat_edges[:-1] + lat_edges[1:]) / 2
        lon = lon_start + lon_step * np.arange(nlon)
        return cls(lat, lon, lat_edges=lat_edges, lon_edges=np.append(lon, lon_start + 360) - lon_step / 2)

    @classmethod
    def gaussian(cls, nlat: int, nlon: int | None = None, lon_start: float = 0.0) -> LatLonGrid:
        """A Gaussian grid: ``nlat`` rows at the Gauss-Legendre latitudes, north to south, ``nlon``
        (default ``2 nlat``) regular longitudes; cell edges where the cumulative Gauss weights put them.

        >>> g = LatLonGrid.gaussian(48)
        >>> g.shape, round(float(g.lat[0]), 4), g.lat_edges[0]
        ((48, 96), 87.1591, np.float64(90.0))
        """
        nodes, weights = np.polynomial.legendre.leggauss(int(nlat))
        nodes, weights = nodes[::-1], weights[::-1]                    # north to south
        z_edges = np.clip(1 - np.concatenate([[0], np.cumsum(weights)]), -1, 1)
        nlon = 2 * int(nlat) if nlon is None else int(nlon)
        return cls(np.rad2deg(np.arcsin(nodes)), lon_start + 360 / nlon * np.arange(nlon),
                   lat_edges=np.rad2deg(np.arcsin(z_edges)))

    @classmethod
    def from_sampling(cls, sampling) -> LatLonGrid:
        """The lat-lon grid of an ``Equiangular`` or ``GaussLegendre`` sampling: the same pixels in the
        same order, with cell bands whose areas are the sampling's pixel areas.

        >>> import graphsphere as gs
        >>> s = gs.sampling.GaussLegendre(nlat=16)
        >>> g = LatLonGrid.from_sampling(s)
        >>> g.shape == s.grid_shape, bool(np.allclose(g.area, s.area))
        (True, True)
        """
        nlat, nlon = sampling.grid_shape
        band = np.asarray(sampling.area, dtype=np.float64).reshape(nlat, nlon)[:, 0] * nlon
        z_edges = np.clip(1 - np.concatenate([[0], np.cumsum(band)]) / (2 * np.pi), -1, 1)
        z_edges[-1] = -1.0
        lon = np.rad2deg(np.asarray(sampling.longitudes))
        return cls(90 - np.rad2deg(np.asarray(sampling.colatitudes)), lon,
                   lat_edges=np.rad2deg(np.arcsin(z_edges)), periodic=True)

    # -- geometry ----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(nlat, nlon)``: the last two axes of a field on this grid."""
        return (self.lat.size, self.lon.size)

    @property
    def npix(self) -> int:
        return self.lat.size * self.lon.size

    @property
    def covers_sphere(self) -> bool:
        """Whether the cells tile the whole sphere (periodic, edges on both poles)."""
        return bool(self.periodic and np.isclose(np.abs(self.lat_edges[[0, -1]]), 90).all()
                    and self.lat_edges[0] != self.lat_edges[-1])

    @cached_property
    def area(self) -> np.ndarray:
        """Exact solid angle of each cell in steradians, flattened row-major, (npix,)."""
        z = np.sin(np.deg2rad(self.lat_edges))
        dlon = np.deg2rad(np.diff(self.lon_edges))
        a = np.outer(np.abs(np.diff(z)), dlon).ravel()
        a.setflags(write=False)
        return a

    @cached_property
    def lonlat(self) -> np.ndarray:
        """Cell centres, longitude in [0, 360) and latitude, degrees, (npix, 2)."""
        lat, lon = np.meshgrid(self.lat, self.lon % 360.0, indexing="ij")
        ll = np.stack([lon.ravel(), lat.ravel()], axis=-1)
        ll.setflags(write=False)
        return ll

    @cached_property
    def xyz(self) -> np.ndarray:
        """Unit vectors of the cell centres, (npix, 3)."""
        return _lonlat_to_xyz(*self.lonlat.T)

    def locate(self, lon, lat) -> np.ndarray:
        """Flat index of the cell containing each point (degrees), -1 outside the grid.

        >>> g = LatLonGrid.regular(90.0, poles=False)     # rows -45, 45; columns 0, 90, 180, 270
        >>> g.locate([10, 100, 350, 300], [-80, 10, 89, -1]).tolist()
        [0, 5, 4, 3]
        """
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        asc = self.lat_edges[0] < self.lat_edges[-1]
        edges = self.lat_edges if asc else self.lat_edges[::-1]
        row = np.searchsorted(edges, lat, side="right") - 1
        row = np.where(lat == edges[-1], self.lat.size - 1, row)          # the top edge belongs to the top row
        inside = (row >= 0) & (row < self.lat.size)
        if not asc:
            row = self.lat.size - 1 - row
        e0 = self.lon_edges[0]
        lon_f = e0 + (lon - e0) % 360.0
        col = np.searchsorted(self.lon_edges, lon_f, side="right") - 1
        if self.periodic:  # past the last edge by rounding (lon_f ~ e0 + 360): the seam, i.e. the first column
            col = np.where(col >= self.lon.size, 0, col)
        inside &= (col >= 0) & (col < self.lon.size)
        return np.where(inside, row * self.lon.size + col, -1)

    def __repr__(self) -> str:
        kind = "global" if self.covers_sphere else "regional"
        return (f"LatLonGrid({self.lat.size} x {self.lon.size}, lat {self.lat[0]:g}..{self.lat[-1]:g}, "
                f"lon {self.lon[0]:g}..{self.lon[-1]:g}, {kind})")

    def describe(self) -> str:
        return repr(self)


def _lonlat_to_xyz(lon, lat) -> np.ndarray:
    lon, lat = np.deg2rad(lon), np.deg2rad(lat)
    cl = np.cos(lat)
    return np.stack([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)], axis=-1)


def _xyz_to_lonlat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.rad2deg(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    lat = np.rad2deg(np.arcsin(np.clip(xyz[:, 2] / np.linalg.norm(xyz, axis=1), -1, 1)))
    return lon, lat


class _Side:
    """What the regridder needs of a source or a target: its cells, their exact areas, the shape of
    a field's trailing axes, and how to find the cell of a point."""

    def __init__(self, obj, role: str):
        from ...sampling import Equiangular, GaussLegendre, HEALPix, Sampling

        self.obj = obj
        self.healpix = isinstance(obj, HEALPix)
        if isinstance(obj, LatLonGrid):
            self.grid: LatLonGrid | None = obj
            self.shape: tuple[int, ...] = obj.shape
        elif isinstance(obj, (Equiangular, GaussLegendre)):
            self.grid = LatLonGrid.from_sampling(obj)     # same pixels, same order
            self.shape = (obj.npix,)
        elif isinstance(obj, Sampling):
            self.grid = None
            self.shape = (obj.npix,)
        else:
            raise TypeError(f"the {role} must be a LatLonGrid or a graphsphere sampling, got {type(obj).__name__}")
        self.npix = int(np.prod(self.shape))
        geo = self.grid if self.grid is not None else obj
        self.xyz = np.asarray(geo.xyz, dtype=np.float64)
        self.area = np.asarray(geo.area, dtype=np.float64)
        if self.grid is not None:
            self.full = self.grid.covers_sphere
        elif self.healpix:
            self.full = obj.indices is None
        else:
            self.full = bool(getattr(obj, "full_sphere", True))
        self.name = obj.describe() if hasattr(obj, "describe") else repr(obj)

    @cached_property
    def _tree(self) -> cKDTree:
        return cKDTree(self.xyz)

    @cached_property
    def _healpix_lookup(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.obj.indices is None:
            return None
        order = np.argsort(self.obj.indices)
        return np.asarray(self.obj.indices)[order], order

    @property
    def width(self) -> float:
        """Typical cell width in radians."""
        return math.sqrt(float(np.median(self.area)))

    def locate_xyz(self, xyz: np.ndarray) -> np.ndarray:
        """Index of the cell containing each unit vector, -1 outside."""
        if self.grid is not None:
            lon, lat = _xyz_to_lonlat(xyz)
            return self.grid.locate(lon, lat)
        if self.healpix:
            import healpy as hp

            pix = hp.vec2pix(self.obj.nside, xyz[:, 0], xyz[:, 1], xyz[:, 2], nest=self.obj.nest)
            lookup = self._healpix_lookup
            if lookup is None:
                return pix.astype(np.int64)
            ids, order = lookup
            pos = np.minimum(np.searchsorted(ids, pix), ids.size - 1)
            return np.where(ids[pos] == pix, order[pos], -1)
        return self._tree.query(xyz, workers=-1)[1].astype(np.int64)
