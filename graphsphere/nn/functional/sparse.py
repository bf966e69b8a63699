"""The operator of a Chebyshev convolution: a sparse, symmetric matrix L~ (the rescaled Laplacian)
as three torch tensors in CSR form, and :func:`as_operator`, which makes one from a graph, a SciPy or a
torch sparse matrix (checked once, when made).

>>> import graphsphere as gs
>>> op = as_operator(gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8))   # L~ = 2 L / lambda_max - I
>>> op.n, op.nnz > 0, op.dtype
(48, True, torch.float32)
"""

from __future__ import annotations

import warnings

import torch

from ...graph import SphereGraph

__all__ = ["SparseOperator", "as_operator"]


class SparseOperator:
    """A square, symmetric sparse matrix (the rescaled Laplacian L~) in CSR
    form, as three torch tensors on one device.

    ``indptr`` [n + 1] and ``indices`` [nnz] share an integer dtype (int32
    when it fits); ``values`` [nnz] is floating. Build one with
    :func:`as_operator`, which checks it; the constructor trusts its inputs.
    """

    __slots__ = ("_torch_csr", "indices", "indptr", "values")

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor):
        self.indptr, self.indices, self.values = indptr, indices, values
        self._torch_csr = None

    @property
    def n(self) -> int:
        """Number of vertices (rows)."""
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def to(self, device=None, dtype=None) -> SparseOperator:
        """A copy on ``device`` with ``dtype`` values (self where nothing changes)."""
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else dtype
        if device == self.device and dtype == self.dtype:
            return self
        return SparseOperator(self.indptr.to(device), self.indices.to(device), self.values.to(device, dtype))

    def to_torch(self) -> torch.Tensor:
        """The matrix as a ``torch.sparse_csr_tensor`` (cached)."""
        if self._torch_csr is None:
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self._torch_csr = torch.sparse_csr_tensor(self.indptr, self.indices, self.values,
                                                          size=(self.n, self.n), check_invariants=False)
        return self._torch_csr

    def __repr__(self) -> str:
        return f"SparseOperator(n={self.n}, nnz={self.nnz}, dtype={self.dtype}, device={self.device})"


def as_operator(obj, dtype: torch.dtype | None = None, device=None, a: float = 1.0,
                check: bool = True) -> SparseOperator:
    """Make the :class:`SparseOperator` of a rescaled Laplacian L~.

    ``obj`` is a :class:`~graphsphere.SphereGraph` (its ``operator(a)`` is
    used), a SciPy sparse matrix, a torch sparse CSR or COO tensor, or a
    :class:`SparseOperator`; SciPy and torch matrices are taken to already be
    L~ (spectrum inside [-1, 1]). ``dtype`` defaults to the torch default
    float dtype. With ``check`` (once, at construction) the matrix must be
    square, finite and symmetric: the backward pass uses T_k(L~)^T = T_k(L~).

    >>> import graphsphere as gs
    >>> op = as_operator(gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8))
    >>> op.n, op.dtype
    (48, torch.float32)
    """
    import numpy as np
    import scipy.sparse as sp

    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point type, got {dtype}")
    if isinstance(obj, SparseOperator):
        op = obj
        if check:
            _check_operator(op)
        return op.to(device, dtype)
    if isinstance(obj, SphereGraph):
        op = _graph_operator(obj, a, dtype, device)
        if op is not None:
            return op
        obj = obj.operator(a)
    if isinstance(obj, torch.Tensor):
        if not (obj.is_sparse or obj.layout == torch.sparse_csr):
            raise TypeError("a torch operator must be a sparse COO or CSR tensor; "
                            "convert a dense matrix with .to_sparse_csr()")
        if device is None:
            device = obj.device
        obj = obj.detach()
        csr = obj.to_sparse_csr() if obj.is_sparse else obj
        if csr.dim() != 2:
            raise ValueError(f"the operator must be a matrix, got {csr.dim()} dimensions")
        m = sp.csr_matrix((csr.values().cpu().double().numpy(), csr.col_indices().cpu().numpy(),
                           csr.crow_indices().cpu().numpy()), shape=tuple(csr.shape))
    elif sp.issparse(obj):
        m = sp.csr_matrix(obj)
    else:
        raise TypeError(f"cannot make an operator from {type(obj).__name__}: pass a SphereGraph, "
                        "a scipy.sparse matrix or a torch sparse tensor")
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"the operator must be square, got shape {m.shape}")
    m = m.copy()
    m.sum_duplicates()
    m.sort_indices()
    if check:
        if not np.isfinite(m.data).all():
            raise ValueError("the operator has NaN or Inf entries: check the graph's weights and lmax")
        asym = abs(m - m.T)
        scale = max(abs(m).max(), 1e-300) if m.nnz else 1.0
        if asym.nnz and asym.max() > 1e-6 * scale:
            raise ValueError(f"the operator must be symmetric (max |A - A^T| = {asym.max():.3g}); "
                             "Chebyshev convolution needs a symmetric Laplacian")
    itype = np.int32 if max(m.nnz, m.shape[0]) < 2**31 - 1 else np.int64
    return SparseOperator(torch.from_numpy(m.indptr.astype(itype)).to(device),
                          torch.from_numpy(m.indices.astype(itype)).to(device),
                          torch.from_numpy(m.data).to(device=device, dtype=dtype))


def _graph_operator(graph: SphereGraph, a: float, dtype: torch.dtype, device) -> SparseOperator | None:
    """L~ = (2a / lambda_max) L - I straight from the graph's Laplacian, in ``dtype``: no float64 copy
    of L~, no symmetry check (L is symmetric, sorted and free of duplicates by construction). At HEALPix
    nside 2048 (450 M entries) the general path's copies and check would need about 30 GB; this one
    needs the operator itself. None when a row has no stored diagonal (an isolated vertex of a
    normalized Laplacian), which the general path handles."""
    import numpy as np

    if not 0 < a <= 1:
        raise ValueError(f"a must be in (0, 1], got {a}")
    L = graph.L
    n, indptr, indices = L.shape[0], L.indptr, L.indices
    scale = 2 * a / graph.lambda_max
    values = torch.empty(L.nnz, dtype=dtype)
    block = 1 << 20  # rows at a time: float64 temporaries of a few MB, rounded once into dtype (as scipy would)
    for start in range(0, n, block):
        stop = min(start + block, n)
        lo, hi = int(indptr[start]), int(indptr[stop])
        rows = np.repeat(np.arange(start, stop, dtype=indices.dtype), np.diff(indptr[start:stop + 1]))
        diagonal = np.flatnonzero(indices[lo:hi] == rows)
        if len(diagonal) != stop - start:
            return None
        v = L.data[lo:hi] * scale
        v[diagonal] -= 1
        values[lo:hi] = torch.from_numpy(v)
    if not torch.isfinite(values).all():
        raise ValueError("the operator has NaN or Inf entries: check the graph's weights and lmax")
    itype = np.int32 if max(L.nnz, n) < 2**31 - 1 else np.int64
    return SparseOperator(torch.from_numpy(indptr.astype(itype)).to(device),
                          torch.from_numpy(indices.astype(itype)).to(device), values.to(device))


def _check_operator(op: SparseOperator) -> None:
    if op.indptr.dim() != 1 or op.indices.dim() != 1 or op.values.dim() != 1:
        raise ValueError("a SparseOperator holds three 1-D tensors (indptr, indices, values)")
    if op.indices.numel() != op.values.numel() or int(op.indptr[-1]) != op.values.numel():
        raise ValueError(f"inconsistent CSR operator: indptr[-1]={int(op.indptr[-1])}, "
                         f"{op.indices.numel()} indices, {op.values.numel()} values")
    if op.indptr.dtype != op.indices.dtype:
        raise TypeError(f"indptr and indices must share a dtype, got {op.indptr.dtype} and {op.indices.dtype}")
    if not torch.isfinite(op.values).all():
        raise ValueError("the operator has NaN or Inf entries: check the graph's weights and lmax")
