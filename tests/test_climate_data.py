"""Climate data (graphsphere.data.climate): the ferret-datasets readers against values read by hand,
decoding, errors, the wind-extreme label rule and the forecasting arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.io import netcdf_file

import graphsphere as gs
from graphsphere.data import climate, climate_tasks

# ---------------------------------------------------------------------------------------------------
# the real files
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ferret_dir() -> Path:
    """The folder of the ``ferret`` data set: $GRAPHSPHERE_FERRET_DIR, else fetched (and verified) by
    graphsphere.data.sources; skipped where neither is possible (no apt-get, offline)."""
    if os.environ.get("GRAPHSPHERE_FERRET_DIR"):
        return Path(os.environ["GRAPHSPHERE_FERRET_DIR"])
    from graphsphere.data import sources

    try:
        return sources.fetch("ferret")
    except sources.DataError as err:
        pytest.skip(f"ferret data set unavailable here: {err}")


# The expected numbers below were read from the files with SciPy alone, e.g.
#   nc = scipy.io.netcdf_file("monthly_navy_winds.cdf", mmap=False)
#   nc.variables["UWND"].data[131, 60, 100], nc.variables["FNOCX"].data[100], nc.variables["FNOCY"].data[60]
# (time 131 = Dec 1992, lat 60, lon 270), and likewise for the other cells.

def test_navy_winds_by_hand(ferret_dir):
    w = climate.navy_winds(ferret_dir)
    u, v = w["UWND"], w["VWND"]
    assert u.values.shape == v.values.shape == (132, 73, 144) and u.values.dtype == np.float32
    assert (u.units, u.long_name, v.long_name) == ("M/S", "ZONAL WIND", "MERIDIONAL WIND")
    assert str(u.times[0]) == "1982-01" and str(u.times[-1]) == "1992-12" and str(u.times[70]) == "1987-11"
    assert (np.diff(u.times.astype(int)) == 1).all()
    assert u.grid.lat[0] == -90 and u.grid.lat[36] == 0 and u.grid.lon[0] == 20 and u.grid.lon[-1] == 377.5
    assert u.grid.covers_sphere
    for (t, i, j), (uu, vv) in {(0, 36, 0): (0.03319672, -0.004057377),       # 1982-01, 0N, 20E
                                (131, 60, 100): (5.6074586, -0.7434711),       # 1992-12, 60N, 270E
                                (70, 10, 143): (-0.2562705, -1.3808607)}.items():  # 1987-11, 65S, 17.5E
        assert u.values[t, i, j] == np.float32(uu) and v.values[t, i, j] == np.float32(vv)
    assert u.missing_fraction == 0 == v.missing_fraction        # -99.9 is declared but never used
    # in January 1982 the north pole row holds a single UWND value (one point), the south pole row does not
    assert (u.values[0, -1] == np.float32(-3.9690163)).all() and np.ptp(u.values[0, 0]) > 1


def test_coads_by_hand(ferret_dir):
    c = climate.coads_climatology(ferret_dir, variables=["SST", "SLP"])
    sst, slp = c["SST"], c["SLP"]
    assert sst.values.shape == (12, 90, 180) and [str(t) for t in sst.times[[0, -1]]] == ["0000-01", "0000-12"]
    assert sst.grid.lon[0] == 21 and sst.grid.lat[0] == -89
    # equatorial Pacific (lat 1, lon 211): July SST, January SLP
    assert sst.values[6, 45, 95] == np.float32(26.621428) and slp.values[0, 45, 95] == np.float32(1008.7305)
    # Sahara (lat 23, lon 373 = 13E): the file's -1e34 becomes NaN
    assert np.isnan(sst.values[6, 56, 176])
    assert 0.45 < sst.missing_fraction < 0.47                    # measured 0.461
    assert np.nanmax(sst.values) < 40 and np.nanmin(sst.values) > -3


def test_etopo_by_hand(ferret_dir):
    e60 = climate.etopo(ferret_dir, 60)
    assert e60.values.shape == (180, 360) and e60.times is None and e60.units == "METERS"
    for (i, j), metres in {(113, 352): 818.7361,    # Sahara, 23.5N 12.5E
                           (90, 190): -4197.0347,   # Pacific, 0.5N 210.5E
                           (117, 66): 2850.111,     # Himalaya, 27.5N 86.5E
                           (0, 0): 2814.3333}.items():   # Antarctica, 89.5S
        assert e60.values[i, j] == np.float32(metres)
    e20 = climate.etopo(ferret_dir, 20)
    # 1081 columns in the file, the last one repeating the first: dropped
    assert e20.values.shape == (540, 1080) and e20.grid.covers_sphere
    assert e20.values[0, 0] == np.float32(2804.0) and e20.values[300, 500] == np.float32(-5628.375)


def test_land_mask_known_points(ferret_dir):
    land = climate.land_mask(ferret_dir)
    grid = land.grid
    cell = lambda lon, lat: np.unravel_index(grid.locate([lon], [lat])[0], grid.shape)
    assert land.values[cell(13, 23)]            # middle of the Sahara
    assert land.values[cell(-60, -10)]          # Amazon
    assert land.values[cell(100, 60)]           # Siberia
    assert not land.values[cell(-150, 0)]       # middle of the Pacific
    assert not land.values[cell(-35, 30)]       # middle of the Atlantic
    assert not land.values[cell(80, -30)]       # Indian Ocean
    share = float((land.values.ravel() * grid.area).sum() / (4 * np.pi))
    assert 0.28 < share < 0.30                  # the Earth: 29% land; measured 0.289


def test_land_fraction_conserves_the_land_area(ferret_dir):
    land = climate.land_mask(ferret_dir)
    ico = gs.sampling.Icosahedral(level=3)
    frac = climate.land_fraction(ico, ferret_dir)
    assert frac.min() >= 0 and frac.max() <= 1 + 1e-12
    assert np.isclose((frac * ico.area).sum(), (land.values.ravel() * land.grid.area).sum(), rtol=1e-10)


def test_labels_on_the_real_winds(ferret_dir):
    w = climate.navy_winds(ferret_dir)
    times = w["UWND"].times
    labels, thr = climate_tasks.extreme_wind_labels(w["UWND"].values, w["VWND"].values, times, range(1982, 1991))
    assert labels.shape == (132, 73, 144) and thr.shape == (12, 2, 73, 144)
    train = climate_tasks.class_frequencies(labels, times, range(1982, 1991))
    test = climate_tasks.class_frequencies(labels, times, [1991, 1992])
    # documented in the module: training 89.9 / 7.0 / 3.1 %, test 88.0 / 8.4 / 3.6 %
    assert np.allclose(train, [0.899, 0.070, 0.031], atol=0.002)
    assert np.allclose(test, [0.880, 0.084, 0.036], atol=0.002)


# ---------------------------------------------------------------------------------------------------
# decoding and errors on files made here
# ---------------------------------------------------------------------------------------------------

def write_nc(path, values, lat, lon, times=None, attrs=None, time_units="days since 2000-01-01", dtype="f4"):
    with netcdf_file(path, "w") as nc:
        dims = ("Y", "X") if times is None else ("T", "Y", "X")
        if times is not None:
            nc.createDimension("T", len(times))
            t = nc.createVariable("T", "f8", ("T",))
            t[:] = times
            t.units = time_units
        nc.createDimension("Y", len(lat))
        nc.createDimension("X", len(lon))
        y = nc.createVariable("Y", "f8", ("Y",))
        y[:] = lat
        x = nc.createVariable("X", "f8", ("X",))
        x[:] = lon
        var = nc.createVariable("F", dtype, dims)
        var[:] = values
        for k, val in (attrs or {}).items():
            setattr(var, k, val)
    return path


def test_decoding_fill_scale_offset_and_times(tmp_path):
    raw = np.array([[[10, -32768, 30], [40, 50, 9999]]], dtype=np.int16)
    p = write_nc(tmp_path / "packed.nc", raw, lat=[-45, 45], lon=[0, 120, 240], times=[45.0],
                 attrs={"_FillValue": np.int16(-32768), "missing_value": np.int16(9999), "scale_factor": 0.5,
                        "add_offset": 100.0, "units": "K", "long_name": "packed"}, dtype="i2")
    f = climate.read_field(p, "F")
    expected = np.array([[[105, np.nan, 115], [120, 125, np.nan]]], dtype=np.float32)
    assert np.array_equal(f.values, expected, equal_nan=True) and f.values.dtype == np.float32
    assert str(f.times[0]) == "2000-02" and (f.units, f.long_name) == ("K", "packed")
    p = write_nc(tmp_path / "range.nc", np.array([[1.0, 5.0, -3.0], [2.0, 2.0, 2.0]]), [-45, 45], [0, 120, 240],
                 attrs={"valid_range": np.array([0.0, 4.0])})
    assert np.isnan(climate.read_field(p, "F").values[0, 1:]).all()
    assert climate.decode_times([0, 24 * 40], "hours since 1999-12-31 12:00").tolist()[1].month == 2


def test_repeated_column_is_dropped_only_when_identical(tmp_path):
    lon = np.arange(0, 361, 90.0)                              # 0, 90, 180, 270, 360
    values = np.tile(np.array([1.0, 2, 3, 4, 1]), (2, 1))
    f = climate.read_field(write_nc(tmp_path / "rep.nc", values, [-45, 45], lon), "F")
    assert f.values.shape == (2, 4) and f.grid.covers_sphere
    values[0, -1] = 9
    with pytest.raises(climate.ClimateDataError, match="values differ"):
        climate.read_field(write_nc(tmp_path / "bad.nc", values, [-45, 45], lon), "F")


def test_missing_and_corrupt_files_name_the_file_and_the_fix(tmp_path, ferret_dir):
    with pytest.raises(FileNotFoundError, match=r"monthly_navy_winds\.cdf.*graphsphere data fetch ferret"):
        climate.navy_winds(tmp_path)
    good = (ferret_dir / "etopo60.cdf").read_bytes()
    for name, content in (("truncated", good[: len(good) // 2]), ("garbage", b"not a netcdf file" * 100),
                          ("empty", b"")):
        (tmp_path / name).mkdir()
        bad = tmp_path / name / "etopo60.cdf"
        bad.write_bytes(content)
        with pytest.raises(climate.ClimateDataError, match=rf"{name}/etopo60\.cdf.*graphsphere data fetch ferret"):
            climate.etopo(tmp_path / name)
    # a readable file that is not the one expected
    (tmp_path / "swapped").mkdir()
    (tmp_path / "swapped" / "monthly_navy_winds.cdf").write_bytes(good)
    with pytest.raises(climate.ClimateDataError, match="no variable 'UWND'"):
        climate.navy_winds(tmp_path / "swapped")


# ---------------------------------------------------------------------------------------------------
# the label rule
# ---------------------------------------------------------------------------------------------------

MONTHS = np.arange("2000-01", "2005-01", dtype="datetime64[M]")     # 5 years
TRAIN = [2000, 2001, 2002, 2003]


def synthetic_speed():
    """Training values of cell-month (m, cell) are 1 + year index + 10 * cell (so 1..4 for cell 0):
    their 90th/99th linear percentiles are 1 + 3 * 0.90 = 3.7 and 1 + 3 * 0.99 = 3.97 (+10 per cell)."""
    years = MONTHS.astype("datetime64[Y]").astype(int) + 1970
    speed = (years - 2000 + 1)[:, None] + 10.0 * np.arange(3)[None, :]
    return speed.astype(float)


def test_percentile_labels_on_a_known_field():
    speed = synthetic_speed()
    speed[48:] = np.array([3.5, 13.8, 24.5])                 # 2004 (test): below p90, strong, extreme
    labels, thr = climate_tasks.extreme_wind_labels_from_speed(speed, MONTHS, TRAIN, month_window=0)
    assert np.allclose(thr[:, 0], [3.7, 13.7, 23.7]) and np.allclose(thr[:, 1], [3.97, 13.97, 23.97])
    assert (labels[48:] == [0, 1, 2]).all()
    # training years: only the largest value (year 2003) is above both thresholds
    assert (labels[36:48] == 2).all() and (labels[:36] == 0).all()
    # strictly above: a speed equal to the 90th percentile is background, one equal to the 99th is strong
    assert (climate_tasks.wind_labels(thr[0, :1], MONTHS[:1], thr) == 0).all()
    assert (climate_tasks.wind_labels(thr[0, 1:], MONTHS[:1], thr) == 1).all()
    # month_window=1 pools three calendar months: 12 values per cell-month, 1,1,1,2,2,2,...
    _, thr1 = climate_tasks.extreme_wind_labels_from_speed(speed, MONTHS, TRAIN, month_window=1)
    assert np.allclose(thr1[:, :, 0], np.percentile(np.repeat([1.0, 2, 3, 4], 3), [90, 99]))


def test_thresholds_follow_the_calendar_month():
    speed = synthetic_speed() * (1 + (MONTHS.astype(int) % 12))[:, None]      # month m scales by m + 1
    _, thr = climate_tasks.extreme_wind_labels_from_speed(speed, MONTHS, TRAIN, month_window=0)
    assert np.allclose(thr[:, 0, 0], 3.7 * np.arange(1, 13))


def test_test_years_never_influence_thresholds(rng):
    speed = rng.gamma(3.0, 2.0, size=(MONTHS.size, 4, 6))
    labels, thr = climate_tasks.extreme_wind_labels_from_speed(speed, MONTHS, TRAIN)
    changed = speed.copy()
    changed[48:] = rng.gamma(3.0, 20.0, size=changed[48:].shape)        # 2004 rewritten, much windier
    changed[50, 0, 0] = np.nan
    labels2, thr2 = climate_tasks.extreme_wind_labels_from_speed(changed, MONTHS, TRAIN)
    assert np.array_equal(thr, thr2)
    assert np.array_equal(labels[:48], labels2[:48])
    assert labels2[50, 0, 0] == -1


def test_missing_values_are_labelled_minus_one(rng):
    speed = rng.gamma(3.0, 2.0, size=(MONTHS.size, 2, 3))
    speed[5, 1, 2] = np.nan                                  # one missing month
    speed[:, 0, 0] = np.nan                                  # a cell never observed
    labels, thr = climate_tasks.extreme_wind_labels_from_speed(speed, MONTHS, TRAIN)
    assert labels[5, 1, 2] == -1 and (labels[:, 0, 0] == -1).all() and np.isnan(thr[:, :, 0, 0]).all()
    assert (labels[:, 1, 1] >= 0).all()
    freq = climate_tasks.class_frequencies(labels)
    assert np.isclose(freq.sum(), 1)


def test_label_rule_errors():
    speed = synthetic_speed()
    with pytest.raises(ValueError, match="training years"):
        climate_tasks.monthly_thresholds(speed, MONTHS, [1999])
    with pytest.raises(ValueError, match="increasing percentiles"):
        climate_tasks.monthly_thresholds(speed, MONTHS, TRAIN, quantiles=(99, 90))
    with pytest.raises(ValueError, match="one entry per time step"):
        climate_tasks.monthly_thresholds(speed, MONTHS[:10], TRAIN)


# ---------------------------------------------------------------------------------------------------
# forecasting arrays
# ---------------------------------------------------------------------------------------------------

def test_forecast_arrays_layout_and_split(rng):
    u = rng.normal(size=(MONTHS.size, 3, 4))
    v = rng.normal(size=(MONTHS.size, 3, 4))
    land = rng.random((3, 4)) > 0.5
    a = climate_tasks.forecast_arrays(u, v, MONTHS, land, test_years=[2002], n_input=2)
    assert a.channels == ("u[t-2]", "v[t-2]", "u[t-1]", "v[t-1]", "land")
    assert a.x_train.shape[1:] == (3, 4, 5) and a.y_train.shape[1:] == (3, 4, 2)
    # test samples: targets in 2002; training samples: no month of theirs in 2002
    assert (a.times_test.astype("datetime64[Y]").astype(int) + 1970 == 2002).all() and len(a.times_test) == 12
    train_years = a.times_train.astype("datetime64[Y]").astype(int) + 1970
    months_train = a.times_train.astype(str)
    assert 2002 not in train_years and "2003-01" not in months_train and "2003-03" in months_train
    assert len(a.times_train) == 60 - 2 - 12 - 2           # first 2 months have no history; Jan-Feb 2003 read 2002
    # channel contents: sample for target t holds u[t-2], v[t-2], u[t-1], v[t-1], land
    k = int(np.flatnonzero(a.times_train == np.datetime64("2001-05"))[0])
    t = 16
    assert np.allclose(a.x_train[k, ..., 0], u[t - 2]) and np.allclose(a.x_train[k, ..., 3], v[t - 1])
    assert np.array_equal(a.x_train[k, ..., 4], land.astype(np.float32))
    assert np.allclose(a.y_train[k, ..., 0], u[t]) and np.allclose(a.y_train[k, ..., 1], v[t])
    # no test-year value reaches the training arrays
    u2 = u.copy()
    u2[24:36] = 1e6
    b = climate_tasks.forecast_arrays(u2, v, MONTHS, land, test_years=[2002], n_input=2)
    assert np.abs(b.x_train).max() < 1e3 and np.abs(b.y_train).max() < 1e3


def test_forecast_arrays_on_a_sampling_and_climatology(rng):
    u = rng.normal(size=(MONTHS.size, 42))                  # [time, npix] after regridding
    a = climate_tasks.forecast_arrays(u, -u, MONTHS, np.zeros(42), test_years=[2004], n_input=3)
    assert a.x_test.shape == (12, 42, 7) and a.y_test.shape == (12, 42, 2)
    clim = climate_tasks.monthly_climatology(u, MONTHS, TRAIN)
    assert clim.shape == (12, 42) and np.allclose(clim[2], u[[2, 14, 26, 38]].mean(axis=0))
    with pytest.raises(ValueError, match="consecutive"):
        climate_tasks.forecast_arrays(u[[0, 1, 3, 4, 5]], u[[0, 1, 3, 4, 5]], MONTHS[[0, 1, 3, 4, 5]], np.zeros(42),
                                test_years=[2000], n_input=1)
