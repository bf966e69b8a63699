"""HEALPix sampling: equal-area pixels, full sphere or any subset (partial sky).

Pixels are in NESTED order unless ``nest=False``; nested order is what makes
pooling a reshape (4 consecutive children -> 1 parent).

Example
-------
>>> import numpy as np, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> coarse, assign = s.coarsen()
>>> coarse.nside, assign.shape
(4, (192, 768))
>>> patch = gs.sampling.HEALPix(nside=8, indices=np.arange(64))  # 1/12 of the sky
>>> patch.npix, patch.full_sphere
(64, False)
"""

from __future__ import annotations

from typing import Any

import healpy as hp
import numpy as np
import scipy.sparse as sp

from .base import Sampling

__all__ = ["HEALPix", "check_nside", "extend_footprint", "check_map_order", "unseen"]


def check_nside(nside) -> int:
    """Return ``nside`` as an int, or raise if it is not a positive power of two.

    >>> check_nside(None)
    Traceback (most recent call last):
    ...
    ValueError: nside must be an integer power of two (1, 2, 4, ..., 8192), got None
    """
    if isinstance(nside, (bool, np.bool_)) or not isinstance(nside, (int, float, np.integer, np.floating)):
        raise ValueError(f"nside must be an integer power of two (1, 2, 4, ..., 8192), got {nside!r}")
    if not np.isfinite(nside) or not float(nside).is_integer():
        raise ValueError(f"nside must be an integer power of two, got {nside!r}")
    n = int(nside)
    if n < 1 or n & (n - 1):
        lo = 1 << max(n.bit_length() - 1, 0)
        raise ValueError(
            f"nside must be a power of two (1, 2, 4, ..., 8192), got {n}; nearest: {lo} or {lo * 2}")
    if n > 2**13:
        raise ValueError(f"nside {n} is above the supported maximum 8192")
    return n


def extend_footprint(indices, nside: int, levels: int = 1, verbose: bool = True) -> np.ndarray:
    """Grow a NESTED footprint so that it is a union of whole parent pixels
    ``levels`` levels up, so that it can be pooled ``levels`` times.

    Returns the sorted extended ids; prints (or, with ``verbose=False``,
    stays silent about) how many pixels were added.

    >>> extend_footprint([0, 1, 5], nside=4, verbose=False)
    array([0, 1, 2, 3, 4, 5, 6, 7])
    """
    nside = check_nside(nside)
    ids = np.unique(np.asarray(indices, dtype=np.int64))
    block = 4**levels
    if nside < 2**levels:
        raise ValueError(f"cannot extend to {levels} coarser levels from nside {nside}")
    parents = np.unique(ids // block)
    out = (parents[:, None] * block + np.arange(block)).ravel()
    if verbose:
        print(f"extend_footprint: added {out.size - ids.size} pixels "
              f"({ids.size} -> {out.size}) to make whole parents {levels} level(s) up")
    return out


class HEALPix(Sampling):
    """HEALPix sampling (Gorski et al. 2005) at resolution ``nside``.

    Parameters
    ----------
    nside : int
        A power of two; 12 * nside**2 pixels on the full sphere.
    nest : bool
        Pixel ordering: NESTED (default, needed for pooling) or RING.
    indices : array of int, optional
        Pixel ids (in the chosen ordering) of a partial sky, in the order of
        the data. Ids must be unique and within [0, 12 nside^2).
    """

    ARG_CHECKS = {"nside": check_nside}

    def __init__(self, nside: int, nest: bool = True, indices=None):
        self.nside = check_nside(nside)
        self.nest = bool(nest)
        npix_full = 12 * self.nside**2
        if indices is None:
            self.indices = None
        else:
            ids = np.asarray(indices)
            if ids.dtype == bool:
                raise ValueError(f"indices is a boolean mask ({ids.size} entries); pass the pixel ids of its True "
                                 "entries: numpy.flatnonzero(mask)")
            if ids.ndim != 1 or ids.size == 0:
                raise ValueError(f"indices must be a non-empty 1-D array of pixel ids, got shape {ids.shape}")
            if not np.issubdtype(ids.dtype, np.integer):
                if not np.all(np.isfinite(ids)) or not np.all(np.mod(ids, 1) == 0):
                    raise ValueError("indices must be integer pixel ids")
            ids = ids.astype(np.int64)
            if ids.min() < 0 or ids.max() >= npix_full:
                bad = ids[(ids < 0) | (ids >= npix_full)][0]
                raise ValueError(f"pixel id {bad} is out of range [0, {npix_full}) for nside {self.nside}")
            uniq, counts = np.unique(ids, return_counts=True)
            if uniq.size != ids.size:
                raise ValueError(f"{ids.size - uniq.size} pixel ids are repeated (e.g. {uniq[counts > 1][0]}); "
                                 "pass each pixel once")
            if uniq.size == npix_full and np.array_equal(ids, uniq):
                ids = None
            self.indices = ids
            if ids is not None:
                self.indices.setflags(write=False)

    @property
    def full_sphere(self) -> bool:  # type: ignore[override]
        return self.indices is None

    @property
    def npix(self) -> int:
        return 12 * self.nside**2 if self.indices is None else int(self.indices.size)

    @property
    def pixels(self) -> np.ndarray:
        """HEALPix ids of the pixels, in data order."""
        return np.arange(12 * self.nside**2) if self.indices is None else self.indices

    @property
    def order(self) -> str:
        return "NESTED" if self.nest else "RING"

    def _compute_xyz(self) -> np.ndarray:
        return np.stack(hp.pix2vec(self.nside, self.pixels, nest=self.nest), axis=1)

    def _compute_area(self) -> np.ndarray:
        return np.full(self.npix, hp.nside2pixarea(self.nside))

    #: State keys beyond the constructor's: ``ranges`` encodes runs of consecutive ids.
    STATE_KEYS = ("ranges",)

    def _params(self) -> dict[str, Any]:
        d: dict[str, Any] = {"nside": self.nside, "nest": self.nest}
        if self.indices is not None:
            # Patches are runs of consecutive ids (a NESTED parent's children): store the
            # runs, [start, stop), when that is shorter (a 1/12 patch at nside 1024: one run,
            # not a million ids).
            ids = self.indices
            breaks = np.flatnonzero(np.diff(ids) != 1) + 1
            starts = np.concatenate([[0], breaks])
            stops = np.concatenate([breaks, [ids.size]])
            if 2 * starts.size < ids.size:
                d["ranges"] = [[int(ids[a]), int(ids[b - 1]) + 1] for a, b in zip(starts, stops)]
            else:
                d["indices"] = ids.tolist()
        return d

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "HEALPix":
        params = dict(params)
        ranges = params.pop("ranges", None)
        if ranges is not None:
            if params.get("indices") is not None:
                raise ValueError("give HEALPix pixel ids as indices or as ranges, not both")
            params["indices"] = np.concatenate([np.arange(a, b) for a, b in np.asarray(ranges, dtype=np.int64)])
        return cls(**params)

    def resolution(self) -> float:
        return float(self.nside)

    #: Partial skies too: the width depends on the pixel spacing, not on the footprint.
    family = "HEALPix"

    @property
    def native_resolution(self) -> int:
        return self.nside

    def describe(self) -> str:
        sky = "full sky" if self.full_sphere else f"partial sky, {self.npix / (12 * self.nside**2):.4g} of it"
        return f"HEALPix(nside={self.nside}, {self.order}, {sky})"

    # -- hierarchy ----------------------------------------------------------
    def nested_pixels(self) -> np.ndarray:
        """NESTED ids of the pixels, in data order."""
        return self.pixels if self.nest else hp.ring2nest(self.nside, self.pixels)

    def coarsen(self) -> tuple["HEALPix", sp.csr_matrix]:
        """nside -> nside/2: each parent pixel gathers its 4 nested children.

        The coarse sampling keeps this one's ordering; a partial sky must be
        a union of whole parents (see ``extend_footprint``).
        """
        if self.nside == 1:
            raise ValueError("nside 1 is the coarsest HEALPix level; it cannot be coarsened")
        nested = self.nested_pixels()
        parent_nest = nested // 4
        if self.indices is None:
            coarse = HEALPix(self.nside // 2, nest=self.nest)
        else:
            uniq, counts = np.unique(parent_nest, return_counts=True)
            if np.any(counts != 4):
                missing = int((4 - counts).sum())
                raise ValueError(
                    f"this partial sky is not a union of whole parent pixels ({missing} children missing "
                    f"under {int((counts != 4).sum())} parents), so it cannot be pooled; extend it with "
                    f"graphsphere.sampling.extend_footprint(ids, nside={self.nside}, levels=L)")
            parents = uniq if self.nest else np.sort(hp.nest2ring(self.nside // 2, uniq))
            coarse = HEALPix(self.nside // 2, nest=self.nest, indices=parents)
        # Position of each fine pixel's parent in the coarse data order.
        parent_id = parent_nest if self.nest else hp.nest2ring(self.nside // 2, parent_nest)
        if coarse.indices is None:
            rows = parent_id
        else:
            rows = np.searchsorted(coarse.indices, parent_id)
        assign = sp.csr_matrix((np.ones(self.npix), (rows, np.arange(self.npix))),
                               shape=(coarse.npix, self.npix))
        return coarse, assign

    # -- map checks ---------------------------------------------------------
    def check_map(self, m, nest: bool | None = None) -> np.ndarray:
        """Validate a map for this sampling and return it as an array.

        Raises if the pixel count is wrong and, for full-sky maps, if the map
        looks like it is in the other ordering (see ``check_map_order``).
        """
        m = np.asarray(m)
        self.check_signal(m)
        if self.indices is None and m.ndim == 1:
            check_map_order(m, nest=self.nest if nest is None else nest)
        return m


def unseen(m) -> np.ndarray:
    """Where a map holds healpy's ``UNSEEN``, with healpy's own tolerance (``mask_bad``): float32's
    UNSEEN, -1.63750004e30, is not ``healpy.UNSEEN`` once cast to float64.

    >>> bool(unseen(np.float32(hp.UNSEEN).astype(np.float64))), bool(unseen(-1.6e30))
    (True, False)
    """
    return np.isclose(m, hp.UNSEEN, rtol=1e-5, atol=0)


def _roughness(m: np.ndarray, nside: int, nest: bool) -> float:
    """Mean squared difference between each pixel and its neighbours (pairs with a missing
    value, NaN or UNSEEN, left out)."""
    nb = hp.get_all_neighbours(nside, np.arange(m.size), nest=nest)
    seen = np.isfinite(m) & ~unseen(m)
    ok = (nb >= 0) & seen[None, :]
    ok &= seen[np.where(nb >= 0, nb, 0)]
    diff = np.where(ok, m[np.where(ok, nb, 0)] - np.where(seen, m, 0.0)[None, :], 0.0) ** 2
    return float(np.sum(diff) / max(ok.sum(), 1))


def check_map_order(m, nest: bool = True, ratio: float = 1.5) -> None:
    """Raise if a full-sky map is much smoother read in the other ordering.

    Real maps are spatially correlated: read in the wrong ordering they look
    like noise. If the neighbour-to-neighbour variance in the expected
    ordering is ``ratio`` times that in the other one, the map was almost
    surely saved in the other ordering. White-noise maps pass either way;
    missing pixels (NaN, UNSEEN) are left out of the comparison, so a masked
    map is checked too.
    """
    m = np.asarray(m, dtype=np.float64)
    try:
        nside = hp.npix2nside(m.size)
    except ValueError:
        raise ValueError(f"a map of {m.size} pixels is not a full HEALPix map (12 nside^2 pixels)") from None
    if nside < 4 or np.sum(np.isfinite(m) & ~unseen(m)) < 0.1 * m.size:
        return
    here, there = _roughness(m, nside, nest), _roughness(m, nside, not nest)
    if here > ratio * there:
        want, got = ("NESTED", "RING") if nest else ("RING", "NESTED")
        fix = "healpy.reorder(m, r2n=True)" if nest else "healpy.reorder(m, n2r=True)"
        raise ValueError(
            f"this map looks {got}-ordered but {want} is expected (it is {here / there:.0f}x smoother read "
            f"as {got}); convert it with {fix}")
