"""Pooling kernels on sampled spheres, derived from a sampling's hierarchy.

Every hierarchical sampling describes its coarsening by one sparse
assignment matrix ``assign`` (coarse.npix, fine.npix), columns summing to
one (see ``Sampling.coarsen``). :func:`pooling_plan` reads that matrix once
(NumPy, at construction) and picks the cheapest exact kernel:

* ``"blocks"``: every coarse vertex owns ``m`` consecutive fine vertices
  (HEALPix NESTED, full or sorted partial sky): a reshape, no index at all.
* ``"gather"``: a ``[coarse, m]`` index of each coarse vertex's fine
  vertices, padded (by repeating a child with weight zero) where fan-ins
  differ, and ``[coarse, m]`` weights where they are not all equal. One
  gather then a reduction over ``m``: equiangular 2x2 blocks, icosahedral
  cells (6 or 7 vertices, border vertices weighted 1/2), any regular hierarchy.
* ``"sparse"``: when padding would more than double the work (k-means
  clusters of very different sizes): weighted sums over the non-zero
  ``(coarse, fine, weight)`` entries with ``index_add``, ``scatter_reduce``
  for the max.

The kernels below take ``[batch, vertices, channels]`` tensors and plain
index tensors; they use no NumPy, so they run on any device.

Example
-------
>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=2)
>>> plan = pooling_plan(s.coarsen()[1])
>>> plan.layout, plan.fan_in, plan.n_fine, plan.n_coarse
('blocks', 4, 48, 12)
>>> x = torch.arange(48.0).reshape(1, 48, 1)
>>> block_pool(x, 4, "avg")[0, :3, 0]
tensor([1.5000, 5.5000, 9.5000])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from . import _cpu_kernel

__all__ = ["PoolingPlan", "pooling_plan", "padded_rows", "block_pool", "gather_pool", "sparse_pool",
           "block_unpool", "gather_unpool", "sparse_unpool", "max_unpool", "global_pool", "check_vertices"]

POOL_MODES = ("avg", "max")
GLOBAL_MODES = ("mean", "max", "meanvar")

#: Use the padded gather while it costs at most this many times the non-zeros.
MAX_PADDING = 2.0


class PoolingPlan(NamedTuple):
    """How to pool with a given assignment (NumPy arrays, built once).

    ``assign``: the validated CSR assignment. ``index``/``weights``: the
    ``[n_coarse, fan_in]`` gather of the ``gather`` layout (``weights`` is
    ``None`` when every row is a plain mean); both ``None`` otherwise.
    ``partition``: every fine vertex belongs to exactly one coarse vertex.
    """

    layout: str  # "blocks" | "gather" | "sparse"
    n_fine: int
    n_coarse: int
    fan_in: int  # children per coarse vertex (padded); 0 for "sparse"
    partition: bool
    assign: sp.csr_matrix
    index: np.ndarray | None
    weights: np.ndarray | None


def padded_rows(A: sp.csr_matrix, max_padding: float = MAX_PADDING):
    """The rows of a sparse matrix as a fixed-width gather ``(index, weights)``,
    both ``(n_rows, m)``, m the longest row; shorter rows repeat their last
    entry with weight zero. ``None`` if that pads more than ``max_padding``
    times the non-zeros (or a row is empty).

    >>> A = sp.csr_matrix(np.array([[0.5, 0.5, 0.], [0., 0., 1.]]))
    >>> idx, w = padded_rows(A)
    >>> idx.tolist(), w.tolist()
    ([[0, 1], [2, 2]], [[0.5, 0.5], [1.0, 0.0]])
    """
    fan = np.diff(A.indptr)
    m = int(fan.max())
    if fan.min() == 0 or m * A.shape[0] > max_padding * A.nnz:
        return None
    slot = np.arange(m)
    pos = A.indptr[:-1, None] + np.minimum(slot, fan[:, None] - 1)  # clamp: repeat the last entry
    real = slot < fan[:, None]
    return A.indices[pos].astype(np.int64), np.where(real, A.data[pos], 0.0)


def pooling_plan(assign, max_padding: float = MAX_PADDING) -> PoolingPlan:
    """Read a fine-to-coarse assignment (coarse.npix, fine.npix) and choose
    the pooling layout. Raises on matrices that are not assignments.

    >>> a = sp.csr_matrix(([1., 1., 1., 1.], ([1, 0, 1, 0], [0, 1, 2, 3])), shape=(2, 4))
    >>> p = pooling_plan(a)
    >>> p.layout, p.index.tolist(), p.weights
    ('gather', [[1, 3], [0, 2]], None)
    """
    if not sp.issparse(assign):
        assign = np.asarray(assign)
        if assign.ndim != 2:
            raise ValueError(f"the assignment must be a 2-D (coarse, fine) matrix, got shape {assign.shape}")
    A = sp.csr_matrix(assign, dtype=np.float64, copy=True)
    A.sum_duplicates()
    A.eliminate_zeros()
    A.sort_indices()
    n_coarse, n_fine = A.shape
    if n_coarse == 0 or n_fine == 0:
        raise ValueError(f"the assignment has an empty dimension: shape {A.shape}")
    if A.nnz and (A.data.min() < 0 or not np.all(np.isfinite(A.data))):
        raise ValueError("the assignment must have finite, non-negative entries")
    col_sum = np.asarray(A.sum(axis=0)).ravel()
    if not np.allclose(col_sum, 1.0, atol=1e-9):
        i = int(np.argmax(np.abs(col_sum - 1)))
        raise ValueError(
            f"each column of the assignment (one per fine vertex) must sum to one; column {i} sums to "
            f"{col_sum[i]:.6g}. Is the matrix transposed? Expected shape (coarse.npix, fine.npix), got {A.shape}")
    fan = np.diff(A.indptr)
    if fan.min() == 0:
        j = int(np.argmin(fan))
        raise ValueError(f"coarse vertex {j} has no fine vertex assigned to it; every coarse vertex needs one")
    partition = A.nnz == n_fine and bool(np.all(A.data == 1.0))
    if partition and fan.min() == fan.max():
        m = int(fan[0])
        if np.array_equal(A.indices, np.arange(n_fine)):
            return PoolingPlan("blocks", n_fine, n_coarse, m, True, A, None, None)
        return PoolingPlan("gather", n_fine, n_coarse, m, True, A, A.indices.reshape(n_coarse, m).astype(np.int64),
                           None)
    # Mean pooling = the row-normalised assignment.
    mean = sp.diags(1 / np.asarray(A.sum(axis=1)).ravel()) @ A
    padded = padded_rows(sp.csr_matrix(mean), max_padding)
    if padded is None:
        return PoolingPlan("sparse", n_fine, n_coarse, 0, partition, A, None, None)
    index, weights = padded
    return PoolingPlan("gather", n_fine, n_coarse, index.shape[1], partition, A, index, weights)


def check_vertices(x: torch.Tensor, expected: int, what: str) -> None:
    """Raise a clear error unless ``x`` is ``[batch, expected, channels]``."""
    if x.dim() != 3:
        raise ValueError(f"{what} expects a tensor [batch, vertices, channels], got shape {tuple(x.shape)}; "
                         "add a batch axis with x[None] or a channel axis with x[..., None]")
    if x.shape[1] != expected:
        raise ValueError(f"{what} expects {expected} vertices, got {x.shape[1]} (input shape {tuple(x.shape)}); "
                         "is the map at the right resolution/level of the pyramid?")


def _needs_grad(x: torch.Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


# -- regular layouts: reshape or gather, then reduce the children axis ------------------------------
def _reduce(xc: torch.Tensor, mode: str, weights: torch.Tensor | None, return_indices: bool):
    """xc: [B, Vc, m, C] -> [B, Vc, C] (and the argmax position in 0..m-1)."""
    if mode == "avg":
        if return_indices:
            raise ValueError("average pooling has no indices; use mode='max'")
        if weights is None:
            return xc.mean(dim=2)
        return (xc * weights.to(xc.dtype)[None, :, :, None]).sum(dim=2)
    if mode != "max":
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    if return_indices or _needs_grad(xc):
        # max's backward (a scatter to the argmax) is ~5x faster than amax's.
        out = xc.max(dim=2)
        return out if return_indices else out.values
    return xc.amax(dim=2)  # ~3x faster than max when no gradient is needed


def block_pool(x: torch.Tensor, fan_in: int, mode: str = "avg", return_indices: bool = False):
    """Pool consecutive blocks of ``fan_in`` vertices: [B, V, C] -> [B, V/m, C].

    With ``return_indices`` (``mode="max"``), returns ``(y, indices)``,
    ``indices`` [B, V/m, C] the fine vertex of each maximum (for
    :func:`max_unpool`).
    """
    B, V, C = x.shape
    kern = _block_kernel(x, fan_in) if mode in ("max", "avg") else None
    if kern is None:
        out = _reduce(x.reshape(B, V // fan_in, fan_in, C), mode, None, return_indices)
        if not return_indices:
            return out
        out, position = out
    elif mode == "avg":
        if return_indices:
            raise ValueError("average pooling has no indices; use mode='max'")
        return _BlockPool.apply(x, fan_in, mode, kern) if _needs_grad(x) else _block_pool(x, fan_in, mode, kern)[0]
    else:
        out, position = (_BlockPool.apply if _needs_grad(x) else _block_pool)(x, fan_in, mode, kern)
    if not return_indices:
        return out
    base = torch.arange(0, V, fan_in, device=x.device).view(1, -1, 1)
    return out, position.long() + base


def _block_kernel(x: torch.Tensor, fan_in: int):
    """The compiled block pooling for x, or None (CUDA, other dtypes, no compiler): torch's reductions then."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not 1 <= fan_in <= 255:
        return None
    lib = _cpu_kernel.load()
    return None if lib is None else lib.block_pool[str(x.dtype)[6:]]


def _block_pool(x: torch.Tensor, m: int, mode: str, kern):
    """(pooled, positions of the maxima or None) of the blocks of m vertices, by the compiled
    kernel (no autograd)."""
    if x.stride(2) != 1 and x.shape[2] > 1:  # the kernel reads any batch and vertex strides
        x = x.contiguous()
    B, V, C = x.shape
    y = _dense_like(x, V // m)
    position = torch.empty_strided(y.shape, y.stride(), dtype=torch.uint8) if mode == "max" else None
    kern(x.data_ptr(), None, y.data_ptr(), None, _ptr(position), B, V // m, m, C, x.stride(0), x.stride(1),
         y.stride(0), y.stride(1), torch.get_num_threads())
    return y, position


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _dense_like(x: torch.Tensor, vertices: int) -> torch.Tensor:
    """An empty dense [B, vertices, C] tensor in x's order of batch and vertices."""
    B, _, C = x.shape
    if x.stride(1) > x.stride(0):  # vertex-major
        return torch.empty(vertices, B, C, dtype=x.dtype).transpose(0, 1)
    return torch.empty(B, vertices, C, dtype=x.dtype)


class _BlockPool(torch.autograd.Function):
    """Block max or mean pooling in one compiled pass each way (torch's ``max(dim=2)`` and
    ``mean(dim=2)`` over the [B, V/m, m, C] view ran at 5-14x the time of a copy: a fifth of a
    training step). Max also returns, per output, the position (0..m-1, uint8) of its maximum:
    the first one, NaN counting as the largest, as torch.max. The output keeps the input's
    memory order (vertex-major stays vertex-major: the next convolution reads it in place)."""

    @staticmethod
    def forward(ctx, x, m, mode, kern):
        y, position = _block_pool(x, m, mode, kern)
        ctx.conf = (x.shape, x.stride(1) > x.stride(0), x.dtype, m, kern)
        if position is None:
            return y
        ctx.mark_non_differentiable(position)
        ctx.save_for_backward(position)
        return y, position

    @staticmethod
    def backward(ctx, gy, _=None):
        shape, vertex_major, dtype, m, kern = ctx.conf
        B, V, C = shape
        position = ctx.saved_tensors[0] if ctx.saved_tensors else None
        if torch.is_grad_enabled():  # create_graph=True: differentiable torch steps (linear in gy)
            if position is None:
                gx = (gy / m).unsqueeze(2).expand(B, V // m, m, C)
            else:
                gx = gy.new_zeros(B, V // m, m, C).scatter(2, position.long().unsqueeze(2), gy.unsqueeze(2))
            return gx.reshape(B, V, C), None, None, None
        if position is not None and gy.stride() != position.stride():  # the kernel reads both alike
            gy = torch.empty_strided(position.shape, position.stride(), dtype=dtype).copy_(gy)
        elif gy.stride(2) != 1 and C > 1:
            gy = gy.contiguous()
        gx = torch.empty(V, B, C, dtype=dtype).transpose(0, 1) if vertex_major else torch.empty(shape, dtype=dtype)
        kern(None, gy.data_ptr(), None, gx.data_ptr(), _ptr(position), B, V // m, m, C, gx.stride(0),
             gx.stride(1), gy.stride(0), gy.stride(1), torch.get_num_threads())
        return gx, None, None, None


def gather_pool(x: torch.Tensor, index: torch.Tensor, mode: str = "avg", weights: torch.Tensor | None = None,
                return_indices: bool = False):
    """Pool through a ``[Vc, m]`` index of children: [B, V, C] -> [B, Vc, C].

    ``weights`` [Vc, m] (rows summing to one) make ``"avg"`` a weighted
    mean; padding entries repeat a child with weight zero, which changes
    neither the mean nor the max.
    """
    B, _, C = x.shape
    Vc, m = index.shape
    out = _reduce(x.index_select(1, index.reshape(-1)).view(B, Vc, m, C), mode, weights, return_indices)
    if not return_indices:
        return out
    # Position among the children -> fine vertex index.
    return out.values, index.unsqueeze(0).expand(B, Vc, m).gather(2, out.indices)


def block_unpool(x: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Repeat each coarse value on its ``fan_in`` consecutive children."""
    B, Vc, C = x.shape
    return x.unsqueeze(2).expand(B, Vc, fan_in, C).reshape(B, Vc * fan_in, C)


def gather_unpool(x: torch.Tensor, parent: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Fine vertex i gets ``sum_p weights[i, p] * x[parent[i, p]]``;
    ``parent`` [V, p]; without weights (``p = 1``), its parent's value."""
    B, Vc, C = x.shape
    V, p = parent.shape
    xp = x.index_select(1, parent.reshape(-1)).view(B, V, p, C)
    if weights is None:
        return xp.squeeze(2) if p == 1 else xp.mean(dim=2)
    return (xp * weights.to(x.dtype)[None, :, :, None]).sum(dim=2)


# -- general layout: weighted sums and scatter over the non-zero entries ---------------------------
def _weighted_sum(x, dst, src, weights, n_out):
    """out[:, d] = sum over entries of w * x[:, s]: a sparse matrix product."""
    B, _, C = x.shape
    vals = x.index_select(1, src) * weights.to(x.dtype).view(1, -1, 1)
    return x.new_zeros(B, n_out, C).index_add_(1, dst, vals)


def sparse_pool(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, n_coarse: int,
                mode: str = "avg", return_indices: bool = False):
    """Pool over the non-zero entries ``(rows=coarse, cols=fine)`` of an
    assignment. ``"avg"``: ``weights`` must be the row-normalised
    assignment. ``"max"``: ``scatter_reduce("amax")``; with
    ``return_indices`` or a gradient to compute, ties go to the smallest fine
    index and the output is ``x`` gathered there, so the gradient reaches
    one vertex per output (as in the regular layouts).
    """
    if mode == "avg":
        if return_indices:
            raise ValueError("average pooling has no indices; use mode='max'")
        return _weighted_sum(x, rows, cols, weights, n_coarse)
    if mode != "max":
        raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
    B, V, C = x.shape
    start = x.new_full((B, n_coarse, C), -torch.inf)
    r = rows.view(1, -1, 1).expand(B, -1, C)
    if not (return_indices or _needs_grad(x)):
        return start.scatter_reduce(1, r, x.index_select(1, cols), "amax", include_self=True)
    with torch.no_grad():
        vals = x.index_select(1, cols)  # [B, nnz, C]
        best = start.scatter_reduce(1, r, vals, "amax", include_self=True)
        # Candidates: the maxima, and NaNs so that a NaN propagates as in torch.max.
        hit = (vals == best.gather(1, r)) | torch.isnan(vals)
        cand = torch.where(hit, cols.view(1, -1, 1).expand_as(vals), V)
        idx = torch.full((B, n_coarse, C), V, dtype=torch.long, device=x.device)
        idx = idx.scatter_reduce(1, r, cand, "amin", include_self=True)
    y = x.gather(1, idx)
    return (y, idx) if return_indices else y


def sparse_unpool(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor,
                  n_fine: int) -> torch.Tensor:
    """Repeat unpooling by the assignment's transpose: fine vertex i gets
    sum_j assign[j, i] x_j (columns sum to one: a weighted mean)."""
    return _weighted_sum(x, cols, rows, weights, n_fine)


def max_unpool(x: torch.Tensor, indices: torch.Tensor, n_fine: int, overlapping: bool = False) -> torch.Tensor:
    """Put each coarse value back at the fine vertex it came from; zeros elsewhere.

    ``indices`` come from a max pooling (``Pool(..., return_indices=True)``).
    When cells overlap (``overlapping=True``; icosahedral borders), a fine
    vertex that was the maximum of several cells gets the largest of their
    values.
    """
    if indices.shape != x.shape:
        raise ValueError(f"max_unpool needs indices of the same shape as the input: got {tuple(indices.shape)} "
                         f"and {tuple(x.shape)}; pass the indices returned with this pooling's output")
    B, _, C = x.shape
    out = x.new_zeros(B, n_fine, C)
    if overlapping:
        return out.scatter_reduce(1, indices, x, "amax", include_self=False)
    return out.scatter(1, indices, x)


# -- global pooling ----------------------------------------------------------------------------------
def global_pool(x: torch.Tensor, mode: str = "mean", weights: torch.Tensor | None = None) -> torch.Tensor:
    """[B, V, C] -> [B, C] (``"mean"``, ``"max"``) or [B, 2C] (``"meanvar"``:
    means then variances). ``weights`` [V] (e.g. pixel areas) make the mean
    and variance area-weighted; they are normalised here.

    >>> global_pool(torch.tensor([[[1.0], [3.0]]]), "meanvar")
    tensor([[2., 1.]])
    """
    if mode not in GLOBAL_MODES:
        raise ValueError(f"mode must be one of {GLOBAL_MODES}, got {mode!r}")
    if mode == "max":
        return x.amax(dim=1)
    if weights is None:
        mean = x.mean(dim=1)
        if mode == "mean":
            return mean
        var = (x - mean.unsqueeze(1)).pow(2).mean(dim=1)
    else:
        w = weights.to(x.dtype)
        w = (w / w.sum()).view(1, -1, 1)
        mean = (x * w).sum(dim=1)
        if mode == "mean":
            return mean
        var = ((x - mean.unsqueeze(1)).pow(2) * w).sum(dim=1)
    return torch.cat([mean, var], dim=1)
