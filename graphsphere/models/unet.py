"""A spherical U-Net: one output vector per vertex (segmentation, dense regression).

>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> unet = gs.models.SphericalUNet(s, in_channels=2, out_channels=3, channels=(8, 16), K=3)
>>> unet(torch.randn(4, s.npix, 2)).shape
torch.Size([4, 768, 3])
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.conv import ChebConv
from ..nn.pool import Pool, Unpool
from ..sampling import Sampling
from .base import TASKS, Block, SphereModel, check_channels, check_choice, positive

__all__ = ["SphericalUNet"]


class SphericalUNet(SphereModel):
    """A spherical U-Net: one output vector per vertex, ``[B, V, in] -> [B, V, out]``.

    Encoder: at level ``i`` a graph convolution to ``channels[i]`` (batch
    norm, ReLU), then pooling, down to level ``len(channels) - 1``. Decoder:
    unpool to level ``i``, concatenate the encoder's level-``i`` features
    (skip connection), graph convolution back to ``channels[i]``. A last graph
    convolution maps to ``out_channels``. Encoder and decoder convolutions of
    a level share one graph operator (one copy in memory, none on disk).

    Parameters are those of :class:`SphericalCNN`, plus ``unpool``
    (``"repeat"``, or ``"max"`` to put values back where ``pool="max"``
    found them, after a linear map to that level's channel count) and
    ``skip`` (``False`` drops the skip connections, a plain encoder-decoder,
    for ablations). ``task="classification"`` makes
    :meth:`loss` a per-vertex cross-entropy (segmentation), ``"regression"``
    a mean squared error.

    >>> import torch, graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=8)
    >>> unet = gs.models.SphericalUNet(s, 1, 4, channels=(8, 16, 32), K=3)
    >>> unet(torch.randn(2, s.npix, 1)).shape
    torch.Size([2, 768, 4])
    """

    def __init__(self, sampling: Sampling, in_channels: int, out_channels: int, channels=(16, 32, 64), K: int = 5,
                 pool: str = "max", unpool: str = "repeat", skip: bool = True, task: str = "classification", k: int = 8,
                 kernel_width: str | float = "auto", laplacian: str = "normalized", batchnorm: bool = True,
                 dropout: float = 0.0):
        channels = check_channels(channels)
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least two levels (len(channels) >= 2), got channels={channels}")
        in_channels, out_channels, K = (positive(in_channels, "in_channels"), positive(out_channels, "out_channels"),
                                        positive(K, "K"))
        check_choice(pool, "pool", ("max", "avg"))
        check_choice(unpool, "unpool", ("repeat", "max"))
        if unpool == "max" and pool != "max":
            raise ValueError("unpool='max' puts values back where max pooling found them: it needs pool='max'")
        check_choice(task, "task", TASKS)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(sampling, dict(
            in_channels=in_channels, out_channels=out_channels, channels=list(channels), K=K, pool=pool,
            unpool=unpool, skip=bool(skip), task=task, k=int(k), kernel_width=kernel_width, laplacian=laplacian,
            batchnorm=bool(batchnorm), dropout=float(dropout)))
        L = len(channels) - 1
        levels = self.pyramid(L, range(L + 1), k, kernel_width, laplacian,
                              why=f"channels={tuple(channels)} needs {L} poolings")
        self.encoder = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.unpools = nn.ModuleList()
        self.projections = nn.ModuleList()
        self.decoder = nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(channels):
            self.encoder.append(Block(cin, cout, K, levels[i][2], batchnorm, check_finite=i == 0))
            cin = cout
        for i in range(L):
            assign = levels[i + 1][1]
            self.pools.append(Pool(mode=pool, return_indices=unpool == "max", assign=assign))
            self.unpools.append(Unpool(mode=unpool, assign=assign))
            cskip = channels[i] if skip else 0
            # Max-unpooling puts channel c back where channel c of the
            # encoder's level-i features peaked: project to channels[i] first.
            cup = channels[i] if unpool == "max" else channels[i + 1]
            self.projections.append(nn.Linear(channels[i + 1], cup) if unpool == "max" else nn.Identity())
            self.decoder.append(Block(cup + cskip, channels[i], K, levels[i][2], batchnorm))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = ChebConv(channels[0], out_channels, K, operator=levels[0][2], check_finite=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, sampling.npix, in_channels] -> [batch, sampling.npix, out_channels]."""
        self.check_input(x)
        skips, indices = [], []
        L = len(self.pools)
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < L:
                skips.append(x)
                out = self.pools[i](x)
                x, idx = out if isinstance(out, tuple) else (out, None)
                indices.append(idx)
        for i in reversed(range(L)):
            up = self.unpools[i]
            x = up(self.projections[i](x), indices[i]) if up.mode == "max" else up(x)
            if self.config["skip"]:
                x = torch.cat([x, skips[i]], dim=2)
            x = self.decoder[i](x)
        return self.head(self.dropout(x))

    def loss(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Classification: per-vertex cross-entropy, ``output`` [B, V, classes],
        ``target`` [B, V] class indices, ``weight`` [classes] for imbalanced
        classes. Regression: mean squared error against ``target`` [B, V, out]."""
        if self.config["task"] == "regression":
            return nn.functional.mse_loss(output, target.reshape(output.shape).to(output.dtype))
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), weight=weight)
