"""Chebyshev graph convolution, memory-lean: y = sum_k T_k(L~) x theta_k.

The K Chebyshev terms T_k(L~) x are never all held in memory: the forward
pass keeps two of them at a time and saves only its input for backward;
backward recomputes the terms it needs (see :class:`_ChebConvFunction`). The
activation memory of a layer is O(vertices x batch x channels) whatever K.

Internally, signals are *vertex-major*: ``[vertices, batch, channels]``
contiguous, so that one row of the sparse product gathers batch x channels
contiguous numbers per neighbour, and the channel mixing is one matrix
product on ``[vertices * batch, channels]``. The output is returned as a
``[batch, vertices, channels]`` view of vertex-major memory; the next
Chebyshev layer takes it without a copy (call ``.contiguous()`` where a
batch-major buffer is needed, and ``.reshape`` rather than ``.view``).

Example
-------
>>> import torch, graphsphere as gs
>>> from graphsphere.nn.functional.chebyshev import as_operator, cheb_conv
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
>>> op = as_operator(g)                              # L~ = 2 L / lmax - I
>>> x = torch.randn(2, g.npix, 3)                    # [batch, vertices, in]
>>> w = torch.randn(5, 3, 4)                         # [K, in, out]
>>> cheb_conv(x, op, w).shape
torch.Size([2, 192, 4])
"""

from __future__ import annotations

import warnings

import torch

from ...graph import SphereGraph
from . import _cpu_kernel as _cpu_kernel_mod

__all__ = ["SparseOperator", "as_operator", "cheb_conv", "laplacian_matmul"]


class SparseOperator:
    """A square, symmetric sparse matrix (the rescaled Laplacian L~) in CSR
    form, as three torch tensors on one device.

    ``indptr`` [n + 1] and ``indices`` [nnz] share an integer dtype (int32
    when it fits); ``values`` [nnz] is floating. Build one with
    :func:`as_operator`, which checks it; the constructor trusts its inputs.
    """

    __slots__ = ("indptr", "indices", "values", "_torch_csr")

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

    def to(self, device=None, dtype=None) -> "SparseOperator":
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


# -- one fused step of a recursion ---------------------------------------------

_PARALLEL_MIN_WORK = 1 << 18  # multiply-adds per step below which one thread is faster (threads cost ~50 us)


def _empty(*shape, like: torch.Tensor) -> torch.Tensor:
    """A new contiguous buffer (on CPU: backed by huge pages where possible)."""
    t = torch.empty(*shape, dtype=like.dtype, device=like.device)
    if t.device.type == "cpu":
        _cpu_kernel_mod.advise_hugepages(t)
    return t


def _vp(t: torch.Tensor) -> torch.Tensor:
    """t as a [V, P, channels] tensor whose channels are contiguous."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else _empty(*t.shape, like=t).copy_(t)


def _step(op: SparseOperator, *, X=None, alpha=1.0, Y=None, beta=1.0, E=None, Wpre=None, obias=None,
          store=True, out=None, Wpost=None, acc=None, acc_init=False, abias=None, G=None, gram=None):
    """One pass over the vertices. Per vertex i, with signals [V, P, channels]:

        t_i = alpha L~_i X + beta Y_i + E_i @ Wpre + obias
        out_i = t_i (if store);  acc_i = [abias +] acc_i + t_i @ Wpost;  gram += G_i^T t_i

    Any of X, Y, E, Wpost, G may be None. ``out`` (contiguous, may be Y, not
    X) is allocated when None. Returns out (or None without store).
    """
    ref = next(t for t in (X, Y, E) if t is not None)
    V, P = ref.shape[0], ref.shape[1]
    C = (X if X is not None else Y).shape[2] if (X is not None or Y is not None) else Wpre.shape[1]
    if store and out is None:
        out = _empty(V, P, C, like=ref)
    X, Y, E, G = (None if t is None else _vp(t) for t in (X, Y, E, G))
    kern = _cpu_kernel(ref, op)
    if kern is not None:
        def ptr(t):
            return 0 if t is None else t.data_ptr()

        def strides(t):
            return (0, 0) if t is None else (t.stride(0), t.stride(1))

        work = (op.nnz * P * C if X is not None else 0) + V * P * C * (
            (0 if E is None else E.shape[2]) + (0 if Wpost is None else Wpost.shape[1])
            + (0 if G is None else G.shape[2]))
        nthreads = torch.get_num_threads() if work >= _PARALLEL_MIN_WORK else 1
        status = kern(op.indptr.data_ptr(), op.indices.data_ptr(), op.values.data_ptr(), V, P, C,
                      ptr(X), *strides(X), float(alpha), ptr(Y), *strides(Y), float(beta),
                      ptr(E), *strides(E), 0 if E is None else E.shape[2], ptr(Wpre),
                      ptr(obias), ptr(out if store else None),
                      ptr(Wpost), 0 if Wpost is None else Wpost.shape[1], ptr(acc), int(acc_init), ptr(abias),
                      ptr(G), *strides(G), 0 if G is None else G.shape[2], ptr(gram), nthreads)
        if status != 0:
            raise MemoryError("the Chebyshev kernel could not allocate its per-thread scratch rows")
        return out if store else None
    # Pure torch: the same arithmetic, with temporaries.
    t = None
    if X is not None:
        t = torch.sparse.mm(op.to_torch(), X.reshape(V, P * C)).view(V, P, C)
        if alpha != 1:
            t.mul_(alpha)
    if Y is not None:
        t = Y * beta if t is None else t.add_(Y, alpha=beta)
    if E is not None:
        h = torch.matmul(E, Wpre)
        t = h if t is None else t.add_(h)
    if t is None:
        t = torch.zeros(V, P, C, dtype=ref.dtype, device=ref.device)
    if obias is not None:
        t.add_(obias)
    if Wpost is not None:
        t2, a2 = t.reshape(V * P, C), acc.view(V * P, -1)
        if acc_init:
            torch.mm(t2, Wpost, out=a2)
            if abias is not None:
                a2.add_(abias)
        else:
            a2.addmm_(t2, Wpost)
    if G is not None:
        gram.addmm_(G.reshape(V * P, -1).t(), t.reshape(V * P, C))
    if store:
        out.copy_(t)
        return out
    return None


def _cpu_kernel(ref: torch.Tensor, op: SparseOperator):
    if ref.device.type != "cpu" or ref.dtype not in (torch.float32, torch.float64):
        return None
    fns = _cpu_kernel_mod.load()
    if fns is None:
        return None
    return fns[(str(ref.dtype)[6:], str(op.indices.dtype)[6:])]


def laplacian_matmul(op: SparseOperator, X: torch.Tensor, alpha: float = 1.0, Y: torch.Tensor | None = None,
                     beta: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * (L~ @ X) + beta * Y`` for a signal X of shape [V, P, channels].

    ``out`` (optional, contiguous) may be Y itself, not X. On CPU this is one
    pass of the compiled kernel; elsewhere torch's sparse CSR product.

    >>> import torch, scipy.sparse as sp
    >>> op = as_operator(sp.csr_matrix([[0.0, 1.0], [1.0, 0.0]]))
    >>> laplacian_matmul(op, torch.tensor([[[1.0]], [[2.0]]])).flatten().tolist()
    [2.0, 1.0]
    """
    if X.dim() != 3 or X.shape[0] != op.n:
        raise ValueError(f"X must be [{op.n}, P, channels] for this operator, got {tuple(X.shape)}")
    if X.dtype != op.dtype:
        raise TypeError(f"signal dtype {X.dtype} differs from operator dtype {op.dtype}")
    if Y is not None and Y.shape != X.shape:
        raise ValueError(f"Y has shape {tuple(Y.shape)}, X {tuple(X.shape)}")
    if out is not None and (not out.is_contiguous() or out.shape != X.shape or out.data_ptr() == X.data_ptr()):
        raise ValueError("out must be a contiguous tensor shaped like X, and not X itself")
    return _step(op, X=X, alpha=alpha, Y=Y if beta != 0 else None, beta=beta, out=out)


# -- Chebyshev recursion and Clenshaw summation, one fused step per term --------

def _recurse(op: SparseOperator, x: torch.Tensor, K: int, per_k, own: bool = False) -> None:
    """Run T_0 x, ..., T_{K-1} x (x: [V, P, C]) through ``_step``, with the
    mixing / Gram arguments ``per_k(k)`` for each term. Two buffers in all:
    T_k = 2 L~ T_{k-1} - T_{k-2} is written over T_{k-2} (over x only if
    ``own``: x is a private buffer), and the last term is not stored at all."""
    # The sparse product gathers whole vertex rows: a strided x (the layer's
    # batch-major input) is copied to vertex-major order by the first step.
    copy = K > 1 and not x.is_contiguous()
    xc = _step(op, Y=x, beta=1.0, store=copy, **per_k(0))
    x, copy = (xc, True) if copy else (x, own)
    if K == 1:
        return
    prev, cur = x, _step(op, X=x, store=K > 2, **per_k(1))
    for k in range(2, K):
        nxt = _step(op, X=cur, alpha=2.0, Y=prev, beta=-1.0, store=k < K - 1,
                    out=prev if prev is not x or copy else None, **per_k(k))
        prev, cur = cur, nxt


def _clenshaw(op: SparseOperator, E: torch.Tensor, W: torch.Tensor, bias=None) -> torch.Tensor:
    """S = sum_k T_k(L~) (E @ W[k]) (+ bias) by Clenshaw's recurrence, the
    products E @ W[k] formed inside each step: b_{K-1} = E W_{K-1};
    b_k = E W_k + 2 L~ b_{k+1} - b_{k+2}; S = E W_0 + L~ b_1 - b_2."""
    K = W.shape[0]
    if K == 1:
        return _step(op, E=E, Wpre=W[0], obias=bias)
    b2, b1 = None, _step(op, E=E, Wpre=W[K - 1])
    for k in range(K - 2, -1, -1):
        last = k == 0
        t = _step(op, X=b1, alpha=1.0 if last else 2.0, Y=b2, beta=-1.0, E=E, Wpre=W[k],
                  obias=bias if last else None, out=b2)
        b2, b1 = b1, t
    return b1


def _forward(op: SparseOperator, xv: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """y (vertex-major [V, B, Cout]) from x ([V, B, Cin], any strides): the
    sparse products run on whichever side has fewer channels."""
    K, cin, cout = weight.shape
    if K > 1 and cout < cin:
        return _clenshaw(op, xv, weight, bias)  # sum_k T_k (x theta_k): Cout channels
    y = _empty(xv.shape[0], xv.shape[1], cout, like=xv)
    _recurse(op, xv, K, lambda k: dict(Wpost=weight[k], acc=y, acc_init=k == 0, abias=bias))
    return y


class _ChebConvFunction(torch.autograd.Function):
    """Saves only x and the weights; backward recomputes the Chebyshev terms.

    With G = dL/dy and symmetric L~ (so T_k^T = T_k):
      dL/dtheta_k = (T_k x)^T G = x^T (T_k G),   dL/dx = sum_k T_k (G theta_k^T).
    Either recurse on G (Cout channels): each Z_k = T_k G gives both gradients
    in the same pass; or recurse on x (Cin channels) for dtheta, and sum dx by
    Clenshaw (Cin channels, skipped when x needs no gradient, as for the
    first layer of a network). The cheaper is taken.
    """

    @staticmethod
    def forward(ctx, xv, weight, bias, op):
        ctx.op = op
        ctx.has_bias = bias is not None
        ctx.save_for_backward(xv, weight)
        return _forward(op, xv, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        xv, weight = ctx.saved_tensors
        op = ctx.op
        K, cin, cout = weight.shape
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        own = not gy.is_contiguous()  # then the vertex-major copy is ours to overwrite
        if own:
            gy = _empty(*gy.shape, like=gy).copy_(gy)
        gx = gw = gb = None
        if need_b and ctx.has_bias:
            gb = gy.sum((0, 1))
        wT = weight.transpose(1, 2).contiguous()  # theta_k^T: [K, Cout, Cin]
        if need_w and K > 1 and cin * (int(need_w) + int(need_x)) < cout:
            gwT = torch.zeros(K, cout, cin, dtype=weight.dtype, device=weight.device)
            _recurse(op, xv, K, lambda k: dict(G=gy, gram=gwT[k]))  # (T_k x)^T G, transposed
            gw = gwT.transpose(1, 2).contiguous()
            if need_x:
                gx = _clenshaw(op, gy, wT)
        elif need_x or need_w:
            gw = torch.zeros_like(weight) if need_w else None
            if need_x:
                gx = _empty(*xv.shape, like=xv)

            def per_k(k):
                kw = dict(Wpost=wT[k], acc=gx, acc_init=k == 0) if need_x else {}
                return dict(kw, G=xv, gram=gw[k]) if need_w else kw

            _recurse(op, gy, K, per_k, own=own)
        return gx, gw, gb, None


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def cheb_conv(x: torch.Tensor, operator, weight: torch.Tensor, bias: torch.Tensor | None = None,
              check_finite: bool = False) -> torch.Tensor:
    """Chebyshev graph convolution y = sum_k T_k(L~) x theta_k (+ bias).

    Parameters
    ----------
    x : [batch, vertices, in_channels]
    operator : the rescaled Laplacian L~: a :class:`SparseOperator` (see
        :func:`as_operator`) or a torch sparse CSR/COO tensor (converted, and
        checked, on every call: build the operator once where speed matters).
    weight : [K, in_channels, out_channels]; K = 1 is a per-vertex linear map.
    bias : [out_channels] or None.
    check_finite : raise if x holds NaN or Inf (one extra read of x).

    Returns [batch, vertices, out_channels] (a view of vertex-major memory).
    Under ``torch.autocast``, and for float16/bfloat16 inputs, the
    computation runs in float32 (sparse products in half precision lose too
    much) and the result is float32 under autocast, else x's dtype.
    Gradients flow to x, weight and bias (not to the operator).

    >>> import torch, scipy.sparse as sp
    >>> L = sp.diags([1.0, 0.0, -1.0])             # a toy symmetric L~
    >>> y = cheb_conv(torch.ones(1, 3, 1), L, torch.ones(2, 1, 1))  # (I + L~) x
    >>> y.flatten().tolist()
    [2.0, 1.0, 0.0]
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a [batch, vertices, channels] tensor, got {shape}; "
                         "add a batch dimension with x.unsqueeze(0)")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        raise ValueError(f"weight must be [K, in_channels, out_channels], got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    K, cin, cout = weight.shape
    if K < 1:
        raise ValueError("weight must hold K >= 1 Chebyshev coefficients")
    if x.shape[2] != cin:
        raise ValueError(f"x has {x.shape[2]} channels, weight expects in_channels={cin}")
    if bias is not None and bias.shape != (cout,):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias.shape)}")
    if not isinstance(operator, SparseOperator):
        operator = as_operator(operator, dtype=torch.float64, device=x.device)
    if x.shape[1] != operator.n:
        raise ValueError(f"x has {x.shape[1]} vertices but the operator has {operator.n}: "
                         "use the graph of the sampling the data lives on")
    if x.device != operator.device:
        raise ValueError(f"x is on {x.device}, the operator on {operator.device}: move the module or data")
    if check_finite:
        _check_finite(x)

    out_dtype = x.dtype
    if _autocast_enabled(x.device.type):
        out_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    elif weight.dtype != x.dtype:
        raise TypeError(f"x is {x.dtype} but weight is {weight.dtype}: convert one (e.g. module.to(x.dtype))")
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    with torch.autocast(x.device.type, enabled=False):
        xv = _vp(x.to(dtype).transpose(0, 1))  # [V, B, Cin] view: the kernel reads x in place
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        op = operator.to(dtype=dtype)
        yv = _ChebConvFunction.apply(xv, w, b, op)
        y = yv.transpose(0, 1)  # [B, V, Cout] view
    return y if y.dtype == out_dtype else y.to(out_dtype)


def _check_finite(x: torch.Tensor) -> None:
    # One reduction instead of a boolean mask as large as x; a non-finite sum
    # is confirmed element-wise before raising (the sum of huge finite values
    # can overflow).
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf values: clean the input (e.g. torch.nan_to_num) "
                         "or find where they appear upstream")
