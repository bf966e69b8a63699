"""PyTorch layers: Chebyshev graph convolution and pooling on the sphere.

Tensors at the boundary are ``[batch, vertices, channels]``.

>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=4)
>>> conv = gs.nn.ChebConv(3, 8, K=5, graph=gs.SphereGraph(s, k=8))
>>> pool = gs.nn.Pool(s, mode="avg")
>>> pool(conv(torch.randn(2, s.npix, 3))).shape
torch.Size([2, 48, 8])
"""

from . import functional
from .conv import ChebConv
from .norm import Standardize, VertexBatchNorm, convert_sync_batchnorm
from .operator import GraphOperator
from .pool import GlobalPool, Pool, Unpool

__all__ = ["functional", "ChebConv", "GraphOperator", "Pool", "Unpool", "GlobalPool", "VertexBatchNorm",
           "Standardize", "convert_sync_batchnorm"]
