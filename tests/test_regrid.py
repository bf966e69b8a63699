"""Regridding (graphsphere.data.regrid): grids, weights against independent computations, analytic
fields, conservation, masks, torch."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator
from scipy.special import sph_harm_y

import graphsphere as gs
from graphsphere.data.regrid import LatLonGrid, Regridder

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def real_ylm(l, m, lon, lat):
    """Real spherical harmonic (orthonormal) at longitudes/latitudes in degrees."""
    theta, phi = np.deg2rad(90 - np.asarray(lat)), np.deg2rad(np.asarray(lon))
    y = sph_harm_y(l, abs(m), theta, phi)
    if m == 0:
        return y.real
    return np.sqrt(2) * (y.real if m > 0 else y.imag)


def on_grid(fn, grid):
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    return fn(lon, lat)


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


GRID = LatLonGrid.regular(2.5)                                # the FNOC layout: 73 x 144, pole rows


def targets():
    rng = np.random.default_rng(3)
    n = 2000
    return {
        "healpix": gs.sampling.HEALPix(nside=16),
        "healpix_ring": gs.sampling.HEALPix(nside=8, nest=False),
        "healpix_partial": gs.sampling.HEALPix(nside=16, indices=np.arange(3 * 256, 4 * 256)),
        "icosahedral": gs.sampling.Icosahedral(level=4),
        "equiangular": gs.sampling.Equiangular(nlat=32, nlon=64),
        "gauss_legendre": gs.sampling.GaussLegendre(nlat=24),
        "points": gs.sampling.Points(lon=rng.uniform(0, 360, n), lat=np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))),
        "latlon": LatLonGrid.gaussian(32, lon_start=-180),
    }


TARGETS = targets()


# --------------------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------------------

def test_regular_grid_edges_and_areas():
    g = LatLonGrid.regular(2.5)
    assert g.shape == (73, 144) and g.covers_sphere
    # pole rows own a half-height cap: edges -90, -88.75, ..., 88.75, 90
    assert g.lat_edges[0] == -90 and g.lat_edges[1] == -88.75 and g.lat_edges[-1] == 90
    assert np.isclose(g.area.sum(), 4 * np.pi, rtol=1e-13)
    # a pole cell: the cap above 88.75 degrees split in 144 wedges
    assert np.isclose(g.area[-1], 2 * np.pi * (1 - np.sin(np.deg2rad(88.75))) / 144, rtol=1e-12)


def test_gaussian_grid_areas_are_gauss_weights():
    g = LatLonGrid.gaussian(24)
    nodes, weights = np.polynomial.legendre.leggauss(24)
    assert np.allclose(np.sin(np.deg2rad(g.lat)), nodes[::-1], atol=1e-14)
    assert np.allclose(g.area.reshape(g.shape)[:, 0], weights[::-1] * 2 * np.pi / 48, rtol=1e-12)
    # edges derived from the centres alone reach the poles too (the outer edge snaps to the pole)
    derived = LatLonGrid(g.lat, g.lon)
    assert derived.lat_edges[0] == 90 and derived.lat_edges[-1] == -90 and derived.covers_sphere


@pytest.mark.parametrize("lat_order", [1, -1])
@pytest.mark.parametrize("lon", [np.arange(0, 360, 30.0), np.arange(-180, 180, 30.0), np.arange(20, 380, 30.0),
                                 np.concatenate([np.arange(180, 360, 30.0), np.arange(0, 180, 30.0)])])
def test_grid_conventions_tile_the_sphere(lon, lat_order):
    lat = np.arange(-75, 90, 30.0)[::lat_order]
    g = LatLonGrid(lat, lon)
    assert g.periodic and g.covers_sphere
    assert np.isclose(g.area.sum(), 4 * np.pi, rtol=1e-13)
    # every cell centre is located in its own cell
    assert (g.locate(*g.lonlat.T) == np.arange(g.npix)).all()


def test_grid_errors_name_the_problem():
    with pytest.raises(ValueError, match="repeats the first"):                     # ETOPO20's last column
        LatLonGrid(np.arange(-85, 90, 10.0), np.arange(0, 361, 10.0))
    with pytest.raises(ValueError, match="increase eastward"):
        LatLonGrid([0, 10], [30, 20, 10])
    with pytest.raises(ValueError, match="outside"):
        LatLonGrid([0, 100], [0, 10])
    with pytest.raises(ValueError, match="strictly"):
        LatLonGrid([0, 10, 5], [0, 10])
    with pytest.raises(ValueError, match="lat_edges"):
        LatLonGrid([0, 10], [0, 10], lat_edges=[-5, 5])


def test_points_on_the_seam_of_a_periodic_grid_are_inside():
    # The ferret winds' columns start at 18.75 E: a longitude a rounding error west of the first edge wraps to
    # e0 + 360, the last edge; on a periodic grid that is the seam (found by the climate experiment: two
    # HEALPix nside-16 pixels got no source cell).
    g = LatLonGrid(np.arange(-90, 90.1, 2.5), 20 + 2.5 * np.arange(144))
    assert g.periodic and g.lon_edges[0] == 18.75
    e0 = g.lon_edges[0]
    cells = g.locate([np.nextafter(e0, -np.inf), e0 + 360 - 1e-9, e0 + 1e-9], [0.0, 0.0, 0.0])
    assert (cells >= 0).all()
    assert cells.tolist() == [cells[2], cells[2] + 143, cells[2]]    # first column, last column, first column
    region = LatLonGrid(np.arange(31, 60, 2.0), np.arange(-9, 30, 2.0))   # not periodic: the east edge is outside
    assert region.locate([region.lon_edges[-1] + 1e-9], [40.0]).tolist() == [-1]


def test_regional_grid_is_not_periodic_and_outside_is_nan():
    region = LatLonGrid(np.arange(31, 60, 2.0), np.arange(-9, 30, 2.0))          # Europe-ish, 2-degree cells
    assert not region.periodic and not region.covers_sphere
    hpx = gs.sampling.HEALPix(nside=8)
    for method in ("conservative", "bilinear", "bicubic"):
        r = Regridder(region, hpx, method=method)
        out = r.apply(np.full(region.shape, 2.0))
        lon, lat = hpx.lonlat.T
        inside = (lat > 33) & (lat < 57) & ((lon < 27) | (lon > 353))
        far = (lat < 25) | (lat > 65) | ((lon > 40) & (lon < 340))
        assert np.allclose(out[inside], 2.0, atol=1e-12), method
        assert np.isnan(out[far]).all(), method


def test_from_sampling_matches_ring_grids():
    for s in (gs.sampling.Equiangular(16, 32), gs.sampling.Equiangular(16, 32, poles="SOFT"),
              gs.sampling.GaussLegendre(12)):
        g = LatLonGrid.from_sampling(s)
        assert np.allclose(g.area, s.area, rtol=1e-12)
        assert np.allclose(g.xyz, s.xyz, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# weights against independent computations
# --------------------------------------------------------------------------------------------------

def test_bilinear_matches_scipy_regular_grid_interpolator(rng):
    grid = LatLonGrid(np.arange(-89, 90, 2.0)[::-1], np.arange(-180, 180, 3.0))  # descending, -180..180
    field = rng.normal(size=grid.shape)
    # targets inside the rows' latitude range (the poles are tested separately)
    lon_t, lat_t = rng.uniform(0, 360, 3000), rng.uniform(-88.9, 88.9, 3000)
    r = Regridder(grid, gs.sampling.Points(lon_t, lat_t), method="bilinear")
    # SciPy on the same data, ascending latitudes, one column repeated to close the circle
    lat_a, f_a = grid.lat[::-1], field[::-1]
    lon_e = np.concatenate([grid.lon, [180.0]])
    f_e = np.concatenate([f_a, f_a[:, :1]], axis=1)
    ref = RegularGridInterpolator((lat_a, lon_e), f_e)(np.stack([lat_t, (lon_t + 180) % 360 - 180], axis=1))
    assert np.abs(r.apply(field) - ref).max() < 1e-12


def test_bicubic_reproduces_cubic_polynomials(rng):
    grid = LatLonGrid.gaussian(40)                         # non-uniform latitudes
    poly = lambda lon, lat: 0.3 * (lat / 50) ** 3 - (lat / 50) ** 2 * (lon / 100) + (lon / 100) ** 3 + 1
    lon_t, lat_t = rng.uniform(60, 300, 500), rng.uniform(-75, 75, 500)  # away from the seam and the poles
    r = Regridder(grid, gs.sampling.Points(lon_t, lat_t), method="bicubic")
    assert np.abs(r.apply(on_grid(poly, grid)) - poly(lon_t, lat_t)).max() < 1e-12
    r = Regridder(grid, gs.sampling.Points(lon_t, lat_t), method="bilinear")
    assert np.abs(r.apply(on_grid(poly, grid)) - poly(lon_t, lat_t)).max() > 1e-4    # bilinear cannot


def test_conservative_latlon_overlaps_by_hand():
    # 30-degree cells onto 60-degree cells. Target row 2 (lat 30..90), column 0 (lon -30..30) takes the
    # 30-degree cells of rows 4 (lat 30..60) and 5 (60..90) in columns 0 (lon -15..15, whole) and
    # 1 (15..45) and 11 (-45..-15), half of each; areas are dz * dlon with z = sin(lat).
    src, tgt = LatLonGrid.regular(30.0, poles=False), LatLonGrid.regular(60.0, poles=False)
    m = Regridder(src, tgt).matrix.toarray().reshape(tgt.shape + src.shape)
    dz4, dz5, dz_all = np.sin(np.pi / 3) - 0.5, 1 - np.sin(np.pi / 3), 0.5
    w = m[2, 0]
    assert np.isclose(w[4, 0], dz4 * 30 / (dz_all * 60), rtol=1e-13)
    assert np.isclose(w[5, 0], dz5 * 30 / (dz_all * 60), rtol=1e-13)
    assert np.isclose(w[4, 1], dz4 * 15 / (dz_all * 60), rtol=1e-13)
    assert np.isclose(w[5, 11], dz5 * 15 / (dz_all * 60), rtol=1e-13)
    assert np.count_nonzero(w) == 6


def test_conservative_healpix_base_pixels_by_hand():
    # Lat-lon cells cut at z = 0, +-2/3 and at the meridians 0, 90, 180, 270 against the 12 HEALPix base
    # pixels. In (lon, z), where area is dlon dz, a polar base pixel is its sector of the cap (pi/6)
    # plus the triangle (sector's corners at z = 2/3, its middle at z = 0) of area pi/6; the rest of
    # each belt cell goes half to either equatorial pixel beside it (pi/12 each).
    zc = np.rad2deg(np.arcsin(2 / 3))
    grid = LatLonGrid([-60, -20, 20, 60], [45, 135, 225, 315], lat_edges=[-90, -zc, 0, zc, 90],
                      lon_edges=[0, 90, 180, 270, 360])
    base = gs.sampling.HEALPix(nside=1)
    expected = np.zeros((12, 16))
    sector = lambda lon: int(lon % 360 // 90)
    for j, (lon, lat) in enumerate(base.lonlat):
        if abs(lat) > 1:                                     # polar: cap cell + belt cell of its sector
            cap, belt = (3, 2) if lat > 0 else (0, 1)
            expected[j, [cap * 4 + sector(lon), belt * 4 + sector(lon)]] = 0.5
        else:                                                # equatorial: 4 belt cells, a quarter each
            for row in (1, 2):
                for side in (lon - 45, lon + 45):
                    expected[j, row * 4 + sector(side)] = 0.25
    r = Regridder(grid, base)
    # (the sub-cells fall symmetrically about the straight boundaries, so the estimate is exact here)
    assert np.abs(r.matrix.toarray() - expected).max() < 1e-3
    assert np.allclose(r.matrix.sum(axis=1), 1, atol=1e-13)


def test_supersampled_overlaps_converge():
    ico = gs.sampling.Icosahedral(level=3)
    ref = Regridder(GRID, ico, supersample=48).matrix
    errs = [float(np.median(np.asarray(abs(Regridder(GRID, ico, supersample=s).matrix - ref).sum(axis=1))))
            for s in (4, 16)]
    # median weight misplaced per target cell (measured: 0.089 and 0.022)
    assert errs[0] < 0.1 and errs[1] < 0.025 and errs[1] < errs[0] / 3


# --------------------------------------------------------------------------------------------------
# analytic fields
# --------------------------------------------------------------------------------------------------

def test_issue_target_degree_20_to_icosahedral_level_5():
    ico = gs.sampling.Icosahedral(level=5)
    r = Regridder(GRID, ico, method="bicubic")
    errs = []
    for m in range(-20, 21):
        errs.append(rel_err(r.apply(on_grid(lambda lo, la, m=m: real_ylm(20, m, lo, la), GRID)),
                            real_ylm(20, m, *ico.lonlat.T)))
    # measured: 0.37% (m = +-8) to 0.95% (m = +-1, +-19)
    assert max(errs) < 0.0097 and min(errs) > 0.003


@pytest.mark.parametrize("method, bounds, order", [
    # relative errors of a degree-10 harmonic on grids of 5, 2.5, 1.25 degrees onto HEALPix nside 32,
    # against its values at the pixel centres; measured: bilinear 0.062, 0.016, 0.0040; bicubic 0.0073,
    # 0.00048, 0.000031; conservative 0.147, 0.035, 0.0075 (cell means: the averaging over the source
    # and the target cells is most of it)
    ("bilinear", (0.07, 0.018, 0.0045), 3.8),
    ("bicubic", (0.0081, 0.00053, 0.000034), 14),
    ("conservative", (0.16, 0.039, 0.0083), 4),
])
def test_harmonic_error_shrinks_with_resolution(method, bounds, order):
    hpx = gs.sampling.HEALPix(nside=32)
    ref = real_ylm(10, 3, *hpx.lonlat.T)
    errs = []
    for step in (5.0, 2.5, 1.25):
        grid = LatLonGrid.regular(step)
        errs.append(rel_err(Regridder(grid, hpx, method=method).apply(on_grid(lambda lo, la: real_ylm(10, 3, lo, la),
                                                                              grid)), ref))
    assert all(e < b for e, b in zip(errs, bounds)), errs
    # halving the spacing divides the error by ~4 (second order) or ~16 (bicubic)
    assert errs[0] / errs[1] > order and errs[1] / errs[2] > order, errs


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("method", ["conservative", "bilinear", "bicubic", "nearest"])
def test_constant_stays_constant(name, method):
    target = TARGETS[name]
    r = Regridder(GRID, target, method=method)
    out = r.apply(np.full((2,) + GRID.shape, 7.5))
    assert out.shape == (2,) + r.target_shape
    assert np.abs(out - 7.5).max() < 7.5e-12


@pytest.mark.parametrize("name", [n for n in TARGETS if n != "healpix_partial"])
def test_conservative_conserves_the_global_integral(name, rng):
    target = TARGETS[name]
    area_t = target.area
    field = on_grid(lambda lo, la: real_ylm(6, 2, lo, la) + 0.2 * np.cos(np.deg2rad(la)) ** 3 + 1, GRID)
    field = field + 0.1 * rng.normal(size=GRID.shape)          # rough too
    r = Regridder(GRID, target)
    out = r.apply(field)
    total = float((field.ravel() * GRID.area).sum())
    assert abs(float((out.ravel() * area_t).sum()) / total - 1) < 1e-10
    back = r.inverse().apply(out)                              # and on the way back
    assert abs(float((back.ravel() * GRID.area).sum()) / total - 1) < 1e-10


def test_conservative_inverse_is_the_transposed_overlap():
    ico = TARGETS["icosahedral"]
    r = Regridder(GRID, ico)
    back = r.inverse()
    lhs = back.matrix.multiply(GRID.area[:, None])
    rhs = r.matrix.multiply(ico.area[:, None]).T
    assert abs(lhs - rhs).max() < 1e-15


def test_round_trip_latlon_to_icosahedral_and_back():
    ico = gs.sampling.Icosahedral(level=5)
    field = on_grid(lambda lo, la: real_ylm(8, 5, lo, la), GRID)
    for method, bound in (("conservative", 0.027), ("bilinear", 0.017), ("bicubic", 0.0082)):
        r = Regridder(GRID, ico, method=method)
        back = r.inverse().apply(r.apply(field))
        # measured: 0.0245, 0.0154, 0.0074 (the way back from icosahedral is linear on triangles
        # for bilinear and bicubic)
        assert rel_err(back, field) < bound, method


def test_pole_interpolation_without_pole_rows():
    grid = LatLonGrid.regular(2.0, poles=False)                # rows at +-89, nothing on the poles
    dh = gs.sampling.Equiangular(nlat=8, nlon=16)              # first ring on the north pole
    z = on_grid(lambda lo, la: np.sin(np.deg2rad(la)) + 0.3 * np.cos(np.deg2rad(la)) * np.cos(np.deg2rad(lo)), grid)
    exact = dh.xyz[:, 2] + 0.3 * dh.xyz[:, 0]
    for method, bound in (("bilinear", 2e-4), ("bicubic", 1e-6)):
        out = Regridder(grid, dh, method=method).apply(z)
        assert np.abs(out - exact)[:16].max() < bound, method  # the 16 pole pixels, any longitude


def test_linear_interpolation_from_other_samplings():
    for source, bound in ((gs.sampling.Icosahedral(level=4), 3e-3), (gs.sampling.HEALPix(nside=16), 5e-3)):
        f = source.xyz[:, 2] + 0.5 * source.xyz[:, 1]
        r = Regridder(source, GRID, method="bilinear")
        lat, lon = np.meshgrid(GRID.lat, GRID.lon, indexing="ij")
        exact = np.sin(np.deg2rad(lat)) + 0.5 * np.cos(np.deg2rad(lat)) * np.sin(np.deg2rad(lon))
        assert np.abs(r.apply(f) - exact).max() < bound
    with pytest.raises(ValueError, match="latitude-longitude source"):
        Regridder(gs.sampling.HEALPix(nside=4), GRID, method="bicubic")


def test_nearest_keeps_labels():
    labels = (np.arange(GRID.npix) % 3).reshape(GRID.shape)
    out = Regridder(GRID, TARGETS["icosahedral"], method="nearest").apply(labels)
    assert set(np.unique(out)) <= {0.0, 1.0, 2.0}


def test_partial_healpix_target_and_source():
    part = TARGETS["healpix_partial"]
    field = on_grid(lambda lo, la: np.cos(np.deg2rad(la)), GRID)
    r = Regridder(GRID, part)
    out = r.apply(field)
    assert out.shape == (part.npix,) and np.isfinite(out).all()
    assert np.abs(out - np.cos(np.deg2rad(part.lonlat[:, 1]))).max() < 0.02
    # back onto the grid: cells away from the patch are NaN, cells inside it are finite
    back = Regridder(part, GRID, method="bilinear").apply(out)
    cell = hp.vec2pix(16, *GRID.xyz.T, nest=True)
    in_patch = np.isin(cell, part.indices).reshape(GRID.shape)
    assert np.isnan(back[~in_patch]).all() and np.isfinite(back[in_patch]).all()


# --------------------------------------------------------------------------------------------------
# masks and missing values
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["conservative", "bilinear", "bicubic", "nearest"])
def test_fill_values_under_a_mask_never_leak(method, rng):
    lat, lon = np.meshgrid(GRID.lat, GRID.lon, indexing="ij")
    land = (np.sin(np.deg2rad(3 * lon)) * np.cos(np.deg2rad(2 * lat)) > 0.3)       # blobs of "land"
    sea = ~land
    field = rng.uniform(1, 2, GRID.shape)
    field[land] = 1e30
    ico = TARGETS["icosahedral"]
    r = Regridder(GRID, ico, method=method)
    out, frac = r.apply(field, mask=sea, return_fraction=True)
    ok = ~np.isnan(out)
    assert ok.mean() > 0.5
    assert np.isfinite(out[ok]).all() and (np.abs(out[ok]) < 3).all()
    if method != "bicubic":                                    # non-negative weights: a mean of values in [1, 2]
        assert out[ok].min() >= 1 - 1e-12 and out[ok].max() <= 2 + 1e-12
    # NaN where no valid source, fractions in [0, 1] and equal to the weight on sea cells
    assert np.allclose(frac, r.valid_fraction(sea), atol=1e-12)
    assert (np.isnan(out) == (frac <= 0)).all()
    # NaN in the field itself acts as a mask
    with_nan = np.where(sea, field, np.nan)
    assert np.allclose(r.apply(with_nan), out, equal_nan=True, atol=1e-12)


def test_masked_constant_stays_constant_and_threshold():
    _, lon = np.meshgrid(GRID.lat, GRID.lon, indexing="ij")
    valid = lon < 180
    field = np.where(valid, 4.0, 1e30)
    r = Regridder(GRID, TARGETS["healpix"])
    out, frac = r.apply(field, mask=valid, return_fraction=True)
    ok = ~np.isnan(out)
    assert np.abs(out[ok] - 4).max() < 1e-12
    partial = (frac > 0) & (frac < 1)
    assert partial.any()
    strict = r.apply(field, mask=valid, min_valid=0.999)
    assert np.isnan(strict[partial & (frac < 0.999)]).all() and np.isfinite(strict[frac >= 0.999]).all()


def test_batched_masks_per_time_step(rng):
    field = rng.normal(size=(3,) + GRID.shape)
    mask = np.ones((3,) + GRID.shape, dtype=bool)
    mask[1] = False                                            # nothing valid at time 1
    out = Regridder(GRID, TARGETS["icosahedral"]).apply(field, mask=mask)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


# --------------------------------------------------------------------------------------------------
# shapes, dtypes, torch
# --------------------------------------------------------------------------------------------------

def test_shape_errors_are_clear():
    r = Regridder(GRID, TARGETS["icosahedral"], method="bilinear")
    with pytest.raises(ValueError, match=r"does not end with the source's pixel axes \(73, 144\)"):
        r.apply(np.zeros((73 * 144, 3)))
    with pytest.raises(ValueError, match="mask"):
        r.apply(np.zeros(GRID.shape), mask=np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="method"):
        Regridder(GRID, GRID, method="spline")
    with pytest.raises(TypeError, match="LatLonGrid or a graphsphere sampling"):
        Regridder(GRID, "healpix")


def test_torch_in_torch_out(rng):
    ico = TARGETS["icosahedral"]
    r = Regridder(GRID, ico, method="bilinear")
    x = rng.normal(size=(2, 3) + GRID.shape)
    ref = r.apply(x)
    for dtype in (torch.float64, torch.float32):
        t = torch.tensor(x, dtype=dtype)
        out = r.apply(t)
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (2, 3, ico.npix)
        assert np.allclose(out.numpy(), ref, atol=1e-5 if dtype == torch.float32 else 1e-12)
    # with autograd (torch's own sparse kernel): same values, gradient = column sums of the matrix
    t = torch.tensor(x[0, 0], requires_grad=True)
    y = r.apply(t)
    assert np.allclose(y.detach().numpy(), ref[0, 0], atol=1e-12)
    y.sum().backward()
    assert np.allclose(t.grad.numpy().ravel(), np.asarray(r.matrix.sum(axis=0)).ravel(), atol=1e-12)
    # half precision and integers: computed in float32 / float64, returned as given / float64
    assert r.apply(torch.tensor(x[0, 0], dtype=torch.float16)).dtype == torch.float16
    assert r.apply(torch.ones(GRID.shape, dtype=torch.int64)).dtype == torch.float64
    # masks and NaN in torch
    xt = torch.tensor(x[0])
    xt[:, :10] = float("nan")
    out = r.apply(xt, mask=torch.ones(GRID.shape, dtype=torch.bool))
    assert np.allclose(out.numpy(), r.apply(xt.numpy()), equal_nan=True, atol=1e-12)


def test_float32_numpy_stays_float32(rng):
    r = Regridder(GRID, TARGETS["healpix"], method="conservative")
    x = rng.normal(size=GRID.shape).astype(np.float32)
    out = r.apply(x)
    assert out.dtype == np.float32 and np.allclose(out, r.apply(x.astype(np.float64)), atol=1e-5)
