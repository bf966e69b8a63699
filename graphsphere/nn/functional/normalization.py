"""Batch norm over the channels of ``[batch, vertices, channels]`` signals,
with the ReLU that follows it fused in.

Why: the Chebyshev convolution returns vertex-major memory (a ``[B, V, C]``
view of ``[V, B, C]``). ``nn.BatchNorm1d`` wants ``[B, C, V]``: on that layout
torch copies and transposes, and the ReLU and its backward then run on
strided memory, which cost more than the convolution in a training step.
Batch norm only needs per-channel statistics over all other positions, so any
memory in which each row of C channels is contiguous can be read as an
``[N, C]`` table, whatever the order of batch and vertices. On CPU one
compiled pass computes the statistics (two-pass per block, merged in double:
as accurate as torch's), one pass applies scale, shift and ReLU; the backward
recomputes the ReLU mask from x (only x is saved, not the ReLU's output) and
takes two passes. The output has x's memory layout, so the next convolution
reads it in place. Elsewhere (CUDA, half precision, no compiler) the same
function runs torch's ``batch_norm`` on the ``[N, C]`` view.

Example
-------
>>> import torch
>>> from graphsphere.nn.functional.normalization import batch_norm_relu
>>> x = torch.randn(2, 48, 4)                        # [batch, vertices, channels]
>>> rm, rv = torch.zeros(4), torch.ones(4)
>>> y = batch_norm_relu(x, torch.ones(4), torch.zeros(4), rm, rv, training=True)
>>> y.shape, bool((y >= 0).all())
(torch.Size([2, 48, 4]), True)
"""

from __future__ import annotations

import torch

from . import _cpu_kernel as _cpu_kernel_mod

__all__ = ["batch_norm_relu"]


def _rows(x: torch.Tensor):
    """The permutation that makes x's memory an [N, C] table (channels last and
    contiguous, the other dims in memory order), or None."""
    if x.stride(-1) != 1 and x.shape[-1] != 1:
        return None
    lead = sorted(range(x.dim() - 1), key=lambda d: -x.stride(d))
    perm = (*lead, x.dim() - 1)
    return perm if x.permute(perm).is_contiguous() else None


def _kernel(x: torch.Tensor):
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    lib = _cpu_kernel_mod.load()
    return None if lib is None else lib.bn[str(x.dtype)[6:]]


def _ptr(t):
    return 0 if t is None else t.data_ptr()


def _param(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.detach().to(x.dtype).contiguous()


def _torch_bn_relu(x, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    """The same computation in torch ops on the [N, C] view (differentiable)."""
    C = x.shape[-1]
    perm = _rows(x)
    if perm is None:
        x = x.contiguous()
        perm = tuple(range(x.dim()))
    xp = x.permute(perm)
    y = torch.nn.functional.batch_norm(xp.reshape(-1, C), running_mean, running_var, weight, bias, training,
                                       momentum, eps)
    if relu:
        y = torch.relu(y)
    inverse = [0] * len(perm)
    for i, d in enumerate(perm):
        inverse[d] = i
    return y.view(xp.shape).permute(inverse)


def _forward(x, weight, bias, running_mean, running_var, training, momentum, eps, relu, kern):
    """(y, mean, invstd): one call of the compiled forward."""
    N, C = x.numel() // max(x.shape[-1], 1), x.shape[-1]
    y = torch.empty_like(x)  # same memory layout as x (dense: checked by the caller)
    stats = torch.empty(2, C, dtype=x.dtype)
    w, b = _param(weight, x), _param(bias, x)
    status = kern.bn_forward(x.data_ptr(), y.data_ptr(), N, C, _ptr(w), _ptr(b), _ptr(running_mean),
                             _ptr(running_var), int(training), float(momentum), float(eps), int(relu),
                             stats[0].data_ptr(), stats[1].data_ptr(), torch.get_num_threads())
    if status != 0:
        raise MemoryError("batch norm: could not allocate its per-chunk sums")
    return y, stats[0], stats[1]


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, relu, kern):
        y, mean, invstd = _forward(x, weight, bias, running_mean, running_var, training, momentum, eps, relu, kern)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.conf = (training, relu, eps, kern)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        training, relu, eps, kern = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: differentiate a torch recomputation
            return _double_backward(ctx, g, x, weight, bias, mean, invstd, training, relu, eps)
        if g.stride() != x.stride():
            g = torch.empty_like(x).copy_(g)
        N, C = x.numel() // max(x.shape[-1], 1), x.shape[-1]
        dx = torch.empty_like(x) if need_x else None
        dw = torch.empty(C, dtype=x.dtype) if need_w and weight is not None else None
        db = torch.empty(C, dtype=x.dtype) if need_b and bias is not None else None
        w, b = _param(weight, x), _param(bias, x)
        status = kern.bn_backward(x.data_ptr(), g.data_ptr(), _ptr(dx), N, C, _ptr(w), _ptr(b), mean.data_ptr(),
                                  invstd.data_ptr(), int(training), int(relu), _ptr(dw), _ptr(db),
                                  torch.get_num_threads())
        if status != 0:
            raise MemoryError("batch norm: could not allocate its per-chunk sums")
        dw = None if dw is None else dw.to(weight.dtype)
        db = None if db is None else db.to(bias.dtype)
        return dx, dw, db, None, None, None, None, None, None, None


def _double_backward(ctx, g, x, weight, bias, mean, invstd, training, relu, eps):
    """Gradients as a differentiable graph (for create_graph=True): the forward
    recomputed in torch ops, with the statistics it used, and differentiated."""
    need = ctx.needs_input_grad[:3]
    with torch.enable_grad():
        inputs = [t for t, n in zip((x, weight, bias), need) if n and t is not None]
        shape = (1,) * (x.dim() - 1) + (-1,)
        if training:
            dims = tuple(range(x.dim() - 1))
            var, m = torch.var_mean(x, dim=dims, unbiased=False)
            xhat = (x - m.view(shape)) * torch.rsqrt(var + eps).view(shape)
        else:
            xhat = (x - mean.view(shape)) * invstd.view(shape)
        z = xhat
        if weight is not None:
            z = z * weight.view(shape)
        if bias is not None:
            z = z + bias.view(shape)
        y = torch.relu(z) if relu else z
        grads = iter(torch.autograd.grad(y, inputs, g, create_graph=True))
    out = [next(grads) if n and t is not None else None for t, n in zip((x, weight, bias), need)]
    return (*out, None, None, None, None, None, None, None)


def batch_norm_relu(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool,
                    momentum: float = 0.1, eps: float = 1e-5, relu: bool = True) -> torch.Tensor:
    """Batch norm over the last dimension (channels) of ``x``, then ReLU.

    The semantics of ``torch.nn.functional.batch_norm`` (with channels last):
    statistics over every other position; in training the running stats (if
    given) are updated in place with factor ``momentum`` (unbiased variance);
    else they normalise. ``relu=False`` gives the plain batch norm.

    Parameters
    ----------
    x : [..., channels], e.g. [batch, vertices, channels]; any memory order
        in which each row of channels is contiguous (a Chebyshev
        convolution's output is) is read in place, others are copied once.
    weight, bias : [channels] or None (affine parameters).
    running_mean, running_var : [channels] or None.

    Returns a tensor shaped and laid out like ``x``. Twice differentiable.
    To use it in ``nn.BatchNorm1d``-style modules::

        factor = 0.0 if self.momentum is None else self.momentum  # None: cumulative average
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        batch_norm_relu(x, self.weight, self.bias,
                        self.running_mean if not self.training or self.track_running_stats else None,
                        self.running_var if not self.training or self.track_running_stats else None,
                        self.training or self.running_mean is None, factor, self.eps)

    >>> x = torch.tensor([[[1.0], [3.0]]])
    >>> y = batch_norm_relu(x, None, None, None, None, training=True, relu=False)
    >>> [round(v, 4) for v in y.flatten().tolist()]
    [-1.0, 1.0]
    """
    if x.dim() < 2:
        raise ValueError(f"batch_norm_relu expects [..., channels] with at least 2 dimensions, got {tuple(x.shape)}")
    C = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and t.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) for {C} channels, got {tuple(t.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("evaluation mode needs running_mean and running_var (or pass training=True)")
    if training and x.numel() // max(C, 1) <= 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}")
    kern = _kernel(x)
    stats_ok = all(t is None or (t.dtype == x.dtype and t.is_contiguous() and t.device == x.device)
                   for t in (running_mean, running_var))
    if kern is None or not stats_ok or x.numel() == 0:
        return _torch_bn_relu(x, weight, bias, running_mean, running_var, training, momentum, eps, relu)
    if _rows(x) is None:
        x = x.contiguous()
    args = (x, weight, bias, running_mean, running_var, bool(training), float(momentum), float(eps), bool(relu), kern)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _BatchNormReLU.apply(*args)
    # Nothing to differentiate (inference): the kernel directly. The autograd function's bookkeeping
    # cost 25-60 us a call, more than the pass itself on a model's coarse levels.
    return _forward(*args)[0]
