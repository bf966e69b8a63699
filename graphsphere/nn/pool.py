"""Pooling layers: from a sampling's hierarchy to ``[B, V, C] -> [B, V', C]``.

:class:`Pool` and :class:`Unpool` are built from ``sampling.coarsen()`` (or
directly from an assignment matrix). Their index tensors are non-persistent
buffers: they follow ``.to(device)`` and, like the graph operators, are
rebuilt from the sampling, never stored in a ``state_dict``.
:class:`GlobalPool` reduces all vertices to one vector per channel,
area-weighted if asked.

Example
-------
>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=4)
>>> pool = gs.nn.Pool(s, mode="max", return_indices=True)
>>> unpool = gs.nn.Unpool(s, mode="max")
>>> x = torch.randn(2, 192, 3)
>>> y, idx = pool(x)
>>> y.shape, unpool(y, idx).shape
(torch.Size([2, 48, 3]), torch.Size([2, 192, 3]))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..sampling import Sampling
from .functional import pooling as F

__all__ = ["Pool", "Unpool", "GlobalPool"]


def _plan_from(sampling, assign) -> F.PoolingPlan:
    if (sampling is None) == (assign is None):
        raise ValueError("pass a sampling (pooled by its coarsen()) or an assignment matrix, exactly one")
    if sampling is not None:
        if not isinstance(sampling, Sampling) or not sampling.hierarchical:
            raise ValueError(f"{sampling!r} has no hierarchy (no coarsen()), so it cannot be pooled; "
                             "pool on a hierarchical sampling (HEALPix, Equiangular, Icosahedral, ...)")
        _, assign = sampling.coarsen()
    return F.pooling_plan(assign)


def _or_empty(a, dtype, ndim: int) -> torch.Tensor:
    """``a`` as a ``dtype`` tensor, or an empty one (layouts that do not use it)."""
    return torch.as_tensor(np.zeros((0,) * ndim, dtype=dtype) if a is None else np.asarray(a, dtype=dtype))


class _Indexed(nn.Module):
    """Index tensors as non-persistent buffers: derived from the sampling, not state."""

    def _set(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(name, value, persistent=False)


class Pool(_Indexed):
    """Pool a signal onto the next coarser level of its sampling.

    ``[B, fine.npix, C] -> [B, coarse.npix, C]``. ``mode="avg"`` is the
    weighted mean over each coarse vertex's fine vertices (weights from the
    assignment: an icosahedral border vertex counts half in each of its two
    cells); ``mode="max"`` their maximum. The layout (reshape of consecutive
    blocks, fixed fan-in gather, or sparse scatter) is chosen from the
    assignment itself; all give the same result.

    Parameters
    ----------
    sampling : Sampling, optional
        The fine sampling; its ``coarsen()`` defines the pooling.
    mode : "avg" | "max"
    return_indices : bool
        With ``mode="max"``, also return the fine index of each maximum
        ([B, coarse.npix, C]) for :class:`Unpool` ``(mode="max")``.
    assign : sparse matrix, optional
        The assignment (coarse.npix, fine.npix) instead of a sampling.

    >>> import torch, graphsphere as gs
    >>> pool = gs.nn.Pool(gs.sampling.HEALPix(nside=8), mode="avg")
    >>> pool(torch.ones(1, 768, 4)).shape
    torch.Size([1, 192, 4])
    """

    def __init__(self, sampling=None, mode: str = "avg", return_indices: bool = False, *, assign=None):
        super().__init__()
        if mode not in F.POOL_MODES:
            raise ValueError(f"mode must be one of {F.POOL_MODES}, got {mode!r}")
        if return_indices and mode != "max":
            raise ValueError("return_indices=True needs mode='max' (average pooling has no indices)")
        self.mode = mode
        self.return_indices = bool(return_indices)
        plan = _plan_from(sampling, assign)
        self.layout, self.n_fine, self.n_coarse, self.fan_in, self.partition = (
            plan.layout, plan.n_fine, plan.n_coarse, plan.fan_in, plan.partition)
        layout = plan.layout
        index = weights = rows = cols = None
        if layout == "gather":
            index, weights = plan.index, plan.weights
        elif layout == "sparse":
            A = plan.assign
            rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
            cols = A.indices
            weights = A.data / np.asarray(A.sum(axis=1)).ravel()[rows]  # row-normalised: a mean
        # Weights in float64 so that 1/7 and the like stay exact for float64
        # inputs; they are cast to the input's dtype at use.
        self._set("index", _or_empty(index, np.int64, 2))
        self._set("weights", _or_empty(weights, np.float64, 2 if layout == "gather" else 1))
        self._set("rows", _or_empty(rows, np.int64, 1))
        self._set("cols", _or_empty(cols, np.int64, 1))

    def forward(self, x: torch.Tensor):
        F.check_vertices(x, self.n_fine, "Pool")
        ri = self.return_indices
        if self.layout == "blocks":
            return F.block_pool(x, self.fan_in, self.mode, ri)
        if self.layout == "gather":
            w = self.weights if self.weights.numel() else None
            return F.gather_pool(x, self.index, self.mode, w, ri)
        return F.sparse_pool(x, self.rows, self.cols, self.weights, self.n_coarse, self.mode, ri)

    def extra_repr(self) -> str:
        return (f"{self.n_fine} -> {self.n_coarse} vertices, mode={self.mode}, layout={self.layout}"
                + (f", fan_in={self.fan_in}" if self.fan_in else "")
                + (", return_indices=True" if self.return_indices else ""))


class Unpool(_Indexed):
    """Bring a signal back to the next finer level: ``[B, coarse.npix, C] ->
    [B, fine.npix, C]``, the inverse direction of :class:`Pool`.

    ``mode="repeat"``: each fine vertex gets its coarse vertex's value (the
    weighted mean of its coarse cells' values where cells overlap, weights
    from the assignment: its transpose). ``mode="max"``: each value goes back
    where ``Pool(mode="max", return_indices=True)`` found it, zeros
    elsewhere; call it as ``unpool(y, indices)``.

    >>> import torch, graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=2)
    >>> up = gs.nn.Unpool(s)
    >>> up(torch.arange(12.0).view(1, 12, 1))[0, :8, 0]
    tensor([0., 0., 0., 0., 1., 1., 1., 1.])
    """

    def __init__(self, sampling=None, mode: str = "repeat", *, assign=None):
        super().__init__()
        if mode not in ("repeat", "max"):
            raise ValueError(f"mode must be 'repeat' or 'max', got {mode!r}")
        self.mode = mode
        plan = _plan_from(sampling, assign)
        self.layout, self.n_fine, self.n_coarse, self.partition = (
            plan.layout, plan.n_fine, plan.n_coarse, plan.partition)
        self.fan_in = plan.fan_in if plan.layout == "blocks" else 0
        parent = weights = rows = cols = None
        # Max-unpooling needs nothing but the indices it is given; repeat
        # needs the transpose of the assignment (fine -> its coarse cells).
        if mode == "repeat" and plan.layout != "blocks":
            At = sp.csr_matrix(plan.assign.T)
            At.sort_indices()
            padded = F.padded_rows(At)
            if padded is not None:
                self.layout = "gather"
                parent, weights = padded
                if plan.partition:  # one parent of weight one per fine vertex
                    weights = None
            else:
                self.layout = "sparse"
                A = plan.assign
                rows, cols, weights = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr)), A.indices, A.data
        self._set("parent", _or_empty(parent, np.int64, 2))
        self._set("weights", _or_empty(weights, np.float64, 2 if self.layout == "gather" else 1))
        self._set("rows", _or_empty(rows, np.int64, 1))
        self._set("cols", _or_empty(cols, np.int64, 1))

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        F.check_vertices(x, self.n_coarse, "Unpool")
        if self.mode == "max":
            if indices is None:
                raise ValueError("Unpool(mode='max') needs the indices of the max pooling: "
                                 "y, idx = Pool(s, 'max', return_indices=True)(x); unpool(y, idx)")
            return F.max_unpool(x, indices, self.n_fine, overlapping=not self.partition)
        if indices is not None:
            raise ValueError("Unpool(mode='repeat') takes no indices; use mode='max' for max-unpooling")
        if self.layout == "blocks":
            return F.block_unpool(x, self.fan_in)
        if self.layout == "gather":
            return F.gather_unpool(x, self.parent, self.weights if self.weights.numel() else None)
        return F.sparse_unpool(x, self.rows, self.cols, self.weights, self.n_fine)

    def extra_repr(self) -> str:
        return f"{self.n_coarse} -> {self.n_fine} vertices, mode={self.mode}, layout={self.layout}"


class GlobalPool(_Indexed):
    """Reduce all vertices: ``[B, V, C] -> [B, C]`` (``"mean"``, ``"max"``)
    or ``[B, 2C]`` (``"meanvar"``: the C means, then the C variances).

    Given a sampling whose pixels do not all have the same area (e.g. an
    equiangular grid), mean and variance are weighted by pixel area, so that
    they estimate integrals over the sphere rather than over the grid.

    >>> import torch, graphsphere as gs
    >>> gs.nn.GlobalPool("meanvar")(torch.randn(4, 48, 3)).shape
    torch.Size([4, 6])
    """

    def __init__(self, mode: str = "mean", sampling=None):
        super().__init__()
        if mode not in F.GLOBAL_MODES:
            raise ValueError(f"mode must be one of {F.GLOBAL_MODES}, got {mode!r}")
        self.mode = mode
        self.npix = 0 if sampling is None else int(sampling.npix)
        area = np.zeros(0)
        if sampling is not None and mode != "max":
            a = np.asarray(sampling.area, dtype=np.float64)
            if not np.allclose(a, a.mean(), rtol=1e-9, atol=0):  # atol=0: tiny pixels (nside >= 2048) too
                area = a / a.sum()
        self._set("area", torch.as_tensor(area, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.npix:
            F.check_vertices(x, self.npix, "GlobalPool")
        elif x.dim() != 3:
            raise ValueError(f"GlobalPool expects [batch, vertices, channels], got shape {tuple(x.shape)}")
        return F.global_pool(x, self.mode, self.area if self.area.numel() else None)

    def extra_repr(self) -> str:
        return f"mode={self.mode}" + (", area-weighted" if self.area.numel() else "")
