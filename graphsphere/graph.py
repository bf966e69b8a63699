"""From a sampling to a weighted graph and its Laplacian (NumPy/SciPy only).

A :class:`SphereGraph` is a frozen value: the neighbour graph of a sampling
with Gaussian weights w_ij = exp(-||x_i - x_j||^2 / 4t) (chordal distances on
the unit sphere), symmetrised. What derives from it (the Laplacian, its
largest eigenvalue, the Chebyshev-rescaled operators, and whatever the layers
above derive, such as torch copies of the operator) is computed on first use
and kept in the graph's one cache, :meth:`SphereGraph.derived`.

Graphs that take long to build are kept on disk by :func:`cached_graph`
(models rebuild their graphs through it when they load).

Example
-------
>>> import graphsphere as gs
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=8), k=8, kernel_width="tuned")
>>> g.W.shape, g.L.shape
((768, 768), (768, 768))
>>> bool(abs(g.L - g.L.T).max() < 1e-12)
True
>>> 1.0 < g.lambda_max <= 2 * 1.02   # normalized Laplacian: spectrum in [0, 2]
True
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from . import kernel_widths
from .files import atomic_write
from .neighbours import canonical_order, grid_neighbours, healpix_neighbours, knn, one_way_edges
from .sampling import HEALPix, Sampling, from_state

__all__ = ["SphereGraph", "cached_graph", "graph_cache_dir", "knn", "healpix_neighbours", "grid_neighbours",
           "laplacian", "lanczos_max_eigenvalue", "LAPLACIANS", "NEIGHBOURS"]

LAPLACIANS = ("normalized", "combinatorial")
#: How vertices are joined: k nearest neighbours, the 8 native HEALPix neighbours (2019
#: paper), or the 4-neighbour grid of a latitude-longitude grid (SHREC'17 equiangular run).
NEIGHBOURS = ("knn", "healpix", "grid")
#: Named kernel widths (a number is t itself): see SphereGraph.
KERNEL_WIDTHS = ("auto", "tuned", "mean", "mean_distance")
#: Version of the .npz layout written by SphereGraph.save (1: before the sampling state).
_FORMAT = 2


def laplacian(W: sp.spmatrix, kind: str = "normalized") -> sp.csr_matrix:
    """The Laplacian of a symmetric weight matrix: ``"normalized"``
    I - D^-1/2 W D^-1/2 (an isolated vertex: 1 on the diagonal, nothing else) or ``"combinatorial"`` D - W.

    >>> import scipy.sparse as sp
    >>> laplacian(sp.csr_matrix([[0, 1.0], [1.0, 0]])).toarray()
    array([[ 1., -1.],
           [-1.,  1.]])
    """
    if kind not in LAPLACIANS:
        raise ValueError(f"laplacian must be one of {LAPLACIANS}, got {kind!r}")
    W = sp.csr_matrix(W)
    n = W.shape[0]
    d = np.asarray(W.sum(axis=1)).ravel()
    if kind == "combinatorial":
        S, diagonal = W, d
    else:
        # D^-1/2 W D^-1/2 by scaling W's values in place of two sparse-sparse products (which
        # cost 2x the time and two more copies of the matrix at 12 M vertices).
        with np.errstate(divide="ignore"):
            dinv = np.where(d > 0, 1 / np.sqrt(d), 0.0)
        rows = np.repeat(np.arange(n, dtype=W.indices.dtype), np.diff(W.indptr))
        S = sp.csr_matrix((W.data * dinv[rows] * dinv[W.indices], W.indices, W.indptr), shape=W.shape)
        del rows
        diagonal = np.ones(n)
    L = sp.csr_matrix(sp.diags(diagonal, format="csr") - S)
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


def _symmetric_csr(cols: np.ndarray, data: np.ndarray, n: int) -> sp.csr_matrix:
    """W from each row's neighbours (-1: none), symmetrised by union (i~j if
    either lists the other; weights depend on the pair only, so max = either)."""
    valid = cols >= 0
    # Row i holds its neighbours: build the CSR arrays directly (no COO sort).
    counts = valid.sum(axis=1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    index_dtype = np.int32 if indptr[-1] < 2**31 - 1 else np.int64
    if valid.all():  # k-NN: every row full, the arrays are used as they are (no copy)
        values, indices = data.reshape(-1), cols.reshape(-1).astype(index_dtype, copy=False)
    else:
        values, indices = data[valid], cols[valid].astype(index_dtype)
    A = sp.csr_matrix((values, indices, indptr.astype(index_dtype)), shape=(n, n))
    del values, indices
    # The CSC arrays of A are the CSR arrays of its transpose: one
    # linear-time counting sort, no COO round trip.
    Acsc = A.tocsc()
    AT = sp.csr_matrix((Acsc.data, Acsc.indices, Acsc.indptr), shape=(n, n))
    del Acsc
    W = sp.csr_matrix(A.maximum(AT))
    del A, AT
    W.eliminate_zeros()
    if not W.has_sorted_indices:
        W.sort_indices()
    return W


def _knn_buffers(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat buffers for the k-NN rows, (n, k) of them, and room after them for the one-way edges that
    :func:`_symmetric_knn_csr` writes back in place: 1/64 of n k (HEALPix graphs have 0.07-0.9 %)."""
    size = n * k + n * k // 64 + 1024
    return np.empty(size, dtype=np.int32 if n < 2**31 - 1 else np.int64), np.empty(size)


def _symmetric_knn_csr(cols_buf: np.ndarray, weights_buf: np.ndarray, n: int, k: int) -> sp.csr_matrix:
    """:func:`_symmetric_csr` for k-NN rows: full rows of distinct neighbours, none a vertex itself,
    with weights that depend on the pair only (w_ij == w_ji bit for bit: the k-d tree's squared
    distance sums the same squares either way), held in the first n k entries of flat buffers
    (:func:`_knn_buffers`). Nearly every k-NN edge is listed both ways (all but 0.07 % at HEALPix
    nside 1024, k = 8), so W is the listed rows with the few one-way edges written back, in place
    where the buffers have room (W's arrays are then views of them), else merged into new arrays:
    the same matrix as the union by maximum of the rows and their transpose, without the transpose."""
    nk = n * k
    cols, weights = cols_buf[:nk].reshape(n, k), weights_buf[:nk].reshape(n, k)
    # The union by maximum's index dtype: scipy sizes it for nnz(A) + nnz(A.T).
    index_dtype = np.int32 if 2 * nk <= np.iinfo(np.int32).max else np.int64
    rows, pos = one_way_edges(cols)
    u = rows.size
    back_row = cols[rows, pos]                     # j gets i back, with the weight of i -> j
    order = np.argsort(back_row, kind="stable")   # by j, then i (nonzero lists i in order)
    back_row, back_col, back_w = back_row[order], rows[order], weights[rows, pos][order]
    del rows, pos, order
    if (u and nk + u > min(cols_buf.size, weights_buf.size)) or cols_buf.dtype != index_dtype:
        A = sp.csr_matrix((weights.reshape(-1), cols.reshape(-1).astype(index_dtype, copy=False),
                           np.arange(0, (n + 1) * k, k, dtype=index_dtype)), shape=(n, n))
        A.sort_indices()   # in place, row by row
        back = sp.csr_matrix((back_w, (back_row, back_col)), shape=(n, n))
        W = A.maximum(back)   # disjoint patterns: a merge of sorted rows; drops zeros, as the union did
        if W.indices.dtype != index_dtype:
            W.indices, W.indptr = W.indices.astype(index_dtype), W.indptr.astype(index_dtype)
    else:
        indptr = np.arange(0, (n + 1) * k, k, dtype=index_dtype)
        if u:
            _write_back(cols_buf, weights_buf, nk, k, back_row, back_col, back_w)
            indptr[1:] += np.cumsum(np.bincount(back_row, minlength=n), dtype=index_dtype)
        W = sp.csr_matrix((weights_buf[:nk + u], cols_buf[:nk + u], indptr), shape=(n, n))
        W.sort_indices()   # in place, row by row
        if not W.data.all():   # weights that underflowed to 0: the union by maximum dropped them
            W.eliminate_zeros()
    return W


def _write_back(cols_buf: np.ndarray, weights_buf: np.ndarray, nk: int, k: int, back_row: np.ndarray,
                back_col: np.ndarray, back_w: np.ndarray) -> None:
    """Insert the entries (back_row, back_col, back_w), sorted by row, at the ends of their rows in
    the full rows of k entries that fill the buffers' first nk: from the last row up, each stretch
    of rows moves right by the number of entries inserted before it (one move per row that gains)."""
    rows, first = np.unique(back_row, return_index=True)
    last = np.append(first[1:], len(back_row))
    end = nk   # rows from (r + 1) k to end move right past the entries of the rows up to r
    for r, lo, hi in zip(rows[::-1].tolist(), first[::-1].tolist(), last[::-1].tolist()):
        start = (r + 1) * k
        cols_buf[start + hi:end + hi] = cols_buf[start:end]        # overlapping: NumPy copies via a buffer
        weights_buf[start + hi:end + hi] = weights_buf[start:end]
        cols_buf[start + lo:start + hi] = back_col[lo:hi]
        weights_buf[start + lo:start + hi] = back_w[lo:hi]
        end = start


class SphereGraph:
    """The graph of a sampled sphere: a frozen value.

    Parameters
    ----------
    sampling : Sampling
        Where the vertices are.
    k : int
        Number of nearest neighbours per vertex before symmetrisation (8 for
        ``neighbours="healpix"``, 4 for ``"grid"``).
    kernel_width : "auto" | "tuned" | "mean" | "mean_distance" | float
        t of exp(-d^2/4t): tuned widths (:func:`graphsphere.kernel_widths.tuned_t`;
        an error where none exist for this sampling and k), the 2019
        heuristic ("mean": half the mean squared edge length), PyGSP's rule
        of the weather-station experiment ("mean_distance": sigma = the mean
        edge length, t = mean(d)^2 / 4 ln 2), a number, or "auto" (tuned
        where available, else "mean"). Computed per graph, so a model's
        coarse levels get their own. The grid graph weighs its edges
        1 / distance instead (``"auto"`` only).
    laplacian : "normalized" | "combinatorial"
        I - D^-1/2 W D^-1/2 or D - W.
    neighbours : "knn" | "healpix" | "grid"
        k-d tree neighbours, the native 8 HEALPix neighbours (2019 paper), or
        the 4-neighbour grid of a latitude-longitude grid.

    The graph is symmetrised by union: i~j if either is among the other's k
    nearest, with the weight of their distance (the same both ways). Two
    graphs are equal when their samplings and parameters are.
    """

    def __init__(self, sampling: Sampling, k: int = 8, kernel_width: str | float = "auto",
                 laplacian: str = "normalized", neighbours: str = "knn"):
        params = _check_params(sampling, k, kernel_width, laplacian, neighbours)
        W, t = _build(sampling, **params)
        self._setup(sampling, params, W, t, symmetric=True)

    def _setup(self, sampling: Sampling, params: dict[str, Any], W: sp.csr_matrix, t: float | None,
               symmetric: bool = False) -> None:
        for name, value in (("sampling", sampling), ("params", params), ("W", W), ("t", t), ("_derived", {})):
            object.__setattr__(self, name, value)
        W.data.setflags(write=False)
        # A built W is symmetric by construction (a union): its strong components are its components,
        # found without the transpose that directed=False builds (1.2 GB and ~2 s at nside 1024).
        ncomp, labels = (csgraph.connected_components(W, directed=True, connection="strong") if symmetric
                         else csgraph.connected_components(W, directed=False))
        object.__setattr__(self, "n_components", int(ncomp))
        if ncomp > 1:
            sizes = np.sort(np.bincount(labels))[::-1]
            shown = ", ".join(map(str, sizes[:10])) + (", ..." if ncomp > 10 else "")
            warnings.warn(
                f"the graph of {sampling.describe()} has {ncomp} connected components (sizes {shown}); "
                "signals cannot flow between them: increase k or check the footprint", stacklevel=4)

    def __setattr__(self, name, value):
        raise AttributeError(f"a SphereGraph is frozen: build a new one instead of setting {name!r}")

    # -- identity -----------------------------------------------------------
    @property
    def k(self) -> int:
        return self.params["k"]

    @property
    def kernel_width(self):
        return self.params["kernel_width"]

    @property
    def laplacian_type(self) -> str:
        return self.params["laplacian"]

    @property
    def neighbours(self) -> str:
        return self.params["neighbours"]

    @property
    def key(self) -> str:
        """A digest of the sampling's state and the parameters: equal graphs, equal keys."""
        return _key(self.sampling, self.params)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SphereGraph):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    # -- derived quantities -------------------------------------------------
    def derived(self, key, compute: Callable[[], Any]):
        """The value derived from this graph under ``key``, computed by
        ``compute()`` on first use and kept: the graph's one cache (its
        Laplacian, largest eigenvalue and rescaled operators live here, and
        the torch layers keep their copies of the operator here, per dtype
        and device).

        >>> import graphsphere as gs
        >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8)
        >>> g.derived("edges x 2", lambda: 2 * g.n_edges) == 2 * g.n_edges
        True
        """
        cache = self._derived
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    @property
    def npix(self) -> int:
        return self.sampling.npix

    @property
    def n_edges(self) -> int:
        """Number of undirected edges."""
        return self.W.nnz // 2

    @property
    def degree(self) -> np.ndarray:
        """Weighted degree of every vertex."""
        return self.derived("degree", lambda: np.asarray(self.W.sum(axis=1)).ravel())

    @property
    def L(self) -> sp.csr_matrix:
        """The Laplacian (normalized or combinatorial), symmetric CSR."""
        return self.derived("L", lambda: laplacian(self.W, self.laplacian_type))

    @property
    def lambda_max(self) -> float:
        """Largest Laplacian eigenvalue (Lanczos estimate, times 1.02 for safety
        as in the reference implementations, so that the spectrum of the
        rescaled operator stays inside [-1, 1])."""
        return self.derived("lambda_max", self._lambda_max)

    def _lambda_max(self) -> float:
        perm = canonical_order(self.sampling)
        L = self.L if perm is None else self.L[perm][:, perm]  # independent of the data's pixel order
        if self.npix <= 400:
            top = float(np.linalg.eigvalsh(L.toarray())[-1])
        else:
            top = lanczos_max_eigenvalue(L)
        return 1.02 * top

    @property
    def lmax(self) -> float:
        """Deprecated name of :attr:`lambda_max` (``lmax`` is a harmonic degree elsewhere)."""
        warnings.warn("SphereGraph.lmax is renamed lambda_max (lmax means a harmonic degree in graphsphere)",
                      FutureWarning, stacklevel=2)
        return self.lambda_max

    def operator(self, a: float = 1.0) -> sp.csr_matrix:
        """The Chebyshev-rescaled Laplacian (2a / lambda_max) L - I.

        ``a = 1`` maps the spectrum onto [-1, 1]; the 2019 cosmology code used
        ``a = 0.75``. Returns a symmetric CSR (float64), cached per ``a``.
        """
        if not 0 < a <= 1:
            raise ValueError(f"a must be in (0, 1], got {a}")

        def rescaled():
            op = sp.csr_matrix((2 * a / self.lambda_max) * self.L - sp.identity(self.npix, format="csr"))
            op.sort_indices()
            return op
        return self.derived(("operator", float(a)), rescaled)

    def to_edge_index(self):
        """``(edge_index, edge_weight)`` torch tensors for torch_geometric:
        edge_index is (2, 2*n_edges) int64 (both directions), weights float32.
        torch_geometric's ``ChebConv`` needs ``lambda_max=graph.lambda_max``
        (its default, 2, is another operator): :meth:`to_pyg` carries it."""
        import torch

        coo = self.W.tocoo()
        ei = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
        return ei, torch.from_numpy(coo.data.astype(np.float32))

    def to_pyg(self) -> dict:
        """The export for torch_geometric with the largest eigenvalue it needs:
        ``{"edge_index", "edge_weight", "lambda_max"}`` (:meth:`to_edge_index`
        and :attr:`lambda_max`, a float), by torch_geometric's own names, so that
        ``ChebConv(...)(x, **graph.to_pyg())`` filters as graphsphere's ChebConv
        does, and ``torch_geometric.data.Data(x=x, **graph.to_pyg())`` keeps it."""
        edge_index, edge_weight = self.to_edge_index()
        return {"edge_index": edge_index, "edge_weight": edge_weight, "lambda_max": float(self.lambda_max)}

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
        width = "1/distance" if self.t is None else f"{kw} (t={self.t:.4g})"
        return (f"SphereGraph({self.sampling.describe()}, k={self.k}, neighbours={self.neighbours}, "
                f"kernel_width={width}, laplacian={self.laplacian_type}, edges={self.n_edges})")

    def save(self, path: str | os.PathLike) -> None:
        """Save to a ``.npz`` file, atomically (a crash leaves no half file),
        with a checksum that :meth:`load` verifies."""
        arrays = {"W_data": self.W.data, "W_indices": self.W.indices, "W_indptr": self.W.indptr}
        meta = {"format": _FORMAT, "sampling": self.sampling.to_state(), "params": self.params, "t": self.t,
                "lambda_max": self._derived.get("lambda_max"), "n": self.npix, "sha256": _checksum(arrays)}
        with atomic_write(path) as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SphereGraph":
        """Load a graph saved with :meth:`save`; arrays come back bit for bit.

        A file that does not verify (truncated, overwritten) is an error naming it."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in f.files if k != "meta"}
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - zip, pickle or JSON damage: all mean "not readable"
            raise ValueError(f"{path} is not a readable graph file ({type(e).__name__}: {e}); delete it and "
                             "rebuild the graph") from None
        if meta.get("format", 1) == 1:  # files written before the sampling state existed
            state = dict(meta["sampling"], **{k[len("sampling_"):]: v for k, v in arrays.items()
                                               if k.startswith("sampling_")})
            params = {k: meta[k] for k in ("k", "kernel_width", "laplacian", "neighbours")}
            meta.update(sampling=state, params=params, lambda_max=meta.get("lmax"))
        elif meta.get("sha256") != _checksum({k: arrays[k] for k in ("W_data", "W_indices", "W_indptr")}):
            raise ValueError(f"{path} is damaged: its arrays do not match their checksum; delete it and rebuild "
                             "the graph")
        n = int(meta.get("n") or arrays["W_shape"][0])
        W = sp.csr_matrix((arrays["W_data"], arrays["W_indices"], arrays["W_indptr"]), shape=(n, n))
        sampling = from_state(meta["sampling"])
        params = _check_params(sampling, **meta["params"])
        g = cls.__new__(cls)
        g._setup(sampling, params, W, meta["t"])
        if meta.get("lambda_max") is not None:
            g._derived["lambda_max"] = float(meta["lambda_max"])
        return g


# -- construction ---------------------------------------------------------------
def _check_params(sampling, k, kernel_width, laplacian, neighbours) -> dict[str, Any]:
    if not isinstance(sampling, Sampling):
        raise TypeError(f"sampling must be a graphsphere Sampling, got {type(sampling).__name__}")
    if laplacian not in LAPLACIANS:
        raise ValueError(f"laplacian must be one of {LAPLACIANS}, got {laplacian!r}")
    if neighbours not in NEIGHBOURS:
        raise ValueError(f"neighbours must be one of {NEIGHBOURS}, got {neighbours!r}")
    if neighbours == "healpix" and not isinstance(sampling, HEALPix):
        raise ValueError("neighbours='healpix' needs a HEALPix sampling; use neighbours='knn'")
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    fixed = {"healpix": 8, "grid": 4}.get(neighbours)
    if fixed is not None and k != fixed:
        raise ValueError(f"the {neighbours} graph has k={fixed} neighbours, got k={k}")
    if not 1 <= k < sampling.npix:
        raise ValueError(f"k must be between 1 and npix - 1 = {sampling.npix - 1} for {sampling!r}, got k={k}")
    if isinstance(kernel_width, str):
        if kernel_width not in KERNEL_WIDTHS:
            raise ValueError(f"kernel_width must be one of {KERNEL_WIDTHS} or a positive number, got {kernel_width!r}")
    else:
        t = float(kernel_width)
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
        kernel_width = t
    if neighbours == "grid" and kernel_width != "auto":
        raise ValueError("the grid graph weighs its edges 1 / distance: leave kernel_width='auto'")
    return {"k": k, "kernel_width": kernel_width, "laplacian": laplacian, "neighbours": neighbours}


def _kernel_t(sampling, k: int, kernel_width, neighbours: str, cols: np.ndarray, sq: np.ndarray) -> float:
    if not isinstance(kernel_width, str):
        return float(kernel_width)

    def edges() -> np.ndarray:  # the squared lengths of the listed edges (a copy only where some are missing)
        return sq if (cols >= 0).all() else sq[cols >= 0]

    if kernel_width == "mean":
        return kernel_widths.heuristic_t(edges())
    if kernel_width == "mean_distance":
        return kernel_widths.mean_distance_t(edges())
    tuned = kernel_widths.tuned_t(sampling, k) if neighbours == "knn" else None
    if tuned is not None:
        return tuned
    if kernel_width == "auto":
        return kernel_widths.heuristic_t(edges())
    raise ValueError(
        f"no tuned kernel width for {sampling.describe()} with k={k} ({neighbours} neighbours); "
        "pass kernel_width='mean' (the heuristic) or a number")


def _build(sampling, k, kernel_width, laplacian, neighbours) -> tuple[sp.csr_matrix, float | None]:
    n = sampling.npix
    if neighbours == "grid":
        cols, dist = grid_neighbours(sampling)
        with np.errstate(divide="ignore"):
            return _symmetric_csr(cols, np.where(cols >= 0, 1 / dist, 0.0), n), None
    if neighbours == "healpix":
        cols, sq = healpix_neighbours(sampling)
    else:
        perm = canonical_order(sampling)
        cols_buf, sq_buf = _knn_buffers(n, k)   # W's arrays in the end (see _symmetric_knn_csr)
        cols, sq = cols_buf[:n * k].reshape(n, k), sq_buf[:n * k].reshape(n, k)
        if perm is None:
            knn(sampling.xyz, k, out=(cols, sq))
        else:  # neighbours found in pixel-id order, then listed in the data's order
            c, d = knn(sampling.xyz[perm], k)
            cols[perm], sq[perm] = perm[c], d
            del c, d
    t = _kernel_t(sampling, k, kernel_width, neighbours, cols, sq)
    weights = np.multiply(sq, -1 / (4 * t), out=sq)   # in place: at nside 2048 each (n, k) copy is 3 GB
    np.exp(weights, out=weights)
    if neighbours == "knn":
        del cols, sq, weights
        return _symmetric_knn_csr(cols_buf, sq_buf, n, k), t
    return _symmetric_csr(cols, weights, n), t


def _key(sampling: Sampling, params: dict[str, Any]) -> str:
    blob = json.dumps({"sampling": sampling.digest, "params": params, "format": _FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# -- the graph cache on disk ----------------------------------------------------------
#: Graphs with at least this many vertices are kept on disk by cached_graph: smaller
#: ones rebuild in milliseconds (HEALPix nside 32: 12k vertices, 0.05 s).
CACHE_MIN_NPIX = 20_000


def graph_cache_dir() -> Path:
    """Where :func:`cached_graph` keeps graphs: ``$GRAPHSPHERE_CACHE/graphs``
    (default ``~/.cache/graphsphere/graphs``)."""
    root = os.environ.get("GRAPHSPHERE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "graphsphere") / "graphs"


def cached_graph(sampling: Sampling, k: int = 8, kernel_width: str | float = "auto",
                 laplacian: str = "normalized", neighbours: str = "knn") -> SphereGraph:
    """``SphereGraph(sampling, ...)``, from the disk cache when it was built
    before (graphs of at least ``CACHE_MIN_NPIX`` vertices, with their largest
    eigenvalue). A cached file that does not verify is rebuilt, never used.

    >>> import graphsphere as gs
    >>> cached_graph(gs.sampling.HEALPix(nside=4), k=8) == gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
    True
    """
    params = _check_params(sampling, k, kernel_width, laplacian, neighbours)
    if sampling.npix < CACHE_MIN_NPIX:
        return SphereGraph(sampling, **params)
    path = graph_cache_dir() / f"{_key(sampling, params)}.npz"
    if path.exists():
        try:
            g = SphereGraph.load(path)
            if g.sampling == sampling and g.params == params:
                return g
        except (ValueError, KeyError, OSError) as e:
            warnings.warn(f"rebuilding a damaged cached graph ({e})", stacklevel=2)
    g = SphereGraph(sampling, **params)
    g.lambda_max  # noqa: B018 - computed once, saved with the graph
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        g.save(path)
    except OSError as e:  # a read-only cache is no reason to fail
        warnings.warn(f"could not cache the graph in {path.parent} ({e})", stacklevel=2)
    return g
