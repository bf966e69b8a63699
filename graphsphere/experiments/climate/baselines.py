"""Baselines of the climate experiment that see no neighbourhood.

:class:`PixelNet` is a network applied to every pixel on its own: the same input channels as the
graph U-Net, no graph, no pooling. With ``hidden=[]`` it is multinomial logistic regression (or,
for regression, a linear model) per pixel; with hidden layers, a small perceptron. A Chebyshev
convolution with ``K = 1`` is exactly such a per-vertex linear map (``T_0(L) = I``), so a PixelNet
is the paper's "K = 1 network" without the pooling pyramid, whose poolings would still mix
neighbours. It is an engine model (``model.type: PixelNet``): it trains, standardises, weighs
classes, checkpoints and keeps its best epoch exactly as the U-Net does.

The forecasting baselines that need no training (persistence, climatology) are arrays of
:class:`graphsphere.data.climate_datasets.ForecastTask`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models import SphereModel

__all__ = ["PixelNet"]


class PixelNet(SphereModel):
    """The same small network on every pixel: ``[batch, npix, in] -> [batch, npix, out]``.

    Parameters
    ----------
    sampling : Sampling
        Only for the pixel count (no graph is built).
    in_channels, out_channels : int
        Inputs and outputs per pixel (classes for segmentation, values for regression).
    hidden : list of int
        Widths of the hidden layers (ReLU after each); ``[]``: a linear model per pixel.
    task : {"classification", "regression"}
        What :meth:`loss` computes, as for the other models (set by the engine).

    >>> import graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=2)
    >>> net = PixelNet(s, in_channels=4, out_channels=3, hidden=[8])
    >>> x = torch.randn(2, 48, 4)
    >>> net(x).shape
    torch.Size([2, 48, 3])
    >>> p = torch.randperm(48)                             # pixels are independent: a shuffle commutes
    >>> torch.allclose(net(x[:, p]), net(x)[:, p])
    True
    >>> sum(p.numel() for p in net.parameters())          # (4 + 1) * 8 + (8 + 1) * 3
    67
    """

    def __init__(self, sampling, in_channels: int, out_channels: int, hidden=(32, 32), task: str = "classification"):
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {hidden}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        super().__init__(sampling, {"in_channels": int(in_channels), "out_channels": int(out_channels),
                                   "hidden": hidden, "task": task})
        layers: list[nn.Module] = []
        cin = int(in_channels)
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU()]
            cin = h
        layers.append(nn.Linear(cin, int(out_channels)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, npix, in_channels] -> [batch, npix, out_channels]."""
        self.check_input(x)
        return self.net(x)

    def loss(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel cross-entropy (``weight``: per class) or mean squared error."""
        if self.config["task"] == "regression":
            return nn.functional.mse_loss(output, target.reshape(output.shape).to(output.dtype))
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), weight=weight)

