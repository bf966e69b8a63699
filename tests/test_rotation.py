"""Rotations through spherical harmonics, checked against scipy, healpy and
analytic rotations (linear functions and Gaussian bumps)."""

import healpy as hp
import numpy as np
import pytest
from scipy.special import sph_harm_y

import graphsphere as gs
from graphsphere import rotation as rot
from graphsphere.sampling.equiangular import Equiangular
from graphsphere.sampling.gauss_legendre import GaussLegendre
from graphsphere.sampling.icosahedral import Icosahedral
from graphsphere.sampling.points import Points


def Rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def Ry(b):
    c, s = np.cos(b), np.sin(b)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


SAMPLINGS = [gs.sampling.HEALPix(nside=16), gs.sampling.HEALPix(nside=16, nest=False), Equiangular(24, 48),
             Equiangular(24, 48, poles="SOFT"), GaussLegendre(24), Icosahedral(3)]
IDS = ["healpix-nest", "healpix-ring", "equiangular-dh", "equiangular-soft", "gauss-legendre", "icosahedral"]


def test_random_rotations_are_haar_rotations():
    R = rot.random_rotation(4000, seed=0)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1)
    tr = np.trace(R, axis1=1, axis2=2)
    # Haar measure on SO(3): E[R] = 0, E[tr R] = 0 and E[(tr R)^2] = 1 (one irreducible representation).
    assert np.abs(R.mean(axis=0)).max() < 0.05
    assert abs(tr.mean()) < 0.06 and abs((tr**2).mean() - 1) < 0.08
    assert np.array_equal(rot.random_rotation(seed=3), rot.random_rotation(seed=3))


def test_euler_angles_rebuild_the_matrix():
    for R in rot.random_rotation(20, seed=1):
        a, b, g = rot.euler_zyz(R)
        assert np.allclose(Rz(a) @ Ry(b) @ Rz(g), R, atol=1e-12)
    with pytest.raises(ValueError, match="not a rotation"):
        rot.euler_zyz(np.diag([1.0, 1.0, -1.0]))


def test_legendre_matches_scipy():
    lmax = 30
    x = np.linspace(-1, 1, 11)
    l, m = hp.Alm.getlm(lmax)
    ref = sph_harm_y(l[None, :], m[None, :], np.arccos(x)[:, None], 0.0).real
    assert np.allclose(rot.legendre(lmax, x), ref, atol=1e-12)


@pytest.mark.parametrize("sampling", SAMPLINGS[2:] + [SAMPLINGS[0]], ids=IDS[2:] + IDS[:1])
def test_synthesis_matches_a_direct_sum_of_scipy_harmonics(sampling):
    lmax = 10
    a = rot.random_alm(lmax, seed=4)
    l, m = hp.Alm.getlm(lmax)
    xyz = sampling.xyz
    theta, phi = np.arccos(np.clip(xyz[:, 2], -1, 1)), np.arctan2(xyz[:, 1], xyz[:, 0])
    Y = sph_harm_y(l[None, :], m[None, :], theta[:, None], phi[:, None])
    ref = (Y * a).real @ np.where(m == 0, 1.0, 2.0)   # real map: the m < 0 terms are the conjugates
    assert np.allclose(rot.alm2map(a, sampling, lmax), ref, atol=1e-11)


def test_least_squares_synthesis_agrees_with_healpy():
    s = gs.sampling.HEALPix(nside=8, nest=False)
    pts = Points(lon=s.lonlat[:, 0], lat=s.lonlat[:, 1])
    a = rot.random_alm(12, seed=2)
    assert np.allclose(rot.alm2map(a, pts, 12), hp.alm2map(a, 8, lmax=12), atol=1e-12)


@pytest.mark.parametrize("sampling", SAMPLINGS[2:], ids=IDS[2:])
def test_exact_transforms_round_trip(sampling):
    lmax = rot.default_lmax(sampling)
    a = rot.random_alm(lmax, n=2, seed=5)
    assert np.allclose(rot.map2alm(rot.alm2map(a, sampling, lmax), sampling, lmax), a, atol=1e-10)


def test_healpix_analysis_iterations_converge():
    s = gs.sampling.HEALPix(nside=16)
    a = rot.random_alm(32, seed=6)
    m = rot.alm2map(a, s, 32)
    err = [np.abs(rot.map2alm(m, s, 32, iters=i) - a).max() for i in (0, 3)]
    assert err[1] < 1e-3 and err[1] < err[0] / 10


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=IDS)
def test_linear_function_rotates_exactly(sampling):
    # f(x) = c . x has degree 1; f(R^T x) = (R c) . x exactly.
    c = np.array([0.3, -1.2, 0.7])
    R = rot.random_rotation(seed=7)
    healpix = isinstance(sampling, gs.sampling.HEALPix)
    # HEALPix: healpy's iterations converge fast below lmax = 2 nside, slowly up to 3 nside - 1
    got = rot.rotate(sampling.xyz @ c, R, sampling, lmax=32 if healpix else None)
    assert np.abs(got - sampling.xyz @ (R @ c)).max() < (1e-3 if healpix else 1e-10)


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=IDS)
def test_bump_moves_where_the_rotation_says(sampling):
    v = np.array([0.2, -0.5, 0.8])
    v /= np.linalg.norm(v)
    width = 0.15 if isinstance(sampling, Icosahedral) else 0.08   # band-limited enough for each grid
    bump = lambda u: np.exp(-np.sum((sampling.xyz - u) ** 2, axis=1) / width)  # noqa: E731
    for R in rot.random_rotation(2, seed=8):
        moved = rot.rotate(bump(v), R, sampling)
        assert np.linalg.norm(moved - bump(R @ v)) / np.linalg.norm(bump(R @ v)) < 2e-3
        # and not to R^T v, the classic passive/active mix-up
        assert np.linalg.norm(moved - bump(R.T @ v)) / np.linalg.norm(bump(R @ v)) > 0.5


def test_nested_and_ring_orders_rotate_alike():
    nside = 8
    m_ring = np.random.default_rng(0).standard_normal(12 * nside**2)
    m_nest = hp.reorder(m_ring, r2n=True)
    R = rot.random_rotation(seed=9)
    a = rot.rotate_healpix(m_nest, R, nest=True)
    b = rot.rotate_healpix(m_ring, R, nest=False)
    assert np.allclose(a, hp.reorder(b, r2n=True), atol=1e-12)
    assert a.dtype == np.float64


def test_iterated_rotation_floor_is_far_below_the_non_iterated_one():
    s = gs.sampling.HEALPix(nside=16)
    a = rot.random_alm(47, degree=6, n=3, seed=10)
    f = rot.alm2map(a, s, 47)
    R = rot.random_rotation(seed=11)
    floor = {}
    for iters in (0, 3):
        back = rot.rotate(rot.rotate(f, R, s, iters=iters), R.T, s, iters=iters)
        floor[iters] = np.linalg.norm(back - f) / np.linalg.norm(f)
    assert floor[3] < 2e-3 and floor[3] < floor[0] / 10
    # with the band limit at 2 nside the iterations converge much further
    back = rot.rotate(rot.rotate(f, R, s, lmax=32), R.T, s, lmax=32)
    assert np.linalg.norm(back - f) / np.linalg.norm(f) < 1e-4


def test_shapes_and_errors():
    s = gs.sampling.HEALPix(nside=4)
    R = rot.random_rotation(seed=0)
    assert rot.rotate(np.ones((s.npix, 3)), R, s).shape == (s.npix, 3)
    with pytest.raises(ValueError, match="partial sky"):
        rot.rotate(np.ones(16), R, gs.sampling.HEALPix(nside=4, indices=np.arange(16)))
    with pytest.raises(ValueError, match="shape"):
        rot.rotate(np.ones(s.npix + 1), R, s)
    with pytest.raises(ValueError, match="lmax"):
        rot.rotate(np.ones(8 * 16), R, Equiangular(8, 16), lmax=20)
    with pytest.raises(ValueError, match="coefficients"):
        rot.rotate(np.ones(42), R, Icosahedral(1), lmax=8)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        rot.rotate(np.ones(s.npix), np.eye(2), s)
