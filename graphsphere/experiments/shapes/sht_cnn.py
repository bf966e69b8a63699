"""An SHT-based spherical CNN: the peer of the graph CNN in the shapes experiment.

Convolutions are isotropic spherical convolutions computed in the spectral
domain, as in Esteves et al. 2018 ("Learning SO(3) equivariant representations
with spherical CNNs"): a real spherical harmonic transform (torch-harmonics
``RealSHT``), a filter that depends on the degree l only (a zonal kernel: one
weight per (l, in, out)), and the inverse transform. The filters are
spectrally smooth, hence localized in space: as in Esteves et al. they are
given at a few anchor degrees and linearly interpolated in between; with as
many anchors as the graph CNN has Chebyshev coefficients, both have the same
number of weights per layer. Each level is convolution, batch norm, ReLU, then
2x2 average pooling on the (lat, lon) grid; a global mean and a linear layer
make the head.

The grid is Gauss-Legendre (exact quadrature for the transform):
``graphsphere.sampling.GaussLegendre(nlat, nlon)``, pixel order row-major
``(lat, lon)``, north to south, the same nodes as torch-harmonics'
``"legendre-gauss"`` grid. :func:`grid_like_healpix` gives the grid with
exactly the pixel count of HEALPix nside N: ``nlat = 2N``, ``nlon = 6N``
(12 N^2 pixels, band limit l < 2N).

Inputs are ``[batch, pixels, channels]`` on that grid, as for the graph
models, so both train on the same data (regrid HEALPix maps, or project the
meshes onto this grid).

Needs ``torch-harmonics`` (``pip install --no-deps torch-harmonics==0.9.3``
next to a CPU torch; without ``--no-deps`` its wheel pulls a CUDA build of torch).

Example
-------
>>> import torch
>>> from graphsphere.experiments.shapes.sht_cnn import SHTCNN, grid_like_healpix
>>> grid = grid_like_healpix(4)                          # 8 x 24 = 192 pixels, as HEALPix nside 4
>>> model = SHTCNN(grid, in_channels=6, out_features=5, channels=(8, 16))
>>> model(torch.randn(2, grid.npix, 6)).shape
torch.Size([2, 5])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from graphsphere.sampling import GaussLegendre

__all__ = ["SHTCNN", "SpectralConv", "grid_like_healpix"]


def _harmonics():
    try:
        import torch_harmonics
    except ImportError as e:
        raise ImportError("the SHT CNN needs torch-harmonics: pip install --no-deps torch-harmonics==0.9.3 "
                          "(--no-deps keeps your torch; its wheel would pull a CUDA build)") from e
    return torch_harmonics


def grid_like_healpix(nside: int) -> GaussLegendre:
    """The Gauss-Legendre grid with the pixel count of HEALPix ``nside``:
    ``GaussLegendre(nlat=2 nside, nlon=6 nside)``, 12 nside^2 pixels.

    >>> g = grid_like_healpix(32)
    >>> g.nlat, g.nlon, g.npix == 12 * 32**2
    (64, 192, True)
    """
    if int(nside) != nside or nside < 1:
        raise ValueError(f"nside must be a positive integer, got {nside!r}")
    return GaussLegendre(nlat=2 * int(nside), nlon=6 * int(nside))


def _interpolation(lmax: int, anchors: int) -> torch.Tensor:
    """[lmax, anchors] weights of the piecewise-linear interpolation of
    values at ``anchors`` equally spaced degrees onto every degree 0..lmax-1."""
    if anchors == 1 or lmax == 1:
        return torch.ones(lmax, anchors) / anchors
    pos = torch.arange(lmax, dtype=torch.float64) * (anchors - 1) / (lmax - 1)
    lo = pos.floor().clamp(max=anchors - 2).long()
    frac = pos - lo
    m = torch.zeros(lmax, anchors, dtype=torch.float64)
    m[torch.arange(lmax), lo] = 1 - frac
    m[torch.arange(lmax), lo + 1] = frac
    return m.float()


class SpectralConv(nn.Module):
    """Isotropic spherical convolution on a Gauss-Legendre grid:
    ``[B, in, nlat, nlon] -> [B, out, nlat, nlon]``.

    y_lm = sum_i w_l[i, o] x_lm[i], with w_l interpolated linearly from
    ``anchors`` learned values per (in, out) pair (a spectrally smooth, hence
    spatially localized, zonal filter). Weights ~ N(0, 2 / in) at the anchors
    (He; the orthonormal transform preserves power).

    >>> conv = SpectralConv(3, 4, nlat=8, nlon=16, anchors=4)
    >>> conv(torch.randn(2, 3, 8, 16)).shape
    torch.Size([2, 4, 8, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, nlat: int, nlon: int, anchors: int = 4):
        super().__init__()
        th = _harmonics()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("anchors", anchors),
                        ("nlat", nlat), ("nlon", nlon)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.in_channels, self.out_channels, self.anchors = int(in_channels), int(out_channels), int(anchors)
        self.nlat, self.nlon = int(nlat), int(nlon)
        # Band limit of the grid: l < nlat (exact Gauss-Legendre quadrature), m <= nlon / 2.
        self.lmax = min(self.nlat, self.nlon // 2 + 1)
        self.sht = th.RealSHT(self.nlat, self.nlon, lmax=self.lmax, mmax=self.lmax, grid="legendre-gauss")
        self.isht = th.InverseRealSHT(self.nlat, self.nlon, lmax=self.lmax, mmax=self.lmax, grid="legendre-gauss")
        self.weight = nn.Parameter(torch.randn(self.anchors, self.in_channels, self.out_channels)
                                   * math.sqrt(2.0 / self.in_channels))
        self.register_buffer("interp", _interpolation(self.lmax, self.anchors), persistent=False)

    def filters(self) -> torch.Tensor:
        """The per-degree filters, [lmax, in, out]."""
        # a plain matrix product: einsum picks a batched product here, 10x slower
        return torch.mm(self.interp, self.weight.reshape(self.anchors, -1)).view(-1, self.in_channels,
                                                                                  self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        c = torch.view_as_real(self.sht(x))                       # [B, in, L, M, 2]
        L, M = c.shape[2], c.shape[3]
        # one matrix product per degree: [L, B*M*2, in] @ [L, in, out]
        c = c.permute(2, 0, 3, 4, 1).reshape(L, B * M * 2, self.in_channels)
        y = torch.bmm(c, self.filters().to(c.dtype))
        y = y.reshape(L, B, M, 2, self.out_channels).permute(1, 4, 0, 2, 3).contiguous()
        return self.isht(torch.view_as_complex(y))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, grid=({self.nlat}, {self.nlon}), lmax={self.lmax}, "
                f"anchors={self.anchors}")


class SHTCNN(nn.Module):
    """Spherical CNN with SHT convolutions (the SHREC'17 peer of
    ``graphsphere.models.SphericalCNN``): per level, ``SpectralConv``, batch
    norm, ReLU, 2x2 average pooling; then a global mean and a linear layer.

    Parameters
    ----------
    sampling : GaussLegendre
        The input grid (:func:`grid_like_healpix` for the pixel count of a
        HEALPix map); ``nlat`` and ``nlon`` must be divisible by
        ``2 ** len(channels)``.
    in_channels, out_features : int
    channels : sequence of int
        Features per level, one pooling after each.
    anchors : int
        Learned values per filter (the graph CNN's K).
    dropout : float
        Dropout on the pooled features before the linear layer (as ``SphericalCNN``'s).

    Input ``[batch, sampling.npix, in_channels]`` (pixels row-major on the
    (lat, lon) grid, north to south), output ``[batch, out_features]``.
    The SHREC'17 configuration, as ``SphericalCNN(HEALPix(32), 6, 55,
    channels=(16, 32, 64, 128, 256), K=4, head="global")``::

        SHTCNN(grid_like_healpix(32), 6, 55, channels=(16, 32, 64, 128, 256), anchors=4)
    """

    def __init__(self, sampling: GaussLegendre, in_channels: int, out_features: int,
                 channels=(16, 32, 64, 128, 256), anchors: int = 4, dropout: float = 0.0):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not isinstance(sampling, GaussLegendre):
            raise TypeError(f"sampling must be a graphsphere GaussLegendre grid (the transform's exact "
                            f"quadrature), got {type(sampling).__name__}; see grid_like_healpix(nside)")
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
        f = 2 ** len(channels)
        if sampling.nlat % f or sampling.nlon % f:
            raise ValueError(f"{len(channels)} poolings need nlat and nlon divisible by {f}; got a "
                             f"({sampling.nlat}, {sampling.nlon}) grid: use fewer levels or a grid like "
                             f"grid_like_healpix(nside) with nside divisible by {f // 2}")
        self.sampling = sampling
        self.in_channels, self.out_features = int(in_channels), int(out_features)
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        nlat, nlon, cin = sampling.nlat, sampling.nlon, self.in_channels
        for cout in channels:
            self.convs.append(SpectralConv(cin, cout, nlat, nlon, anchors))
            self.norms.append(nn.BatchNorm2d(cout))
            nlat, nlon, cin = nlat // 2, nlon // 2, cout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, sampling.npix, in_channels] -> [batch, out_features]."""
        if x.dim() != 3 or x.shape[1] != self.sampling.npix or x.shape[2] != self.in_channels:
            raise ValueError(f"SHTCNN expects [batch, {self.sampling.npix}, {self.in_channels}] "
                             f"(pixels of a {self.sampling.nlat} x {self.sampling.nlon} grid), got {tuple(x.shape)}")
        B = x.shape[0]
        x = x.reshape(B, self.sampling.nlat, self.sampling.nlon, self.in_channels).permute(0, 3, 1, 2)
        for conv, norm in zip(self.convs, self.norms):
            x = nn.functional.avg_pool2d(torch.relu(norm(conv(x))), 2)
        return self.fc(self.dropout(x.mean(dim=(2, 3))))
