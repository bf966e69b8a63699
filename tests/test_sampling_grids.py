"""Tests of the non-HEALPix samplings: equiangular, Gauss-Legendre,
icosahedral and arbitrary point sets, against analytic results, scipy and
brute force."""

import time

import healpy as hp
import numpy as np
import pytest
import scipy.sparse as sp
from numpy.polynomial.legendre import leggauss
from scipy.spatial import SphericalVoronoi, cKDTree
from scipy.special import eval_legendre

import json

from graphsphere.sampling import from_state, parse_spec
from graphsphere.sampling.base import lonlat_to_xyz
from graphsphere.sampling.equiangular import Equiangular
from graphsphere.sampling.gauss_legendre import GaussLegendre
from graphsphere.sampling.icosahedral import Icosahedral
from graphsphere.sampling.points import Points

FOUR_PI = 4 * np.pi


def _random_points(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-180, 180, n), np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))


def _samplings():
    return [
        Equiangular(8, 16), Equiangular(6, 10, poles="SOFT"), Equiangular(5, 7),
        GaussLegendre(8), GaussLegendre(5, 9),
        Icosahedral(0), Icosahedral(3),
        Points(*_random_points(300)),
    ]


# -- shared contract ------------------------------------------------------------------------

@pytest.mark.parametrize("s", _samplings(), ids=repr)
def test_geometry_contract(s):
    assert s.xyz.shape == (s.npix, 3)
    np.testing.assert_allclose(np.linalg.norm(s.xyz, axis=1), 1, atol=1e-14)
    # lonlat and xyz describe the same points.
    np.testing.assert_allclose(lonlat_to_xyz(s.lonlat[:, 0], s.lonlat[:, 1]), s.xyz, atol=1e-12)
    assert np.all((s.lonlat[:, 0] >= 0) & (s.lonlat[:, 0] < 360))
    assert s.area.shape == (s.npix,) and np.all(s.area > 0)
    assert s.area.sum() == pytest.approx(FOUR_PI, rel=1e-12)
    assert s.full_sphere


def test_longitude_below_360():
    s = Icosahedral(3)                        # has vertices at y = -6e-17, i.e. lon = -4e-15 degrees
    assert s.lonlat[:, 0].max() < 360


@pytest.mark.parametrize("s", _samplings(), ids=repr)
def test_state_round_trip_through_json(s):
    state = s.to_state()
    t = from_state(json.loads(json.dumps(state)))       # plain JSON types, exact
    assert type(t) is type(s) and t == s and hash(t) == hash(s) and t.digest == s.digest
    np.testing.assert_array_equal(t.xyz, s.xyz)
    np.testing.assert_array_equal(t.area, s.area)


def test_equality_is_by_state():
    assert Equiangular(4, 8) == Equiangular(4, 8) and Equiangular(4, 8) != Equiangular(4, 8, poles="SOFT")
    assert GaussLegendre(4) != Equiangular(4, 8)                     # same npix, other class
    assert len({Icosahedral(2), Icosahedral(2), Icosahedral(1)}) == 2


def test_parse_spec_short_forms():
    assert parse_spec("equiangular:8") == Equiangular(8, 16)
    assert parse_spec("equiangular-soft:8x12") == Equiangular(8, 12, poles="SOFT")
    assert parse_spec("gl:6") == GaussLegendre(6) and parse_spec("icosahedral:2") == Icosahedral(2)
    with pytest.raises(ValueError, match="unknown sampling 'healpx'.*did you mean 'healpix'"):
        parse_spec("healpx:4")
    with pytest.raises(ValueError, match="nlat must"):
        parse_spec("gl:-2")


@pytest.mark.parametrize("s", [Equiangular(8, 16), Equiangular(6, 10, poles="SOFT"), GaussLegendre(8),
                               GaussLegendre(6, 4), Icosahedral(1), Icosahedral(3),
                               Points(*_random_points(300))], ids=repr)
def test_assign_contract(s):
    coarse, assign = s.coarsen()
    assert sp.isspmatrix_csr(assign) and assign.shape == (coarse.npix, s.npix)
    assert assign.data.min() > 0
    np.testing.assert_allclose(np.asarray(assign.sum(axis=0)).ravel(), 1, rtol=0, atol=1e-15)
    assert np.all(np.asarray(assign.sum(axis=1)).ravel() > 0)   # no empty coarse pixel
    assert coarse.npix < s.npix


# -- equiangular ----------------------------------------------------------------------------

def _band_bounds(nlat, poles):
    """Colatitude bounds of each row, written out case by case (degrees)."""
    h = 180.0 / nlat
    if poles == "SOFT":                       # rings at (j + 1/2) h: cells [j h, (j + 1) h]
        return [(j * h, (j + 1) * h) for j in range(nlat)]
    # DH: rings at j h. The polar cap is half a step; the last cell runs to the south pole.
    bounds = [(0.0, h / 2)] + [((j - 0.5) * h, (j + 0.5) * h) for j in range(1, nlat)]
    bounds[-1] = (bounds[-1][0], 180.0)
    return bounds


@pytest.mark.parametrize("poles", ["DH", "SOFT"])
@pytest.mark.parametrize("nlat,nlon", [(4, 8), (7, 5), (32, 64)])
def test_equiangular_grid_and_areas(nlat, nlon, poles):
    s = Equiangular(nlat, nlon, poles=poles)
    assert s.npix == nlat * nlon and s.grid_shape == (nlat, nlon)
    lon, lat = s.lonlat[:, 0].reshape(nlat, nlon), s.lonlat[:, 1].reshape(nlat, nlon)
    j, i = np.meshgrid(np.arange(nlat), np.arange(nlon), indexing="ij")
    colat = 180 * j / nlat if poles == "DH" else 180 * (2 * j + 1) / (2 * nlat)
    np.testing.assert_allclose(90 - lat, colat, atol=1e-12)          # row-major, north first
    np.testing.assert_allclose(lon, 360 * i / nlon, atol=1e-12)
    # Each cell: the solid angle of its latitude band, dlon wide: (cos t0 - cos t1) dlon.
    want = np.array([np.cos(np.deg2rad(a)) - np.cos(np.deg2rad(b)) for a, b in _band_bounds(nlat, poles)])
    np.testing.assert_allclose(s.area, np.repeat(want * 2 * np.pi / nlon, nlon), rtol=1e-12)
    assert s.area.sum() == pytest.approx(FOUR_PI, rel=1e-13)


def test_equiangular_dh_first_row_is_north_pole():
    s = Equiangular(6, 12)
    np.testing.assert_array_equal(s.xyz[:12], np.tile([0.0, 0.0, 1.0], (12, 1)))
    assert s.xyz[:, 2].min() > -1                                    # the south pole is not sampled


@pytest.mark.parametrize("poles", ["DH", "SOFT"])
def test_equiangular_coarsen_is_2x2_pooling(poles):
    s = Equiangular(8, 12, poles=poles)
    coarse, assign = s.coarsen()
    assert coarse == Equiangular(4, 6, poles=poles)
    m = np.random.default_rng(0).normal(size=s.npix)
    np.testing.assert_allclose(assign @ m, m.reshape(4, 2, 6, 2).sum(axis=(1, 3)).ravel(), rtol=1e-13)
    # Coarse rings sit on fine ring 2J (DH) or halfway between 2J and 2J+1 (SOFT).
    fine_colat = 90 - s.lonlat[::12, 1]
    ref = fine_colat[0::2] if poles == "DH" else (fine_colat[0::2] + fine_colat[1::2]) / 2
    np.testing.assert_allclose(90 - coarse.lonlat[::6, 1], ref, atol=1e-12)
    assert [c.npix for c, _ in s.pyramid(2)] == [96, 24, 6]


def test_equiangular_bad_input():
    with pytest.raises(ValueError, match="must both be even"):
        Equiangular(7, 8).coarsen()
    with pytest.raises(ValueError, match="must both be even"):
        Equiangular(8, 6).coarsen()[0].coarsen()         # 4 x 3 after one step
    with pytest.raises(ValueError, match="poles must be one of"):
        Equiangular(4, 8, poles="GL")
    with pytest.raises(ValueError, match="nlat must be an integer >= 1"):
        Equiangular(0, 8)
    with pytest.raises(ValueError, match="nlon must be an integer"):
        Equiangular(4, 8.5)


# -- Gauss-Legendre -------------------------------------------------------------------------

@pytest.mark.parametrize("nlat", [1, 3, 8, 33])
def test_gauss_legendre_nodes_and_weights(nlat):
    s = GaussLegendre(nlat)
    assert s.grid_shape == (nlat, 2 * nlat)
    z = s.xyz[::s.nlon, 2]
    assert np.all(np.diff(z) < 0)                                    # north to south
    # Independent of leggauss: nodes are the roots of P_n, weights 2 / ((1 - z^2) P_n'(z)^2),
    # with P_n' = n (z P_n - P_{n-1}) / (z^2 - 1).
    np.testing.assert_allclose(eval_legendre(nlat, z), 0, atol=1e-13)
    dp = nlat * (z * eval_legendre(nlat, z) - eval_legendre(nlat - 1, z)) / (z**2 - 1)
    np.testing.assert_allclose(s.weights, 2 / ((1 - z**2) * dp**2), rtol=1e-12)


@pytest.mark.parametrize("nlat", [4, 9])
def test_gauss_legendre_integrates_polynomials_exactly(nlat):
    s = GaussLegendre(nlat)
    x, y, z = s.xyz.T
    for p in range(2 * nlat):                                        # exact up to degree 2 nlat - 1
        want = FOUR_PI / (p + 1) if p % 2 == 0 else 0.0
        assert np.sum(s.area * z**p) == pytest.approx(want, abs=1e-13)
    assert np.sum(s.area * x**2) == pytest.approx(FOUR_PI / 3, rel=1e-13)
    assert np.sum(s.area * x**2 * y**2) == pytest.approx(FOUR_PI / 15, rel=1e-13)
    # Degree 2 nlat is the first the rule gets wrong.
    assert abs(np.sum(s.area * z ** (2 * nlat)) - FOUR_PI / (2 * nlat + 1)) > 1e-6


def test_gauss_legendre_coarsen_block_is_nearest_ring():
    for nlat in range(2, 130, 2):
        fine = np.arccos(leggauss(nlat)[0][::-1])
        coarse = np.arccos(leggauss(nlat // 2)[0][::-1])
        nearest = np.abs(fine[:, None] - coarse[None, :]).argmin(axis=1)
        np.testing.assert_array_equal(nearest, np.arange(nlat) // 2, err_msg=f"nlat={nlat}")
        assert np.all((fine[0::2] < coarse) & (coarse < fine[1::2]))
    s = GaussLegendre(10)
    c, assign = s.coarsen()
    assert c == GaussLegendre(5, 10)
    m = np.random.default_rng(1).normal(size=s.npix)
    np.testing.assert_allclose(assign @ m, m.reshape(5, 2, 10, 2).sum(axis=(1, 3)).ravel(), rtol=1e-13)
    with pytest.raises(ValueError, match="must both be even"):
        c.coarsen()


# -- icosahedral ----------------------------------------------------------------------------

def _edges(faces):
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0, return_counts=True)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_icosahedral_mesh(level):
    s = Icosahedral(level)
    assert s.npix == 10 * 4**level + 2 == s.xyz.shape[0]
    assert s.faces.shape == (20 * 4**level, 3)
    np.testing.assert_allclose(np.linalg.norm(s.xyz, axis=1), 1, atol=1e-15)
    assert not cKDTree(s.xyz).query_pairs(1e-6)                     # all distinct
    edges, count = _edges(s.faces)
    assert np.all(count == 2)                                        # closed surface
    assert s.npix - len(edges) + len(s.faces) == 2                   # Euler characteristic
    c = s.xyz[s.faces]
    assert np.all(np.einsum("ij,ij->i", c[:, 0], np.cross(c[:, 1], c[:, 2])) > 0)  # outward
    length = np.arccos(np.einsum("ij,ij->i", s.xyz[edges[:, 0]], s.xyz[edges[:, 1]]))
    if level == 0:
        np.testing.assert_allclose(length, np.arccos(1 / np.sqrt(5)), rtol=1e-14)
    assert length.max() / length.min() < 1.2                         # measured 1.195 at level 6
    if level:
        np.testing.assert_array_equal(s.xyz[:Icosahedral(level - 1).npix], Icosahedral(level - 1).xyz)


def test_icosahedral_areas_are_voronoi():
    s = Icosahedral(3)
    np.testing.assert_allclose(s.area, SphericalVoronoi(s.xyz).calculate_areas(), rtol=1e-12)
    a = Icosahedral(5).area / (FOUR_PI / Icosahedral(5).npix)
    assert 0.85 < a.min() and a.max() < 1.25                        # measured 0.886, 1.204


def test_icosahedral_coarsen_matches_brute_force_nearest():
    fine = Icosahedral(3)
    coarse, assign = fine.coarsen()
    assert coarse == Icosahedral(2)
    d = np.arccos(np.clip(fine.xyz @ coarse.xyz.T, -1, 1))          # (642, 162) geodesic
    nearest = d <= d.min(axis=1, keepdims=True) + 1e-9               # ties within round-off
    ties = nearest.sum(axis=1)
    assert set(ties.tolist()) == {1, 2} and np.sum(ties == 2) == fine.npix - coarse.npix
    want = nearest / ties[:, None]
    np.testing.assert_allclose(assign.toarray(), want.T, atol=1e-15)


def test_icosahedral_bad_input_and_speed():
    with pytest.raises(ValueError, match="coarsest"):
        Icosahedral(0).coarsen()
    with pytest.raises(ValueError, match="level must be an integer >= 0"):
        Icosahedral(-1)
    with pytest.raises(ValueError, match="above the supported maximum"):
        Icosahedral(11)
    t = time.perf_counter()
    s = Icosahedral(7)
    assert s.xyz.shape == (163842, 3)
    assert time.perf_counter() - t < 10                              # vectorised: ~0.15 s measured


# -- points ---------------------------------------------------------------------------------

def test_points_areas_of_healpix_centres():
    nside = 8
    lon, lat = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), lonlat=True)
    s = Points(lon, lat)
    rel = s.area / hp.nside2pixarea(nside) - 1
    # Voronoi cells of HEALPix centres are not the HEALPix pixels: measured max 4.8%
    # (at the corners where 3 base pixels meet), mean 0.40%.
    assert np.abs(rel).max() < 0.06 and np.abs(rel).mean() < 0.006
    assert s.area.sum() == pytest.approx(FOUR_PI, rel=1e-12)


def test_points_octahedron_exact_and_regional_network():
    s = Points([0, 90, 180, 270, 0, 0], [0, 0, 0, 0, 90, -90])
    np.testing.assert_allclose(s.area, FOUR_PI / 6, rtol=1e-12)
    # A regional network: 50 stations within 5 degrees of (10E, 45N). The cells
    # still tile the whole sphere, so the outer ones are huge.
    rng = np.random.default_rng(3)
    r = Points(10 + rng.uniform(-5, 5, 50), 45 + rng.uniform(-5, 5, 50))
    assert r.area.sum() == pytest.approx(FOUR_PI, rel=1e-12)
    assert r.area.max() > 0.1 * FOUR_PI


def test_points_bad_input():
    with pytest.raises(ValueError, match="NaN or infinite"):
        Points([0, 1, 2, 3], [0, np.nan, 2, 3])
    with pytest.raises(ValueError, match="outside \\[-90, 90\\]"):
        Points([0, 1, 2, 3], [0, 1, 95, 3])
    with pytest.raises(ValueError, match="same length"):
        Points([0, 1, 2, 3], [0, 1, 2])
    with pytest.raises(ValueError, match="points 1 and 3 are the same location"):
        Points([0, 10, 20, 10, 40], [0, 5, 10, 5, 20])
    with pytest.raises(ValueError, match="points 0 and 2 are the same location"):
        Points([0, 10, 360, 30], [0, 5, 0, 20])                       # 0 and 360 degrees east
    with pytest.raises(ValueError, match="points 0 and 1 are the same location"):
        Points([0, 120, 20, 30], [90, 90, 0, -20])                    # the pole, any longitude
    with pytest.raises(ValueError, match="at least 4 points"):
        Points([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="one circle"):
        _ = Points([0, 90, 180, 270], [0, 0, 0, 0]).area             # all on the equator


def test_points_coarsen_clusters():
    s = Points(*_random_points(400, seed=5))
    coarse, assign = s.coarsen(factor=4, seed=0)
    again, assign2 = s.coarsen(factor=4, seed=0)
    assert coarse == again and (assign != assign2).nnz == 0          # deterministic by seed
    assert set(assign.data.tolist()) == {1.0} and coarse.npix == 100
    np.testing.assert_array_equal(np.asarray(assign.sum(axis=1)).ravel(), 4)   # balanced: 4 points each
    # Coarse points are the members' centroids projected on the sphere.
    counts = np.asarray(assign.sum(axis=1)).ravel()
    centroid = (assign @ s.xyz) / counts[:, None]
    np.testing.assert_allclose(coarse.xyz, centroid / np.linalg.norm(centroid, axis=1, keepdims=True),
                               atol=1e-12)
    with pytest.raises(ValueError, match="factor must be > 1"):
        s.coarsen(factor=1)
    with pytest.raises(ValueError, match="at least 4 are needed"):
        s.coarsen(factor=200)


def test_points_keep_their_own_copy_of_the_coordinates():
    """Changing the caller's arrays afterwards changes neither the state nor the geometry (found by
    mutation testing of sampling: the state held a view of the caller's array, the geometry did not)."""
    lon = np.array([0.0, 90, 180, 270, 0, 0])
    lat = np.array([0.0, 0, 0, 0, 90, -90])
    s = Points(lon, lat)
    before = s.to_state()
    lon[0] = 45.0
    lat[1] = 10.0
    assert s.to_state() == before
    np.testing.assert_allclose(s.xyz[0], [1, 0, 0], atol=1e-15)
