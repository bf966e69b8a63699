"""Tests of the balanced clustering used to coarsen irregular samplings (graphsphere.sampling.clustering)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.cluster.vq import kmeans2

import graphsphere as gs
from graphsphere.sampling import lonlat_to_xyz
from graphsphere.sampling.clustering import (
    assignment_matrix,
    balanced_clusters,
    balanced_coarsening,
    cluster_centres,
    cluster_radii,
)


def uniform_sphere(n, seed=0):
    rng = np.random.default_rng(seed)
    return lonlat_to_xyz(rng.uniform(0, 360, n), np.rad2deg(np.arcsin(rng.uniform(-1, 1, n))))


def cities_and_countryside(n, seed=0, lon=(-109, -102), lat=(37, 41), n_cities=5):
    """A Colorado-like patch: 30% of the points spread evenly, 70% packed into 5 'cities' ~5 km wide."""
    rng = np.random.default_rng(seed)
    per_city = int(0.7 * n) // n_cities
    n_rural = n - per_city * n_cities
    lons, lats = [rng.uniform(*lon, n_rural)], [rng.uniform(*lat, n_rural)]
    for _ in range(n_cities):
        lons.append(rng.uniform(*lon) + 0.05 * rng.standard_normal(per_city))
        lats.append(rng.uniform(*lat) + 0.05 * rng.standard_normal(per_city))
    return lonlat_to_xyz(np.concatenate(lons), np.concatenate(lats))


def pyramid(xyz, factor=4, smallest=10, seed=0):
    """(points, labels, n_clusters) of each level, each level clustering the previous level's centres."""
    levels = []
    while round(len(xyz) / factor) >= smallest:
        k = round(len(xyz) / factor)
        labels = balanced_clusters(xyz, k, seed=seed)
        levels.append((xyz, labels, k))
        xyz = cluster_centres(xyz, labels, k)
    return levels


def kmeans_labels(xyz, k, seed=0):
    """scipy's k-means on the unit vectors, empty clusters dropped and labels renumbered."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One of the clusters is empty")  # dropped below
        _, labels = kmeans2(xyz, k, iter=20, minit="points", seed=seed)
    return np.unique(labels, return_inverse=True)[1]


def sum_squared_chords(xyz, labels, k):
    return float(np.sum((xyz - cluster_centres(xyz, labels, k)[labels]) ** 2))


POINT_SETS = {
    "uniform sphere": lambda: uniform_sphere(10_000),
    "cities and countryside": lambda: cities_and_countryside(10_000),
    "antimeridian patch": lambda: lonlat_to_xyz(*np.random.default_rng(3).uniform((170, -20), (190, 10), (3000, 2)).T),
}


# -- balance --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", POINT_SETS)
def test_sizes_are_floor_or_ceil_at_every_level_of_a_pyramid(name):
    levels = pyramid(POINT_SETS[name]())
    assert [len(x) for x, _, _ in levels][:2] == [len(POINT_SETS[name]()), round(len(levels[0][0]) / 4)]
    assert levels[-1][2] < 40  # down to about 10 points
    for xyz, labels, k in levels:
        n = len(xyz)
        counts = np.bincount(labels, minlength=k)
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert counts.size == k and counts.sum() == n  # every point in exactly one of the k clusters
        # Sizes are exactly n // k or n // k + 1 (the best any partition can do), so within 2x.
        assert set(counts.tolist()) <= {n // k, n // k + 1}
        assert counts.max() / counts.min() <= 2


def test_balance_holds_when_clusters_hold_one_or_two_points():
    xyz = uniform_sphere(15)
    counts = np.bincount(balanced_clusters(xyz, 10))
    assert sorted(counts.tolist()) == [1] * 5 + [2] * 5


def test_refinement_keeps_sizes_and_lowers_the_squared_distances():
    xyz = cities_and_countryside(4000, seed=1)
    plain = balanced_clusters(xyz, 250, refine=0)
    refined = balanced_clusters(xyz, 250)
    assert np.array_equal(np.sort(np.bincount(plain)), np.sort(np.bincount(refined)))
    assert sum_squared_chords(xyz, refined, 250) < 0.97 * sum_squared_chords(xyz, plain, 250)  # measured: 0.93


# -- determinism ----------------------------------------------------------------------------------

def test_same_seed_same_labels_and_seed_breaks_ties_on_a_grid():
    xyz = np.array(gs.sampling.Equiangular(nlat=16, nlon=32).xyz)  # many equal projections
    a, b = balanced_clusters(xyz, 128, seed=0), balanced_clusters(xyz, 128, seed=0)
    assert np.array_equal(a, b)
    c = balanced_clusters(xyz, 128, seed=1)
    assert not np.array_equal(a, c)  # measured: 5% of the points differ
    assert set(np.bincount(c).tolist()) == {4}


def test_labels_do_not_depend_on_the_order_of_other_calls():
    xyz = uniform_sphere(2000, seed=5)
    first = balanced_clusters(xyz, 100, seed=7)
    np.random.seed(123)  # the global generator must play no part
    balanced_clusters(uniform_sphere(500), 20, seed=3)
    assert np.array_equal(first, balanced_clusters(xyz, 100, seed=7))


# -- compactness ----------------------------------------------------------------------------------

# Mean over clusters of the angular radius (largest centre-to-member angle), balanced / k-means:
# measured 1.46 (4 points per cluster) down to 1.09 on a uniform sphere; on the clumpy set up to
# 1.9 at the coarsest levels, where equal sizes force large clusters over the sparse countryside
# while k-means spends its clusters on it one or two points at a time.
COMPACTNESS_FACTOR = {"uniform sphere": 1.6, "cities and countryside": 2.2}


@pytest.mark.parametrize("name", COMPACTNESS_FACTOR)
def test_compactness_within_a_stated_factor_of_kmeans(name):
    xyz = POINT_SETS[name]()[::2]  # 5,000 points: k-means at k = 1,250 takes ~0.2 s
    for points, labels, k in pyramid(xyz):
        ours = cluster_radii(points, labels, k).mean()
        ref = kmeans_labels(points, k)
        theirs = cluster_radii(points, ref).mean()
        assert ours <= COMPACTNESS_FACTOR[name] * theirs, (len(points), k, ours / theirs)


def test_clusters_on_a_uniform_sphere_are_about_the_size_of_equal_area_caps():
    # Independent of k-means: k equal clusters of a uniform sphere cannot be much smaller than caps
    # of area 4 pi / k, nor (if compact) much larger; tiles that cover the sphere reach past the
    # equal-area cap (a regular hexagon's corners are 1.10 cap radii out). Cap: 2 pi (1 - cos r) = 4 pi / k.
    xyz = uniform_sphere(10_000, seed=2)
    for k in (625, 156, 39, 10):
        cap = np.arccos(1 - 2 / k)
        ratio = cluster_radii(xyz, balanced_clusters(xyz, k), k).mean() / cap
        assert 1.0 < ratio < 1.6, (k, ratio)  # measured 1.24, 1.35, 1.46, 1.44 (k-means: 1.02 to 1.18)


def test_clusters_are_spatially_contiguous_on_a_circle():
    xyz = lonlat_to_xyz(np.arange(0, 360, 10.0), np.zeros(36))
    labels = balanced_clusters(xyz, 6)
    assert np.sum(labels != np.roll(labels, 1)) == 6  # six arcs of six neighbours, no interleaving


# -- assignment matrix and centres -------------------------------------------------------------------

def test_assignment_matrix_follows_the_coarsen_contract():
    xyz = cities_and_countryside(1000, seed=4)
    labels = balanced_clusters(xyz, 250)
    a = assignment_matrix(labels, 250)
    assert sp.isspmatrix_csr(a) and a.shape == (250, 1000)
    dense = np.zeros((250, 1000))
    dense[labels, np.arange(1000)] = 1
    assert np.array_equal(a.toarray(), dense)
    assert np.all(np.asarray(a.sum(axis=0)).ravel() == 1)  # one 1 per column
    assert np.array_equal(np.asarray(a.sum(axis=1)).ravel(), np.bincount(labels, minlength=250))
    # Row-normalised, it is a mean pooling: the pooled coordinates are the members' mean.
    mean_pool = sp.diags(1 / np.asarray(a.sum(axis=1)).ravel()) @ a
    loop = np.array([xyz[labels == j].mean(axis=0) for j in range(250)])
    np.testing.assert_allclose(mean_pool @ xyz, loop, atol=1e-15)


def test_centres_are_the_normalised_means():
    xyz = uniform_sphere(600, seed=6)
    labels = balanced_clusters(xyz, 50)
    centres = cluster_centres(xyz, labels, 50)
    loop = np.array([xyz[labels == j].sum(axis=0) for j in range(50)])
    loop /= np.linalg.norm(loop, axis=1, keepdims=True)
    np.testing.assert_allclose(centres, loop, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-14)


def test_radii_match_a_direct_computation():
    xyz = uniform_sphere(300, seed=8)
    labels = balanced_clusters(xyz, 30)
    c = cluster_centres(xyz, labels, 30)
    loop = [np.max(np.arccos(np.clip(xyz[labels == j] @ c[j], -1, 1))) for j in range(30)]
    np.testing.assert_allclose(cluster_radii(xyz, labels, 30), loop, atol=1e-7)  # arccos loses ~1e-8


def test_balanced_coarsening_can_build_a_points_sampling_and_a_pool():
    xyz = cities_and_countryside(400, seed=9)
    centres, assign = balanced_coarsening(xyz, 100, seed=0)
    np.testing.assert_allclose(centres, cluster_centres(xyz, balanced_clusters(xyz, 100), 100))
    lonlat = gs.sampling.xyz_to_lonlat(centres)
    coarse = gs.sampling.Points(lon=lonlat[:, 0], lat=lonlat[:, 1])  # distinct, valid points
    assert coarse.npix == assign.shape[0] == 100


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("k, match", [(100, r"smaller than the number of points \(100\)"),
                                      (150, "must be smaller"), (0, "at least 1"), (-3, "at least 1"),
                                      (2.5, "whole number")])
def test_bad_numbers_of_clusters_are_rejected(k, match):
    with pytest.raises(ValueError, match=match):
        balanced_clusters(uniform_sphere(100), k)


def test_bad_points_are_rejected():
    xyz = uniform_sphere(50)
    with pytest.raises(ValueError, match=r"shape \(npoints, 3\)"):
        balanced_clusters(xyz[:, :2], 5)
    bad = xyz.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        balanced_clusters(bad, 5)
    with pytest.raises(ValueError, match="unit vectors.*lonlat_to_xyz"):
        balanced_clusters(2 * xyz, 5)
    with pytest.raises(ValueError, match="refine must be >= 0"):
        balanced_clusters(xyz, 5, refine=-1)


def test_bad_labels_and_degenerate_clusters_are_rejected():
    xyz = uniform_sphere(20)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        assignment_matrix(np.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="integer"):
        assignment_matrix(np.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="cluster 2 is empty"):
        cluster_centres(xyz, np.r_[np.zeros(10, int), np.ones(10, int)], 3)
    octahedron = lonlat_to_xyz([0, 90, 180, 270, 0, 0], [0, 0, 0, 0, 90, -90])
    with pytest.raises(ValueError, match="cancel out"):
        cluster_centres(octahedron, np.zeros(6, int), 1)


def test_sizes_are_floor_or_ceil_for_awkward_counts():
    # Numbers of points that do not divide evenly, at every depth of the bisection tree.
    xyz = uniform_sphere(1500, seed=10)
    for n, k in [(1500, 7), (1499, 333), (1001, 250), (997, 100), (257, 64), (130, 129), (1500, 1499)]:
        counts = np.bincount(balanced_clusters(xyz[:n], k), minlength=k)
        assert set(counts.tolist()) <= {n // k, n // k + 1}, (n, k, counts.min(), counts.max())
