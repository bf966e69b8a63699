"""The Chebyshev graph convolution layer.

Example
-------
>>> import torch, graphsphere as gs
>>> from graphsphere.nn.conv import ChebConv
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
>>> conv = ChebConv(3, 16, K=5, graph=g)
>>> conv
ChebConv(3, 16, K=5, vertices=192)
>>> conv(torch.randn(2, 192, 3)).shape
torch.Size([2, 192, 16])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .functional.chebyshev import SparseOperator, _check_operator, as_operator, cheb_conv

__all__ = ["ChebConv"]

_OP_BUFFERS = ("op_indptr", "op_indices", "op_values")


class ChebConv(nn.Module):
    """y = sum_{k<K} T_k(L~) x theta_k + bias, on a fixed graph.

    Parameters
    ----------
    in_channels, out_channels : int
    K : int
        Number of Chebyshev coefficients (filter order K - 1; K = 1 is a
        per-vertex linear map).
    graph : SphereGraph, optional
        Its rescaled Laplacian ``graph.operator(a)`` becomes the operator.
    operator : SparseOperator or sparse matrix, optional
        A prebuilt L~ (instead of ``graph``).
    bias : bool
    a : float
        Spectrum scale of L~ = (2a / lmax) L - I (used with ``graph``).
    check_finite : bool
        Raise on NaN/Inf in the input. Costs one read of x per call (a few
        percent of the layer); bad data then fails at the layer it enters,
        with a message, instead of as a NaN loss later. Set False for speed.

    The operator is held as three buffers (``op_indptr``, ``op_indices``,
    ``op_values``) that go into the state_dict: a model loads without the
    graph. A layer made without graph or operator gets its operator from
    ``load_state_dict``. Weights are [K, in, out], initialised N(0, 2/(in K)).
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, graph=None, operator=None,
                 bias: bool = True, a: float = 1.0, check_finite: bool = True):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("K", K)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if graph is not None and operator is not None:
            raise ValueError("pass graph= or operator=, not both")
        self.in_channels, self.out_channels, self.K = int(in_channels), int(out_channels), int(K)
        self.check_finite = check_finite
        self.weight = nn.Parameter(torch.empty(self.K, self.in_channels, self.out_channels))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        src = graph if graph is not None else operator
        if src is not None:
            op = as_operator(src, dtype=self.weight.dtype, a=a)
            self._set_operator(op)
        else:  # filled by load_state_dict
            for name in _OP_BUFFERS:
                self.register_buffer(name, torch.empty(0, dtype=torch.float32 if name == "op_values"
                                                       else torch.int32))
        self.reset_parameters()

    def _set_operator(self, op: SparseOperator) -> None:
        for name, t in zip(_OP_BUFFERS, (op.indptr, op.indices, op.values)):
            if name in self._buffers:
                setattr(self, name, t)
            else:
                self.register_buffer(name, t)

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 2 / (in_channels K)) (He et al., as in DeepSphere); bias 0."""
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (self.in_channels * self.K)))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def vertices(self) -> int | None:
        """Number of vertices of the graph (None before an operator is set)."""
        return self.op_indptr.numel() - 1 if self.op_indptr.numel() else None

    @property
    def operator(self) -> SparseOperator:
        """The rescaled Laplacian L~ (views of the buffers, no copy)."""
        if self.vertices is None:
            raise RuntimeError("this ChebConv has no operator: pass graph= or operator=, or load a state_dict")
        return SparseOperator(self.op_indptr, self.op_indices, self.op_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, vertices, in_channels] -> [batch, vertices, out_channels]."""
        return cheb_conv(x, self.operator, self.weight, self.bias, check_finite=self.check_finite)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The operator's size comes from the checkpoint: resize the buffers
        # (values keep this module's dtype and device) before loading them.
        present = [prefix + n in state_dict for n in _OP_BUFFERS]
        if all(present):
            for name in _OP_BUFFERS:
                src, cur = state_dict[prefix + name], getattr(self, name)
                dtype = cur.dtype if name == "op_values" else src.dtype
                setattr(self, name, torch.empty(src.shape, dtype=dtype, device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if all(present):
            try:
                _check_operator(self.operator)
            except (ValueError, TypeError) as e:
                error_msgs.append(f"{prefix}operator: {e}")

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, K={self.K}, vertices={self.vertices}"
        return s if self.bias is not None else s + ", bias=False"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
