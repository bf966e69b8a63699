"""The :class:`Regridder`: one sparse matrix from a source to a target, applied to NumPy arrays or
torch tensors, with masks."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .conservative import _balance, _estimated_overlaps, _fill_empty, _latlon_overlaps
from .grid import _Side
from .interpolation import _barycentric, _grid_interp

__all__ = ["METHODS", "Regridder"]

#: The regridding methods.
METHODS = ("conservative", "bilinear", "bicubic", "nearest")


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class Regridder:
    """A precomputed sparse regridding from ``source`` to ``target``.

    Parameters
    ----------
    source, target : LatLonGrid or Sampling
        Grids or samplings (HEALPix full or partial, Equiangular, GaussLegendre, Icosahedral,
        Points). ``"bicubic"`` needs a lat-lon (or Equiangular/GaussLegendre) source.
    method : {"conservative", "bilinear", "bicubic", "nearest"}
        See the module docstring.
    supersample : int
        Conservative method between cells that are not both lat-lon cells: sub-cells per typical
        cell width of the other side (default 16; the misplaced weight roughly halves with each
        doubling, the build time grows like supersample^2).

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, (target pixels, source pixels)
        The weights: ``out = matrix @ field`` for a field without missing values on a target fully
        covered by the source. Rows add up to the share of the target cell covered by the source
        (1 for global sources).
    coverage : ndarray, (target pixels,)
        Row sums of ``matrix``.

    Example
    -------
    >>> import graphsphere as gs
    >>> from graphsphere.data.regrid import LatLonGrid
    >>> grid = LatLonGrid.regular(10.0)                          # 19 x 36, pole rows
    >>> r = Regridder(grid, gs.sampling.HEALPix(nside=4), method="bilinear")
    >>> lat = np.broadcast_to(grid.lat[:, None], grid.shape)
    >>> out = r.apply(np.sin(np.deg2rad(lat)))                    # z on the sphere
    >>> bool(np.abs(out - gs.sampling.HEALPix(nside=4).xyz[:, 2]).max() < 0.01)
    True
    """

    def __init__(self, source, target, method: str = "conservative", *, supersample: int = 16):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if int(supersample) < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
        self.source, self.target, self.method = source, target, method
        self.supersample = int(supersample)
        self._src, self._tgt = _Side(source, "source"), _Side(target, "target")
        self._overlap: sp.csr_matrix | None = None
        self._torch_cache: dict[Any, Any] = {}
        if method == "conservative":
            self._overlap = self._build_overlap()
            m = sp.diags(1.0 / self._tgt.area) @ self._overlap
        else:
            m = self._build_interpolation()
        m = sp.csr_matrix(m)
        m.eliminate_zeros()
        m.sort_indices()
        self.matrix: sp.csr_matrix = m
        self.coverage = np.asarray(m.sum(axis=1)).ravel()
        self.coverage.setflags(write=False)
        self._full = bool(np.all(np.abs(self.coverage - 1) < 1e-9))

    @classmethod
    def _from_overlap(cls, source, target, overlap: sp.csr_matrix, supersample: int) -> Regridder:
        self = cls.__new__(cls)
        self.source, self.target, self.method, self.supersample = source, target, "conservative", supersample
        self._src, self._tgt = _Side(source, "source"), _Side(target, "target")
        self._overlap = overlap
        self._torch_cache = {}
        m = sp.csr_matrix(sp.diags(1.0 / self._tgt.area) @ overlap)
        m.eliminate_zeros()
        m.sort_indices()
        self.matrix = m
        self.coverage = np.asarray(m.sum(axis=1)).ravel()
        self.coverage.setflags(write=False)
        self._full = bool(np.all(np.abs(self.coverage - 1) < 1e-9))
        return self

    # -- construction ------------------------------------------------------------------------------
    def _build_overlap(self) -> sp.csr_matrix:
        src, tgt = self._src, self._tgt
        if src.grid is not None and tgt.grid is not None:
            return _latlon_overlaps(src.grid, tgt.grid)
        o = _estimated_overlaps(src, tgt, self.supersample)
        o = _fill_empty(o, src, tgt)
        return _balance(o, tgt.area if src.full else None, src.area if tgt.full else None)

    def _build_interpolation(self) -> sp.csr_matrix:
        src, tgt = self._src, self._tgt
        shape = (tgt.npix, src.npix)
        if self.method == "nearest":
            cell = src.locate_xyz(tgt.xyz)
            ok = cell >= 0
            return sp.csr_matrix((np.ones(int(ok.sum())), (np.flatnonzero(ok), cell[ok])), shape=shape)
        lon, lat = (tgt.grid.lonlat.T if tgt.grid is not None else np.asarray(tgt.obj.lonlat, np.float64).T)
        if src.grid is not None:
            order = 2 if self.method == "bilinear" else 4
            if order == 4 and min(src.grid.shape) < 4:
                raise ValueError(f"bicubic needs at least 4 rows and 4 columns, the source has {src.grid.shape}; "
                                 "use method='bilinear'")
            t, s, w = _grid_interp(src.grid, lon, lat, order)
        elif self.method == "bicubic":
            raise ValueError(f"bicubic interpolation needs a latitude-longitude source, not {src.name}; "
                             "use method='bilinear' (linear on the Delaunay triangles) or 'conservative'")
        else:
            xyz = tgt.xyz
            if src.healpix and not src.full:
                outside = src.locate_xyz(xyz) < 0
                t, s, w = _barycentric(src, xyz[~outside])
                t = np.flatnonzero(~outside)[t]
            else:
                t, s, w = _barycentric(src, xyz)
        return sp.coo_matrix((w, (t, s)), shape=shape).tocsr()

    def inverse(self, method: str | None = None) -> Regridder:
        """The regridder from ``target`` back to ``source``.

        Conservative: the same overlap areas, transposed (no rebuild; the round trip conserves the
        integral). Otherwise a new regridder with ``method`` (default: the same one, or "bilinear" where
        the target is not a lat-lon grid and the method was "bicubic").
        """
        if method is None and self.method == "conservative":
            return Regridder._from_overlap(self.target, self.source, self._overlap.T.tocsr(), self.supersample)
        if method is None:
            method = self.method
            if method == "bicubic" and self._tgt.grid is None:
                method = "bilinear"
        return Regridder(self.target, self.source, method=method, supersample=self.supersample)

    # -- application -------------------------------------------------------------------------------
    @property
    def source_shape(self) -> tuple[int, ...]:
        """Trailing shape of a source field: (nlat, nlon) or (npix,)."""
        return self._src.shape

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Trailing shape of a regridded field: (nlat, nlon) or (npix,)."""
        return self._tgt.shape

    def _check_shape(self, shape: Sequence[int], what: str) -> tuple[int, ...]:
        k = len(self._src.shape)
        if tuple(shape[len(shape) - k:]) != self._src.shape or len(shape) < k:
            raise ValueError(
                f"{what} of shape {tuple(shape)} does not end with the source's pixel axes {self._src.shape} "
                f"({self._src.name}); fields are [..., {', '.join(map(str, self._src.shape))}] "
                "(move a channel axis in front, e.g. x.movedim(-1, 1) for [batch, npix, channels])")
        return tuple(shape[: len(shape) - k])

    def _torch_matrix(self, device, dtype):
        import torch

        key = (str(device), dtype)
        if key not in self._torch_cache:
            m = self.matrix
            with warnings.catch_warnings():   # "sparse CSR support is in beta": it is what cuSPARSE runs
                warnings.simplefilter("ignore", UserWarning)
                self._torch_cache[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
                    torch.from_numpy(m.data), size=m.shape, dtype=dtype, device=device)
        return self._torch_cache[key]

    def _matmul(self, x2, torch_mode: bool):
        """(B, n_src) -> (B, n_tgt)."""
        if torch_mode:
            import torch

            m = self._torch_matrix(x2.device, x2.dtype)
            return torch.sparse.mm(m, x2.T).T
        if x2.dtype not in (np.float32, np.float64):         # float16: SciPy has no kernels for it
            return self._matmul(x2.astype(np.float32), False).astype(x2.dtype)
        m = self.matrix if x2.dtype == np.float64 else self._matrix_as(x2.dtype)
        return np.ascontiguousarray((m @ np.ascontiguousarray(x2.T)).T)

    def _matrix_as(self, dtype) -> sp.csr_matrix:
        key = ("numpy", np.dtype(dtype).str)
        if key not in self._torch_cache:
            self._torch_cache[key] = self.matrix.astype(dtype)
        return self._torch_cache[key]

    def apply(self, field, mask=None, *, min_valid: float = 0.0, return_fraction: bool = False):
        """Regrid ``field`` (``[..., *source_shape]``) to ``[..., *target_shape]``.

        Parameters
        ----------
        field : ndarray or torch.Tensor
            Float values; NaN marks missing values. Integer or boolean input is regridded as float64.
            A tensor stays a tensor, on its device and in its floating dtype.
        mask : bool array, optional
            Valid source cells (True = use): shape ``source_shape`` or broadcastable to the field.
            Masked or NaN cells are left out and the weights renormalised over the rest.
        min_valid : float
            Target cells whose valid fraction is below this (or zero) come out NaN.
        return_fraction : bool
            Also return the valid fraction of every target cell (same shape as the output).

        >>> from graphsphere.data.regrid import LatLonGrid
        >>> g = LatLonGrid.regular(30.0, poles=False)              # 6 x 12 cells
        >>> r = Regridder(g, LatLonGrid.regular(60.0, poles=False))
        >>> f = np.arange(72.0).reshape(6, 12)
        >>> f[0, :] = 1e30                                         # fill values under a mask
        >>> out, frac = r.apply(f, mask=f < 1e29, return_fraction=True)
        >>> bool(np.isfinite(out).all() and out.max() < 72), frac[0].round(3).tolist()
        (True, [0.732, 0.732, 0.732, 0.732, 0.732, 0.732])
        """
        torch_mode = _is_torch(field)
        if torch_mode:
            import torch

            if field.device.type == "cpu" and not (field.requires_grad and torch.is_grad_enabled()):
                # torch's CPU sparse kernels are 3-10x slower than SciPy's here (measured in
                # benchmarks/bench_regrid.py); without autograd the NumPy view of the tensor costs nothing.
                dtype = field.dtype if field.is_floating_point() else torch.float64
                wide = field.dtype in (torch.float32, torch.float64)
                x = field.detach() if wide else field.detach().to(torch.float32 if field.is_floating_point()
                                                                   else torch.float64)
                m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask
                res = self.apply(x.numpy(), m, min_valid=min_valid, return_fraction=return_fraction)
                back = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
                return tuple(map(back, res)) if return_fraction else back(res)
            x = field if field.is_floating_point() else field.to(torch.float64)
        else:
            x = np.asarray(field)
            if x.dtype.kind != "f":
                x = x.astype(np.float64)
        batch = self._check_shape(x.shape, "field")
        x2 = x.reshape(-1, self._src.npix)
        if mask is None:
            out = self._matmul(x2, torch_mode)
            finite = bool(torch.isfinite(out).all()) if torch_mode else bool(np.isfinite(out).all())
            if finite and self._full and not return_fraction and min_valid <= 1 - 1e-9:
                return out.reshape(batch + self._tgt.shape)
            valid = torch.isfinite(x2) if torch_mode else np.isfinite(x2)
        else:
            valid = self._valid_from_mask(mask, x, torch_mode).reshape(-1, self._src.npix)
            valid = valid & (torch.isfinite(x2) if torch_mode else np.isfinite(x2))
        if torch_mode:
            zero = torch.zeros((), dtype=x2.dtype, device=x2.device)
            num = self._matmul(torch.where(valid, x2, zero), True)
            frac = self._matmul(valid.to(x2.dtype), True)
            good = (frac > 0) & (frac >= min_valid)
            out = torch.where(good, num / torch.where(good, frac, torch.ones_like(frac)),
                              torch.full_like(num, float("nan")))
        else:
            num = self._matmul(np.where(valid, x2, 0).astype(x2.dtype, copy=False), False)
            frac = self._matmul(valid.astype(x2.dtype), False)
            good = (frac > 0) & (frac >= min_valid)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(good, num / np.where(good, frac, 1), np.nan).astype(x2.dtype, copy=False)
        out = out.reshape(batch + self._tgt.shape)
        if return_fraction:
            return out, frac.reshape(batch + self._tgt.shape)
        return out

    __call__ = apply

    def _valid_from_mask(self, mask, x, torch_mode: bool):
        if torch_mode:
            import torch

            m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
            m = m.to(device=x.device, dtype=torch.bool)
            try:
                return torch.broadcast_to(m, x.shape)
            except RuntimeError:
                pass
        else:
            m = np.asarray(mask)
            if m.dtype != bool:
                raise ValueError(f"mask must be boolean (True = valid source cell), got dtype {m.dtype}")
            try:
                return np.broadcast_to(m, x.shape)
            except ValueError:
                pass
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the field's shape "
                         f"{tuple(x.shape)}; give it the source's shape {self._src.shape} or the field's")

    def valid_fraction(self, mask) -> np.ndarray:
        """Share of each target cell's weight on valid source cells (``mask`` of ``source_shape``).

        >>> from graphsphere.data.regrid import LatLonGrid
        >>> r = Regridder(LatLonGrid.regular(90.0, poles=False), LatLonGrid.regular(90.0, 360.0, poles=False))
        >>> r.valid_fraction(np.array([[True, True, False, False], [True, True, True, True]])).tolist()
        [[0.5], [1.0]]
        """
        m = np.asarray(mask)
        if m.shape != self._src.shape:
            raise ValueError(f"mask must have the source's shape {self._src.shape}, got {m.shape}")
        return (self.matrix @ m.reshape(-1).astype(np.float64)).reshape(self._tgt.shape)

    def __repr__(self) -> str:
        return (f"Regridder({self._src.name} -> {self._tgt.name}, method={self.method!r}, "
                f"nnz={self.matrix.nnz})")
