"""Chebyshev convolution: against dense brute force, deepsphere 0.2.1,
torch_geometric, finite differences; memory, errors, persistence."""

import gc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import graphsphere as gs
from graphsphere.nn import conv as conv_mod
from graphsphere.nn import GraphOperator
from graphsphere.nn.conv import ChebConv
from graphsphere.nn.functional.chebyshev import SparseOperator, as_operator, cheb_conv, laplacian_matmul




def dense_cheb(L: np.ndarray, x: np.ndarray, w: np.ndarray, b=None) -> np.ndarray:
    """sum_k T_k(L) x theta_k with explicit dense polynomials (float64)."""
    T = [np.eye(len(L)), L]
    for _ in range(2, len(w)):
        T.append(2 * L @ T[-1] - T[-2])
    y = sum(np.einsum("uv,bvc,cd->bud", T[k], x, w[k]) for k in range(len(w)))
    return y + (0 if b is None else b)


@pytest.mark.parametrize("K,cin,cout", [(1, 3, 4), (2, 3, 4), (5, 3, 4), (5, 6, 2), (4, 1, 7)])
def test_matches_dense_polynomial(graph, backend, K, cin, cout):
    rng = np.random.default_rng(K + cin)
    x, w, b = rng.standard_normal((2, graph.npix, cin)), rng.standard_normal((K, cin, cout)), rng.standard_normal(cout)
    op = as_operator(graph, dtype=torch.float64)
    y = cheb_conv(torch.from_numpy(x), op, torch.from_numpy(w), torch.from_numpy(b))
    ref = dense_cheb(graph.operator().toarray(), x, w, b)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("cin,cout,x_grad", [(3, 2, True), (1, 4, True), (2, 3, False)])
def test_gradcheck(small_graph, backend, K, cin, cout, x_grad):
    # (3, 2): backward recurses on the output gradient; (1, 4): on x, with
    # Clenshaw for dx; x_grad=False: on x, no Clenshaw.
    op = as_operator(small_graph, dtype=torch.float64)
    g = torch.Generator().manual_seed(K)
    x = torch.randn(2, small_graph.npix, cin, dtype=torch.float64, generator=g, requires_grad=x_grad)
    w = torch.randn(K, cin, cout, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, w, b: cheb_conv(x, op, w, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_gradcheck_stacked_layers(small_graph, backend):
    # The second layer hands the first a vertex-major gradient (not ours to
    # overwrite); the first has Cin < Cout (x recursion + Clenshaw backward).
    op = as_operator(small_graph, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, small_graph.npix, 1, dtype=torch.float64, generator=g, requires_grad=True)
    w1 = torch.randn(3, 1, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w2 = torch.randn(4, 4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, w1, w2: cheb_conv(torch.tanh(cheb_conv(x, op, w1)), op, w2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w1, w2))


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("q", [1, 3, 16, 37, 130])  # every channel tile and the scalar remainder
def test_laplacian_matmul_matches_scipy(backend, itype, dtype, q):
    rng = np.random.default_rng(q)
    A = sp.random(300, 300, density=0.03, random_state=q, format="csr")
    A = (A + A.T).tocsr()
    A.sort_indices()
    op = SparseOperator(*(torch.from_numpy(a.astype(itype)) for a in (A.indptr, A.indices)),
                        torch.from_numpy(A.data).to(dtype))
    X, Y = (torch.from_numpy(rng.standard_normal((300, 2, q))).to(dtype) for _ in range(2))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    ref = (A @ X.double().reshape(300, -1).numpy()).reshape(X.shape)
    np.testing.assert_allclose(laplacian_matmul(op, X).double().numpy(), ref, **tol)
    fused = 2 * ref - 0.5 * Y.double().numpy()
    np.testing.assert_allclose(laplacian_matmul(op, X, 2.0, Y, -0.5).double().numpy(), fused, **tol)
    out = laplacian_matmul(op, X, 2.0, Y, -0.5, out=Y)  # in place over Y: what the recursion does
    assert out.data_ptr() == Y.data_ptr()
    np.testing.assert_allclose(Y.double().numpy(), fused, **tol)


def test_matches_deepsphere(graph):
    ds = pytest.importorskip("deepsphere.layers.chebyshev")
    rng = np.random.default_rng(0)
    K, cin, cout = 5, 3, 4
    x = torch.from_numpy(rng.standard_normal((2, graph.npix, cin)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((K, cin, cout)).astype(np.float32))
    L = graph.operator().tocoo()
    L_t = torch.sparse_coo_tensor(np.stack([L.row, L.col]), L.data.astype(np.float32), L.shape,
                                  check_invariants=True).coalesce()
    # deepsphere 0.2.1 multiplies its [B*V, Fin*K] stack (column fin*K + k) by
    # weight.view(Fin*K, Fout): entry fin*K + k of that flat view is theta_k[fin].
    w_ds = w.permute(1, 0, 2).reshape(cin * K, cout).view(K, cin, cout)
    ref = ds.cheb_conv(L_t, x, w_ds)
    y = cheb_conv(x, as_operator(graph), w)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("laplacian", ["normalized", "combinatorial"])
def test_matches_torch_geometric(laplacian):
    pyg = pytest.importorskip("torch_geometric.nn")
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8, laplacian=laplacian)
    K, cin, cout = 4, 3, 5
    # pyg builds L from the edge weights (normalization 'sym': I - D^-1/2 W D^-1/2;
    # None: D - W), then 2 L / lambda_max - I: the same L~ as ours with lmax.
    ref_conv = pyg.ChebConv(cin, cout, K, normalization="sym" if laplacian == "normalized" else None).double()
    w, b = torch.randn(K, cin, cout, dtype=torch.float64), torch.randn(cout, dtype=torch.float64)
    with torch.no_grad():
        for k, lin in enumerate(ref_conv.lins):
            lin.weight.copy_(w[k].t())  # pyg: [out, in]
        ref_conv.bias.copy_(b)
    x = torch.randn(2, g.npix, cin, dtype=torch.float64)
    W = g.W.tocoo()  # float64 weights (to_edge_index gives float32)
    ei = torch.from_numpy(np.stack([W.row, W.col]).astype(np.int64))
    lam = torch.tensor(g.lambda_max, dtype=torch.float64)
    ref = ref_conv(x, ei, torch.from_numpy(W.data.copy()), lambda_max=lam)  # [B, V, C] with a static graph
    ours = cheb_conv(x, as_operator(g, dtype=torch.float64), w, b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_saved_activations_do_not_grow_with_K(graph):
    """Between forward and backward only x (and the weights) are kept, for any K."""
    op = as_operator(graph)
    x = torch.randn(4, graph.npix, 8, requires_grad=True)
    saved = {}
    for K in (2, 9):
        w = torch.randn(K, 8, 8, requires_grad=True)
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = cheb_conv(x, op, w)
        saved[K] = sum(sizes)
        y.sum().backward()
    activation = x.numel() * x.element_size()
    assert saved[9] - saved[2] == 7 * 8 * 8 * 4  # only the larger weight
    assert saved[2] <= activation + 2 * 8 * 8 * 4


def _peak_rss_increase(fn) -> int:
    """Peak resident memory while fn runs, above the resident memory before it
    (Linux: VmHWM after resetting it through /proc/self/clear_refs). Tensors
    above 32 MB are always mmap-ed by glibc and unmapped when freed, so with
    such tensors this tracks live tensor bytes."""

    def status(key):
        with open("/proc/self/status") as f:
            return 1024 * int(next(line for line in f if line.startswith(key)).split()[1])

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS here (/proc/self/clear_refs)")
    before = status("VmRSS")
    fn()
    return status("VmHWM") - before


def test_peak_memory_does_not_grow_with_K():
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=32), k=8)
    op = as_operator(g)
    x = torch.randn(8, g.npix, 96, requires_grad=True)
    unit = x.numel() * x.element_size()  # 38 MB: one activation

    def run(K):
        w = torch.randn(K, 96, 96, requires_grad=True)
        return lambda: cheb_conv(x, op, w).sum().backward()

    def peak(K):
        x.grad = None
        gc.collect()  # a collection during the measurement would free old buffers and hide the peak
        return _peak_rss_increase(run(K))

    run(2)()  # warm up (kernel build, first-touch of the allocator)
    # From K = 4 on, the recursion holds two terms at a time (the last one is never stored).
    # Allocator reuse moves a peak by one activation between runs and machines (2 or 3 units
    # at K = 4 seen), so each K is measured three times, interleaved.
    p4, p12 = [], []
    for _ in range(3):
        p4.append(peak(4))
        p12.append(peak(12))
    # The measurement sees the layer's buffers. Not in every reading: about one run in ten reads a peak
    # of 0 once (the kernel's high-water mark not updated; seen with and without a collection before).
    assert sorted(p4)[1] > unit, [p / unit for p in p4]  # two readings of three (the middle one and up)
    # Stacking the K terms (as deepsphere 0.2.1 does) would add 8 activations at K=12.
    assert min(p12) < max(p4) + unit, ([p / unit for p in p4], [p / unit for p in p12])
    assert max(p12) < 6 * unit, [p / unit for p in p12]


def test_module_state_dict_holds_weights_only(graph, tmp_path):
    a = ChebConv(3, 5, K=4, graph=graph)
    with torch.no_grad():
        a.bias.normal_()
    assert set(a.state_dict()) == {"weight", "bias"}    # the operator is derived from the graph, not state
    torch.save(a.state_dict(), tmp_path / "conv.pt")
    b = ChebConv(3, 5, K=4, graph=graph)
    b.load_state_dict(torch.load(tmp_path / "conv.pt", weights_only=True))
    x = torch.randn(2, graph.npix, 3)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert repr(b) == f"ChebConv(3, 5, K=4, vertices={graph.npix})"
    # layers built on one graph share its operator tensors (the graph's cache), and a shared
    # GraphOperator is one module
    assert b.graph_operator.values.data_ptr() == a.graph_operator.values.data_ptr()
    shared = GraphOperator(graph)
    c, d = ChebConv(3, 5, K=2, operator=shared), ChebConv(5, 2, K=2, operator=shared)
    assert c.graph_operator is d.graph_operator


def test_module_to_double(graph):
    m = ChebConv(2, 3, K=3, graph=graph)
    x = torch.randn(1, graph.npix, 2)
    y32 = m(x)
    m.double()
    assert m.operator.values.dtype == torch.float64 and m.weight.dtype == torch.float64
    y64 = m(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y32, rtol=1e-5, atol=1e-5)


def test_module_init_and_repr(graph):
    torch.manual_seed(0)
    m = ChebConv(16, 32, K=5, graph=graph, bias=False)
    assert repr(m) == "ChebConv(16, 32, K=5, vertices=192, bias=False)"
    assert abs(m.weight.std().item() - (2 / (16 * 5)) ** 0.5) < 0.01  # N(0, 2/(in K)), 2560 draws
    assert ChebConv(2, 3, K=1, graph=graph).bias.abs().sum() == 0
    ours = ChebConv(2, 3, K=1, graph=graph)  # K = 1: a per-vertex linear map
    x = torch.randn(1, graph.npix, 2)
    torch.testing.assert_close(ours(x), x @ ours.weight[0] + ours.bias)


def test_module_double_and_operator_input(graph):
    m = ChebConv(2, 3, K=3, operator=graph.operator())
    assert m.operator.values.dtype == torch.float32 and m.operator.indices.dtype == torch.int32
    torch.set_default_dtype(torch.float64)
    try:  # built in float64 from the start: the operator keeps full precision
        m = ChebConv(2, 3, K=3, operator=graph.operator())
    finally:
        torch.set_default_dtype(torch.float32)
    assert m.operator.values.dtype == torch.float64 and m.weight.dtype == torch.float64
    x = torch.randn(1, graph.npix, 2, dtype=torch.float64)
    ref = dense_cheb(graph.operator().toarray(), x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy())
    np.testing.assert_allclose(m(x).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # a torch sparse tensor works as the operator too (COO and CSR)
    coo = graph.operator().tocoo()
    L_t = torch.sparse_coo_tensor(np.stack([coo.row, coo.col]), coo.data, coo.shape, check_invariants=True)
    for L in (L_t, L_t.to_sparse_csr()):
        y = cheb_conv(x, L, m.weight, m.bias)
        np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_autocast_bfloat16(graph):
    m = ChebConv(4, 6, K=4, graph=graph)
    x = torch.randn(2, graph.npix, 4)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
    assert y.dtype == torch.float32  # computed in float32 from the bf16-rounded input
    # Rounding the input to bf16 (relative step 2**-8 = 0.39 %) moved the output by at most 0.27 % of its
    # largest value over 50 seeds: the bound is 0.6 %, twice the measured error.
    assert (y - ref).abs().max() <= 0.006 * ref.abs().max()
    y.sum().backward()
    assert m.weight.grad.dtype == torch.float32 and torch.isfinite(m.weight.grad).all()
    yb = ChebConv(4, 6, K=4, graph=graph).bfloat16()(x.bfloat16())  # explicit bf16, no autocast
    assert yb.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(graph):
    m = ChebConv(3, 4, K=5, graph=graph)
    x = torch.randn(2, graph.npix, 3)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), m.cpu()(x), rtol=1e-5, atol=1e-5)


def test_errors(graph):
    m = ChebConv(3, 4, K=3, graph=graph)
    with pytest.raises(ValueError, match="vertices but the operator has 192"):
        m(torch.randn(2, 100, 3))
    with pytest.raises(ValueError, match=r"\[batch, vertices, channels\]"):
        m(torch.randn(192, 3))
    with pytest.raises(ValueError, match="3 channels"):
        cheb_conv(torch.randn(1, 192, 3), as_operator(graph), torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="x has 5 channels"):
        m(torch.randn(1, 192, 5))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(1, 192, 3)
        x[0, 7, 1] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            m(x)
    m.check_finite = False
    assert torch.isnan(m(x.nan_to_num(nan=float("nan"), posinf=float("nan")))).any()  # unchecked: NaN flows
    L = graph.operator()
    L.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf entries"):
        ChebConv(3, 4, K=3, operator=L)
    with pytest.raises(ValueError, match="symmetric"):
        as_operator(sp.csr_matrix(np.triu(np.ones((5, 5)))))
    with pytest.raises(ValueError, match="square"):
        as_operator(sp.csr_matrix(np.ones((4, 5))))
    with pytest.raises(ValueError, match="exactly one"):
        ChebConv(3, 4, K=3)
    with pytest.raises(ValueError, match="K must be a positive integer"):
        ChebConv(3, 4, K=0, graph=graph)
    with pytest.raises(TypeError, match="float64 but weight is torch.float32"):
        m(torch.randn(1, 192, 3, dtype=torch.float64))
    assert conv_mod.__all__ == ["ChebConv"]


@pytest.mark.parametrize("laplacian", ["normalized", "combinatorial"])
def test_operator_from_a_graph_equals_the_general_path_bitwise(laplacian):
    # as_operator(graph) builds L~ from L's arrays block by block (no float64 copy, no symmetry check:
    # what makes nside 2048 fit in 24 GB); it must equal the scipy route to the last bit.
    import types

    import scipy.sparse as sp

    from graphsphere.nn.functional.sparse import _graph_operator

    for s in (gs.sampling.HEALPix(8), gs.sampling.HEALPix(8, indices=np.arange(100, 300))):
        g = gs.SphereGraph(s, k=8, laplacian=laplacian)
        for a, dtype in ((1.0, torch.float32), (0.75, torch.float64)):
            op, ref = as_operator(g, dtype=dtype, a=a), as_operator(g.operator(a), dtype=dtype)
            for name in ("indptr", "indices", "values"):
                assert torch.equal(getattr(op, name), getattr(ref, name)), name
    # a row without a stored diagonal (an isolated vertex): left to the general path
    L = sp.csr_matrix(np.array([[1.0, -1.0, 0], [-1.0, 1.0, 0], [0, 0, 0]]))
    L.eliminate_zeros()
    assert _graph_operator(types.SimpleNamespace(L=L, lambda_max=2.0), 1.0, torch.float32, None) is None


def test_graph_operator_dtype_and_its_share_of_the_graphs_cache(graph):
    default, double = GraphOperator(graph), GraphOperator(graph, dtype=torch.float64)
    assert default.values.dtype == torch.get_default_dtype() and double.values.dtype == torch.float64
    ref = as_operator(graph.operator(0.75), dtype=torch.float64)
    assert torch.equal(GraphOperator(graph, a=0.75, dtype=torch.float64).values, ref.values)
    # a second module on the same graph, a and dtype shares the tensors; another a does not
    assert GraphOperator(graph).values is default.values
    assert not torch.equal(GraphOperator(graph, a=0.75).values, default.values)
