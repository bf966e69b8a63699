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

import torch

from . import _cpu_kernel as _cpu_kernel_mod
from .sparse import SparseOperator, as_operator

__all__ = ["SparseOperator", "as_operator", "cheb_conv", "laplacian_matmul"]


# -- dispatch: the compiled CPU kernel, or pure torch (any device) ---------------

def _cpu_kernel(ref: torch.Tensor, op: SparseOperator):
    """The compiled functions for ref's dtype and op's index dtype, or None
    (not on CPU, a dtype it lacks, no compiler, GRAPHSPHERE_NO_KERNEL=1).
    Everything below dispatches through here, so that tests can force the
    torch path (the one CUDA takes) by replacing it."""
    if ref.device.type != "cpu":
        return None
    table = _KERNELS.get("conv")
    if table is None:
        lib = _cpu_kernel_mod.load()
        if lib is None:
            return None
        table = _KERNELS["conv"] = {(getattr(torch, f), getattr(torch, i)): fns for (f, i), fns in lib.conv.items()}
    return table.get((ref.dtype, op.indices.dtype))


_KERNELS: dict = {}  # the compiled functions keyed by torch dtypes (no string work per call)


def _empty(*shape, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(*shape, dtype=like.dtype, device=like.device)


def _vp(t: torch.Tensor) -> torch.Tensor:
    """t as a [V, P, channels] tensor whose channels are contiguous (a view
    when they already are, else a copy).

    A broadcast vertex or batch dimension (stride 0, as in the gradient of a
    ``.sum()`` or ``.mean()``) stays broadcast: only what differs is copied.

    >>> g = torch.ones(()).expand(5, 3, 4)            # the gradient of y.sum()
    >>> c = _vp(g); c.stride(), c.untyped_storage().nbytes()
    ((0, 0, 1), 16)
    """
    if t.stride(-1) == 1 or t.shape[-1] == 1:
        return t
    if t.numel() == 0:
        return _empty(*t.shape, like=t)
    base = t
    for d in (0, 1):
        if t.stride(d) == 0:
            base = base.narrow(d, 0, 1)
    return base.contiguous().expand(t.shape)


def _like(t: torch.Tensor) -> torch.Tensor:
    """An empty tensor laid out as t when t is dense and its channels contiguous, else contiguous."""
    e = torch.empty_like(t)  # t's strides when t has no gaps or overlaps
    return e if e.stride(-1) == 1 else _empty(*t.shape, like=t)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _csr(op: SparseOperator) -> tuple[int, int, int]:
    return op.indptr.data_ptr(), op.indices.data_ptr(), op.values.data_ptr()


def _check_status(status: int) -> None:
    if status != 0:
        raise MemoryError("the Chebyshev kernel could not allocate its temporaries "
                          "(two signals of the layer's size): free memory or use a smaller batch")


# -- pure torch: one step of a recursion, with temporaries -------------------------

def _step(op: SparseOperator, *, X=None, alpha=1.0, Y=None, beta=1.0, E=None, Wpre=None, obias=None,
          store=True, out=None, Wpost=None, acc=None, acc_init=False, abias=None, G=None, gram=None):
    """One term, in torch (CUDA, other devices, no compiler). Per vertex i,
    with signals [V, P, channels]:

        t_i = alpha L~_i X + beta Y_i + E_i @ Wpre + obias
        out_i = t_i (if store);  acc_i = [abias +] acc_i + t_i @ Wpost;  gram += G_i^T t_i

    Any of X, Y, E, Wpost, G may be None. ``out`` may be Y, not X. Returns
    out (allocated when None) or None without store.
    """
    ref = next(t for t in (X, Y, E) if t is not None)
    V, P = ref.shape[0], ref.shape[1]
    t = None
    if X is not None:
        C = X.shape[2]
        t = torch.sparse.mm(op.to_torch(), X.reshape(V, P * C)).view(V, P, C)
        if alpha != 1:
            t.mul_(alpha)
    if Y is not None:
        t = Y * beta if t is None else t.add_(Y, alpha=beta)
    if E is not None:
        h = torch.matmul(E, Wpre)
        t = h if t is None else t.add_(h)
    if obias is not None:
        t.add_(obias)
    if Wpost is not None:
        t2, a2 = t.reshape(V * P, -1), acc.view(V * P, -1)
        if acc_init:
            torch.mm(t2, Wpost, out=a2)
            if abias is not None:
                a2.add_(abias)
        else:
            a2.addmm_(t2, Wpost)
    if G is not None:
        gram.addmm_(G.reshape(V * P, -1).t(), t.reshape(V * P, -1))
    if not store:
        return None
    if out is None:
        return t if t is not X and t is not Y and t is not E else t.clone()
    return out.copy_(t)


def _recurse(op: SparseOperator, x: torch.Tensor, K: int, per_k) -> None:
    """Run T_0 x, ..., T_{K-1} x (x: [V, P, C]) through ``_step``, with the
    mixing / Gram arguments ``per_k(k)`` for each term. Two terms are held at
    a time and the last one is not stored."""
    _step(op, Y=x, store=False, **per_k(0))
    if K == 1:
        return
    prev, cur = x, _step(op, X=x, store=K > 2, **per_k(1))
    for k in range(2, K):
        nxt = _step(op, X=cur, alpha=2.0, Y=prev, beta=-1.0, store=k < K - 1,
                    out=prev if prev is not x else None, **per_k(k))
        prev, cur = cur, nxt


def _clenshaw(op: SparseOperator, E: torch.Tensor, W: torch.Tensor, bias=None) -> torch.Tensor:
    """S = sum_k T_k(L~) (E @ W[k]) (+ bias) by Clenshaw's recurrence:
    b_{K-1} = E W_{K-1}; b_k = E W_k + 2 L~ b_{k+1} - b_{k+2}; S = E W_0 + L~ b_1 - b_2."""
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
    if beta == 0:
        Y = None
    if X.numel() == 0:
        return torch.zeros_like(X) if out is None else out.zero_()
    kern = _cpu_kernel(X, op)
    if kern is None:
        return _step(op, X=X, alpha=alpha, Y=Y, beta=beta, out=out)
    X = _vp(X)
    Y = None if Y is None else _vp(Y)
    if out is None:
        out = _empty(*X.shape, like=X)
    V, P, C = X.shape
    _check_status(kern.cheb_step(*_csr(op), V, P, C, X.data_ptr(), X.stride(0), X.stride(1), float(alpha),
                                 _ptr(Y), Y.stride(0) if Y is not None else 0, Y.stride(1) if Y is not None else 0,
                                 float(beta), out.data_ptr(), torch.get_num_threads()))
    return out


# -- the convolution: forward, backward, and the weight-gradient product ----------

def _clenshaw_forward(cin: int, cout: int, K: int) -> bool:
    """Forward by Clenshaw (sparse products on the output's channels) when it has fewer."""
    return K > 1 and cout < cin


def _forward(op: SparseOperator, xv: torch.Tensor, weight: torch.Tensor, bias, check: bool = False) -> torch.Tensor:
    """y (vertex-major [V, B, Cout], contiguous) from x ([V, B, Cin], channels
    contiguous, any other strides) and weight [K, Cin, Cout]. With ``check``,
    raise if x holds NaN or Inf (checked by the kernel as it reads x)."""
    K, cin, cout = weight.shape
    V, B = xv.shape[0], xv.shape[1]
    if xv.numel() == 0 or cout == 0:
        y = xv.new_zeros(V, B, cout)
        return y if bias is None else y.add_(bias)
    clenshaw = _clenshaw_forward(cin, cout, K)
    kern = _cpu_kernel(xv, op)
    if kern is None:
        if check:
            _check_finite(xv)
        if clenshaw:
            return _clenshaw(op, xv, weight, bias)
        y = _empty(V, B, cout, like=xv)
        _recurse(op, xv, K, lambda k: {"Wpost": weight[k], "acc": y, "acc_init": k == 0, "abias": bias})
        return y
    y = _empty(V, B, cout, like=xv)
    weight = weight.contiguous()
    status = kern.cheb_forward(*_csr(op), V, B, cin, cout, K, xv.data_ptr(), xv.stride(0), xv.stride(1),
                               weight.data_ptr(), _ptr(bias), y.data_ptr(), int(clenshaw), int(check),
                               torch.get_num_threads())
    if status == 2:  # the first pass saw NaN or Inf: in x, or only in the weights (not x's fault)?
        _check_finite(xv)
        status = 0
    _check_status(status)
    return y


def _backward_on_x(cin: int, cout: int, K: int, need_x: bool, need_w: bool) -> bool:
    """Backward by the recursion on x (plus Clenshaw for dx) when x has fewer
    channels than the output gradient counts twice (once per gradient)."""
    return need_w and K > 1 and cin * (int(need_w) + int(need_x)) < cout


def _backward(op: SparseOperator, xv: torch.Tensor, gy: torch.Tensor, weight: torch.Tensor, need_x: bool,
              need_w: bool):
    """(dL/dx [V, B, Cin] or None, dL/dweight [K, Cin, Cout] or None) from
    gy = dL/dy [V, B, Cout] (any strides)."""
    K, cin, cout = weight.shape
    vp = _vp(gy)
    own = vp is not gy and 0 not in vp.stride()  # a whole copy: ours to overwrite
    gy = vp
    if gy.numel() == 0 or xv.numel() == 0:
        return (torch.zeros_like(xv) if need_x else None,
                torch.zeros_like(weight) if need_w else None)
    on_x = _backward_on_x(cin, cout, K, need_x, need_w)
    kern = _cpu_kernel(xv, op)
    V, B = xv.shape[0], xv.shape[1]
    # dL/dx in x's own layout where the kernel writes it: autograd then hands it to x.grad as it is
    # (in another layout it would copy it: one more signal at the peak of the backward)
    gx = (_like(xv) if kern is not None else _empty(V, B, cin, like=xv)) if need_x else None
    gw = _empty(K, cin, cout, like=weight) if need_w else None
    if kern is not None:
        weight = weight.contiguous()
        status = kern.cheb_backward(*_csr(op), V, B, cin, cout, K, xv.data_ptr(), xv.stride(0), xv.stride(1),
                                    gy.data_ptr(), gy.stride(0), gy.stride(1), int(own), weight.data_ptr(), _ptr(gx),
                                    gx.stride(0) if need_x else 0, gx.stride(1) if need_x else 0, _ptr(gw),
                                    int(on_x), torch.get_num_threads())
        _check_status(status)
        return gx, gw
    wT = weight.transpose(1, 2).contiguous()  # theta_k^T: [K, Cout, Cin]
    if on_x:
        gwT = torch.zeros(K, cout, cin, dtype=weight.dtype, device=weight.device)
        _recurse(op, xv, K, lambda k: {"G": gy, "gram": gwT[k]})  # (T_k x)^T G, transposed
        gw = gwT.transpose(1, 2).contiguous()
        if need_x:
            gx = _clenshaw(op, gy, wT)
        return gx, gw
    if need_w:
        gw.zero_()

    def per_k(k):
        kw = {"Wpost": wT[k], "acc": gx, "acc_init": k == 0} if need_x else {}
        return dict(kw, G=xv, gram=gw[k]) if need_w else kw

    _recurse(op, gy, K, per_k)
    return gx, gw


class _ChebConvFunction(torch.autograd.Function):
    """y = sum_k T_k(L~) x theta_k (+ bias) on vertex-major [V, B, C] signals.

    Saves only x and the weights; backward recomputes the Chebyshev terms.
    With G = dL/dy and symmetric L~ (so T_k^T = T_k):
      dL/dtheta_k = (T_k x)^T G = x^T (T_k G),   dL/dx = sum_k T_k (G theta_k^T).
    Either recurse on G (Cout channels): each Z_k = T_k G gives both gradients
    in the same pass; or recurse on x (Cin channels) for dtheta, and sum dx by
    Clenshaw (Cin channels, skipped when x needs no gradient, as for the
    first layer of a network). The cheaper is taken.

    Twice differentiable: with ``create_graph=True`` the backward is built
    from differentiable pieces (dL/dx is this same convolution with the
    weights transposed, dL/dtheta is :class:`_ChebGramFunction`).
    """

    @staticmethod
    def forward(ctx, xv, weight, bias, op, check=False):
        ctx.op = op
        ctx.has_bias = bias is not None
        ctx.save_for_backward(xv, weight)
        return _forward(op, xv, weight, bias, check)

    @staticmethod
    def backward(ctx, gy):
        xv, weight = ctx.saved_tensors
        op = ctx.op
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gb = gy.sum((0, 1)) if need_b and ctx.has_bias else None
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            gx = _ChebConvFunction.apply(gy, weight.transpose(1, 2), None, op) if need_x else None
            gw = _ChebGramFunction.apply(xv, gy, op, weight.shape[0]) if need_w else None
            return gx, gw, gb, None, None
        gx, gw = _backward(op, xv, gy, weight, need_x, need_w)
        return gx, gw, gb, None, None


class _ChebGramFunction(torch.autograd.Function):
    """gw_k = x^T T_k(L~) g ([K, Cin, Cout]): the weight gradient of a
    Chebyshev convolution, as a function of x and g, for double backward.

    Its own gradients are Chebyshev convolutions: for an upstream H_k,
    dL/dx = sum_k T_k g H_k^T and dL/dg = sum_k T_k x H_k.
    """

    @staticmethod
    def forward(ctx, xv, gy, op, K):
        ctx.op = op
        ctx.save_for_backward(xv, gy)
        w_shape = torch.empty(K, xv.shape[2], gy.shape[2], dtype=xv.dtype, device=xv.device)
        return _backward(op, xv, gy, w_shape, False, True)[1]

    @staticmethod
    def backward(ctx, H):
        xv, gy = ctx.saved_tensors
        op = ctx.op
        need_x, need_g = ctx.needs_input_grad[:2]
        gx = _ChebConvFunction.apply(gy, H.transpose(1, 2), None, op) if need_x else None
        gg = _ChebConvFunction.apply(xv, H, None, op) if need_g else None
        return gx, gg, None, None


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
    check_finite : raise if x holds NaN or Inf (on CPU the kernel checks the
        values as it reads them: no extra pass).

    Returns [batch, vertices, out_channels] (a view of vertex-major memory).
    Under ``torch.autocast``, and for float16/bfloat16 inputs, the
    computation runs in float32 (sparse products in half precision lose too
    much) and the result is float32 under autocast, else x's dtype.
    Gradients flow to x, weight and bias (not to the operator), to any order
    (``create_graph=True`` works, e.g. for gradient penalties). An empty batch
    or zero channels give an empty (or bias-only) result.

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

    half = (torch.float16, torch.bfloat16)
    if _autocast_enabled(x.device.type):
        out_dtype = torch.float32 if x.dtype in half else x.dtype
        dtype = out_dtype
        with torch.autocast(x.device.type, enabled=False):
            yv = _apply(x.to(dtype), operator, weight.to(dtype), None if bias is None else bias.to(dtype),
                        check_finite)
        return yv.transpose(0, 1)
    if weight.dtype != x.dtype:
        raise TypeError(f"x is {x.dtype} but weight is {weight.dtype}: convert one (e.g. module.to(x.dtype))")
    if x.dtype in half:  # computed in float32, returned in x's dtype
        yv = _apply(x.float(), operator, weight.float(), None if bias is None else bias.float(), check_finite)
        return yv.transpose(0, 1).to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    return _apply(x, operator, weight, bias, check_finite).transpose(0, 1)  # [B, V, Cout] view


def _apply(x: torch.Tensor, op: SparseOperator, weight: torch.Tensor, bias, check_finite) -> torch.Tensor:
    """The autograd function on x's vertex-major view; returns y [V, B, Cout]."""
    if op.values.dtype != x.dtype:
        op = op.to(dtype=x.dtype)
    xv = x.transpose(0, 1)  # [V, B, Cin] view: the kernel reads x in place
    if xv.stride(-1) != 1 and xv.shape[-1] != 1:
        xv = _vp(xv)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xv, weight, bias)):
        return _ChebConvFunction.apply(xv, weight, bias, op, bool(check_finite))
    return _forward(op, xv, weight, bias, bool(check_finite))  # inference: no autograd bookkeeping


def _check_finite(x: torch.Tensor) -> None:
    # One reduction instead of a boolean mask as large as x; a non-finite sum
    # is confirmed element-wise before raising (the sum of huge finite values
    # can overflow).
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf values: clean the input (e.g. torch.nan_to_num) "
                         "or find where they appear upstream")
