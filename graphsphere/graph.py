"""From a sampling to a weighted graph and its Laplacian (NumPy/SciPy only).

A :class:`SphereGraph` is an immutable value: the k-nearest-neighbour graph of
a sampling with Gaussian weights w_ij = exp(-||x_i - x_j||^2 / 4t) (chordal
distances on the unit sphere), symmetrised; its Laplacian, largest eigenvalue
and Chebyshev-rescaled operator are computed on first use and cached.

Example
-------
>>> import graphsphere as gs
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=8), k=8, kernel_width="tuned")
>>> g.W.shape, g.L.shape
((768, 768), (768, 768))
>>> bool(abs(g.L - g.L.T).max() < 1e-12)
True
>>> 1.0 < g.lmax <= 2 * 1.02   # normalized Laplacian: spectrum in [0, 2]
True
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
from scipy.spatial import cKDTree

from . import kernel_widths
from .sampling.base import Sampling, from_dict

__all__ = ["SphereGraph", "knn", "healpix_neighbours", "laplacian", "lanczos_max_eigenvalue"]

LAPLACIANS = ("normalized", "combinatorial")


def knn(xyz: np.ndarray, k: int, workers: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every point (itself excluded).

    Returns ``(cols, sq_dist)``, both (n, k): neighbour indices and squared
    chordal distances. Uses a k-d tree on the unit vectors, O(n log n).
    """
    n = len(xyz)
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and npix - 1 = {n - 1}, got k={k}")
    tree = cKDTree(xyz, leafsize=32, balanced_tree=False, compact_nodes=False)
    dist, cols = tree.query(xyz, k=k + 1, workers=workers)
    # The nearest point is the point itself, except for exact duplicates,
    # where it may come second: drop column 0 only after moving self there.
    rows = np.arange(n)
    self_pos = np.argmax(cols == rows[:, None], axis=1)
    fix = self_pos != 0
    if fix.any():
        r = rows[fix]
        cols[r, self_pos[fix]], dist[r, self_pos[fix]] = cols[r, 0], dist[r, 0]
    return cols[:, 1:], dist[:, 1:] ** 2


def healpix_neighbours(sampling) -> tuple[np.ndarray, np.ndarray]:
    """The native HEALPix neighbours of the 2019 paper: 8 per pixel (7 at
    the corners of the base rhombi), from ``healpy.get_all_neighbours``.

    Returns ``(cols, sq_dist)`` of shape (n, 8) with -1 where a pixel has
    no such neighbour or (partial sky) the neighbour is outside the footprint.
    """
    import healpy as hp

    nb = hp.get_all_neighbours(sampling.nside, sampling.pixels, nest=sampling.nest).T  # (n, 8)
    if sampling.full_sphere:
        cols = nb
    else:
        # Map HEALPix ids to positions in the data order; -1 outside.
        order = np.argsort(sampling.indices)
        sorted_ids = sampling.indices[order]
        pos = np.searchsorted(sorted_ids, nb)
        pos = np.clip(pos, 0, len(sorted_ids) - 1)
        inside = (sorted_ids[pos] == nb) & (nb >= 0)
        cols = np.where(inside, order[pos], -1)
    valid = cols >= 0
    xyz = sampling.xyz
    diff = xyz[np.where(valid, cols, 0)] - xyz[:, None, :]
    sq = np.where(valid, np.einsum("nkd,nkd->nk", diff, diff), 0.0)
    return cols, sq


def laplacian(W: sp.spmatrix, kind: str = "normalized") -> sp.csr_matrix:
    """The Laplacian of a symmetric weight matrix: ``"normalized"``
    I - D^-1/2 W D^-1/2 (isolated vertices get zero rows) or ``"combinatorial"`` D - W.

    >>> import scipy.sparse as sp
    >>> laplacian(sp.csr_matrix([[0, 1.0], [1.0, 0]])).toarray()
    array([[ 1., -1.],
           [-1.,  1.]])
    """
    if kind not in LAPLACIANS:
        raise ValueError(f"laplacian must be one of {LAPLACIANS}, got {kind!r}")
    d = np.asarray(W.sum(axis=1)).ravel()
    if kind == "combinatorial":
        L = sp.diags(d) - W
    else:
        with np.errstate(divide="ignore"):
            dinv = np.where(d > 0, 1 / np.sqrt(d), 0.0)
        Dm = sp.diags(dinv)
        L = sp.identity(W.shape[0], format="csr") - Dm @ W @ Dm
    L = sp.csr_matrix(L)
    L.sort_indices()
    return L


def lanczos_max_eigenvalue(A: sp.spmatrix, steps: int = 80, rtol: float = 1e-4, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric matrix by plain Lanczos.

    The largest Ritz value converges fast from below even without
    re-orthogonalisation (lost orthogonality adds copies of converged
    values, it does not move the extreme one), so a few dozen products
    suffice where ARPACK's restarts, chasing a tight tolerance in a dense
    spectrum, take minutes at 12 M vertices. Stops when the estimate
    changes by less than ``rtol`` over 10 steps.
    """
    from scipy.linalg import eigvalsh_tridiagonal

    n = A.shape[0]
    v = np.random.default_rng(seed).standard_normal(n)
    # Dot products as plain sums: BLAS ddot with many threads on a busy
    # machine was seen to take 40 ms on 50k entries, 50x the sparse product.
    v /= np.sqrt((v * v).sum())
    v_prev = np.zeros(n)
    alphas, betas, history = [], [], []
    beta = 0.0
    for j in range(min(steps, n)):
        w = A @ v
        alpha = float((v * w).sum())
        w -= alpha * v + beta * v_prev
        alphas.append(alpha)
        beta = float(np.sqrt((w * w).sum()))
        top = float(eigvalsh_tridiagonal(np.array(alphas), np.array(betas), select="i",
                                         select_range=(j, j))[0]) if j else alpha
        history.append(top)
        if beta < 1e-12 or (j >= 10 and abs(top - history[-11]) <= rtol * abs(top)):
            break
        betas.append(beta)
        v_prev, v = v, w / beta
    return history[-1]


class SphereGraph:
    """The graph of a sampled sphere.

    Parameters
    ----------
    sampling : Sampling
        Where the vertices are.
    k : int
        Number of nearest neighbours per vertex before symmetrisation.
    kernel_width : "auto" | "tuned" | "mean" | float
        t of exp(-d^2/4t): tuned widths (an error where none exist for this
        sampling and k), the 2019 heuristic (half the mean squared edge
        length), a number, or "auto" (tuned where available, else "mean").
    laplacian : "normalized" | "combinatorial"
        I - D^-1/2 W D^-1/2 or D - W.
    neighbours : "knn" | "healpix"
        k-d tree neighbours, or the native 8 HEALPix neighbours (2019 paper).

    The graph is symmetrised by union: i~j if either is among the other's k
    nearest, with the weight of their distance (the same both ways).
    """

    def __init__(self, sampling: Sampling, k: int = 8, kernel_width: str | float = "auto",
                 laplacian: str = "normalized", neighbours: str = "knn", *, _W: sp.csr_matrix | None = None,
                 _t: float | None = None):
        if not isinstance(sampling, Sampling):
            raise TypeError(f"sampling must be a graphsphere Sampling, got {type(sampling).__name__}")
        if laplacian not in LAPLACIANS:
            raise ValueError(f"laplacian must be one of {LAPLACIANS}, got {laplacian!r}")
        if neighbours not in ("knn", "healpix"):
            raise ValueError(f"neighbours must be 'knn' or 'healpix', got {neighbours!r}")
        if neighbours == "healpix" and type(sampling).__name__ != "HEALPix":
            raise ValueError("neighbours='healpix' needs a HEALPix sampling; use neighbours='knn'")
        k = int(k)
        if neighbours == "healpix" and k != 8:
            raise ValueError(f"the native HEALPix graph has k=8 neighbours, got k={k}")
        if not 1 <= k < sampling.npix:
            raise ValueError(f"k must be between 1 and npix - 1 = {sampling.npix - 1} for {sampling!r}, got k={k}")
        self.sampling = sampling
        self.k = k
        self.laplacian_type = laplacian
        self.neighbours = neighbours
        self.kernel_width = kernel_width
        if _W is not None:  # from load(): exact arrays, nothing recomputed
            self.W, self.t = _W, float(_t)
        else:
            self.W, self.t = self._build()
        self._check_connected()

    # -- construction -------------------------------------------------------
    def _resolve_t(self, sq_dist: np.ndarray) -> float:
        kw = self.kernel_width
        if isinstance(kw, str):
            if kw == "mean":
                return kernel_widths.heuristic_t(sq_dist)
            if kw == "tuned":
                return self._tuned_t()
            if kw == "auto":
                try:
                    return self._tuned_t()
                except ValueError:
                    return kernel_widths.heuristic_t(sq_dist)
            raise ValueError(f"kernel_width must be 'auto', 'tuned', 'mean' or a positive number, got {kw!r}")
        t = float(kw)
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"kernel_width must be a positive number, got {kw!r}")
        return t

    def _tuned_t(self) -> float:
        s = self.sampling
        lookup = getattr(kernel_widths, "tuned_t", None)
        if lookup is not None:  # per-sampling tuned widths, where available
            t = lookup(s, self.k)
            if t is not None:
                return t
        if type(s).__name__ == "HEALPix" and self.neighbours == "knn":
            return kernel_widths.sigma_to_t(kernel_widths.published_sigma(s.nside, self.k))
        raise ValueError(
            f"no tuned kernel width for {s.describe()} with k={self.k} ({self.neighbours} neighbours); "
            "pass kernel_width='mean' (the heuristic) or a number")

    def _build(self) -> tuple[sp.csr_matrix, float]:
        n = self.sampling.npix
        if self.neighbours == "healpix":
            cols, sq = healpix_neighbours(self.sampling)
        else:
            cols, sq = knn(self.sampling.xyz, self.k)
        valid = cols >= 0
        t = self._resolve_t(sq[valid])
        # Row i holds its neighbours: build the CSR arrays directly (no COO sort).
        counts = valid.sum(axis=1)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        index_dtype = np.int32 if indptr[-1] < 2**31 - 1 else np.int64
        indices = cols[valid].astype(index_dtype)
        data = np.exp(sq[valid] / (-4 * t))
        del cols, sq, valid
        A = sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(n, n))
        del data, indices
        # The CSC arrays of A are the CSR arrays of its transpose: one
        # linear-time counting sort, no COO round trip.
        Acsc = A.tocsc()
        AT = sp.csr_matrix((Acsc.data, Acsc.indices, Acsc.indptr), shape=(n, n))
        del Acsc
        W = A.maximum(AT)  # union symmetrisation; weights depend on distance only
        del A, AT
        W = sp.csr_matrix(W)
        W.eliminate_zeros()
        if not W.has_sorted_indices:
            W.sort_indices()
        return W, t

    def _check_connected(self) -> None:
        ncomp, labels = csgraph.connected_components(self.W, directed=False)
        if ncomp > 1:
            sizes = np.sort(np.bincount(labels))[::-1]
            shown = ", ".join(map(str, sizes[:10])) + (", ..." if ncomp > 10 else "")
            warnings.warn(
                f"the graph of {self.sampling.describe()} has {ncomp} connected components (sizes {shown}); "
                "signals cannot flow between them: increase k or check the footprint", stacklevel=3)
        self.n_components = int(ncomp)

    # -- derived quantities -------------------------------------------------
    @property
    def npix(self) -> int:
        return self.sampling.npix

    @property
    def n_edges(self) -> int:
        """Number of undirected edges."""
        return self.W.nnz // 2

    @cached_property
    def degree(self) -> np.ndarray:
        """Weighted degree of every vertex."""
        return np.asarray(self.W.sum(axis=1)).ravel()

    @cached_property
    def L(self) -> sp.csr_matrix:
        """The Laplacian (normalized or combinatorial), symmetric CSR."""
        return laplacian(self.W, self.laplacian_type)

    @cached_property
    def lmax(self) -> float:
        """Largest Laplacian eigenvalue (Lanczos estimate, times 1.02 for safety
        as in the reference implementations, so that the spectrum of the
        rescaled operator stays inside [-1, 1])."""
        n = self.npix
        if n <= 400:
            top = float(np.linalg.eigvalsh(self.L.toarray())[-1])
        else:
            top = lanczos_max_eigenvalue(self.L)
        return 1.02 * top

    def operator(self, a: float = 1.0) -> sp.csr_matrix:
        """The Chebyshev-rescaled Laplacian (2a / lmax) L - I.

        ``a = 1`` maps the spectrum onto [-1, 1]; the 2019 cosmology code used
        ``a = 0.75``. Returns a symmetric CSR (float64), cached per ``a``.
        """
        if not 0 < a <= 1:
            raise ValueError(f"a must be in (0, 1], got {a}")
        cache = self.__dict__.setdefault("_operators", {})
        if a not in cache:
            op = sp.csr_matrix((2 * a / self.lmax) * self.L - sp.identity(self.npix, format="csr"))
            op.sort_indices()
            cache[a] = op
        return cache[a]

    def to_edge_index(self):
        """``(edge_index, edge_weight)`` torch tensors for torch_geometric:
        edge_index is (2, 2*n_edges) int64 (both directions), weights float32."""
        import torch

        coo = self.W.tocoo()
        ei = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
        return ei, torch.from_numpy(coo.data.astype(np.float32))

    # -- description & persistence -------------------------------------------
    def stats(self) -> dict[str, float]:
        """Summary statistics: vertices, edges, degrees, edge lengths (degrees of arc)."""
        coo = sp.triu(self.W, k=1).tocoo()
        d = np.linalg.norm(self.sampling.xyz[coo.row] - self.sampling.xyz[coo.col], axis=1)
        arc = np.rad2deg(2 * np.arcsin(np.clip(d / 2, 0, 1)))
        nnb = np.diff(self.W.indptr)
        return {"npix": self.npix, "edges": self.n_edges, "neighbours_min": int(nnb.min()),
                "neighbours_mean": float(nnb.mean()), "neighbours_max": int(nnb.max()),
                "edge_deg_mean": float(arc.mean()), "edge_deg_max": float(arc.max()),
                "t": self.t, "weight_min": float(self.W.data.min()), "components": self.n_components}

    def __repr__(self) -> str:
        kw = self.kernel_width if isinstance(self.kernel_width, str) else "custom"
        return (f"SphereGraph({self.sampling.describe()}, k={self.k}, neighbours={self.neighbours}, "
                f"kernel_width={kw} (t={self.t:.4g}), laplacian={self.laplacian_type}, "
                f"edges={self.n_edges})")

    def save(self, path: str | os.PathLike) -> None:
        """Save to a ``.npz`` file, atomically (a crash leaves no half file)."""
        path = Path(path)
        meta = {"k": self.k, "kernel_width": self.kernel_width, "laplacian": self.laplacian_type,
                "neighbours": self.neighbours, "t": self.t,
                "lmax": self.__dict__.get("lmax"),
                "sampling": {"type": type(self.sampling).__name__,
                             **{k: v for k, v in self.sampling.to_dict().items() if np.ndim(v) == 0}}}
        arrays = {f"sampling_{k}": np.asarray(v) for k, v in self.sampling.to_dict().items() if np.ndim(v) > 0}
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, meta=np.array(json.dumps(meta)), W_data=self.W.data, W_indices=self.W.indices,
                     W_indptr=self.W.indptr, W_shape=np.array(self.W.shape), **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SphereGraph":
        """Load a graph saved with :meth:`save`; arrays come back bit for bit."""
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            W = sp.csr_matrix((f["W_data"], f["W_indices"], f["W_indptr"]), shape=tuple(f["W_shape"]))
            sdict = dict(meta["sampling"])
            for key in f.files:
                if key.startswith("sampling_"):
                    sdict[key[len("sampling_"):]] = f[key]
        g = cls(from_dict(sdict), k=meta["k"], kernel_width=meta["kernel_width"], laplacian=meta["laplacian"],
                neighbours=meta["neighbours"], _W=W, _t=meta["t"])
        if meta.get("lmax") is not None:
            g.lmax = meta["lmax"]
        return g
