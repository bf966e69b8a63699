"""Behaviours of graphsphere.nn that mutation testing (tools/mutation.py nn) found unguarded.

Each test checks a documented behaviour against an independent reference: torch's own
nn.BatchNorm1d, dense NumPy products with the assignment matrix, loops over the pooling cells,
SciPy's rescaled Laplacian, exact strings (error messages that name the problem, module reprs).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

import graphsphere as gs
from graphsphere.nn import (
    ChebConv,
    GlobalPool,
    GraphOperator,
    Pool,
    Standardize,
    Unpool,
    VertexBatchNorm,
    convert_sync_batchnorm,
)
from graphsphere.nn.norm import VertexSyncBatchNorm

HEALPix = gs.sampling.HEALPix

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seeded():
    """The same random inputs on every run (the tests' tolerances do not depend on them)."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def graph():
    return gs.SphereGraph(HEALPix(nside=4), k=8)


def _dense(op) -> np.ndarray:
    """A SparseOperator (CSR tensors) as a dense float64 array."""
    return sp.csr_matrix((op.values.double().numpy(), op.indices.numpy(), op.indptr.numpy()),
                         shape=(op.n, op.n)).toarray()


def _shuffled():
    """A partial HEALPix sky in a non-sorted order: the "gather" layout, one parent per fine vertex."""
    return HEALPix(nside=8, indices=np.random.default_rng(0).permutation(np.arange(128, 256)))


def _uneven():
    """40 fine vertices in clusters of 25, 5, 5 and 5: too ragged to pad, the "sparse" pooling layout."""
    rows = np.concatenate([np.zeros(25), np.repeat([1, 2, 3], 5)]).astype(int)
    return sp.csr_matrix((np.ones(40), (rows, np.arange(40))), shape=(4, 40))


def _shared_unequally():
    """4 coarse cells, 8 fine vertices; vertex 6 belongs 1/4 to cell 0 and 3/4 to cell 1, vertex 7
    half to cells 2 and 3: the repeat-unpooling's transpose pads to two parents with real weights."""
    A = np.zeros((4, 8))
    A[[0, 0, 1, 1, 2, 3], np.arange(6)] = 1.0
    A[[0, 1], 6] = [0.25, 0.75]
    A[[2, 3], 7] = [0.5, 0.5]
    return A


# ---- ChebConv ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"in_channels": 0}, "in_channels must be a positive integer, got 0"),
    ({"out_channels": -2}, "out_channels must be a positive integer, got -2"),
    ({"K": 2.5}, "K must be a positive integer, got 2.5"),
    ({"in_channels": 2.5}, "in_channels must be a positive integer, got 2.5"),
    ({"out_channels": True}, "out_channels must be a positive integer, got True"),
    ({"K": None}, "K must be a positive integer, got None"),             # was a TypeError inside int()
    ({"K": float("nan")}, "K must be a positive integer, got nan"),      # was a ValueError inside int()
    ({"in_channels": "3"}, "in_channels must be a positive integer, got '3'"),
])
def test_chebconv_refuses_sizes_that_are_not_positive_integers_and_names_them(graph, kwargs, message):
    """A fractional or boolean size would otherwise be truncated silently (int(2.5) == 2, True == 1)."""
    args = {"in_channels": 3, "out_channels": 4, "K": 3, **kwargs}
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        ChebConv(args["in_channels"], args["out_channels"], args["K"], graph=graph)


def test_chebconv_takes_integral_sizes_of_any_numeric_type(graph):
    conv = ChebConv(np.int64(3), 4.0, K=np.int32(2), graph=graph)
    assert (conv.in_channels, conv.out_channels, conv.K) == (3, 4, 2)


def test_chebconv_spectrum_scale_a_reaches_the_operator(graph):
    """ChebConv(graph=g, a=a) filters with L~ = (2a / lambda_max) L - I: SciPy's graph.operator(a)."""
    for a in (0.5, 1.0):
        conv = ChebConv(2, 3, K=3, graph=graph, a=a)
        np.testing.assert_allclose(_dense(conv.operator), graph.operator(a).toarray(), rtol=0, atol=1e-6)
    x = torch.randn(2, graph.npix, 2, dtype=torch.float64)
    conv = ChebConv(2, 3, K=2, graph=graph, a=0.5).double()
    w = conv.weight.detach().numpy()
    ref = x.numpy() @ w[0] + np.einsum("uv,bvc->buc", graph.operator(0.5).toarray(), x.numpy()) @ w[1]
    np.testing.assert_allclose(conv(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_chebconv_adds_its_bias_to_every_vertex(graph):
    """The bias (zero at initialisation, so invisible until trained) is added to every vertex's output."""
    conv = ChebConv(3, 4, K=3, graph=graph)
    x = torch.randn(2, graph.npix, 3)
    without = conv(x)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    torch.testing.assert_close(conv(x), without + conv.bias, rtol=1e-6, atol=1e-5)
    assert ChebConv(3, 4, K=3, graph=graph, bias=False).bias is None


def test_chebconv_weights_are_centred_he_normal(graph):
    """reset_parameters draws weights ~ N(0, 2 / (in K)): mean 0 (4,800 draws, standard error 0.002)."""
    torch.manual_seed(1)
    conv = ChebConv(16, 60, K=5, graph=graph)
    std = (2 / (16 * 5)) ** 0.5
    assert abs(conv.weight.mean().item()) < 5 * std / conv.weight.numel() ** 0.5
    assert abs(conv.weight.std().item() / std - 1) < 0.05
    with torch.no_grad():
        conv.weight.fill_(3.0), conv.bias.fill_(1.0)
    conv.reset_parameters()
    assert abs(conv.weight.mean().item()) < 5 * std / conv.weight.numel() ** 0.5 and not conv.bias.any()


# ---- GraphOperator -------------------------------------------------------------------------------------

def test_graph_operator_follows_the_default_dtype_at_construction(graph):
    """Without dtype=, the operator takes the default dtype of the moment it is built (not the one of an
    earlier module on the same graph), and shares the graph's cached tensors with dtype=that dtype."""
    g = gs.SphereGraph(HEALPix(nside=2), k=8)
    single = GraphOperator(g)
    assert GraphOperator(g, dtype=torch.float32).values is single.values
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        double = GraphOperator(g)
    finally:
        torch.set_default_dtype(previous)
    assert single.values.dtype == torch.float32 and double.values.dtype == torch.float64
    np.testing.assert_allclose(_dense(double.operator), g.operator(1.0).toarray(), rtol=0, atol=1e-12)


def test_graph_operator_of_a_prebuilt_matrix_honours_dtype(graph):
    """A SciPy L~ is converted to the dtype asked for (float64 keeps its full precision)."""
    L = graph.operator(1.0)
    op = GraphOperator(L, dtype=torch.float64)
    assert op.values.dtype == torch.float64
    np.testing.assert_array_equal(_dense(op.operator), L.toarray())
    assert GraphOperator(L).values.dtype == torch.get_default_dtype()
    assert repr(op) == f"GraphOperator(vertices={graph.npix}, nnz={L.nnz}, dtype=torch.float64)"


# ---- Standardize --------------------------------------------------------------------------------------

def test_standardize_defaults_to_the_identity():
    """Standardize() is (x - 0) / 1: a no-op until fitted statistics are given."""
    z = Standardize()
    x = torch.randn(3, 5, 2)
    assert torch.equal(z(x), x) and torch.equal(z.inverse(x), x)
    assert z.mean.tolist() == [0.0] and z.std.tolist() == [1.0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_standardize_keeps_the_input_dtype_both_ways(dtype):
    """The float32 statistics are cast to the input's dtype: a half-precision input stays half."""
    z = Standardize(mean=[1.0, 10.0], std=[2.0, 4.0])
    x = torch.tensor([[3.0, 18.0], [1.0, 2.0]], dtype=dtype)
    y = z(x)
    assert y.dtype == dtype and y.tolist() == [[1.0, 2.0], [0.0, -2.0]]
    back = z.inverse(y)
    assert back.dtype == dtype and back.tolist() == x.tolist()


# ---- VertexBatchNorm and its synchronised twin ---------------------------------------------------------

@pytest.mark.parametrize("cls", [VertexBatchNorm, VertexSyncBatchNorm])
def test_batch_norms_name_themselves_and_the_shape_they_refuse(cls):
    with pytest.raises(ValueError, match=rf"^{cls.__name__} expects \[batch, vertices, channels\], "
                                         r"got shape \(4, 3\)$"):
        cls(3)(torch.randn(4, 3))


def test_vertex_batch_norm_eval_leaves_the_batch_counter_alone():
    """As nn.BatchNorm1d: only training steps count batches (momentum=None averages over them)."""
    ours, ref = VertexBatchNorm(3, momentum=None), nn.BatchNorm1d(3, momentum=None)
    x = torch.randn(2, 10, 3)
    ours(x), ref(x.transpose(1, 2))
    ours.eval(), ref.eval()
    for _ in range(2):
        torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1
    torch.testing.assert_close(ours.running_mean, ref.running_mean)


def test_vertex_batch_norm_with_tracking_switched_off_behaves_as_batchnorm1d():
    """track_running_stats=False after construction: training uses batch statistics and leaves the running
    ones untouched; evaluation normalises with the running ones (torch's _BatchNorm rule)."""
    ours, ref = VertexBatchNorm(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        for m in (ours, ref):
            m.running_mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
            m.running_var.copy_(torch.tensor([2.0, 0.5, 1.0]))
            m.track_running_stats = False
    x = torch.randn(4, 12, 3) * 3 + 2
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-5)
    assert ours.running_mean.tolist() == [1.0, -1.0, 0.5] and ours.running_var.tolist() == [2.0, 0.5, 1.0]
    assert int(ours.num_batches_tracked) == 0
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_vertex_batch_norm_uses_its_eps():
    """eps enters the normalisation: with a large eps on small-variance data it shows."""
    ours, ref = VertexBatchNorm(2, eps=0.5), nn.BatchNorm1d(2, eps=0.5)
    x = torch.randn(3, 20, 2) * 0.1
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vertex_major", [False, True])
def test_vertex_sync_batch_norm_is_batchnorm1d_in_either_memory_layout(vertex_major):
    """Without a process group SyncBatchNorm is plain batch norm: same values as nn.BatchNorm1d for a
    contiguous [B, V, C] input and for the convolution's vertex-major one, no ReLU unless asked, and the
    output keeps the input's layout."""
    torch.manual_seed(0)
    ours, ref = VertexSyncBatchNorm(4), nn.BatchNorm1d(4)
    x = torch.randn(7, 3, 4) * 2 + 1
    x = x.transpose(0, 1) if vertex_major else x.transpose(0, 1).contiguous()   # [3, 7, 4] either way
    y = ours(x)
    yr = ref(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(y, yr, rtol=1e-5, atol=1e-5)
    assert (y < 0).any()
    assert y.transpose(0, 1).is_contiguous() == vertex_major and y.is_contiguous() != vertex_major
    torch.testing.assert_close(ours(x, relu=True), torch.relu(ref(x.transpose(1, 2)).transpose(1, 2)),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)


# ---- convert_sync_batchnorm ----------------------------------------------------------------------------

def _set_state(bn, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            if t is not None:
                t.copy_(torch.randn(t.shape, generator=g))
        if bn.running_var is not None:
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("affine,track", [(False, True), (True, False), (False, False)])
def test_convert_sync_batchnorm_keeps_every_setting_of_a_vertex_batch_norm(affine, track):
    """affine and track_running_stats (and eps, momentum, state) survive the swap: same outputs."""
    bn = VertexBatchNorm(3, eps=1e-3, momentum=0.3, affine=affine, track_running_stats=track)
    _set_state(bn, 0)
    model = convert_sync_batchnorm(nn.Sequential(bn))
    new = model[0]
    assert type(new) is VertexSyncBatchNorm
    assert (new.affine, new.track_running_stats, new.eps, new.momentum) == (affine, track, 1e-3, 0.3)
    x = torch.randn(2, 10, 3)
    for train in (True, False):
        torch.testing.assert_close(new.train(train)(x), bn.train(train)(x), rtol=1e-5, atol=1e-5)


def test_convert_sync_batchnorm_goes_on_past_an_already_synchronised_child():
    model = nn.Sequential(nn.SyncBatchNorm(3), VertexBatchNorm(3), nn.Sequential(VertexBatchNorm(3)))
    first = model[0]
    convert_sync_batchnorm(model)
    assert model[0] is first
    assert type(model[1]) is VertexSyncBatchNorm and type(model[2][0]) is VertexSyncBatchNorm


def test_convert_sync_batchnorm_swaps_torch_batch_norms_with_their_state():
    """Other batch norms (here BatchNorm2d) become torch's SyncBatchNorm, state included."""
    bn = nn.BatchNorm2d(3)
    _set_state(bn, 1)
    model = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 3, 1), bn))
    assert type(model[1]) is nn.SyncBatchNorm
    for name, value in bn.state_dict().items():
        assert torch.equal(model[1].state_dict()[name], value), name
    x = torch.randn(2, 1, 4, 4)
    bn.eval(), model.eval()
    torch.testing.assert_close(model(x), bn(model[0](x)))


# ---- Pool, Unpool, GlobalPool: what they say about themselves --------------------------------------------

def test_pool_reprs_name_sizes_mode_layout_fan_in_and_indices():
    s = HEALPix(nside=4)
    assert repr(Pool(s)) == "Pool(192 -> 48 vertices, mode=avg, layout=blocks, fan_in=4)"
    assert (repr(Pool(s, "max", return_indices=True))
            == "Pool(192 -> 48 vertices, mode=max, layout=blocks, fan_in=4, return_indices=True)")
    assert repr(Pool(_shuffled(), "max")) == "Pool(128 -> 32 vertices, mode=max, layout=gather, fan_in=4)"
    assert repr(Pool(assign=_uneven())) == "Pool(40 -> 4 vertices, mode=avg, layout=sparse)"   # no fixed fan-in
    assert (repr(Pool(assign=_uneven(), mode="max", return_indices=True))
            == "Pool(40 -> 4 vertices, mode=max, layout=sparse, return_indices=True)")


def test_unpool_reprs_and_fan_in():
    """Repeat-unpooling of consecutive blocks stays a reshape (no index); elsewhere it gathers from the
    transpose, and fan_in (the block size) is 0."""
    s = HEALPix(nside=4)
    up = Unpool(s)
    assert repr(up) == "Unpool(48 -> 192 vertices, mode=repeat, layout=blocks)" and up.fan_in == 4
    assert up.parent.numel() == 0
    up = Unpool(_shuffled())
    assert repr(up) == "Unpool(32 -> 128 vertices, mode=repeat, layout=gather)" and up.fan_in == 0
    up = Unpool(assign=_uneven())
    assert repr(up) == "Unpool(4 -> 40 vertices, mode=repeat, layout=gather)" and up.fan_in == 0
    assert repr(Unpool(s, "max")) == "Unpool(48 -> 192 vertices, mode=max, layout=blocks)"


@pytest.mark.parametrize("sampling,assign", [
    (None, _uneven()), (_shuffled(), None), (gs.sampling.Icosahedral(1), None)])
def test_max_unpool_keeps_no_index(sampling, assign):
    """Max-unpooling needs nothing but the indices it is given: no transpose is built or held."""
    up = Unpool(sampling, "max", assign=assign)
    assert all(b.numel() == 0 for b in up.buffers())
    plan_layout = Pool(sampling, "max", assign=assign).layout
    assert up.layout == plan_layout


def test_global_pool_reprs_and_defaults():
    eq = gs.sampling.Equiangular(8, 16)
    assert repr(GlobalPool()) == "GlobalPool(mode=mean)"
    assert repr(GlobalPool("meanvar", sampling=eq)) == "GlobalPool(mode=meanvar, area-weighted)"
    assert repr(GlobalPool("mean", sampling=HEALPix(nside=2))) == "GlobalPool(mode=mean)"   # equal areas
    # the maximum is not an integral: never area-weighted, no weights kept
    gmax = GlobalPool("max", sampling=eq)
    assert repr(gmax) == "GlobalPool(mode=max)" and gmax.area.numel() == 0
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    np.testing.assert_allclose(GlobalPool()(x).numpy(), x.numpy().mean(1), rtol=1e-14)


def test_global_pool_keeps_each_pixels_share_of_the_sphere():
    eq = gs.sampling.Equiangular(8, 16)
    gp = GlobalPool("mean", sampling=eq)
    np.testing.assert_allclose(gp.area.numpy(), eq.area / eq.area.sum(), rtol=1e-14)
    assert gp.area.dtype == torch.float64


def test_global_pool_weights_areas_that_differ_by_a_millionth():
    """Areas equal to 1e-9 (relative) count as equal; a spread of 4e-7 is weighted, exactly."""
    lon, lat = np.array([0.0, 120.0, 240.0, 0.0]), np.array([-19.47122063449069] * 3 + [90.0])
    tetra = gs.sampling.Points(lon=lon, lat=lat)                  # four equal Voronoi cells
    assert GlobalPool("mean", sampling=tetra).area.numel() == 0
    lon[1] += 1e-4                                                # cells now differ by +-3.7e-7
    s = gs.sampling.Points(lon=lon, lat=lat)
    x = np.random.default_rng(2).standard_normal((2, 4, 3))
    y = GlobalPool("mean", sampling=s)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, np.average(x, axis=1, weights=s.area), rtol=1e-13, atol=1e-15)
    assert np.abs(y - x.mean(1)).max() > 1e-9                     # what the unweighted mean would be off by


def test_global_pool_weights_tiny_pixels_of_different_areas():
    """Relative, not absolute, equality of areas: pixels of 1e-9 sr (nside 16384 is 4.7e-9) that differ
    by 10 % are weighted (numpy's default atol of 1e-8 would call them equal)."""
    tiny = SimpleNamespace(npix=4, area=np.array([1.0e-9, 1.1e-9, 1.0e-9, 1.0e-9]))
    np.testing.assert_allclose(GlobalPool("mean", sampling=tiny).area.numpy(), tiny.area / tiny.area.sum(),
                               rtol=1e-15)


_BUFFERS = {"index": (torch.int64, 2), "parent": (torch.int64, 2), "rows": (torch.int64, 1),
            "cols": (torch.int64, 1)}


@pytest.mark.parametrize("build", [
    lambda: Pool(HEALPix(nside=4)), lambda: Pool(_shuffled()), lambda: Pool(assign=_uneven()),
    lambda: Pool(gs.sampling.Icosahedral(1)), lambda: Unpool(HEALPix(nside=4)), lambda: Unpool(_shuffled()),
    lambda: Unpool(gs.sampling.Icosahedral(1)), lambda: Unpool(assign=_uneven(), mode="max"),
    lambda: Unpool(assign=sp.csr_matrix(_shared_unequally()))],
    ids=["pool-blocks", "pool-gather", "pool-sparse", "pool-weighted", "unpool-blocks", "unpool-gather",
         "unpool-weighted", "unpool-max", "unpool-unequal"])
def test_pooling_buffers_have_one_schema_whatever_the_layout(build):
    """Every layout holds the same buffers with the same dtypes and ranks (empty where unused): integer
    indices (int64, what index_select takes, left alone by .half()), float64 weights, 2-D in the gather
    layout ([vertices, fan-in]) and 1-D otherwise (one per non-zero of the assignment)."""
    m = build()
    for name, buf in m.named_buffers():
        dtype, ndim = _BUFFERS.get(name, (torch.float64, 2 if m.layout == "gather" else 1))
        assert (buf.dtype, buf.dim()) == (dtype, ndim), (m.layout, name, buf.dtype, tuple(buf.shape))


# ---- Pool, Unpool, GlobalPool: results and errors ------------------------------------------------------

@pytest.mark.parametrize("module,shape,message", [
    (lambda: Pool(HEALPix(nside=4)), (1, 100, 2), "Pool expects 192 vertices, got 100"),
    (lambda: Unpool(HEALPix(nside=4)), (1, 100, 2), "Unpool expects 48 vertices, got 100"),
    (lambda: GlobalPool("mean", sampling=HEALPix(nside=4)), (1, 100, 2), "GlobalPool expects 192 vertices, got 100"),
    (lambda: GlobalPool("max"), (4, 3), r"GlobalPool expects \[batch, vertices, channels\], got shape \(4, 3\)$"),
])
def test_pooling_errors_name_the_module(module, shape, message):
    with pytest.raises(ValueError, match="^" + message):
        module()(torch.randn(*shape))


def test_pooling_constructors_name_the_bad_argument():
    s = HEALPix(nside=4)
    with pytest.raises(ValueError, match=r"^mode must be 'repeat' or 'max', got 'avg'$"):
        Unpool(s, "avg")
    with pytest.raises(ValueError, match=r"^mode must be one of \('mean', 'max', 'meanvar'\), got 'sum'$"):
        GlobalPool("sum")
    with pytest.raises(ValueError, match=r"^Unpool\(mode='repeat'\) takes no indices; use mode='max'"):
        Unpool(s)(torch.randn(1, 48, 2), torch.zeros(1, 48, 2, dtype=torch.long))
    # the assignment passed where the sampling goes: a clear error, not an AttributeError
    A = s.coarsen()[1]
    for wrong in (A, "healpix"):
        with pytest.raises(ValueError, match=r"has no hierarchy \(no coarsen\(\)\), so it cannot be pooled; "
                                             r"pool on a hierarchical sampling"):
            Pool(wrong)


def test_sparse_layout_max_pool_returns_its_indices():
    """mode='max', return_indices=True on the sparse layout gives (values, fine index of each maximum)."""
    A = _uneven()
    x = torch.randn(2, 40, 3, dtype=torch.float64)
    pool = Pool(assign=A, mode="max", return_indices=True)
    assert pool.layout == "sparse"
    y, idx = pool(x)
    cells = [np.arange(25), np.arange(25, 30), np.arange(30, 35), np.arange(35, 40)]
    ref_idx = np.stack([c[x.numpy()[:, c].argmax(1)] for c in cells], axis=1)    # [B, 4, C]
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(y.numpy(), np.take_along_axis(x.numpy(), ref_idx, 1))
    z = Unpool(assign=A, mode="max")(y, idx)
    assert torch.equal(z.gather(1, idx), y) and int((z != 0).sum()) == y.numel()


def test_max_unpool_where_cells_overlap_keeps_the_larger_value():
    """Icosahedral cells share their border vertices. Unpooling values that are not the pooled ones (a
    U-Net's decoder) puts at a vertex that was the maximum of two cells the larger of their two values."""
    s = gs.sampling.Icosahedral(1)
    coarse, assign = s.coarsen()
    shared = int(np.flatnonzero(np.diff(assign.tocsc().indptr) == 2)[0])   # a vertex of two cells
    x = torch.randn(1, s.npix, 2, dtype=torch.float64)
    x[0, shared] = 10.0                                                     # the maximum of both its cells
    y, idx = Pool(s, "max", return_indices=True)(x)
    j1, j2 = np.flatnonzero((idx[0, :, 0] == shared).numpy())              # the two cells, both channels
    assert bool((idx[0, [j1, j2]] == shared).all())
    values = torch.randn_like(y)
    # the larger value comes from the first cell in one channel and from the second in the other, so
    # that no order of plain writes gets both right
    values[0, [j1, j2], 0] = torch.tensor([5.0, 1.0], dtype=torch.float64)
    values[0, [j1, j2], 1] = torch.tensor([1.0, 5.0], dtype=torch.float64)
    z = Unpool(s, "max")(values, idx).numpy()
    ref = np.zeros((1, s.npix, 2))
    found = np.zeros((1, s.npix, 2), dtype=bool)
    for j in range(coarse.npix):
        for c in range(2):
            i, v = int(idx[0, j, c]), float(values[0, j, c])
            ref[0, i, c] = max(ref[0, i, c], v) if found[0, i, c] else v
            found[0, i, c] = True
    np.testing.assert_array_equal(z, ref)


def test_repeat_unpool_weights_a_vertex_shared_unequally():
    """A fine vertex split 1/4, 3/4 between two cells gets 1/4 and 3/4 of their values (the assignment's
    transpose), not their plain mean: the gather layout must apply its weights."""
    A = _shared_unequally()
    up = Unpool(assign=sp.csr_matrix(A))
    assert up.layout == "gather"
    c = torch.randn(2, 4, 3, dtype=torch.float64)
    np.testing.assert_allclose(up(c).numpy(), np.einsum("jf,bjc->bfc", A, c.numpy()), rtol=1e-14, atol=1e-15)
