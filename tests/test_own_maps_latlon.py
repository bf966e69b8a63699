"""NetCDF latitude-longitude fields through the one loader of the ``maps`` dataset and ``predict``:
regridded onto HEALPix (conservative by default, bilinear on request), fill values missing and never
averaged, any longitude convention, a clear error without an nside; and the real COADS file."""

import healpy as hp
import numpy as np
import pytest
from scipy.io import netcdf_file

import graphsphere as gs
from graphsphere.data.skymaps import read_map_file

NSIDE = 16
STEP = 2.5
LAT = np.arange(-90 + STEP / 2, 90, STEP)                   # 72 cell-centred rows, south to north
LON = np.arange(STEP / 2, 360, STEP)                        # 144 columns, 1.25..358.75


def analytic(lat, lon):
    return np.cos(np.radians(lat)) * np.sin(np.radians(lon))


def write_latlon(path, values, lat=LAT, lon=LON, fill=None, missing_value=None, dims=("lat", "lon"),
                 units=("degrees_north", "degrees_east")):
    """A netCDF-3 file with coordinate variables and one field ``T [time, lat, lon]``."""
    with netcdf_file(path, "w") as f:
        f.createDimension("time", values.shape[0])
        for d, c, u in zip(dims, (lat, lon), units):
            f.createDimension(d, c.size)
            v = f.createVariable(d, "d", (d,))
            v[:] = c
            v.units = u
        t = f.createVariable("time", "d", ("time",))
        t[:] = np.arange(values.shape[0])
        v = f.createVariable("T", "f", ("time",) + tuple(dims))
        v[:] = values.astype(np.float32)
        if fill is not None:
            v._FillValue = np.float32(fill)
        if missing_value is not None:
            v.missing_value = np.float32(missing_value)
    return path


def pixel_lonlat(nside=NSIDE):
    return hp.pix2ang(nside, np.arange(12 * nside**2), nest=True, lonlat=True)


def grid_field(fn, lat=LAT, lon=LON):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return fn(la, lo)


# Max |regridded - cos(lat) sin(lon) at the pixel centre| measured on this 2.5-degree grid at nside 16:
# conservative 0.0066 (an area mean, not a point value: second order in the pixel size), bilinear 0.00046.
TOLERANCE = {"conservative": 0.01, "bilinear": 0.001}


@pytest.mark.parametrize("method", ["conservative", "bilinear"])
def test_latlon_field_is_regridded_onto_nested_healpix(tmp_path, method, capsys):
    f = grid_field(analytic)
    path = write_latlon(tmp_path / "t.nc", np.stack([f, 2 * f, np.full_like(f, 3.5)]))   # time = samples
    m = read_map_file(path, nside=NSIDE, regrid=method)
    assert m.shape == (3, 12 * NSIDE**2, 1)
    plon, plat = pixel_lonlat()                                              # NESTED pixel centres
    ref = analytic(plat, plon)
    assert np.abs(m[0, :, 0] - ref).max() < TOLERANCE[method]
    assert np.abs(m[1, :, 0] - 2 * ref).max() < 2 * TOLERANCE[method]
    np.testing.assert_allclose(m[2, :, 0], 3.5, rtol=1e-12)                  # a constant stays constant
    said = capsys.readouterr().out
    assert f"latitude-longitude -> HEALPix nside {NSIDE} NESTED ({method} regridding" in said


@pytest.mark.parametrize("method", ["conservative", "bilinear"])
def test_missing_cells_become_nan_and_are_never_averaged(tmp_path, method):
    """Two boxes, one marked by _FillValue (-1e34), one by missing_value (-999): the pixels inside
    them are NaN, a constant field stays exactly constant next to them (no fill value averaged in),
    and the smooth field keeps its accuracy away from them."""
    box1 = grid_field(lambda la, lo: (la > 0) & (la < 45) & (lo > 90) & (lo < 180))
    box2 = grid_field(lambda la, lo: (la > -60) & (la < -30) & (lo > 200) & (lo < 260))
    holes = np.where(box1, -1e34, -999.0)
    const = write_latlon(tmp_path / "c.nc", np.where(box1 | box2, holes, 3.5)[None], fill=-1e34, missing_value=-999)
    smooth = write_latlon(tmp_path / "s.nc", np.where(box1 | box2, holes, grid_field(analytic))[None],
                          fill=-1e34, missing_value=-999)
    c = read_map_file(const, nside=NSIDE, regrid=method)[0, :, 0]
    s = read_map_file(smooth, nside=NSIDE, regrid=method)[0, :, 0]
    plon, plat = pixel_lonlat()

    def in_boxes(margin):
        return (((plat > 0 + margin) & (plat < 45 - margin) & (plon > 90 + margin) & (plon < 180 - margin))
                | ((plat > -60 + margin) & (plat < -30 - margin) & (plon > 200 + margin) & (plon < 260 - margin)))

    assert np.isnan(c[in_boxes(4)]).all() and in_boxes(4).sum() > 200     # inside (4 degrees in): missing
    assert np.isfinite(c[~in_boxes(-4)]).all()                              # beyond 4 degrees out: all there
    np.testing.assert_allclose(c[np.isfinite(c)], 3.5, rtol=1e-12)          # boundary pixels: valid cells only
    np.testing.assert_array_equal(np.isnan(s), np.isnan(c))
    far = ~in_boxes(-4)
    assert np.abs(s[far] - analytic(plat, plon)[far]).max() < TOLERANCE[method]
    assert np.nanmax(np.abs(s)) <= 1.0                                      # no -999 or -1e34 leaked in
    strict = read_map_file(const, nside=NSIDE, regrid=method, min_valid=1.0)[0, :, 0]
    assert np.isnan(strict).sum() > np.isnan(c).sum() and np.isnan(strict[np.isnan(c)]).all()  # partly covered: NaN


def test_longitudes_minus_180_to_180_and_0_to_360_give_the_same_maps(tmp_path):
    west = np.arange(-180 + STEP / 2, 180, STEP)
    a = write_latlon(tmp_path / "a.nc", grid_field(analytic)[None])
    b = write_latlon(tmp_path / "b.nc", grid_field(analytic, lon=west)[None], lon=west)
    for method in ("conservative", "bilinear"):
        np.testing.assert_allclose(read_map_file(b, nside=NSIDE, regrid=method),
                                   read_map_file(a, nside=NSIDE, regrid=method), atol=1e-12)  # measured 1e-15


def test_dimensions_found_by_coordinate_units_and_in_lon_lat_order(tmp_path):
    """Ferret-style names (COADSY/COADSX, found by their units), and a field stored [time, lon, lat]."""
    f = grid_field(analytic)
    ref = read_map_file(write_latlon(tmp_path / "a.nc", f[None]), nside=8)
    named = write_latlon(tmp_path / "n.nc", f[None], dims=("COADSY", "COADSX"))
    np.testing.assert_array_equal(read_map_file(named, nside=8), ref)
    swapped = write_latlon(tmp_path / "s.nc", f.T[None], lat=LON, lon=LAT, dims=("lon", "lat"),
                           units=("degrees_east", "degrees_north"))
    np.testing.assert_array_equal(read_map_file(swapped, nside=8), ref)


def test_latlon_input_without_nside_is_a_clear_error(tmp_path):
    path = write_latlon(tmp_path / "t.nc", grid_field(analytic)[None])
    with pytest.raises(ValueError, match=r"latitude-longitude field .* data\.nside \(or sampling\.nside\)"):
        read_map_file(path)
    from graphsphere.data.registry import build_splits
    from graphsphere.train.config import load_train_config

    cfg = load_train_config({"task": "regression", "data": {"name": "maps", "inputs": [str(path)],
                                                             "targets": str(path)}})
    with pytest.raises(ValueError, match=r"data\.nside"):
        build_splits(cfg.data.name, cfg.data.params, None, cfg.task, 0)


def test_predict_reads_inputs_as_training_did(tmp_path):
    """Train on a lat-lon NetCDF input and a RING .npy (ordering: ring); predict on the same files gives
    what the model gives on the arrays the training loader made: one loader, the checkpoint's options."""
    pytest.importorskip("lightning")
    from graphsphere.train import fit, predict

    nside = 4
    f = grid_field(analytic)
    nc = write_latlon(tmp_path / "t.nc", np.stack([f, -f, 0.5 * f]))
    rng = np.random.default_rng(0)
    ring = rng.standard_normal((3, 12 * nside**2))
    np.save(tmp_path / "r.npy", ring)
    np.save(tmp_path / "y.npy", ring * 2)
    r = fit({"task": "regression", "output_dir": str(tmp_path / "run"),
             "sampling": {"type": "HEALPix", "nside": nside},
             "data": {"name": "maps", "inputs": [str(nc), str(tmp_path / "r.npy")], "targets": str(tmp_path / "y.npy"),
                      "ordering": "ring", "variables": ["T"], "split": "maps", "val_fraction": 0.34,
                      "test_fraction": 0.0},
             "model": {"type": "SphericalUNet", "channels": [4, 4], "K": 2},
             "trainer": {"max_epochs": 1, "batch_size": 2, "progress_bar": False, "loggers": ["csv"]}})
    x = np.concatenate([read_map_file(nc, nside=nside), read_map_file(tmp_path / "r.npy", ordering="ring")], axis=2)
    np.testing.assert_array_equal(x[:, :, 1], np.stack([hp.reorder(m, r2n=True) for m in ring]))
    from_files = predict(r.best_checkpoint, [str(nc), str(tmp_path / "r.npy")])
    from_arrays = predict(r.best_checkpoint, x)
    assert from_files.shape == (3, 12 * nside**2, 1)
    np.testing.assert_allclose(from_files, from_arrays, rtol=1e-6, atol=1e-6)


def test_the_real_coads_sea_surface_temperature(capsys):
    """COADS SST (Debian ferret-datasets, fetched and verified as in test_climate_data.py): the loader
    gives what climate.read_field + Regridder give, land and unsampled seas NaN."""
    import os
    from pathlib import Path

    from graphsphere.data import climate, sources
    from graphsphere.data.regrid import LatLonGrid, Regridder

    try:
        folder = Path(os.environ.get("GRAPHSPHERE_FERRET_DIR") or sources.fetch("ferret"))
    except sources.DataError as err:
        pytest.skip(f"ferret data set unavailable here: {err}")
    path = folder / "coads_climatology.cdf"
    m = read_map_file(path, nside=NSIDE, var="SST")
    assert m.shape == (12, 12 * NSIDE**2, 1)
    field = climate.read_field(path, "SST")
    grid = LatLonGrid(field.grid.lat, field.grid.lon)
    ref = Regridder(grid, gs.sampling.HEALPix(NSIDE, nest=True)).apply(field.values.astype(np.float64))
    np.testing.assert_allclose(m[..., 0], ref, rtol=1e-12, equal_nan=True)
    nan = np.isnan(m[..., 0]).mean()
    assert 0.2 < nan < 0.6, nan                                             # land and unsampled seas
    assert -3 < np.nanmin(m) and np.nanmax(m) < 35                          # degrees C
    assert "SST 12 x 90 x 180 latitude-longitude -> HEALPix nside 16 NESTED" in capsys.readouterr().out


def test_an_extensive_latlon_field_keeps_its_total(tmp_path):
    """Counts per cell (extensive) are regridded as a density: the total is kept (to rounding), and a
    uniform density gives every pixel the same count."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(4.0, (LAT.size, LON.size)).astype(float)
    area = gs.data.regrid.LatLonGrid(LAT, LON).area.reshape(LAT.size, LON.size)
    path = write_latlon(tmp_path / "n.nc", np.stack([counts, area / area.sum() * 1000]))
    m = read_map_file(path, nside=8, quantity="extensive")[..., 0]
    assert m[0].sum() == pytest.approx(counts.sum(), rel=1e-9)
    np.testing.assert_allclose(m[1], 1000 / m.shape[1], rtol=1e-6)                  # the file is float32
