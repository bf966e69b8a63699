"""Spectral module behaviours found by mutation testing (issue 18): each test checks a behaviour that a
surviving mutant of graphsphere/spectral/*.py changed unnoticed. References are independent of our
code: healpy (anafast, map2alm), scipy (eigsh, spherical harmonics), numpy (eigvalsh, chebinterpolate,
Chebyshev), analytic results (the path graph's eigenvalues, exact Gauss-Legendre quadrature, the heat
kernel and Gaussian beam formulas) and small cases computed by hand.
"""

from __future__ import annotations

import warnings

import healpy as hp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.polynomial import chebyshev as C
from scipy.special import sph_harm_y

import graphsphere as gs
from graphsphere import kernel_widths
from graphsphere import spectral as S


def healpix_graph(nside, k=8, laplacian="normalized", nest=True, indices=None):
    t = kernel_widths.sigma_to_t(kernel_widths.published_sigma(nside, k))
    return gs.SphereGraph(gs.sampling.HEALPix(nside=nside, nest=nest, indices=indices), k=k, kernel_width=t,
                          laplacian=laplacian)


def path_laplacian(n):
    """D - W of the path graph on n vertices: eigenvalues 2 - 2 cos(pi k / n), k = 0..n-1 (analytic)."""
    main = np.full(n, 2.0)
    main[[0, -1]] = 1.0
    return sp.diags([main, -np.ones(n - 1), -np.ones(n - 1)], [0, -1, 1], format="csr")


def path_eigenvalues(n):
    return 2 - 2 * np.cos(np.pi * np.arange(n) / n)


def random_points(n, seed=0):
    rng = np.random.default_rng(seed)
    lonlat = gs.sampling.base.xyz_to_lonlat(rng.standard_normal((n, 3)))
    return gs.sampling.Points(lonlat[:, 0], lonlat[:, 1])


def real_harmonics(sampling, lmax):
    """Real spherical harmonics of degrees 0..lmax at the pixels, (npix, (lmax+1)^2), grouped by degree
    (scipy's harmonics, colatitude and longitude from the Cartesian coordinates)."""
    x, y, z = sampling.xyz.T
    theta, phi = np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x)
    cols = []
    for l in range(lmax + 1):
        cols.append(sph_harm_y(l, 0, theta, phi).real)
        for m in range(1, l + 1):
            Y = sph_harm_y(l, m, theta, phi)
            cols += [Y.real, Y.imag]
    return np.stack(cols, axis=1)


# -- the graph Fourier basis -----------------------------------------------------------

def test_fourier_basis_of_matrices_dense_and_sparse_matches_the_path_graph():
    ref = path_eigenvalues(40)
    for L in (path_laplacian(40), path_laplacian(40).toarray()):  # sparse and ndarray, dense path
        lam, U = S.fourier_basis(L)
        np.testing.assert_allclose(lam, ref, atol=1e-12)
        np.testing.assert_allclose(L @ U, U * lam, atol=1e-12)
        lam1, U1 = S.fourier_basis(L, n=1)  # n = 1 is allowed: the null space
        assert lam1.shape == (1,) and abs(lam1[0]) < 1e-12
        np.testing.assert_allclose(np.abs(U1[:, 0]), 1 / np.sqrt(40), atol=1e-12)
    # An ndarray large enough for the Lanczos path (N > 512, n <= N / 4).
    lam, U = S.fourier_basis(path_laplacian(600).toarray(), n=5)
    np.testing.assert_allclose(lam, path_eigenvalues(600)[:5], atol=1e-10)


def test_fourier_basis_argument_errors(monkeypatch):
    with pytest.raises(ValueError, match="a Laplacian must be a square matrix, got shape"):
        S.fourier_basis(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="a Laplacian must be a square matrix"):
        S.fourier_basis(sp.csr_matrix((3, 4)))
    with pytest.raises(TypeError, match="symmetric matrix, got list"):
        S.fourier_basis([[1.0]])
    with pytest.raises(ValueError, match="16385 vertices is too many for a dense eigendecomposition"):
        S.fourier_basis(sp.identity(16385, format="csr"))
    # Exactly DENSE_LIMIT vertices is still diagonalised densely (the limit, lowered here, is inclusive).
    monkeypatch.setattr(S.basis, "DENSE_LIMIT", 30)
    np.testing.assert_allclose(S.fourier_basis(path_laplacian(30))[0], path_eigenvalues(30), atol=1e-12)
    with pytest.raises(ValueError, match="too many"):
        S.fourier_basis(path_laplacian(31))


def test_fourier_basis_lowest_eigenpair_is_the_null_space():
    # nside 16: the l = 1 eigenvalues (2.5e-3) are close to 0; the shift must sit below 0, not above.
    g = healpix_graph(16)
    lam, U = S.fourier_basis(g, n=1)
    assert abs(lam[0]) < 1e-10
    d = np.sqrt(np.asarray(g.W.sum(axis=1)).ravel())  # D^1/2 1 spans the null space of I - D^-1/2 W D^-1/2
    np.testing.assert_allclose(np.abs(U[:, 0]), d / np.linalg.norm(d), atol=1e-8)


def test_fourier_basis_is_reproducible():
    # Degenerate plateaus: without a fixed start vector, Lanczos returns another basis of each plateau.
    g = healpix_graph(8)  # 768 vertices, n = 40: the Lanczos path
    lam1, U1 = S.fourier_basis(g, n=40)
    lam2, U2 = S.fourier_basis(g, n=40)
    np.testing.assert_array_equal(lam1, lam2)
    np.testing.assert_array_equal(U1, U2)


# -- degree groups, computed by hand ------------------------------------------------------

# 16 eigenvalues, degrees 0..3 (given shuffled): groups [0.1], [1.8 2 2.2], [3.2 3.3 3.3 3.3 3.4],
# [6 7 7 7 7 7 8]. Means 0.1, 2, 3.3, 7; spread (max - min) / mean: -, 0.2, 0.2/3.3, 2/7;
# gap (next min - max) / mean: -, (3.2 - 2.2)/2 = 0.5, (6 - 3.4)/3.3, -.
HAND = np.array([0.1, 1.8, 2.0, 2.2, 3.2, 3.3, 3.3, 3.3, 3.4, 6.0, 7, 7, 7, 7, 7, 8.0])


def test_harmonic_degree_groups_by_hand():
    lam = np.random.default_rng(0).permutation(HAND)
    groups = S.harmonic_degree_groups(lam)  # lmax defaults to the largest complete degree, 3
    np.testing.assert_array_equal(groups.ell, [0, 1, 2, 3])
    np.testing.assert_allclose(groups.mean, [0.1, 2.0, 3.3, 7.0], rtol=1e-12)
    assert groups.spread.shape == groups.gap.shape == (4,)
    assert np.isnan(groups.spread[0]) and np.isnan(groups.gap[0]) and np.isnan(groups.gap[3])
    np.testing.assert_allclose(groups.spread[1:], [0.2, 0.2 / 3.3, 2 / 7], rtol=1e-12)
    np.testing.assert_allclose(groups.gap[1:3], [0.5, 2.6 / 3.3], rtol=1e-12)
    # contrast = smallest gap over largest spread, for 1 <= l < lmax (gaps) and 1 <= l <= lmax (spreads)
    assert groups.contrast() == pytest.approx(0.5 / (2 / 7), rel=1e-12)  # 1.75
    assert groups.contrast(2) == pytest.approx(0.5 / 0.2, rel=1e-12)  # 2.5
    # Fewer than 16: the largest complete degree (4 eigenvalues -> degrees 0 and 1).
    np.testing.assert_array_equal(S.harmonic_degree_groups(HAND[:6]).ell, [0, 1])
    zero = S.harmonic_degree_groups(HAND, lmax=0)
    np.testing.assert_allclose(zero.mean, [0.1])
    assert zero.ell.tolist() == [0] and np.isnan(zero.spread).all()
    with pytest.raises(ValueError, match=r"16 eigenvalues hold complete degrees up to 3, not lmax=4; "
                                         r"compute \(lmax\+1\)\^2 = 25 eigenvalues"):
        S.harmonic_degree_groups(HAND, lmax=4)


# -- alignment with the spherical harmonics ---------------------------------------------------

def healpix_reference(U, nside, nest, lmax, lmax_sh, band):
    """alignment_matrix from its definition with healpy.anafast: energy in degree l = (2l+1) C_l."""
    energy = []
    for u in U.T:
        cl = hp.anafast(hp.reorder(u, n2r=True) if nest else u, lmax=band, iter=3, use_pixel_weights=False)
        energy.append((2 * np.arange(band + 1) + 1) * cl)
    energy = np.array(energy)
    energy /= energy.sum(axis=1, keepdims=True)
    return np.stack([energy[l * l:(l + 1) ** 2].mean(axis=0)[:lmax_sh + 1] for l in range(lmax + 1)])


@pytest.mark.parametrize("nest", [True, False])
def test_healpix_alignment_is_energy_per_degree_from_anafast(nest):
    nside = 4
    s = gs.sampling.HEALPix(nside=nside, nest=nest)
    U = np.random.default_rng(1).standard_normal((s.npix, 9))  # white: energy in every degree
    # The default band is 3 nside - 1 = 11.
    A = S.alignment_matrix(U, sampling=s, lmax=2, lmax_sh=5)
    assert A.shape == (3, 6)
    np.testing.assert_allclose(A, healpix_reference(U, nside, nest, 2, 5, 11), atol=1e-12)
    A7 = S.alignment_matrix(U, sampling=s, lmax=2, lmax_sh=5, band=7)
    np.testing.assert_allclose(A7, healpix_reference(U, nside, nest, 2, 5, 7), atol=1e-12)
    assert not np.allclose(A7, A)


def test_quadrature_alignment_is_the_area_weighted_sum():
    # Random points: no symmetry, so a wrong colatitude or a dropped pixel shows.
    s = random_points(300)
    U = np.random.default_rng(2).standard_normal((s.npix, 4))
    band = 4
    x, y, z = s.xyz.T
    theta, phi = np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x)
    energy = np.zeros((4, band + 1))
    for l in range(band + 1):
        for m in range(-l, l + 1):
            a = np.conj(sph_harm_y(l, m, theta, phi)) @ (s.area[:, None] * U)
            energy[:, l] += np.abs(a) ** 2
    energy /= energy.sum(axis=1, keepdims=True)
    ref = np.stack([energy[:1].mean(axis=0), energy[1:4].mean(axis=0)])[:, :4]
    np.testing.assert_allclose(S.alignment_matrix(U, sampling=s, lmax=1, lmax_sh=3, band=band), ref, atol=1e-12)


def test_quadrature_alignment_is_exact_on_gauss_legendre():
    # Gauss-Legendre quadrature is exact for these band-limited products: real harmonics give the identity.
    # GL(48), default band 48: the table of harmonics is split in two chunks of pixels.
    s = gs.sampling.GaussLegendre(48)
    A = S.alignment_matrix(real_harmonics(s, 2), sampling=s, lmax=2)
    np.testing.assert_allclose(A, np.eye(3), atol=1e-10)
    # The smallest bands: 0 (a constant map) and 1.
    small = gs.sampling.GaussLegendre(4)
    np.testing.assert_allclose(S.alignment_matrix(np.ones((small.npix, 1)), sampling=small, lmax=0, band=0),
                               [[1.0]], atol=1e-12)
    np.testing.assert_allclose(S.alignment_matrix(real_harmonics(small, 1), sampling=small, lmax=1, band=1),
                               np.eye(2), atol=1e-12)


def test_alignment_default_band_and_lmax():
    U = np.random.default_rng(3).standard_normal((192, 81))
    hpx = gs.sampling.HEALPix(nside=4)
    # HEALPix: the band is 3 nside - 1 (documented); lmax_sh up to it, not beyond.
    np.testing.assert_array_equal(S.alignment_matrix(U, sampling=hpx, lmax=1, lmax_sh=3),
                                  S.alignment_matrix(U, sampling=hpx, lmax=1, lmax_sh=3, band=11))
    assert S.alignment_matrix(U, sampling=hpx, lmax=1, lmax_sh=11).shape == (2, 12)
    with pytest.raises(ValueError, match="lmax_sh=12 is above the band 11 the analysis resolves"):
        S.alignment_matrix(U, sampling=hpx, lmax=1, lmax_sh=12)
    # Gauss-Legendre with nlat rings (npix = 2 nlat^2): the band is nlat.
    gl = gs.sampling.GaussLegendre(8)
    V = np.random.default_rng(4).standard_normal((gl.npix, 4))
    np.testing.assert_allclose(S.alignment_matrix(V, sampling=gl, lmax=1, lmax_sh=3),
                               S.alignment_matrix(V, sampling=gl, lmax=1, lmax_sh=3, band=8), atol=1e-14)
    # lmax defaults to 8: 81 eigenvectors, 9 groups.
    assert S.alignment_matrix(U, sampling=hpx).shape == (9, 9)


def test_alignment_argument_errors():
    hpx = gs.sampling.HEALPix(nside=4)
    U = np.random.default_rng(5).standard_normal((192, 9))
    with pytest.raises(ValueError, match="lmax must be >= 0, got -1"):
        S.alignment_matrix(U, sampling=hpx, lmax=-1)
    with pytest.raises(ValueError, match=r"pass the sampling of the eigenvectors"):
        S.alignment_matrix(U, lmax=2)
    with pytest.raises(ValueError, match=r"eigenvectors must be \(npix=192, n\), got shape \(100, 9\)"):
        S.alignment_matrix(U[:100], sampling=hpx, lmax=2)
    with pytest.raises(ValueError, match=r"eigenvectors must be \(npix=192, n\), got shape \(192,\)"):
        S.alignment_matrix(U[:, 0], sampling=hpx, lmax=0)
    with pytest.raises(ValueError, match=r"lmax=2 needs \(lmax\+1\)\^2 = 9 eigenvectors, got 4"):
        S.alignment_matrix(U[:, :4], sampling=hpx, lmax=2)


def test_alignment_of_a_graph_uses_the_sampling_given():
    # A graph on HEALPix pixels analysed as plain points (quadrature) instead of with healpy.
    g = healpix_graph(4)
    points = gs.sampling.Points(*g.sampling.lonlat.T)
    _, U = S.fourier_basis(g, n=9)
    A = S.alignment_matrix(g, lmax=2, sampling=points)
    np.testing.assert_allclose(A, S.alignment_matrix(U, sampling=points, lmax=2), atol=1e-12)
    assert np.abs(A - S.alignment_matrix(g, lmax=2)).max() > 1e-6


# -- the spectrum against l(l+1) -----------------------------------------------------------------

@pytest.mark.parametrize("nside,lmax", [(8, 2), (16, 4), (64, 8)])
def test_default_fit_lmax_is_nside_over_4_between_2_and_8(nside, lmax):
    g = healpix_graph(nside)
    fit = S.graph_spectrum_vs_ll1(g, method="rayleigh")
    np.testing.assert_array_equal(fit.ell, np.arange(lmax + 1))


def least_squares_c(value):
    ell = np.arange(len(value))
    ll1 = ell * (ell + 1.0)
    return float((ll1 * value).sum() / (ll1**2).sum())


def test_spectrum_fit_by_eigenvalues():
    g = healpix_graph(16)  # 3072 vertices: "auto" still means "eig"
    fit = S.graph_spectrum_vs_ll1(g, lmax=2)
    assert fit.method == "eig"
    ref = np.sort(spla.eigsh(sp.csc_matrix(g.L), k=9, sigma=-1e-3, which="LM")[0])  # scipy, independently
    assert fit.eigenvalues.shape == (9,)
    np.testing.assert_allclose(fit.eigenvalues, ref, atol=1e-10)
    value = [ref[0], ref[1:4].mean(), ref[4:9].mean()]
    np.testing.assert_allclose(fit.ell, [0, 1, 2])
    np.testing.assert_allclose(fit.value, value, atol=1e-10)
    assert fit.scale == pytest.approx(least_squares_c(value), rel=1e-9)
    assert S.fit_ll1_scale(g, lmax=2) == pytest.approx(fit.scale, rel=1e-12)
    # lmax = 1, the smallest: c = lambda_1 / 2.
    one = S.graph_spectrum_vs_ll1(g, lmax=1, method="eig")
    assert one.scale == pytest.approx(ref[1:4].mean() / 2, rel=1e-9)


def test_spectrum_fit_by_rayleigh_quotients():
    g = healpix_graph(16)
    fit = S.graph_spectrum_vs_ll1(g, lmax=2, method="rayleigh")
    assert fit.method == "rayleigh" and fit.eigenvalues is None
    q = S.harmonic_rayleigh_quotients(g, [1, 2])
    np.testing.assert_allclose(fit.value, [0.0, *q], atol=1e-15)
    assert fit.scale == pytest.approx(least_squares_c(fit.value), rel=1e-12)
    c = S.fit_ll1_scale(g, lmax=2, method="rayleigh")
    assert c == fit.scale and c != S.fit_ll1_scale(g, lmax=2, method="eig")


def test_spectrum_fit_auto_uses_rayleigh_on_large_healpix():
    fit = S.graph_spectrum_vs_ll1(healpix_graph(32), lmax=2)  # 12288 vertices
    assert fit.method == "rayleigh" and fit.eigenvalues is None


def test_spectrum_fit_errors():
    g = healpix_graph(4)
    with pytest.raises(ValueError, match=r"lmax must be >= 1 to fit c l\(l\+1\), got 0"):
        S.graph_spectrum_vs_ll1(g, lmax=0)
    with pytest.raises(ValueError, match="method must be 'auto', 'eig' or 'rayleigh', got 'lanczos'"):
        S.graph_spectrum_vs_ll1(g, lmax=2, method="lanczos")
    with pytest.raises(ValueError, match="partial sky: its spectrum has no l"):
        S.graph_spectrum_vs_ll1(healpix_graph(4, indices=np.arange(96)))


def test_rayleigh_quotients_degree_range_and_seed():
    g = healpix_graph(4, laplacian="combinatorial")
    q = S.harmonic_rayleigh_quotients(g, [0, 11])  # degrees 0 .. 3 nside - 1
    assert abs(q[0]) < 1e-12  # a constant map is in the null space of D - W
    assert q[1] > 0
    with pytest.raises(ValueError, match=r"degree 12 is outside 0\.\.3 nside - 1 = 11$"):
        S.harmonic_rayleigh_quotients(g, [12])
    with pytest.raises(ValueError, match=r"degree -1 is outside"):
        S.harmonic_rayleigh_quotients(g, [-1])
    with pytest.raises(ValueError, match="need a full-sky HEALPix graph"):
        S.harmonic_rayleigh_quotients(healpix_graph(4, indices=np.arange(96)), [1])
    # Reproducible, and the default seed is 0 (as the signature says).
    a = S.harmonic_rayleigh_quotients(g, [2, 3])
    np.testing.assert_array_equal(a, S.harmonic_rayleigh_quotients(g, [2, 3]))
    np.testing.assert_array_equal(a, S.harmonic_rayleigh_quotients(g, [2, 3], seed=0))
    assert not np.array_equal(a, S.harmonic_rayleigh_quotients(g, [2, 3], seed=1))


# -- Chebyshev expansions ---------------------------------------------------------------------------

def test_interval_errors():
    with pytest.raises(ValueError, match=r"a largest eigenvalue or \(low, high\), got \(1, 2, 3\)"):
        S.chebyshev_coefficients(np.exp, 3, (1, 2, 3))
    with pytest.raises(ValueError, match=r"high > low, got \[1.0, 1.0\]"):
        S.chebyshev_coefficients(np.exp, 3, (1.0, 1.0))


def test_chebyshev_coefficients_with_n_points_interpolate():
    # With n_points = K nodes the expansion is the interpolant at the Chebyshev points of the first kind:
    # numpy's chebinterpolate, on an interval that does not start at 0.
    lo, hi = 1.0, 3.0
    theta = S.chebyshev_coefficients(np.exp, 5, (lo, hi), n_points=5)
    np.testing.assert_allclose(theta, C.chebinterpolate(lambda x: np.exp(lo + (x + 1) * (hi - lo) / 2), 4),
                               atol=1e-13)
    g = healpix_graph(2)
    lmax = g.lambda_max
    np.testing.assert_allclose(S.filter_coefficients(g, np.exp, 4, n_points=4),
                               C.chebinterpolate(lambda x: np.exp((x + 1) * lmax / 2), 3), atol=1e-13)


@pytest.mark.parametrize("K", [10, 300])
def test_chebyshev_coefficients_default_nodes(K):
    # Documented default: max(256, 2K) nodes, i.e. the first K coefficients of the interpolant of degree
    # n - 1 (a step response, whose coefficients depend on the nodes).
    def step(lam):
        return (lam > 1.3).astype(float)

    n = max(256, 2 * K)
    ref = C.chebinterpolate(lambda x: step(x + 1), n - 1)[:K]
    np.testing.assert_allclose(S.chebyshev_coefficients(step, K, 2.0), ref, atol=1e-12)


def test_chebyshev_coefficients_shapes_and_errors():
    # K = 1: the Chebyshev mean; for g = lambda on [0, 2] (x + 1), theta_0 = 1.
    np.testing.assert_allclose(S.chebyshev_coefficients(lambda lam: lam, 1, 2.0), [1.0], atol=1e-14)
    # Channels: (n, C) responses give (K, C) coefficients, one column per channel.
    two = S.chebyshev_coefficients(lambda lam: np.stack([np.exp(-lam), lam**2], axis=1), 4, 2.0)
    assert two.shape == (4, 2)
    np.testing.assert_allclose(two[:, 0], S.chebyshev_coefficients(lambda lam: np.exp(-lam), 4, 2.0), atol=1e-15)
    np.testing.assert_allclose(two[:, 1], S.chebyshev_coefficients(lambda lam: lam**2, 4, 2.0), atol=1e-15)
    with pytest.raises(ValueError, match=r"response must map 256 eigenvalues to \(256,\) or \(256, channels\)"):
        S.chebyshev_coefficients(lambda lam: np.ones((lam.size, 2, 2)), 4, 2.0)
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        S.chebyshev_coefficients(lambda lam: np.ones(3), 4, 2.0)
    with pytest.raises(ValueError, match="n_points=3 must be at least K=4"):
        S.chebyshev_coefficients(np.exp, 4, 2.0, n_points=3)


def test_chebyshev_response_on_a_shifted_interval():
    theta = [0.3, -1.2, 0.5, 2.0]
    lam = np.linspace(1.0, 3.0, 11)
    np.testing.assert_allclose(S.chebyshev_response(theta, lam, (1.0, 3.0)),
                               C.Chebyshev(theta, domain=[1.0, 3.0])(lam), atol=1e-13)


def uniform_error(response, K, interval):
    grid = np.linspace(interval[0], interval[1], 2001)
    theta = S.chebyshev_coefficients(response, K, interval)
    return np.abs(S.chebyshev_response(theta, grid, interval) - response(grid)).max()


def test_chebyshev_order_tolerance_is_relative_to_the_largest_response():
    h = S.heat_kernel(10.0)
    K = S.chebyshev_order(h, 2.0)
    assert S.chebyshev_order(lambda lam: 100 * h(lam), 2.0) == K  # scale invariant
    # An increasing response, largest at the top of the interval: e^3 on [1, 3].
    K = S.chebyshev_order(np.exp, (1.0, 3.0), tol=1e-6)
    assert uniform_error(np.exp, K, (1.0, 3.0)) <= 1e-6 * np.exp(3) < uniform_error(np.exp, K - 1, (1.0, 3.0))
    # A constant needs one term; K = 1 is returned as is.
    assert S.chebyshev_order(S.heat_kernel(0.0), 2.0) == 1


def test_chebyshev_order_of_a_narrow_band_pass():
    # The tolerance is relative to the true peak (1, at lambda = 1), however narrow. Reference: the tail
    # bound of the docstring, sum_{j >= K} |theta_j|, from numpy's interpolant; tol is set just above the
    # tail at K = 40, so that a peak underestimated by 0.15% already asks for more terms.
    def bump(lam):
        return np.exp(-((lam - 1.0) / 0.1) ** 2)

    theta = C.chebinterpolate(lambda x: bump(x + 1), 399)[:200]  # the 2 K_max = 400 nodes of the default
    tail = np.cumsum(np.abs(theta)[::-1])[::-1]
    tol = tail[40] * 1.0005
    K = S.chebyshev_order(bump, 2.0, tol=tol)
    assert K == np.nonzero(tail <= tol)[0][0]
    assert uniform_error(bump, K, (0.0, 2.0)) <= tol


def test_chebyshev_order_refuses_responses_too_sharp():
    def step(lam):
        return (lam > 1.3).astype(float)

    with pytest.raises(ValueError, match=r"needs more than K_max=200 Chebyshev terms for tol=0.001"):
        S.chebyshev_order(step, 2.0)
    with pytest.raises(ValueError, match="needs more than K_max=50"):
        S.chebyshev_order(S.heat_kernel(10.0), 2.0, tol=0.0, K_max=50)  # no finite expansion is exact


# -- filter responses ---------------------------------------------------------------------------------

def test_heat_kernel_range_and_description():
    np.testing.assert_array_equal(S.heat_kernel(0.0)(np.array([0.0, 1.0, 5.0])), [1.0, 1.0, 1.0])
    for t in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="the heat kernel time t must be finite and >= 0"):
            S.heat_kernel(t)
    h = S.heat_kernel(2.0)
    assert h.__doc__ == "exp(-2 lambda)" and h.__name__ == "heat_kernel(t=2)"


def test_gaussian_beam_with_sigma_and_its_range():
    c, sigma = 1e-3, 0.05
    ell = np.arange(30)
    # healpy.gauss_beam(fwhm) = exp(-l(l+1) sigma^2 / 2), at lambda_l = c l(l+1)
    beam = S.gaussian_beam(sigma=sigma, scale=c)
    np.testing.assert_allclose(beam(c * ell * (ell + 1)), hp.gauss_beam(sigma * np.sqrt(8 * np.log(2)), 29),
                               rtol=1e-12)
    np.testing.assert_array_equal(S.gaussian_beam(sigma=0.0, scale=c)(np.array([0.0, 0.5])), [1.0, 1.0])
    for scale in (-1.0, 0.0, np.inf, None):
        with pytest.raises(ValueError, match=r"scale c \(lambda ~ c l\(l\+1\)\) must be positive"):
            S.gaussian_beam(fwhm=0.1, scale=scale)
    for kwargs in ({}, {"fwhm": 0.1, "sigma": 0.1}):
        with pytest.raises(ValueError, match="give exactly one of fwhm or sigma"):
            S.gaussian_beam(scale=c, **kwargs)
    for sigma in (-0.1, np.inf):
        with pytest.raises(ValueError, match=r"the beam width must be finite and >= 0 \(radians\)"):
            S.gaussian_beam(sigma=sigma, scale=c)


# -- applying filters ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    g = healpix_graph(2)  # 48 vertices
    lam, U = np.linalg.eigh(g.L.toarray())  # independent dense reference
    return g, lam, U


def test_apply_filter_single_coefficient_operator_matrix_and_channels(small):
    g, _, _ = small
    rng = np.random.default_rng(6)
    x = rng.standard_normal(g.npix)
    np.testing.assert_allclose(S.apply_filter(g, x, [2.5]), 2.5 * x, atol=1e-15)  # K = 1: theta_0 T_0 = theta_0
    op = g.operator(0.75)
    theta = [0.5, -0.3, 0.2]
    ref = 0.5 * x - 0.3 * (op @ x) + 0.2 * (2 * (op @ (op @ x)) - x)  # T_2 = 2 L~^2 - I, by hand
    np.testing.assert_allclose(S.apply_filter(op, x, theta), ref, atol=1e-13)  # an operator matrix as is
    np.testing.assert_allclose(S.apply_filter(g, x, theta, a=0.75), ref, atol=1e-13)
    # (K, 1) coefficients with a (V,) signal; (K, C) with (V, C).
    np.testing.assert_allclose(S.apply_filter(op, x, np.array(theta)[:, None]), ref, atol=1e-13)
    X = rng.standard_normal((g.npix, 2))
    per = np.array([theta, [1.0, 0.0, 0.0]]).T  # channel 1: the identity
    Y = S.apply_filter(op, X, per)
    np.testing.assert_allclose(Y[:, 1], X[:, 1], atol=1e-15)
    np.testing.assert_allclose(Y[:, 0], S.apply_filter(op, X[:, 0], theta), atol=1e-13)


def test_apply_filter_coefficient_errors(small):
    g, _, _ = small
    x = np.ones(g.npix)
    with pytest.raises(ValueError, match=r"coefficients must be \(K,\) or \(K, channels\), got shape \(0,\)"):
        S.apply_filter(g, x, [])
    with pytest.raises(ValueError, match=r"got shape \(2, 1, 1\)"):
        S.apply_filter(g, x, np.ones((2, 1, 1)))


def test_spectral_filter_with_a_partial_basis(small):
    g, lam, U = small
    x = np.random.default_rng(7).standard_normal(g.npix)
    # The 9 lowest modes only: an ideal low-pass filter (their projector) for a response of 1.
    y = S.spectral_filter(g, x, lambda l: np.ones_like(l), basis=(lam[:9], U[:, :9]))
    np.testing.assert_allclose(y, U[:, :9] @ (U[:, :9].T @ x), atol=1e-12)
    with pytest.raises(ValueError, match="x has 10 vertices, the basis 48"):
        S.spectral_filter(g, np.ones(10), S.heat_kernel(1.0), basis=(lam[:9], U[:, :9]))


def test_smooth_tolerance_sigma_and_order(small):
    g, lam, U = small
    x = np.random.default_rng(8).standard_normal(g.npix)
    c, fwhm = 0.02, 0.5
    sigma = fwhm / np.sqrt(8 * np.log(2))
    exact = U @ (np.exp(-lam * sigma**2 / (2 * c)) * (U.T @ x))  # exp(-t lambda), t = sigma^2 / (2c)
    # |p - g| <= tol max g = tol on the spectrum, so ||y - exact|| <= tol ||x||: default tol 1e-3, and 1e-8.
    for kwargs, tol in (({}, 1e-3), ({"tol": 1e-8}, 1e-8)):
        y = S.smooth(g, x, fwhm=fwhm, scale=c, **kwargs)
        assert np.linalg.norm(y - exact) <= tol * np.linalg.norm(x)
    np.testing.assert_allclose(S.smooth(g, x, sigma=sigma, scale=c, tol=1e-8), exact, atol=1e-7)
    y3 = S.smooth(g, x, fwhm=fwhm, scale=c, K=3)
    h = S.heat_kernel(sigma**2 / (2 * c))
    np.testing.assert_allclose(y3, S.apply_filter(g, x, S.chebyshev_coefficients(h, 3, g.lambda_max)), atol=1e-13)


# -- transfer function ------------------------------------------------------------------------------------

def test_transfer_function_reads_nested_maps_by_default():
    nside, lmax = 8, 16
    rng = np.random.default_rng(9)
    m_in, m_out = hp.reorder(rng.standard_normal((2, 12 * nside**2)), r2n=True)  # NESTED maps
    ref = (hp.anafast(hp.reorder(m_out, n2r=True), lmax=lmax, iter=3, use_pixel_weights=False)
           / hp.anafast(hp.reorder(m_in, n2r=True), lmax=lmax, iter=3, use_pixel_weights=False))
    np.testing.assert_allclose(S.transfer_function(m_in, m_out, lmax=lmax), ref, rtol=1e-12)
    with pytest.raises(ValueError, match=r"transfer_function takes single full-sky maps, got shape \(2, 768\)"):
        S.transfer_function(np.stack([m_in, m_in]), m_out)


def test_transfer_function_of_an_empty_map_is_quiet():
    m = np.random.default_rng(10).standard_normal(192)
    zero = np.zeros(192)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isinf(S.transfer_function(zero, m, nest=False)).all()  # x / 0
        assert np.isnan(S.transfer_function(zero, zero, nest=False)).all()  # 0 / 0
