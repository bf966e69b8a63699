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
>>> sorted(conv.state_dict())           # the operator is not state: it comes from the graph
['bias', 'weight']
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .functional.chebyshev import SparseOperator, cheb_conv
from .operator import GraphOperator

__all__ = ["ChebConv"]


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
    operator : GraphOperator, SparseOperator or sparse matrix, optional
        A prebuilt L~ instead of ``graph``. A :class:`GraphOperator` is
        shared, not copied: the layers of one pyramid level of a model all
        hold the level's one operator.
    bias : bool
    a : float
        Spectrum scale of L~ = (2a / lambda_max) L - I (used with ``graph``).
    check_finite : bool
        Raise on NaN/Inf in the input. Costs one read of x per call (a few
        percent of the layer); bad data then fails at the layer it enters,
        with a message, instead of as a NaN loss later. Set False for speed.

    The operator lives in the submodule ``graph_operator`` as non-persistent
    buffers: it moves with ``.to()`` and never enters the state_dict, which
    holds the weights ([K, in, out], initialised N(0, 2/(in K))) and bias.
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, graph=None, operator=None,
                 bias: bool = True, a: float = 1.0, check_finite: bool = True):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("K", K)):
            # bool and NaN/None slip through int(v) == v or fail inside int() without the name
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if (graph is None) == (operator is None):
            raise ValueError("pass graph= (a SphereGraph) or operator= (a prebuilt L~), exactly one")
        self.in_channels, self.out_channels, self.K = int(in_channels), int(out_channels), int(K)
        self.check_finite = check_finite
        self.weight = nn.Parameter(torch.empty(self.K, self.in_channels, self.out_channels))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        if isinstance(operator, GraphOperator):
            self.graph_operator = operator
        else:
            self.graph_operator = GraphOperator(graph if graph is not None else operator, a=a,
                                                dtype=self.weight.dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 2 / (in_channels K)) (He et al., as in DeepSphere); bias 0."""
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (self.in_channels * self.K)))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def vertices(self) -> int:
        """Number of vertices of the graph."""
        return self.graph_operator.vertices

    @property
    def operator(self) -> SparseOperator:
        """The rescaled Laplacian L~ (views of the buffers, no copy)."""
        return self.graph_operator.operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, vertices, in_channels] -> [batch, vertices, out_channels]."""
        return cheb_conv(x, self.operator, self.weight, self.bias, check_finite=self.check_finite)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, K={self.K}, vertices={self.vertices}"
        return s if self.bias is not None else s + ", bias=False"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
