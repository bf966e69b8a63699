"""SphereGraph behaviours that mutation testing (tools/mutation.py graph) found unguarded.

Each test checks a documented behaviour against an independent reference (healpy's neighbours,
great-circle distances from the longitudes and latitudes, dense eigenvalues, a hand computation).
"""

import warnings

import healpy as hp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

import graphsphere as gs
from graphsphere import graph as graph_mod
from graphsphere.graph import grid_neighbours, healpix_neighbours, knn, lanczos_max_eigenvalue


def _great_circle(lonlat_a, lonlat_b):
    """Haversine distance (radians) between (lon, lat) pairs in degrees: independent of the xyz path."""
    lon1, lat1, lon2, lat2 = map(np.radians, (lonlat_a[..., 0], lonlat_a[..., 1], lonlat_b[..., 0], lonlat_b[..., 1]))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


# ---- k nearest neighbours -------------------------------------------------------------------------

def test_knn_accepts_k_from_1_to_n_minus_1_and_names_the_range():
    xyz = np.eye(3)
    assert knn(xyz, 1)[0].shape == (3, 1) and knn(xyz, 2)[0].shape == (3, 2)
    for k in (0, 3):
        with pytest.raises(ValueError, match=r"between 1 and npix - 1 = 2, got k=" + str(k)):
            knn(xyz, k)


def test_knn_never_lists_a_point_as_its_own_neighbour_even_with_duplicates():
    # every point twice: the k-d tree may return the twin before the point itself
    rng = np.random.default_rng(0)
    xyz = rng.standard_normal((200, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    xyz = np.concatenate([xyz, xyz])
    cols, sq = knn(xyz, 3)
    n = len(xyz)
    assert not (cols == np.arange(n)[:, None]).any()
    twin = (np.arange(n) + n // 2) % n
    assert (cols[:, 0] == twin).all() and (sq[:, 0] == 0).all()   # the twin, at distance 0, comes first
    brute = ((xyz[:, None] - xyz[None]) ** 2).sum(-1)
    np.testing.assert_allclose(sq, np.take_along_axis(brute, cols, 1), atol=1e-12)


# ---- native HEALPix and grid neighbours ------------------------------------------------------------

def _healpix_reference_W(s, t):
    """W of the native graph from healpy alone: neighbours inside the footprint, Gaussian weights."""
    ids = np.arange(s.npix) if s.indices is None else np.asarray(s.indices)
    position = {int(p): i for i, p in enumerate(ids)}
    vec = np.array(hp.pix2vec(s.nside, ids, nest=s.nest)).T
    W = np.zeros((len(ids), len(ids)))
    for i, p in enumerate(ids):
        for q in hp.get_all_neighbours(s.nside, int(p), nest=s.nest):
            j = position.get(int(q))
            if q >= 0 and j is not None:
                W[i, j] = W[j, i] = np.exp(-((vec[i] - vec[j]) ** 2).sum() / (4 * t))
    return W


@pytest.mark.parametrize("nest", [True, False])
def test_native_neighbours_of_a_shuffled_partial_sky_match_healpy(nest):
    rng = np.random.default_rng(3)
    ids = rng.permutation(np.arange(100, 300))          # a patch, listed in no particular order
    s = gs.sampling.HEALPix(nside=8, indices=ids, nest=nest)
    g = gs.SphereGraph(s, k=8, neighbours="healpix", kernel_width=0.01)
    np.testing.assert_allclose(g.W.toarray(), _healpix_reference_W(s, 0.01), rtol=1e-12, atol=0)
    cols, sq = healpix_neighbours(s)
    assert cols.min() == -1 and set(np.unique(cols[cols < 0])) == {-1}   # outside the patch: -1


def test_native_neighbours_take_the_heuristic_width_not_a_knn_tuned_one():
    # widths were tuned for k-NN graphs only: "auto" on the native graph is the 2019 heuristic
    s = gs.sampling.HEALPix(nside=32)
    auto = gs.SphereGraph(s, k=8, neighbours="healpix")
    mean = gs.SphereGraph(s, k=8, neighbours="healpix", kernel_width="mean")
    assert auto.t == mean.t
    assert auto.t != pytest.approx(gs.kernel_widths.tuned_t(s, 8), rel=0.05)


def _grid_reference(s):
    """Neighbours E, W, N, S by hand on the (lat, lon) grid, great-circle lengths from lonlat."""
    nlat, nlon = s.grid_shape
    lonlat = s.lonlat
    W = np.zeros((s.npix, s.npix))
    for j in range(nlat):
        for i in range(nlon):
            p = j * nlon + i
            for q in (j * nlon + (i + 1) % nlon, j * nlon + (i - 1) % nlon,
                      (j - 1) * nlon + i if j > 0 else None, (j + 1) * nlon + i if j < nlat - 1 else None):
                if q is None:
                    continue
                d = _great_circle(lonlat[p], lonlat[q])
                if d > 1e-9:           # pixels that coincide (a pole row) are not joined
                    W[p, q] = W[q, p] = 1 / d
    return W


@pytest.mark.parametrize("poles", ["DH", "SOFT"])
def test_grid_graph_matches_a_hand_built_grid(poles):
    s = gs.sampling.Equiangular(6, 8, poles=poles)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no division-by-zero warning for the missing neighbours
        g = gs.SphereGraph(s, k=4, neighbours="grid")
    np.testing.assert_allclose(g.W.toarray(), _grid_reference(s), rtol=1e-9, atol=0)
    cols, dist = grid_neighbours(s)
    missing = cols < 0
    assert set(np.unique(cols[missing])) == {-1}
    nlon = 8
    assert missing[:nlon, 2].all() and missing[-nlon:, 3].all()          # no north of row 0, no south of the last
    valid = ~missing
    ref = _great_circle(s.lonlat[np.repeat(np.arange(s.npix), 4).reshape(-1, 4)][valid],
                        s.lonlat[cols[valid]])
    np.testing.assert_allclose(dist[valid], ref, rtol=1e-9)


def test_grid_graph_needs_three_longitudes_and_no_width():
    g = gs.SphereGraph(gs.sampling.Equiangular(4, 3, poles="SOFT"), k=4, neighbours="grid")
    assert g.npix == 12
    with pytest.raises(ValueError, match="at least 3 longitudes"):
        grid_neighbours(gs.sampling.Equiangular(4, 2, poles="SOFT"))
    with pytest.raises(ValueError, match="1 / distance: leave kernel_width='auto'"):
        gs.SphereGraph(gs.sampling.Equiangular(4, 8), k=4, neighbours="grid", kernel_width="mean")
    with pytest.raises(TypeError, match="latitude-longitude grid"):
        grid_neighbours(gs.sampling.HEALPix(nside=2))


# ---- parameters -------------------------------------------------------------------------------------

def test_parameters_are_checked_with_errors_that_name_the_problem():
    s = gs.sampling.HEALPix(nside=1)
    assert gs.SphereGraph(s).k == 8                          # the documented default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # k=1 on 12 pixels: several components
        assert gs.SphereGraph(s, k=1).k == 1 and gs.SphereGraph(s, k=11).k == 11
    with pytest.raises(ValueError, match=r"npix - 1 = 11 for HEALPix\(nside=1"):
        gs.SphereGraph(s, k=12)
    with pytest.raises(ValueError, match=r"npix - 1 = 11 for HEALPix\(nside=1"):
        gs.SphereGraph(s, k=0)
    for k in (2.5, True):
        with pytest.raises(ValueError, match="k must be an integer"):
            gs.SphereGraph(s, k=k)
    with pytest.raises(ValueError, match="kernel_width must be a positive number"):
        gs.SphereGraph(s, k=4, kernel_width=0.0)
    with pytest.raises(ValueError, match="neighbours must be one of"):
        gs.SphereGraph(s, k=4, neighbours="delaunay")
    with pytest.raises(ValueError, match="needs a HEALPix sampling"):
        gs.SphereGraph(gs.sampling.Equiangular(4, 8), k=8, neighbours="healpix")
    with pytest.raises(ValueError, match="the healpix graph has k=8 neighbours, got k=9"):
        gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=9, neighbours="healpix")
    with pytest.raises(ValueError, match="the grid graph has k=4 neighbours, got k=8"):
        gs.SphereGraph(gs.sampling.Equiangular(4, 8), k=8, neighbours="grid")
    with pytest.raises(TypeError, match="got ndarray"):
        gs.SphereGraph(np.zeros((10, 3)), k=4)
    with pytest.raises(ValueError, match="laplacian must be one of"):
        graph_mod.laplacian(sp.eye(3, format="csr"), "random-walk")


def test_graphs_that_differ_in_any_parameter_differ_in_key():
    s = gs.sampling.HEALPix(nside=2)
    base = gs.SphereGraph(s, k=8)
    others = [gs.SphereGraph(s, k=7), gs.SphereGraph(s, k=8, kernel_width="mean"),
              gs.SphereGraph(s, k=8, laplacian="combinatorial"), gs.SphereGraph(gs.sampling.HEALPix(nside=2, nest=False))]
    assert len({g.key for g in [base, *others]}) == 5
    assert all(g != base for g in others) and gs.SphereGraph(s, k=8) == base
    assert hash(gs.SphereGraph(s, k=8)) == hash(base) and {base: 1}[gs.SphereGraph(s, k=8)] == 1


def test_repr_says_how_the_graph_was_built():
    r = repr(gs.SphereGraph(gs.sampling.HEALPix(nside=1), k=4, kernel_width=0.01))
    assert r == ("SphereGraph(HEALPix(nside=1, NESTED, full sky), k=4, neighbours=knn, "
                 "kernel_width=custom (t=0.01), laplacian=normalized, edges=24)")
    assert "kernel_width=mean (t=" in repr(gs.SphereGraph(gs.sampling.HEALPix(nside=1), k=4, kernel_width="mean"))
    assert "kernel_width=1/distance," in repr(gs.SphereGraph(gs.sampling.Equiangular(4, 8), k=4, neighbours="grid"))


# ---- the frozen value, components, pixel order -------------------------------------------------------

def test_weights_are_read_only_and_a_connected_graph_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8)
    assert g.n_components == 1
    with pytest.raises(ValueError, match="read-only"):
        g.W.data[0] = 1.0
    with pytest.raises(AttributeError, match="frozen"):
        g.t = 1.0


def _islands(count, nside=16):
    """`count` groups of 4 NESTED siblings inside distinct base pixels: with k=3, one component each."""
    parents = np.arange(count) * (nside // 2) ** 2 + 12        # pixel 12 of a base pixel is inside it
    return gs.sampling.HEALPix(nside=nside, indices=(4 * parents[:, None] + np.arange(4)).ravel())


def test_component_warning_lists_sizes_largest_first_and_at_most_ten():
    ids = np.concatenate([np.arange(0, 64), np.arange(640, 656)])     # 64 pixels, then a far island of 16
    with pytest.warns(UserWarning, match=r"2 connected components \(sizes 64, 16\)"):
        gs.SphereGraph(gs.sampling.HEALPix(nside=8, indices=ids), k=8)
    with pytest.warns(UserWarning, match=r"10 connected components \(sizes 4(, 4){9}\);"):
        gs.SphereGraph(_islands(10), k=3)
    with pytest.warns(UserWarning, match=r"11 connected components \(sizes 4(, 4){9}, \.\.\.\);"):
        gs.SphereGraph(_islands(11), k=3)


def test_the_listed_order_of_a_partial_sky_does_not_change_its_graph():
    # k-NN breaks distance ties by position, Lanczos starts from a vector by position: both run in
    # pixel-id order, so a shuffled listing gives the same graph, permuted, and the same lambda_max
    ids = np.arange(1024, 1536)                      # two base pixels at nside 16
    perm = np.random.default_rng(1).permutation(len(ids))
    tidy = gs.SphereGraph(gs.sampling.HEALPix(nside=16, indices=ids), k=20, kernel_width=0.003)
    shuffled = gs.SphereGraph(gs.sampling.HEALPix(nside=16, indices=ids[perm]), k=20, kernel_width=0.003)
    assert abs(shuffled.W - tidy.W[perm][:, perm]).max() == 0
    assert shuffled.lambda_max == tidy.lambda_max


def test_lambda_max_of_a_small_graph_is_the_dense_largest_eigenvalue():
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8, laplacian="combinatorial")   # 192 vertices: dense path
    ev = np.linalg.eigvalsh(g.L.toarray())
    assert g.lambda_max == pytest.approx(1.02 * ev[-1], rel=1e-12)


def test_operator_takes_a_in_0_1():
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8)
    for a in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match=r"a must be in \(0, 1\]"):
            g.operator(a)
    ref = (2 * 0.5 / g.lambda_max) * g.L.toarray() - np.eye(g.npix)
    np.testing.assert_allclose(g.operator(0.5).toarray(), ref, atol=1e-15)


# ---- Lanczos ----------------------------------------------------------------------------------------

def test_lanczos_matches_dense_eigenvalues_and_is_reproducible():
    rng = np.random.default_rng(5)
    for n in (6, 30, 200):
        B = sp.random(n, n, density=0.2, random_state=rng)
        A = sp.csr_matrix(B + B.T + sp.diags(rng.uniform(0, 3, n)))
        top = np.linalg.eigvalsh(A.toarray())[-1]
        est = lanczos_max_eigenvalue(A, steps=n, rtol=1e-12)
        assert est == pytest.approx(top, rel=1e-8)
        assert lanczos_max_eigenvalue(A) == lanczos_max_eigenvalue(A)     # seeded: bit for bit
    # an invariant Krylov space found early (3 distinct eigenvalues): stops cleanly, exact
    A = sp.diags(np.repeat([1.0, 2.0, 5.0], 20)).tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lanczos_max_eigenvalue(A) == pytest.approx(5.0, rel=1e-12)
    assert lanczos_max_eigenvalue(sp.identity(50, format="csr")) == pytest.approx(1.0, rel=1e-14)


class _CountingOperator:
    """A matrix that counts its products with vectors."""

    def __init__(self, A):
        self.A, self.shape, self.products = A, A.shape, 0

    def __matmul__(self, v):
        self.products += 1
        return self.A @ v


def test_lanczos_stops_once_the_estimate_has_settled():
    # the point of the plain Lanczos: a few dozen products, not the 80-step budget (33 measured here)
    L = gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8).L
    counted = _CountingOperator(L)
    estimate = lanczos_max_eigenvalue(counted)
    assert counted.products <= 50
    top = eigsh(L, k=1, which="LA", return_eigenvectors=False)[0]                  # ARPACK as the reference
    assert estimate == pytest.approx(top, rel=2e-4)                                   # rtol 1e-4 per 10 steps


# ---- persistence ------------------------------------------------------------------------------------

def _rewrite(path, **changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_load_refuses_arrays_that_do_not_match_their_checksum(tmp_path):
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8)
    path = tmp_path / "g.npz"
    with np.load(g.save(path) or path) as f:
        data, indices, indptr = f["W_data"], f["W_indices"], f["W_indptr"]
    damaged = {"a changed weight": {"W_data": data * (1 + 1e-9)},
               "same bytes, other dtype": {"W_data": data.view(np.int64)},
               "same bytes, other shape": {"W_indptr": indptr.reshape(1, -1)},
               "an extra entry": {"W_indices": np.append(indices, indices[:1])}}
    for what, change in damaged.items():
        g.save(path)
        _rewrite(path, **change)
        with pytest.raises(ValueError, match="damaged: its arrays do not match their checksum"):
            gs.SphereGraph.load(path)
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"not a readable graph file \("):
        gs.SphereGraph.load(path)


def test_load_takes_no_pickles(tmp_path):
    # a graph file holds arrays and JSON only: an object array (a pickle) is refused, not unpickled
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8)
    path = tmp_path / "g.npz"
    g.save(path)
    _rewrite(path, W_data=np.array([object()] * len(g.W.data), dtype=object))
    with pytest.raises(ValueError, match="not a readable graph file"):
        gs.SphereGraph.load(path)


# ---- the disk cache ---------------------------------------------------------------------------------

def test_graph_cache_dir_default_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAPHSPHERE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert graph_mod.graph_cache_dir() == tmp_path / ".cache" / "graphsphere" / "graphs"
    monkeypatch.setenv("GRAPHSPHERE_CACHE", str(tmp_path / "elsewhere"))
    assert graph_mod.graph_cache_dir() == tmp_path / "elsewhere" / "graphs"


def test_cached_graph_writes_one_file_per_graph_and_checks_what_it_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSPHERE_CACHE", str(tmp_path / "not" / "yet" / "there"))
    monkeypatch.setattr(graph_mod, "CACHE_MIN_NPIX", 48)
    s = gs.sampling.HEALPix(nside=2)
    assert graph_mod.cached_graph(gs.sampling.HEALPix(nside=1), k=5).k == 5   # below the threshold: built, not kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # the folders are made, a second file joins the first
        a = graph_mod.cached_graph(s, k=8)
        b = graph_mod.cached_graph(s, k=20, laplacian="combinatorial")
    assert a == gs.SphereGraph(s, k=8) and b == gs.SphereGraph(s, k=20, laplacian="combinatorial")
    files = sorted(graph_mod.graph_cache_dir().iterdir())
    assert [f.name for f in files] == sorted([f"{a.key}.npz", f"{b.key}.npz"])
    # a file under another graph's name (copied by hand) is not taken for that graph
    b.save(graph_mod.graph_cache_dir() / f"{a.key}.npz")
    again = graph_mod.cached_graph(s, k=8)
    assert again == a and again.k == 8 and again.laplacian_type == "normalized"


def test_cached_graph_warns_and_still_builds_when_it_cannot_write(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("GRAPHSPHERE_CACHE", str(blocker))       # the cache folder would be inside a file
    monkeypatch.setattr(graph_mod, "CACHE_MIN_NPIX", 48)
    s = gs.sampling.HEALPix(nside=2)
    with pytest.warns(UserWarning, match="could not cache the graph in"):
        g = graph_mod.cached_graph(s, k=8)
    assert g == gs.SphereGraph(s, k=8)


# ---- summary statistics ----------------------------------------------------------------------------

def test_stats_against_a_dense_computation_and_great_circles():
    # the demo prints these: every entry against its own independent computation
    s = gs.sampling.HEALPix(nside=4, indices=np.arange(60, 190))   # a partial sky: ragged neighbour counts
    g = gs.SphereGraph(s, k=6, kernel_width=0.02)
    W = g.W.toarray()
    i, j = np.nonzero(np.triu(W, 1))
    arc = np.degrees(_great_circle(s.lonlat[i], s.lonlat[j]))
    counts = (W > 0).sum(1)
    n_components = sp.csgraph.connected_components(sp.csr_matrix(W), directed=False)[0]
    expected = {"npix": 130, "edges": len(i), "neighbours_min": int(counts.min()),
                "neighbours_mean": counts.mean(), "neighbours_max": int(counts.max()),
                "edge_deg_mean": arc.mean(), "edge_deg_max": arc.max(), "t": 0.02,
                "weight_min": W[W > 0].min(), "components": n_components}
    stats = g.stats()
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-9), key
    assert isinstance(stats["neighbours_min"], int) and isinstance(stats["edges"], int)
    assert stats["neighbours_min"] < stats["neighbours_max"]       # the test sees ragged counts


@pytest.mark.parametrize("neighbours", ["knn", "healpix"])
def test_weights_are_stored_with_32_bit_indices(neighbours):
    # half the index memory of the default int64: what lets nside 2048 (450 M stored entries) fit
    s = gs.sampling.HEALPix(nside=4, indices=np.arange(40, 170))
    W = gs.SphereGraph(s, k=8, neighbours=neighbours).W
    assert W.indices.dtype == np.int32 and W.indptr.dtype == np.int32
    assert W.has_sorted_indices


def test_laplacians_of_a_graph_whose_last_vertex_is_isolated():
    # nothing stored in the last row or column: the shape must come from W, not from its entries,
    # and the isolated degree must not raise a division warning
    W = sp.csr_matrix(np.array([[0, 2.0, 0], [2.0, 0, 0], [0, 0, 0]]))
    W.eliminate_zeros()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalized = graph_mod.laplacian(W).toarray()
        combinatorial = graph_mod.laplacian(W, "combinatorial").toarray()
    np.testing.assert_allclose(normalized, [[1, -1, 0], [-1, 1, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_array_equal(combinatorial, [[2, -2, 0], [-2, 2, 0], [0, 0, 0]])
