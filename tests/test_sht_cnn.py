"""The SHT-based spherical CNN (the shapes experiment's peer model): its
convolution against analytic results, its symmetry, its size against the
graph CNN's, and its errors."""

import numpy as np
import pytest
import torch

import graphsphere as gs

th = pytest.importorskip("torch_harmonics")

from graphsphere.experiments.shapes.sht_cnn import (
    SHTCNN,
    SpectralConv,
    grid_like_healpix,
)


def band_limited(nlat, nlon, channels, batch=1, lmax=None, degree=None, seed=0):
    """Random real maps on the Gauss-Legendre grid from random coefficients
    (all degrees < lmax, or a single degree)."""
    g = torch.Generator().manual_seed(seed)
    L = nlat if lmax is None else lmax
    isht = th.InverseRealSHT(nlat, nlon, lmax=L, mmax=L, grid="legendre-gauss")
    c = torch.randn(batch, channels, L, L, 2, generator=g)
    c[..., 0, 1] = 0  # m = 0: real coefficients
    c = torch.tril(c.permute(0, 1, 4, 2, 3)).permute(0, 1, 3, 4, 2)  # m <= l
    if degree is not None:
        keep = torch.zeros(L, 1, 1)
        keep[degree] = 1
        c = c * keep
    return isht(torch.view_as_complex(c.contiguous()))


def test_grid_has_healpix_pixel_count_and_nodes():
    for nside in (1, 4, 32):
        g = grid_like_healpix(nside)
        assert g.npix == gs.sampling.HEALPix(nside=nside).npix
    # the same nodes as torch-harmonics' Gauss-Legendre grid, north to south
    from torch_harmonics.quadrature import precompute_latitudes

    g = grid_like_healpix(4)
    colat = np.rad2deg(np.asarray(precompute_latitudes(g.nlat, grid="legendre-gauss")[0]))
    np.testing.assert_allclose(90 - g.lonlat[:: g.nlon, 1], colat, atol=1e-9)


def test_one_anchor_is_a_scaled_identity_on_band_limited_maps():
    conv = SpectralConv(2, 3, nlat=8, nlon=16, anchors=1)
    x = band_limited(8, 16, 2, batch=2, lmax=conv.lmax)
    with torch.no_grad():
        y = conv(x)
    ref = torch.einsum("bihw,io->bohw", x, conv.weight[0])
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("degree", [0, 3, 7])
def test_single_degree_is_scaled_by_the_interpolated_filter(degree):
    """A map of degree l comes out times w_l, w_l the linear interpolation of
    the anchor values at l (numpy.interp: an independent interpolation)."""
    conv = SpectralConv(1, 1, nlat=8, nlon=16, anchors=3)
    x = band_limited(8, 16, 1, degree=degree, seed=degree)
    with torch.no_grad():
        y = conv(x)
    anchors_at = np.linspace(0, conv.lmax - 1, 3)
    w_l = np.interp(degree, anchors_at, conv.weight.detach()[:, 0, 0].numpy())
    torch.testing.assert_close(y, x * float(w_l), rtol=1e-4, atol=1e-5)


def test_equivariant_to_rotations_about_the_axis():
    """Isotropic filters commute with rotations; those by a longitude step are exact on the grid."""
    torch.manual_seed(0)
    conv = SpectralConv(3, 4, nlat=8, nlon=24, anchors=4)
    x = torch.randn(2, 3, 8, 24)
    with torch.no_grad():
        torch.testing.assert_close(conv(torch.roll(x, 5, dims=3)), torch.roll(conv(x), 5, dims=3),
                                   rtol=1e-4, atol=1e-5)


def test_shrec_model_has_the_graph_models_size_and_is_invariant():
    """Same depth, channels and number of weights as the graph CNN it is compared with."""
    torch.manual_seed(0)
    ch = (16, 32, 64, 128, 256)
    sht = SHTCNN(grid_like_healpix(16), 6, 55, channels=ch, anchors=4)
    # (HEALPix needs nside 32 for five poolings; neither count depends on the resolution)
    graph = gs.models.SphericalCNN(gs.sampling.HEALPix(nside=32), 6, 55, channels=ch, K=4, head="global")
    n = sum(p.numel() for p in sht.parameters())
    assert n == sum(p.numel() for p in graph.parameters()) == 189_591
    g = grid_like_healpix(16)
    x = torch.randn(2, g.npix, 6)
    sht.eval()
    with torch.no_grad():
        y = sht(x)
        # rotating the input about the axis by 32 longitude steps (2^5: on the grid of every level)
        xr = torch.roll(x.view(2, g.nlat, g.nlon, 6), 32, dims=2).view(2, g.npix, 6)
        torch.testing.assert_close(sht(xr), y, rtol=1e-4, atol=1e-5)
    assert y.shape == (2, 55)


def test_learns():
    """A few Adam steps fit two maps: gradients reach every layer."""
    torch.manual_seed(1)
    g = grid_like_healpix(4)
    model = SHTCNN(g, 2, 2, channels=(8, 16))
    x, y = torch.randn(2, g.npix, 2), torch.tensor([0, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_errors():
    with pytest.raises(TypeError, match="GaussLegendre"):
        SHTCNN(gs.sampling.HEALPix(nside=4), 1, 2)
    with pytest.raises(ValueError, match="divisible by 8"):
        SHTCNN(gs.sampling.GaussLegendre(nlat=12, nlon=24), 1, 2, channels=(4, 4, 4))
    model = SHTCNN(grid_like_healpix(4), 3, 2, channels=(4, 8))
    with pytest.raises(ValueError, match=r"expects \[batch, 192, 3\]"):
        model(torch.randn(1, 192, 2))
    with pytest.raises(ValueError, match="anchors must be a positive integer"):
        SpectralConv(1, 1, 8, 16, anchors=0)
    with pytest.raises(ValueError, match="nside must be a positive integer"):
        grid_like_healpix(0)


def test_dropout_on_the_pooled_features():
    """dropout zeroes pooled features in training (a scaled mask: outputs change) and is off in eval
    (outputs equal those of the same weights without dropout); bad rates are refused."""
    torch.manual_seed(0)
    g = grid_like_healpix(4)
    plain, dropped = SHTCNN(g, 2, 3, channels=(4, 8)), SHTCNN(g, 2, 3, channels=(4, 8), dropout=0.5)
    dropped.load_state_dict(plain.state_dict())   # no parameters of its own: same keys
    x = torch.randn(4, g.npix, 2)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    dropped.train()
    feats = []
    dropped.fc.register_forward_hook(lambda m, inp, out: feats.append(inp[0]))
    dropped(x)
    assert (feats[0] == 0).float().mean() > 0.25      # about half of the 32 pooled features are dropped
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout must be in"):
            SHTCNN(g, 2, 3, channels=(4, 8), dropout=bad)
