"""The k-NN graph stays bit for bit what it was: saved models' graphs depend on it.

Ties between equidistant neighbours are broken by the k-d tree's traversal order, so its parameters
pin which neighbour gets in; the threaded, blocked query and the transpose-free symmetrisation must
give exactly what one plain query and the union by maximum give.
"""

import hashlib
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

import graphsphere as gs
import graphsphere.graph as graph_module
import graphsphere.neighbours as neighbours_module
from graphsphere.neighbours import knn

S = gs.sampling


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _plain_knn(xyz, k):
    """One query of every point on the tree knn uses, self dropped as knn drops it."""
    tree = cKDTree(xyz, leafsize=32, balanced_tree=False, compact_nodes=False)
    dist, c = tree.query(xyz, k=k + 1, workers=1)
    self_pos = np.argmax(c == np.arange(len(xyz))[:, None], axis=1)
    fix = np.flatnonzero(self_pos != 0)
    c[fix, self_pos[fix]], dist[fix, self_pos[fix]] = c[fix, 0], dist[fix, 0]
    return c[:, 1:], dist[:, 1:] ** 2


def _ties_at_the_cut(xyz, k) -> int:
    """Rows whose k-th and (k+1)-th nearest others are equidistant: which one is listed is a tie-break."""
    d, _ = cKDTree(xyz, leafsize=32, balanced_tree=False, compact_nodes=False).query(xyz, k=k + 2)
    return int((d[:, k] == d[:, k + 1]).sum())


TIED = [("HEALPix(16)", lambda: S.HEALPix(16), 8, 12),
        ("Equiangular(16, 32)", lambda: S.Equiangular(nlat=16, nlon=32, poles="SOFT"), 5, 122),
        ("Icosahedral(3)", lambda: S.Icosahedral(level=3), 8, 49)]


@pytest.mark.parametrize("name, make, k, ties", TIED, ids=[t[0] for t in TIED])
def test_threaded_blocked_knn_is_one_plain_query_ties_included(name, make, k, ties, monkeypatch):
    xyz = make().xyz
    assert _ties_at_the_cut(xyz, k) == ties                  # the cut falls between equidistant points
    ref_cols, ref_sq = _plain_knn(xyz, k)
    monkeypatch.setattr(neighbours_module, "_KNN_BLOCK", 37)   # many blocks, split unevenly over 3 threads
    for workers in (1, 3, -1):
        cols, sq = knn(xyz, k, workers=workers)
        assert cols.dtype == np.int32 and sq.dtype == np.float64
        np.testing.assert_array_equal(cols, ref_cols)
        np.testing.assert_array_equal(sq, ref_sq)


def test_knn_with_duplicates_is_one_plain_query(monkeypatch):
    # Exact duplicates: self may come second, or not at all where more than k + 1 copies coincide.
    rng = np.random.default_rng(5)
    base = rng.standard_normal((60, 3))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    xyz = np.concatenate([base, base[:20], base[:5], base[:5], base[:5], np.repeat(base[40:41], 9, axis=0)])
    monkeypatch.setattr(neighbours_module, "_KNN_BLOCK", 16)
    ref_cols, ref_sq = _plain_knn(xyz, 6)
    first = cKDTree(xyz, leafsize=32, balanced_tree=False, compact_nodes=False).query(xyz, k=7)[1][:, 0]
    assert (first != np.arange(len(xyz))).any()                # the self fix-up is exercised
    cols, sq = knn(xyz, 6, workers=2)
    np.testing.assert_array_equal(cols, ref_cols)
    np.testing.assert_array_equal(sq, ref_sq)


@pytest.mark.parametrize("name, make, k, cols_digest, pattern_digest", [
    ("HEALPix(16)", lambda: S.HEALPix(16), 8, "b9d37dbeb493fe7c", "424c1685cff56f55"),
    ("Equiangular(16, 32)", lambda: S.Equiangular(nlat=16, nlon=32, poles="SOFT"), 5,
     "85a11b446f16643d", "9648884681c66520"),
    ("Icosahedral(3)", lambda: S.Icosahedral(level=3), 8, "90971340ee7a112b", "85490653f34baf24"),
])
def test_tie_breaks_are_those_of_the_graphs_saved_so_far(name, make, k, cols_digest, pattern_digest):
    # Digests of the neighbour lists and of W's pattern built by graphsphere before the threaded query
    # (2026-12-03): a k-d tree with another leafsize, balanced_tree or compact_nodes lists other
    # neighbours in all three (the sets differ, not only their order).
    s = make()
    assert _digest(knn(s.xyz, k)[0]) == cols_digest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # the Equiangular graph with k=5 has 4 components
        g = gs.SphereGraph(s, k=k, kernel_width="mean")
    assert g.W.indices.dtype == np.int32 and g.W.indptr.dtype == np.int32
    assert _digest(g.W.indices, g.W.indptr) == pattern_digest


def _union_by_maximum(cols, weights, n):
    """W by the definition: i ~ j if either lists the other, weight the larger, zeros dropped."""
    A = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), cols.shape[1]), cols.ravel())), shape=(n, n))
    W = A.maximum(A.T).tocsr()
    W.eliminate_zeros()
    W.sort_indices()
    return W


def _knn_rows(xyz, k, t):
    cols, sq = knn(xyz, k)
    return cols, np.exp(-sq / (4 * t))


def _in_buffers(cols, weights, room):
    n, k = cols.shape
    cbuf, wbuf = np.empty(n * k + room, dtype=cols.dtype), np.empty(n * k + room)
    cbuf[:n * k], wbuf[:n * k] = cols.ravel(), weights.ravel()
    return cbuf, wbuf


def _random_points(n, seed):
    xyz = np.random.default_rng(seed).standard_normal((n, 3))
    return xyz / np.linalg.norm(xyz, axis=1, keepdims=True)


@pytest.mark.parametrize("case", ["healpix", "healpix-no-room", "random", "random-room", "random-room-short",
                                  "underflow", "underflow-no-room", "all-mutual"])
def test_transpose_free_symmetrisation_is_the_union_by_maximum(case):
    if case.startswith("healpix"):
        cols, w = _knn_rows(S.HEALPix(8).xyz, 8, 0.01)
    elif case.startswith("random"):
        cols, w = _knn_rows(_random_points(2000, 3), 7, 1e-3)
    elif case.startswith("underflow"):                        # far neighbours' weights underflow to 0
        cols, w = _knn_rows(_random_points(500, 4), 12, 1e-5)
        assert 0 < (w == 0).sum() < w.size
    else:                                                     # k = n - 1: every edge listed both ways
        cols, w = _knn_rows(_random_points(9, 5), 8, 0.1)
    n, k = cols.shape
    ref = _union_by_maximum(cols, w, n)
    rows, pos = neighbours_module.one_way_edges(cols)
    one_way = len(rows)
    assert (one_way == 0) == (case == "all-mutual")
    room = {"healpix": n * k // 64, "random-room": one_way, "random-room-short": one_way - 1,
            "underflow": one_way}.get(case, 0)
    cbuf, wbuf = _in_buffers(cols, w, room)
    W = graph_module._symmetric_knn_csr(cbuf, wbuf, n, k)
    np.testing.assert_array_equal(W.indptr, ref.indptr)
    np.testing.assert_array_equal(W.indices, ref.indices)
    np.testing.assert_array_equal(W.data, ref.data)
    assert W.indices.dtype == np.int32 and W.indptr.dtype == np.int32 and W.has_sorted_indices
    if case != "underflow":   # (there, dropping most entries as zeros leaves W a trimmed copy)
        in_place = case in ("healpix", "random-room", "all-mutual")
        assert np.shares_memory(W.data, wbuf) == in_place      # written back in place where there is room


def test_one_way_edges_against_a_dense_check():
    cols, _ = knn(_random_points(400, 6), 5)
    listed = np.zeros((400, 400), dtype=bool)
    listed[np.repeat(np.arange(400), 5), cols.ravel()] = True
    expected = ~listed.T[np.repeat(np.arange(400), 5), cols.ravel()].reshape(400, 5)
    rows, pos = neighbours_module.one_way_edges(cols)
    got = np.zeros((400, 5), dtype=bool)
    got[rows, pos] = True
    np.testing.assert_array_equal(got, expected)
    assert 0 < len(rows) < cols.size
    assert (np.diff(rows) >= 0).all()


def test_knn_fills_given_arrays_and_checks_them():
    xyz = S.HEALPix(2).xyz
    cols, sq = np.empty((48, 4), dtype=np.int32), np.empty((48, 4))
    c, s = knn(xyz, 4, out=(cols, sq))
    assert c is cols and s is sq
    np.testing.assert_array_equal(cols, knn(xyz, 4)[0])
    with pytest.raises(ValueError, match=r"out must be an integer and a float64 array of shape \(48, 4\)"):
        knn(xyz, 4, out=(cols[:, :3], sq))
