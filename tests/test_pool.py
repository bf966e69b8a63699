"""Pooling layers against independent references: healpy.ud_grade, NumPy
reshapes, brute-force loops over the assignment, and geometry."""

import healpy as hp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

import graphsphere as gs
from graphsphere.nn.functional import pooling as F
from graphsphere.nn.pool import GlobalPool, Pool, Unpool

HEALPix = gs.sampling.HEALPix


# Tiny tensors: threads only add overhead (and contend on a shared machine).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sampling(name):
    """A small sampling of each hierarchical kind (skipped until it exists)."""
    if name == "healpix":
        return HEALPix(nside=8)
    if name == "healpix_partial":
        return HEALPix(nside=8, indices=np.arange(64, 128))
    if name == "healpix_shuffled":  # partial sky in a non-sorted data order: the "gather" layout
        ids = np.random.default_rng(0).permutation(np.arange(128, 256))
        return HEALPix(nside=8, indices=ids)
    if name == "healpix_ring":
        return HEALPix(nside=8, nest=False)
    if name == "equiangular":
        return pytest.importorskip("graphsphere.sampling.equiangular").Equiangular(8, 16)
    if name == "icosahedral":
        return pytest.importorskip("graphsphere.sampling.icosahedral").Icosahedral(2)
    if name == "points":
        Points = pytest.importorskip("graphsphere.sampling.points").Points
        rng = np.random.default_rng(3)
        return Points(lon=rng.uniform(0, 360, 300), lat=np.rad2deg(np.arcsin(rng.uniform(-1, 1, 300))))
    raise KeyError(name)


ALL = ["healpix", "healpix_partial", "healpix_shuffled", "healpix_ring", "equiangular", "icosahedral", "points"]


def _brute_force(assign, x, mode):
    """Loop over coarse vertices of the SciPy assignment: weighted mean or max."""
    A = assign.tocsr()
    out = np.empty((x.shape[0], A.shape[0], x.shape[2]))
    for j in range(A.shape[0]):
        cols = A.indices[A.indptr[j]:A.indptr[j + 1]]
        w = A.data[A.indptr[j]:A.indptr[j + 1]]
        if mode == "avg":
            out[:, j] = np.einsum("i,bic->bc", w, x[:, cols]) / w.sum()
        else:
            out[:, j] = x[:, cols].max(axis=1)
    return out


# -- against independent references -----------------------------------------------------------------
def test_healpix_avg_equals_healpy_ud_grade():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 12 * 16**2))  # three maps as channels
    x = torch.from_numpy(maps.T[None])  # [1, V, 3]
    s = HEALPix(nside=16)
    pool1, pool2 = Pool(s), Pool(HEALPix(nside=8))
    assert pool1.layout == "blocks"
    y1, y2 = pool1(x), pool2(pool1(x))
    for c in range(3):
        ref8 = hp.ud_grade(maps[c], 8, order_in="NESTED", order_out="NESTED")
        ref4 = hp.ud_grade(maps[c], 4, order_in="NESTED", order_out="NESTED")
        np.testing.assert_allclose(y1[0, :, c].numpy(), ref8, rtol=0, atol=1e-12)
        np.testing.assert_allclose(y2[0, :, c].numpy(), ref4, rtol=0, atol=1e-12)


def test_healpix_ring_order_pools_like_ud_grade_in_ring():
    m = np.random.default_rng(1).standard_normal(768)
    y = Pool(HEALPix(nside=8, nest=False))(torch.from_numpy(m)[None, :, None])
    np.testing.assert_allclose(y[0, :, 0].numpy(), hp.ud_grade(m, 4, order_in="RING", order_out="RING"),
                               atol=1e-12)


def test_healpix_partial_sky_matches_full_sky():
    m = np.random.default_rng(2).standard_normal(12 * 8**2)
    ids = np.arange(64, 192)  # two base pixels' worth of whole parents
    coarse, _ = HEALPix(nside=8, indices=ids).coarsen()
    for mode, ref in [("avg", hp.ud_grade(m, 4, order_in="NESTED", order_out="NESTED")),
                      ("max", m.reshape(-1, 4).max(axis=1))]:
        y = Pool(HEALPix(nside=8, indices=ids), mode)(torch.from_numpy(m[ids])[None, :, None])
        np.testing.assert_allclose(y[0, :, 0].numpy(), ref[coarse.indices], atol=1e-12)


def test_equiangular_avg_equals_2x2_block_mean():
    s = _sampling("equiangular")
    x = np.random.default_rng(3).standard_normal((2, s.nlat * s.nlon, 5))
    grid = x.reshape(2, s.nlat // 2, 2, s.nlon // 2, 2, 5)
    for mode, ref in [("avg", grid.mean(axis=(2, 4))), ("max", grid.max(axis=(2, 4)))]:
        y = Pool(s, mode)(torch.from_numpy(x))
        np.testing.assert_allclose(y.numpy(), ref.reshape(2, -1, 5), atol=1e-12)


def test_icosahedral_avg_is_weighted_cell_mean():
    """Coarse vertex j (kept as fine vertex j) averages itself with half of
    each midpoint of its coarse edges, i.e. its 6 (5 at the 12 icosahedron
    corners) nearest fine vertices: found here by a k-d tree."""
    s = _sampling("icosahedral")
    coarse, _ = s.coarsen()
    x = np.random.default_rng(4).standard_normal(s.npix)
    y = Pool(s, "avg")(torch.from_numpy(x)[None, :, None])[0, :, 0].numpy()
    _, nn = cKDTree(s.xyz).query(s.xyz[:coarse.npix], k=7)
    for j in range(coarse.npix):
        deg = 5 if j < 12 else 6
        mids = nn[j, 1:deg + 1]
        assert np.allclose(s.xyz[j], coarse.xyz[j])
        ref = (x[j] + 0.5 * x[mids].sum()) / (1 + 0.5 * deg)
        assert y[j] == pytest.approx(ref, abs=1e-12)
    # Not plain subsampling.
    assert not np.allclose(y, x[:coarse.npix])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_pool_equals_brute_force(name, mode):
    s = _sampling(name)
    _, assign = s.coarsen()
    x = np.random.default_rng(5).standard_normal((2, s.npix, 3))
    out = Pool(s, mode, return_indices=mode == "max")(torch.from_numpy(x))
    y = out[0] if mode == "max" else out
    np.testing.assert_allclose(y.numpy(), _brute_force(assign, x, mode), atol=1e-12)
    if mode == "max":  # indices point at a fine vertex of the right cell holding the maximum
        idx = out[1].numpy()
        np.testing.assert_array_equal(np.take_along_axis(x, idx, axis=1), y.numpy())
        A = assign.tocsr()
        rows = np.broadcast_to(np.arange(A.shape[0])[None, :, None], idx.shape)
        assert np.all(np.asarray(A[rows.ravel(), idx.ravel()]).ravel() > 0)


@pytest.mark.parametrize("name", ["healpix", "icosahedral"])
def test_layouts_agree(name):
    """The reshape, gather and sparse kernels compute the same thing."""
    s = _sampling(name)
    plan = F.pooling_plan(s.coarsen()[1])
    A = plan.assign
    x = torch.randn(2, s.npix, 4, dtype=torch.float64)
    rows = torch.from_numpy(np.repeat(np.arange(A.shape[0]), np.diff(A.indptr)))
    cols = torch.from_numpy(A.indices.astype(np.int64))
    w = torch.from_numpy(A.data / np.asarray(A.sum(axis=1)).ravel()[rows.numpy()])
    index, weights = (torch.from_numpy(a) for a in F.padded_rows(sp.diags(1 / np.asarray(A.sum(1)).ravel()) @ A))
    avg = [F.gather_pool(x, index, "avg", weights), F.sparse_pool(x, rows, cols, w, plan.n_coarse, "avg")]
    mx = [F.gather_pool(x, index, "max", return_indices=True),
          F.sparse_pool(x, rows, cols, w, plan.n_coarse, "max", return_indices=True)]
    if plan.layout == "blocks":
        avg.append(F.block_pool(x, 4, "avg"))
        mx.append(F.block_pool(x, 4, "max", return_indices=True))
    for a in avg[1:]:
        torch.testing.assert_close(a, avg[0], rtol=0, atol=1e-14)
    for y, idx in mx[1:]:
        assert torch.equal(y, mx[0][0]) and torch.equal(idx, mx[0][1])
    # Without indices, max uses amax (no gradient needed) or max (gradient needed): same values.
    xg = x.clone().requires_grad_()
    for y in [F.gather_pool(x, index, "max"), F.sparse_pool(x, rows, cols, w, plan.n_coarse, "max"),
              F.gather_pool(xg, index, "max"), F.sparse_pool(xg, rows, cols, w, plan.n_coarse, "max")]:
        assert torch.equal(y, mx[0][0])
    c = torch.randn(2, plan.n_coarse, 3, dtype=torch.float64)
    torch.testing.assert_close(Unpool(s)(c), F.sparse_unpool(c, rows, cols, torch.from_numpy(A.data), s.npix),
                               rtol=0, atol=1e-14)


def test_layout_detection():
    assert Pool(_sampling("healpix")).layout == "blocks"
    assert Pool(_sampling("healpix_partial")).layout == "blocks"
    assert Pool(_sampling("healpix_shuffled")).layout == "gather"
    assert Pool(_sampling("equiangular")).layout == "gather"
    ico = Pool(_sampling("icosahedral"))
    assert ico.layout == "gather" and ico.fan_in == 7  # 6 at the 12 corners, padded
    assert Unpool(_sampling("icosahedral")).parent.shape[1] == 2  # a midpoint has two coarse cells
    points = Pool(_sampling("points"))
    assert points.layout == "gather" and points.fan_in == 4    # balanced clusters: 4 points each
    assert Pool(assign=_uneven_assignment()).layout == "sparse"  # fan-ins 25 and 5: padding would cost 4x


def _uneven_assignment():
    """40 fine vertices in 4 clusters of 25, 5, 5 and 5 (the sparse layout's case)."""
    rows = np.concatenate([np.zeros(25), np.repeat([1, 2, 3], 5)]).astype(int)
    return sp.csr_matrix((np.ones(40), (rows, np.arange(40))), shape=(4, 40))


def test_sparse_layout_gradients_and_values():
    A = _uneven_assignment()
    x = torch.randn(2, 40, 3, dtype=torch.float64, requires_grad=True)
    for mode in ["avg", "max"]:
        pool = Pool(mode=mode, assign=A)
        assert pool.layout == "sparse"
        assert torch.autograd.gradcheck(pool, (x,), eps=1e-6, atol=1e-7)
    ref = torch.stack([x[:, :25].mean(1), x[:, 25:30].mean(1), x[:, 30:35].mean(1), x[:, 35:].mean(1)], dim=1)
    torch.testing.assert_close(Pool(mode="avg", assign=A)(x), ref)


# -- unpooling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["healpix", "healpix_shuffled", "equiangular", "points"])
def test_unpool_pool_identity_on_piecewise_constant(name):
    """On a partition, a map constant on each coarse cell survives pool then
    unpool (both modes), and repeat-unpooling is the assignment's transpose."""
    s = _sampling(name)
    coarse, assign = s.coarsen()
    c = np.random.default_rng(6).standard_normal((2, coarse.npix, 3))
    x_np = np.einsum("ji,bjc->bic", assign.toarray(), c)  # piecewise constant, independent of Unpool
    x = torch.from_numpy(x_np)
    torch.testing.assert_close(Unpool(s)(torch.from_numpy(c)), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(Unpool(s)(Pool(s, "avg")(x)), x, rtol=0, atol=1e-12)
    y, idx = Pool(s, "max", return_indices=True)(x)
    torch.testing.assert_close(y, torch.from_numpy(c), rtol=0, atol=1e-12)
    # Max-unpooling puts each value back at its argmax; pooling again recovers it.
    xp = x.abs() + 1
    y, idx = Pool(s, "max", return_indices=True)(xp)
    z = Unpool(s, "max")(y, idx)
    assert int((z != 0).sum()) == y.numel()
    torch.testing.assert_close(Pool(s, "max")(z), y, rtol=0, atol=0)


def test_icosahedral_unpool_is_weighted_transpose():
    s = _sampling("icosahedral")
    coarse, assign = s.coarsen()
    c = np.random.default_rng(7).standard_normal((1, coarse.npix, 2))
    z = Unpool(s)(torch.from_numpy(c)).numpy()
    np.testing.assert_allclose(z, np.einsum("ji,bjc->bic", assign.toarray(), c), atol=1e-12)
    # Kept vertices get their own value; midpoints the mean of their two endpoints.
    np.testing.assert_allclose(z[0, :coarse.npix], c[0], atol=1e-12)
    ones = torch.ones(1, coarse.npix, 1, dtype=torch.float64)
    torch.testing.assert_close(Pool(s)(Unpool(s)(ones)), ones)
    # Max-unpooling where cells overlap: a shared vertex gets the larger value.
    x = torch.randn(2, s.npix, 3, dtype=torch.float64)
    y, idx = Pool(s, "max", return_indices=True)(x)
    z = Unpool(s, "max")(y, idx)
    torch.testing.assert_close(z.gather(1, idx), y)


# -- gradients, state, devices ------------------------------------------------------------------------
def _small(name):
    """Samplings of a few dozen vertices, for gradcheck (one pass per input)."""
    if name == "icosahedral":
        return pytest.importorskip("graphsphere.sampling.icosahedral").Icosahedral(1)
    if name == "healpix_shuffled":
        return HEALPix(nside=4, indices=np.random.default_rng(0).permutation(np.arange(16, 48)))
    Points = pytest.importorskip("graphsphere.sampling.points").Points
    rng = np.random.default_rng(4)  # clusters uneven enough for the sparse layout
    return Points(lon=rng.uniform(0, 360, 80), lat=rng.uniform(-60, 60, 80))


@pytest.mark.parametrize("name", ["icosahedral", "healpix_shuffled", "points"])
def test_gradcheck(name):
    s = _small(name)
    x = torch.randn(2, s.npix, 2, dtype=torch.float64, requires_grad=True)
    for mode in ["avg", "max"]:
        pool = Pool(s, mode)
        assert pool.layout == "gather"
        assert torch.autograd.gradcheck(pool, (x,), eps=1e-6, atol=1e-7)
    up = Unpool(s)
    c = torch.randn(2, up.n_coarse, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(up, (c,), eps=1e-6, atol=1e-7)
    A = s.coarsen()[1].tocoo()
    rows, cols, w = (torch.from_numpy(a) for a in (A.row.astype(np.int64), A.col.astype(np.int64), A.data))
    assert torch.autograd.gradcheck(lambda c: F.sparse_unpool(c, rows, cols, w, s.npix), (c,), eps=1e-6, atol=1e-7)
    gp = GlobalPool("meanvar")
    assert torch.autograd.gradcheck(gp, (x,), eps=1e-6, atol=1e-7)


def test_max_gradient_reaches_one_vertex_per_output():
    s = _sampling("icosahedral")
    x = torch.randn(1, s.npix, 1, requires_grad=True)
    y, idx = Pool(s, "max", return_indices=True)(x)
    y.sum().backward()
    expected = torch.zeros_like(x).index_add_(1, idx[0, :, 0], torch.ones_like(y))
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("name", ["healpix", "healpix_shuffled", "icosahedral", "points"])
def test_indices_are_derived_not_state(name):
    # pooling indices come from the sampling: nothing in the state_dict, everything moves with .to()
    s = _sampling(name)
    for module in (Pool(s, "avg"), Pool(s, "max"), Unpool(s), GlobalPool("mean", sampling=s)):
        assert module.state_dict() == {}
    pool = Pool(s, "avg")
    assert len(list(pool.buffers())) > 0 and {b.device.type for b in pool.to("meta").buffers()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["healpix", "healpix_shuffled", "icosahedral", "points"])
def test_cuda_matches_cpu(name):
    s = _sampling(name)
    x = torch.randn(2, s.npix, 3)
    for mode in ["avg", "max"]:
        pool = Pool(s, mode)
        torch.testing.assert_close(pool.cuda()(x.cuda()).cpu(), pool.cpu()(x))
    up = Unpool(s)
    c = torch.randn(2, up.n_coarse, 3)
    torch.testing.assert_close(up.cuda()(c.cuda()).cpu(), up.cpu()(c))


# -- global pooling -----------------------------------------------------------------------------------
def test_global_pool_against_numpy():
    x = np.random.default_rng(8).standard_normal((3, 50, 4))
    t = torch.from_numpy(x)
    np.testing.assert_allclose(GlobalPool("mean")(t).numpy(), x.mean(1))
    np.testing.assert_allclose(GlobalPool("max")(t).numpy(), x.max(1))
    np.testing.assert_allclose(GlobalPool("meanvar")(t).numpy(), np.concatenate([x.mean(1), x.var(1)], 1))


def test_global_pool_area_weighted_integrates_on_the_sphere():
    """Mean of z^2 over the sphere is 1/3; an equiangular grid's plain mean is
    biased towards the poles, its area-weighted mean is not."""
    s = _sampling("equiangular")
    z2 = torch.from_numpy(s.xyz[:, 2] ** 2)[None, :, None]
    weighted = GlobalPool("mean", sampling=s)
    assert weighted.area.numel() == s.npix
    assert abs(float(weighted(z2)) - 1 / 3) < 0.01
    assert abs(float(GlobalPool("mean")(z2)) - 1 / 3) > 0.05
    mv = GlobalPool("meanvar", sampling=s)(z2)
    assert abs(float(mv[0, 1]) - 4 / 45) < 0.01  # Var(z^2) = 1/5 - 1/9 on the sphere
    # Equal-area samplings stay unweighted.
    assert GlobalPool("mean", sampling=HEALPix(nside=4)).area.numel() == 0


# -- errors --------------------------------------------------------------------------------------------
def test_clear_errors():
    s = HEALPix(nside=4)
    with pytest.raises(ValueError, match="expects 192 vertices, got 191"):
        Pool(s)(torch.randn(1, 191, 2))
    with pytest.raises(ValueError, match=r"\[batch, vertices, channels\]"):
        Pool(s)(torch.randn(192, 2))
    with pytest.raises(ValueError, match="expects 48 vertices, got 192"):
        Unpool(s)(torch.randn(1, 192, 2))
    with pytest.raises(ValueError, match="mode must be"):
        Pool(s, mode="sum")
    with pytest.raises(ValueError, match="return_indices=True needs mode='max'"):
        Pool(s, "avg", return_indices=True)
    with pytest.raises(ValueError, match="needs the indices"):
        Unpool(s, "max")(torch.randn(1, 48, 2))
    with pytest.raises(ValueError, match="coarsest"):
        Pool(HEALPix(nside=1))
    with pytest.raises(ValueError, match="transposed"):
        Pool(assign=s.coarsen()[1].T)
    with pytest.raises(ValueError, match="expects 192 vertices"):
        GlobalPool("mean", sampling=s)(torch.randn(1, 100, 2))
    with pytest.raises(ValueError, match="exactly one"):
        Pool()


def test_repeat_unpool_of_a_ragged_assignment_is_its_weighted_transpose():
    # a fine vertex shared by every coarse cell makes the transpose too ragged to pad: the sparse path
    n_coarse, n_fine = 10, 20
    A = np.zeros((n_coarse, n_fine))
    A[:, 0] = 1.0                                                   # vertex 0 in every cell
    A[(np.arange(1, n_fine) - 1) // 2, np.arange(1, n_fine)] = 1.0  # the others in one cell each
    A /= A.sum(0, keepdims=True)                                    # each fine vertex's weights sum to one
    up = Unpool(assign=sp.csr_matrix(A))
    assert up.layout == "sparse"
    x = torch.randn(3, n_coarse, 2, dtype=torch.float64)
    expected = torch.einsum("cf,bck->bfk", torch.from_numpy(A), x)
    torch.testing.assert_close(up(x), expected)


def test_standardize_keeps_float_statistics_and_refuses_bad_ones():
    from graphsphere.nn.norm import Standardize

    z = Standardize(mean=[1, 2], std=[4, 1])                       # integers in: default-dtype buffers
    assert z.mean.dtype == z.std.dtype == torch.get_default_dtype()
    z = Standardize(mean=[0.1], std=[0.3])                          # std below one is fine
    x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    y = z(x)
    assert y.dtype == torch.float64
    # the statistics are float32 buffers; the arithmetic follows the input's dtype
    expected = (x - torch.tensor(0.1, dtype=torch.float32).double()) / torch.tensor(0.3, dtype=torch.float32).double()
    assert torch.equal(y, expected)
    torch.testing.assert_close(z.inverse(y), x)
    for mean, std in (([float("nan")], [1.0]), ([0.0], [float("inf")]), ([0.0], [0.0]), ([0.0], [-1.0])):
        with pytest.raises(ValueError, match="std must be positive and both finite"):
            Standardize(mean=mean, std=std)
    with pytest.raises(ValueError, match="one value per channel each, got 2 and 3"):
        Standardize(mean=[0.0, 0.0], std=[1.0, 1.0, 1.0])
