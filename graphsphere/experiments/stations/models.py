"""The paper's network for dense regression on stations: graph convolutions, no pooling.

``StationGCN`` is the GHCN architecture of DeepSphere (2020): GC50-GC100-GC100-GC1, each graph
convolution followed by batch norm and ReLU but the last, one value out per station. With ``K = 1``
every layer is a per-station linear map (the same weights at every station): a per-station MLP,
the paper's control; with ``K = 5`` each layer reaches 4 hops, the whole stack 16. It needs no
pooling, so the comparison of K changes nothing else.

Registered as a model (``model.type: StationGCN``) when this module is imported (the stations
runner imports it), so configs and checkpoints can name it.

>>> import torch, numpy as np, graphsphere as gs
>>> from graphsphere.experiments.stations.graphs import paper_kernel_width
>>> rng = np.random.default_rng(0)
>>> s = gs.sampling.Points(rng.uniform(-109, -102, 50), rng.uniform(37, 41, 50))
>>> net = StationGCN(s, in_channels=6, out_channels=1, channels=(8, 8), K=5)
>>> net(torch.randn(4, 50, 6)).shape
torch.Size([4, 50, 1])
>>> bool(net.kernel_t == paper_kernel_width(s, 5))           # the paper's width, computed
True
"""

from __future__ import annotations

import torch
from torch import nn

from ...models import SphereModel
from ...nn import ChebConv, VertexBatchNorm
from .graphs import neighbour_distances, resolve_kernel_width

__all__ = ["StationGCN"]


class StationGCN(SphereModel):
    """Graph convolutions on one fixed graph, one output vector per vertex: ``[B, V, in] -> [B, V, out]``.

    Parameters
    ----------
    sampling : Sampling (the stations' ``Points``)
    in_channels, out_channels : int
    channels : sequence of int
        Hidden layers (the paper: 50, 100, 100); each a ChebConv, batch norm (optional), ReLU. Empty:
        one linear Chebyshev filter, ``y = sum_k T_k(L~) x theta_k + b``, initialised at zero.
    K : int
        Chebyshev coefficients of every filter (K = 1: per-vertex).
    task : "regression" | "classification"
        What :meth:`loss` computes (mean squared error, or per-vertex cross-entropy).
    k : int
        Neighbours of the k-NN graph (the paper: 5).
    kernel_width : "paper" | "mean" | float
        ``"paper"``: ``t = mean(d)^2 / (4 ln 2)`` computed from the stations
        (:func:`~graphsphere.experiments.stations.graphs.paper_kernel_width`); ``"mean"``: the 2019
        heuristic; a number: ``t`` itself.
    laplacian : "normalized" | "combinatorial"
    batchnorm : bool
    dropout : float
        Dropout before the last convolution.
    """

    def __init__(self, sampling, in_channels: int, out_channels: int = 1, channels=(50, 100, 100), K: int = 5,
                 task: str = "regression", k: int = 5, kernel_width="paper", laplacian: str = "normalized",
                 batchnorm: bool = True, dropout: float = 0.0):
        from ...models.base import check_channels, check_choice, positive

        channels = tuple(channels) if not isinstance(channels, int) and len(channels) == 0 else check_channels(channels)
        in_channels, out_channels, K = (positive(in_channels, "in_channels"), positive(out_channels, "out_channels"),
                                        positive(K, "K"))
        check_choice(task, "task", ("regression", "classification"))
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        neighbour_distances(sampling.xyz, int(k))           # "fewer points than k" as a clear error
        t = resolve_kernel_width(sampling, int(k), kernel_width)
        super().__init__(sampling, {
            "in_channels": in_channels, "out_channels": out_channels, "channels": list(channels), "K": K,
            "task": task, "k": int(k), "kernel_width": kernel_width, "laplacian": laplacian,
            "batchnorm": bool(batchnorm), "dropout": float(dropout)})
        self.kernel_t = t
        level = self.pyramid(0, [0], int(k), t, laplacian, why="StationGCN does not pool")[0]
        op = level[2]
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(channels):
            self.convs.append(ChebConv(cin, cout, K, operator=op, bias=not batchnorm, check_finite=i == 0))
            self.norms.append(VertexBatchNorm(cout) if batchnorm else nn.Identity())
            cin = cout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = ChebConv(cin, out_channels, K, operator=op, check_finite=not channels)
        if not channels:
            # A single linear filter starts at 0 (standardised targets: the training mean, for departures the
            # climatology) and converges in a few hundred steps; He's N(0, 2 / (in K)) is for ReLU stacks, and
            # from it a K = 1 filter needed thousands of steps to unlearn its start (measured).
            nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, stations, in_channels] -> [batch, stations, out_channels]."""
        self.check_input(x)
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x)))
        return self.head(self.dropout(x))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the targets that are not NaN (regression), or per-vertex
        cross-entropy over labels >= 0."""
        if self.config["task"] == "regression":
            target = target.reshape(output.shape).to(output.dtype)
            keep = torch.isfinite(target)
            return nn.functional.mse_loss(output[keep], target[keep])
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), ignore_index=-1)

