"""The shared interface of every sampling of the sphere.

A sampling is *where the pixels are*: unit vectors, longitudes and latitudes,
the solid angle each pixel stands for and, where the scheme has one, its
hierarchy (``coarsen``). It knows nothing of graphs or tensors.

A sampling is a value: it is fully described by its *state*
(:meth:`Sampling.to_state`, plain JSON types), which is also what equality,
hashing and every file of the package (graphs, models, checkpoints, caches)
use. :func:`graphsphere.sampling.from_state` and
:func:`graphsphere.sampling.from_spec` are the only ways back from a name.

Example
-------
>>> import graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=4)
>>> s.npix, s.xyz.shape, round(float(s.area.sum()), 6)
(192, (192, 3), 12.566371)
>>> s.to_state()
{'type': 'HEALPix', 'nside': 4, 'nest': True}
>>> gs.sampling.from_state(s.to_state()) == s
True
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, Callable, ClassVar

import numpy as np
import scipy.sparse as sp

__all__ = ["Sampling", "lonlat_to_xyz", "xyz_to_lonlat", "check_lonlat", "sampling_classes"]

#: Sampling classes by name, filled by ``Sampling.__init_subclass__``; read it
#: through :func:`sampling_classes` (graphsphere.sampling.spec builds from it).
_CLASSES: dict[str, type["Sampling"]] = {}


def sampling_classes() -> dict[str, type["Sampling"]]:
    """The (concrete) sampling classes by name.

    >>> sorted(sampling_classes())
    ['Equiangular', 'GaussLegendre', 'HEALPix', 'Icosahedral', 'Points']
    """
    return {name: cls for name, cls in _CLASSES.items() if not inspect.isabstract(cls)}


def lonlat_to_xyz(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) from longitudes and latitudes in degrees.

    >>> lonlat_to_xyz(np.array([0.0, 90.0]), np.array([0.0, 0.0])).round(12)
    array([[1., 0., 0.],
           [0., 1., 0.]])
    """
    lon = np.deg2rad(np.asarray(lon, dtype=np.float64))
    lat = np.deg2rad(np.asarray(lat, dtype=np.float64))
    cl = np.cos(lat)
    return np.stack([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_lonlat(xyz: np.ndarray) -> np.ndarray:
    """Longitudes in [0, 360) and latitudes in [-90, 90] (degrees), shape (n, 2)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    lon = np.rad2deg(np.arctan2(xyz[..., 1], xyz[..., 0])) % 360.0
    lon = np.where(lon >= 360.0, 0.0, lon)  # (-1e-15) % 360 rounds to 360.0
    lat = np.rad2deg(np.arcsin(np.clip(xyz[..., 2] / np.linalg.norm(xyz, axis=-1), -1, 1)))
    return np.stack([lon, lat], axis=-1)


def check_lonlat(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Validate coordinates in degrees; return them as new float64 1-D arrays (copies: a sampling
    must not change when the caller changes its arrays).

    Raises ``ValueError`` naming the problem: NaN/Inf values, mismatched
    lengths, or latitudes outside [-90, 90] (a common sign of swapped
    lon/lat or radians passed as degrees).
    """
    lon = np.array(lon, dtype=np.float64).ravel()
    lat = np.array(lat, dtype=np.float64).ravel()
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat must have the same length, got {lon.size} and {lat.size}")
    bad = ~(np.isfinite(lon) & np.isfinite(lat))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} coordinates are NaN or infinite (first at index {int(np.argmax(bad))}); "
            "drop or fill those points before building a sampling")
    if lat.size and (lat.min() < -90 or lat.max() > 90):
        i = int(np.argmax((lat < -90) | (lat > 90)))
        raise ValueError(
            f"latitude {lat[i]} at index {i} is outside [-90, 90] degrees; "
            "did you swap lon and lat, or pass radians?")
    return lon, lat


class Sampling(ABC):
    """A set of pixels on the unit sphere.

    Subclasses define ``_compute_xyz`` (and usually ``_compute_area``); the
    derived arrays are computed once and cached. Pixel order is the order of
    the data: a map for this sampling is an array whose first axis has
    ``npix`` entries in this order.
    """

    #: Whether the pixels cover the whole sphere (areas then sum to 4 pi).
    full_sphere: ClassVar[bool] = True
    #: The constructor's checks of its scalar arguments, by argument name (each raises ``ValueError`` or returns
    #: the value): :func:`graphsphere.sampling.check_spec` runs them to validate a spec without building it.
    ARG_CHECKS: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    # -- geometry -----------------------------------------------------------
    @property
    @abstractmethod
    def npix(self) -> int:
        """Number of pixels."""

    @abstractmethod
    def _compute_xyz(self) -> np.ndarray:
        """Unit vectors, float64 (npix, 3)."""

    def _compute_area(self) -> np.ndarray:
        """Solid angle per pixel in steradians; default: equal areas."""
        return np.full(self.npix, 4 * np.pi / self.npix)

    @cached_property
    def xyz(self) -> np.ndarray:
        """Unit vectors of the pixel centres, float64 array (npix, 3)."""
        xyz = np.ascontiguousarray(self._compute_xyz(), dtype=np.float64)
        xyz.setflags(write=False)
        return xyz

    @cached_property
    def lonlat(self) -> np.ndarray:
        """Longitude in [0, 360) and latitude in [-90, 90], degrees, (npix, 2)."""
        ll = xyz_to_lonlat(self.xyz)
        ll.setflags(write=False)
        return ll

    @cached_property
    def area(self) -> np.ndarray:
        """Solid angle of each pixel in steradians, (npix,)."""
        a = np.asarray(self._compute_area(), dtype=np.float64)
        a.setflags(write=False)
        return a

    # -- hierarchy ----------------------------------------------------------
    @property
    def hierarchical(self) -> bool:
        """Whether ``coarsen`` is available."""
        return type(self).coarsen is not Sampling.coarsen

    def coarsen(self) -> tuple["Sampling", sp.csr_matrix]:
        """The next coarser sampling and the fine-to-coarse assignment.

        Returns ``(coarse, assign)`` where ``assign`` is a sparse CSR matrix of
        shape ``(coarse.npix, self.npix)`` with non-negative entries:
        ``assign[j, i] > 0`` when fine pixel ``i`` belongs to coarse pixel
        ``j``. Each column sums to one (a fine pixel shared by several coarse
        cells, as on an icosahedral mesh, is split between them), so
        ``assign @ x`` is a sum and the row-normalised matrix a mean pooling.
        """
        raise NotImplementedError(f"{type(self).__name__} has no hierarchy to coarsen")

    def pyramid(self, levels: int, why: str = "") -> list[tuple["Sampling", sp.csr_matrix | None]]:
        """``levels + 1`` samplings from this one down, each with the
        assignment that produced it (``None`` for the finest).

        When the sampling cannot be coarsened that often, the error says how
        many levels it supports and, with ``why``, who asked for them.

        >>> import graphsphere as gs
        >>> [s.npix for s, _ in gs.sampling.HEALPix(nside=4).pyramid(2)]
        [192, 48, 12]
        >>> gs.sampling.HEALPix(nside=2).pyramid(3)
        Traceback (most recent call last):
        ...
        ValueError: HEALPix(nside=2, NESTED, full sky) can be pooled 1 time(s), but 3 levels were asked for; ...
        """
        out: list[tuple[Sampling, sp.csr_matrix | None]] = [(self, None)]
        for i in range(int(levels)):
            try:
                out.append(out[-1][0].coarsen())
            except (ValueError, NotImplementedError) as e:
                asker = why or f"{levels} levels were asked for"
                raise ValueError(
                    f"{self.describe()} can be pooled {i} time(s), but {asker}; use fewer levels or a finer "
                    f"sampling. At level {i}: {e}") from None
        return out

    # -- resolution -----------------------------------------------------------
    def resolution(self) -> float:
        """The nside of a HEALPix map with as many pixels, ``sqrt(npix / 12)``
        (HEALPix: its nside): pixel spacing is about ``1 / resolution`` radians.

        >>> import graphsphere as gs
        >>> gs.sampling.HEALPix(nside=8).resolution(), gs.sampling.Equiangular(8, 16).resolution()
        (8.0, 3.265986323710904)
        """
        return float(np.sqrt(self.npix / 12))

    @property
    def family(self) -> str | None:
        """The name of the family this sampling belongs to: samplings of one
        family differ only by their :attr:`native_resolution` (tuned kernel
        widths are tabulated per family, partial skies included); None when
        there is no such family (any set of points, a grid of another aspect
        ratio)."""
        return None

    @property
    def native_resolution(self) -> int | None:
        """The parameter that sets the resolution within the family (nside,
        nlat, level), or None."""
        return None

    # -- identity -----------------------------------------------------------
    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The constructor arguments, as plain JSON types (lists, not arrays)."""

    def to_state(self) -> dict[str, Any]:
        """The sampling as plain JSON types: ``{"type": class name, **constructor
        arguments}``; :func:`graphsphere.sampling.from_state` rebuilds it exactly.
        Graphs, models, checkpoints and caches all store this."""
        return {"type": type(self).__name__, **self._params()}

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "Sampling":
        """Inverse of :meth:`_params` (a subclass decodes compact encodings here)."""
        return cls(**params)

    @cached_property
    def digest(self) -> str:
        """A short hash of the state: equal samplings, equal digests (cache keys)."""
        blob = json.dumps(self.to_state(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sampling):
            return NotImplemented
        return type(self) is type(other) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def describe(self) -> str:
        """One-line summary used by ``__repr__`` and the command line."""
        args = ", ".join(f"{k}={v}" for k, v in self._params().items() if np.ndim(v) == 0)
        return f"{type(self).__name__}({args})"

    def __repr__(self) -> str:
        return f"{self.describe()} [npix={self.npix}]"

    # -- checks -------------------------------------------------------------
    def check_signal(self, x, axis: int = 0, name: str = "map") -> None:
        """Raise a clear error if ``x`` does not have ``npix`` entries along ``axis``."""
        n = np.shape(x)[axis] if np.ndim(x) > 0 else None
        if n != self.npix:
            raise ValueError(
                f"{name} has {n} entries along axis {axis}, but {self.describe()} has {self.npix} pixels")

