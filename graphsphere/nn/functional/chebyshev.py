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

from . import _csrmm

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
    if hasattr(obj, "operator") and hasattr(obj, "lmax"):  # a SphereGraph
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


# -- the sparse product ------------------------------------------------------

_PARALLEL_MIN_WORK = 1 << 18  # multiply-adds (nnz x channels) below which one thread is faster

def laplacian_matmul(op: SparseOperator, X: torch.Tensor, alpha: float = 1.0, Y: torch.Tensor | None = None,
                     beta: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * (L~ @ X) + beta * Y`` for vertex-major X of shape [n, ...].

    X must be contiguous; ``out`` (optional, contiguous, not X) may be Y itself.
    On CPU with the compiled kernel this is one fused pass; elsewhere it falls
    back to torch's sparse CSR product.
    """
    if X.shape[0] != op.n:
        raise ValueError(f"the signal has {X.shape[0]} vertices, the operator {op.n}")
    if X.dtype != op.dtype:
        raise TypeError(f"signal dtype {X.dtype} differs from operator dtype {op.dtype}")
    if out is None:
        out = torch.empty_like(X, memory_format=torch.contiguous_format)
    kern = _cpu_kernel(X, op)
    if kern is not None:
        if not X.is_contiguous() or (Y is not None and not Y.is_contiguous()) or not out.is_contiguous():
            raise ValueError("laplacian_matmul needs contiguous tensors")
        if Y is not None and Y.shape != X.shape:
            raise ValueError(f"Y has shape {tuple(Y.shape)}, X {tuple(X.shape)}")
        q = X[0].numel()
        # Threads are started per call (~50 us): only worth it for large products.
        nthreads = torch.get_num_threads() if op.nnz * q >= _PARALLEL_MIN_WORK else 1
        kern(op.indptr.data_ptr(), op.indices.data_ptr(), op.values.data_ptr(), X.data_ptr(),
             0 if Y is None else Y.data_ptr(), out.data_ptr(), 1, op.n, q,
             float(alpha), float(beta), nthreads)
        return out
    AX = torch.sparse.mm(op.to_torch(), X.reshape(op.n, -1)).view(X.shape)
    if Y is None:
        return out.copy_(AX).mul_(alpha) if alpha != 1 else out.copy_(AX)
    return torch.add(AX if alpha == 1 else AX.mul_(alpha), Y, alpha=beta, out=out)


def _cpu_kernel(X: torch.Tensor, op: SparseOperator):
    if X.device.type != "cpu" or X.dtype not in (torch.float32, torch.float64):
        return None
    fns = _csrmm.load()
    if fns is None:
        return None
    return fns[(str(X.dtype)[6:], str(op.indices.dtype)[6:])]


# -- Chebyshev recursion and Clenshaw summation --------------------------------

def _chebyshev_terms(op: SparseOperator, x: torch.Tensor, K: int):
    """Yield T_0 x, T_1 x, ..., T_{K-1} x (vertex-major), two buffers in all.

    Each yielded tensor is overwritten two steps later: use it at once."""
    yield x
    if K == 1:
        return
    prev, cur = x, laplacian_matmul(op, x)
    yield cur
    for _ in range(2, K):
        # T_k = 2 L~ T_{k-1} - T_{k-2}, written over T_{k-2} (never over x).
        nxt = laplacian_matmul(op, cur, 2.0, prev, -1.0, out=None if prev is x else prev)
        yield nxt
        prev, cur = cur, nxt


def _clenshaw(op: SparseOperator, h_minus, K: int) -> torch.Tensor:
    """S = sum_k T_k(L~) h_k by Clenshaw's recurrence, two buffers in all.

    ``h_minus(k, b)`` returns h_k - b, overwriting b (or a new h_k when b is
    None). b_k = h_k + 2 L~ b_{k+1} - b_{k+2} for k = K-1..1; then
    S = h_0 + L~ b_1 - b_2.
    """
    b1 = b2 = None
    for k in range(K - 1, 0, -1):
        t = h_minus(k, b2)
        if b1 is not None:
            t = laplacian_matmul(op, b1, 2.0, t, 1.0, out=t)
        b2, b1 = b1, t
    s = h_minus(0, b2)
    if b1 is not None:
        s = laplacian_matmul(op, b1, 1.0, s, 1.0, out=s)
    return s


def _mix(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None, beta: float = 1.0) -> torch.Tensor:
    """Channel mixing of a vertex-major signal [V, B, Cin] @ [Cin, Cout]:
    out <- x @ w + beta * out (in place), or a new x @ w."""
    x2 = x.reshape(-1, x.shape[-1])
    if out is None:
        return torch.mm(x2, w).view(*x.shape[:-1], w.shape[1])
    out.view(-1, w.shape[1]).addmm_(x2, w, beta=beta)
    return out


def _forward(op: SparseOperator, xv: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y (vertex-major) from vertex-major x; the sparse products run on
    whichever side has fewer channels."""
    K, cin, cout = weight.shape
    if K > 1 and cout < cin:
        # Clenshaw on the output side: S = sum_k T_k (x theta_k).
        y = _clenshaw(op, lambda k, b: _mix(xv, weight[k]) if b is None else _mix(xv, weight[k], b, -1.0), K)
    else:
        y = None
        for k, t in enumerate(_chebyshev_terms(op, xv, K)):
            y = _mix(t, weight[k]) if y is None else _mix(t, weight[k], y)
    if bias is not None:
        y += bias
    return y


class _ChebConvFunction(torch.autograd.Function):
    """Saves only x and the weights; backward recomputes the Chebyshev terms.

    With G = dL/dy and symmetric L~ (so T_k^T = T_k):
      dL/dtheta_k = (T_k x)^T G = x^T (T_k G),   dL/dx = sum_k T_k (G theta_k^T).
    Either recurse on G (Cout channels): Z_k = T_k G gives both gradients; or
    recurse on x (Cin channels) for dtheta and sum dx by Clenshaw (Cin
    channels, skipped when x needs no gradient). The cheaper one is taken.
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
        gy = gy.contiguous()
        gx = gw = gb = None
        if need_b and ctx.has_bias:
            gb = gy.reshape(-1, cout).sum(0)
        x2 = xv.reshape(-1, cin)
        cost_g = cout  # one recursion on G
        cost_x = cin * (int(need_w) + int(need_x))  # recursion on x, Clenshaw on G theta^T
        if need_w and K > 1 and cost_x < cost_g:
            gw = torch.empty_like(weight)
            for k, t in enumerate(_chebyshev_terms(op, xv, K)):
                torch.mm(t.reshape(-1, cin).t(), gy.reshape(-1, cout), out=gw[k])
            if need_x:
                gx = _clenshaw(op, lambda k, b: _mix(gy, weight[k].t()) if b is None
                               else _mix(gy, weight[k].t(), b, -1.0), K)
        elif need_x or need_w:
            gw = torch.empty_like(weight) if need_w else None
            for k, z in enumerate(_chebyshev_terms(op, gy, K)):
                if need_w:
                    torch.mm(x2.t(), z.reshape(-1, cout), out=gw[k])
                if need_x:
                    gx = _mix(z, weight[k].t()) if gx is None else _mix(z, weight[k].t(), gx)
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
        xv = x.to(dtype).transpose(0, 1)  # [V, B, Cin] view
        if not xv.is_contiguous():
            xv = xv.contiguous()
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        op = operator.to(dtype=dtype)
        if K == 1:  # no sparse product at all
            yv = _mix(xv, w[0]) if b is None else torch.addmm(b, xv.reshape(-1, cin), w[0]).view(*xv.shape[:2], cout)
        else:
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
