"""Tests of the weather-station data (graphsphere.data.stations): the .rda reader against values
checked by hand in the files, the cleaning rule, masks, and the chronological split without leakage."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest

from graphsphere.data import station_tasks as tasks
from graphsphere.data import stations as st

DATA_SUBDIR = "usr/lib/R/site-library/fields/data"


@pytest.fixture(scope="module")
def fields_dir(tmp_path_factory):
    """The data folder of Debian's r-cran-fields, downloaded and unpacked here (no root needed)."""
    pytest.importorskip("rdata")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get and dpkg-deb are needed to get r-cran-fields")
    tmp = tmp_path_factory.mktemp("fields")
    got = subprocess.run(["apt-get", "download", "r-cran-fields"], cwd=tmp, capture_output=True, text=True,
                         timeout=300, check=False)
    debs = sorted(tmp.glob("r-cran-fields_*.deb"))
    if got.returncode or not debs:
        pytest.skip(f"apt-get download r-cran-fields failed: {got.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], check=True, timeout=120)
    return tmp / "root" / DATA_SUBDIR


@pytest.fixture(scope="module")
def colorado(fields_dir):
    return {v: st.read_colorado(fields_dir, v) for v in st.COLORADO_VARIABLES}


def series(values, lon=None, lat=None, ids=None, first_year=2000):
    """A synthetic StationSeries with the given (months, stations) values, starting in January."""
    values = np.asarray(values, dtype=float)
    n = values.shape[1]
    ids = np.array([f"s{i}" for i in range(n)]) if ids is None else np.asarray(ids)
    lon = np.linspace(-108, -102, n) if lon is None else np.asarray(lon, float)
    lat = np.linspace(37, 41, n) if lat is None else np.asarray(lat, float)
    n_years = values.shape[0] // 12
    return st.StationSeries(ids=ids, names=np.char.add("station ", ids), lon=lon, lat=lat,
                            elevation=np.full(n, 1500.0), values=values,
                            times=st.month_range(first_year, first_year + n_years - 1), variable="tmax",
                            units="degC")


def seasonal(n_years, n_stations, seed=0, missing=0.1):
    """Temperature-like values: a seasonal cycle, station offsets, noise, a fraction missing."""
    rng = np.random.default_rng(seed)
    t = np.arange(12 * n_years)
    v = 15 - 12 * np.cos(2 * np.pi * t / 12)[:, None] + rng.normal(0, 3, n_stations)
    v += rng.normal(0, 1.5, (t.size, n_stations))
    v[rng.random(v.shape) < missing] = np.nan
    return v


# -- the reader -----------------------------------------------------------------------------------

# Entries printed with rdata itself, indexing the R arrays by their documented layout
# [year - 1895, month - 1, station] (independent of the reader's reshape), e.g.
#   rdata.read_rda("COmonthlyMet.rda")["CO.tmax"][1950 - 1895, 7 - 1, list(CO.id).index("053005")] -> 25.7
# (station id, year, month) -> (tmax, tmin, ppt); nan where the file has NA.
HAND_CHECKED = {
    ("053005", 1950, 1): (5.3, -12.9, 0.9),    # FORT COLLINS
    ("053005", 1950, 7): (25.7, 12.8, 3.5),
    ("053005", 1990, 12): (2.9, -13.1, 0.6),
    ("050109", 1950, 1): (np.nan, np.nan, 0.7),  # AKRON 4 E: precipitation only in 1950
    ("050109", 1950, 7): (np.nan, np.nan, 4.2),
    ("050109", 1990, 12): (1.4, -12.9, 0.2),
}


def test_colorado_values_match_entries_checked_by_hand(colorado):
    for (sid, year, month), expected in HAND_CHECKED.items():
        for var, want in zip(("tmax", "tmin", "ppt"), expected):
            s = colorado[var]
            got = s.values[s.times == np.datetime64(f"{year}-{month:02d}", "M"), list(s.ids).index(sid)]
            np.testing.assert_equal(got, [want], err_msg=f"{var} {sid} {year}-{month}")


def test_colorado_station_metadata(colorado):
    s = colorado["tmax"]
    assert s.nstations == 376 and s.ntimes == 103 * 12
    assert str(s.times[0]) == "1895-01" and str(s.times[-1]) == "1997-12"
    assert np.unique(s.ids).size == 376
    # Printed with rdata: CO.id[0], CO.names[0], CO.loc[0], CO.elev[0]; the last station likewise.
    first = (s.ids[0], s.names[0], s.lon[0], s.lat[0], s.elevation[0])
    assert first == ("028468", "TEEC NOS POS", -109.1, 36.9, 1580.0)
    assert (s.ids[-1], s.names[-1], s.elevation[-1]) == ("487990", "SARATOGA", 2070.0)
    fc = list(s.ids).index("053005")
    assert (s.names[fc], s.lon[fc], s.lat[fc], s.elevation[fc]) == ("FORT COLLINS", -105.08, 40.58, 1525.0)
    # The documented domain, west longitudes negative: Colorado is around (-105, 39).
    assert -109.5 <= s.lon.min() and s.lon.max() <= -101 and 36.5 <= s.lat.min() and s.lat.max() <= 41.5
    assert abs(np.mean(s.lon) + 105) < 1 and abs(np.mean(s.lat) - 39) < 1
    assert [colorado[v].units for v in ("tmax", "tmin", "ppt")] == ["degC", "degC", "cm"]
    assert 0.55 < 1 - s.observed.mean() < 0.7  # 62% missing


def test_colorado_layout_agrees_with_the_files_own_spring_means(colorado, fields_dir):
    # CO.tmax.MAM [year, station] is R's mean of March-May: an independent check of [year, month, station].
    import rdata

    mam = rdata.read_rda(str(fields_dir / st.COLORADO_FILE))["CO.tmax.MAM"]
    s = colorado["tmax"]
    ours = s.values.reshape(103, 12, 376)[:, 2:5].mean(axis=1)
    both = np.isfinite(ours) & np.isfinite(mam)
    assert both.sum() > 10_000
    np.testing.assert_allclose(ours[both], mam[both], atol=1e-12)
    assert np.array_equal(np.isfinite(ours), np.isfinite(mam))


def test_colorado_climate_is_physical(colorado):
    fc = list(colorado["tmax"].ids).index("053005")
    months = colorado["tmax"].months
    tmax = np.array([np.nanmean(colorado["tmax"].values[months == m, fc]) for m in range(1, 13)])
    tmin = np.array([np.nanmean(colorado["tmin"].values[months == m, fc]) for m in range(1, 13)])
    assert np.argmax(tmax) == 6 and np.argmin(tmax) == 0  # hottest July, coldest January
    assert np.all(tmax > tmin)
    # Fort Collins' normal precipitation is about 15 inches (38 cm) a year; the file's values sum to
    # that in centimetres (its documentation's millimetres would make it a desert 10 times over).
    ppt = colorado["ppt"].values[:, fc].reshape(103, 12)
    full_years = np.isfinite(ppt).all(axis=1)
    assert 33 < ppt[full_years].sum(axis=1).mean() < 44


def test_north_american_rainfall(fields_dir):
    na = st.read_north_american_rainfall(fields_dir)
    assert na.nstations == 1720
    # Printed with rdata: NorthAmericanRainfall$longitude[i], $latitude, $precip, $elevation, $trend, $type.
    for i, (lon, lat, precip, elev, trend, adjusted) in {
            0: (-123.7, 48.7, 985.0995817467116, 188.51953128597762, -1.6479784424430914, True),
            999: (-95.75, 40.37, 3031.214971139971, 297.1537109260681, -11.594011544011552, True),
            1719: (-120.3, 34.8, 22.679737335834883, 273.15429687683815, -0.0654784240150091, False)}.items():
        assert (na.lon[i], na.lat[i], na.adjusted[i]) == (lon, lat, adjusted)
        np.testing.assert_allclose([na.precip[i], na.elevation[i], na.trend[i]], [precip, elev, trend], rtol=1e-14)
    assert na.lon.max() < -50 and 20 < na.lat.min() and na.lat.max() < 60  # North America, west negative
    assert int(na.adjusted.sum()) == 1595
    assert na.to_points().npix == 1720  # no duplicate locations


def test_path_none_fetches_the_data_source(fields_dir, monkeypatch):
    from graphsphere.data import sources

    asked = []
    monkeypatch.setattr(sources, "fetch", lambda name: asked.append(name) or fields_dir)
    assert st.read_colorado().nstations == 376
    assert st.read_north_american_rainfall().nstations == 1720
    assert asked == ["fields-stations", "fields-stations"]


def test_reader_accepts_the_file_and_names_problems(fields_dir, tmp_path, monkeypatch):
    assert st.read_colorado(fields_dir / st.COLORADO_FILE, "ppt").variable == "ppt"
    with pytest.raises(FileNotFoundError, match="COmonthlyMet.rda.*r-cran-fields"):
        st.read_colorado(tmp_path)
    with pytest.raises(ValueError, match="unknown variable 'tmean'.*ppt"):
        st.read_colorado(fields_dir, "tmean")
    with pytest.raises(ValueError, match="lacks the object"):
        st.read_colorado(fields_dir / st.RAINFALL_FILE)
    monkeypatch.setitem(sys.modules, "rdata", None)  # `import rdata` raises ImportError
    with pytest.raises(ImportError, match="pip install rdata"):
        st.read_colorado(fields_dir)


def test_real_series_to_tasks(colorado):
    start, end = st.best_period(colorado["tmax"], n_years=40, min_coverage=0.9)
    s = st.clean(colorado["tmax"], start, end, min_coverage=0.9)
    assert (start, end) == (1957, 1996) and s.nstations == 123  # measured
    assert np.all(s.coverage >= 0.9)
    task = tasks.regression_task(s, n_lags=3, test_fraction=0.3)
    assert task.train.x.shape == (12 * 28 - 3, 123, 6) and task.test.x.shape == (12 * 12, 123, 6)
    assert task.train.times[-1] < task.test.times[0]
    assert s.to_points().npix == 123


# -- cleaning -----------------------------------------------------------------------------------

def test_coverage_rule_keeps_exactly_the_stations_at_or_above_the_threshold():
    v = np.ones((48, 5))
    for j, n_missing in enumerate([0, 9, 10, 11, 48]):  # of 48 months: 100%, 81.25%, 79.2%, 77.1%, 0%
        v[:n_missing, j] = np.nan
    s = series(v)
    assert st.clean(s, min_coverage=0.8).ids.tolist() == ["s0", "s1"]
    assert st.clean(s, min_coverage=38 / 48).ids.tolist() == ["s0", "s1", "s2"]  # exactly 79.17%: kept
    assert st.clean(s, min_coverage=0).nstations == 5
    # The period comes first: from 2001 on, the first 12 months' gaps no longer count.
    assert st.clean(s, start=2001, min_coverage=1).ids.tolist() == ["s0", "s1", "s2", "s3"]
    with pytest.raises(ValueError, match="no station has 100% .* best has 81.2%"):
        st.clean(s.select([1, 2, 3, 4]), min_coverage=1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        st.clean(s, min_coverage=80)


def test_best_period_finds_the_window_with_most_covered_stations():
    v = np.full((12 * 10, 3), np.nan)
    v[0:60, 0] = 1     # 2000-2004
    v[36:96, 1] = 1    # 2003-2007
    v[48:120, 2] = 1   # 2004-2009
    s = series(v)
    assert st.best_period(s, 1, min_coverage=1) == (2004, 2004)  # the only year all three observed
    # Two complete stations in 2003-04, 2004-05, 2005-06 and 2006-07: the latest of the ties.
    assert st.best_period(s, 2, min_coverage=1) == (2006, 2007)
    # 80% of 5 years: 2003-07 (s1 5/5, s2 4/5) and 2004-08 (s1 4/5, s2 5/5) keep two; the latest wins.
    assert st.best_period(s, 5, min_coverage=0.8) == (2004, 2008)
    assert st.best_period(s, 5, min_coverage=0.6) == (2002, 2006)  # s0 3/5, s1 4/5, s2 3/5: all three
    with pytest.raises(ValueError, match="n_years"):
        st.best_period(s, 11)


def test_nan_coordinates_are_an_error_naming_the_station():
    s = series(np.ones((12, 3)), lon=[-105.0, np.nan, -104.0])
    with pytest.raises(ValueError, match=r"NaN or infinite coordinates: \['s1'\].*select"):
        st.clean(s)
    kept = s.select(np.isfinite(s.lon) & np.isfinite(s.lat))  # the fix the message gives
    assert st.clean(kept).ids.tolist() == ["s0", "s2"]


def test_duplicate_locations_error_or_merge():
    v = np.full((24, 4), np.nan)
    v[:12, 0] = 1.0                 # s0 and s1 share a location and half a record each
    v[10:, 1] = 3.0                 # they overlap in months 10 and 11
    v[:, 2] = 5.0
    v[:, 3] = 7.0
    s = series(v, lon=[-105, -105 + 1e-6, -104, -103], lat=[39, 39, 40, 41])  # 1e-6 deg ~ 0.1 m apart
    with pytest.raises(ValueError, match=r"s0 = s1 at \(-105, 39\).*duplicates='merge'"):
        st.clean(s)
    merged = st.clean(s, duplicates="merge", min_coverage=1)
    assert merged.ids.tolist() == ["s0+s1", "s2", "s3"]
    expected = np.r_[np.ones(10), [2.0, 2.0], np.full(12, 3.0)]  # mean of the observed values, month by month
    np.testing.assert_array_equal(merged.values[:, 0], expected)
    assert (merged.lon[0], merged.lat[0]) == (-105, 39)
    # Merged before the coverage rule: apart, neither half passes 80%.
    assert st.clean(s.select([0, 2, 3]), min_coverage=0.8).ids.tolist() == ["s2", "s3"]


def test_repeated_ids_at_different_places_are_an_error():
    s = series(np.ones((12, 2)), ids=["x", "x"])
    with pytest.raises(ValueError, match=r"ids repeat.*\['x'\]"):
        st.clean(s)


def test_series_checks_its_shapes():
    s = series(np.ones((24, 2)))
    with pytest.raises(ValueError, match=r"values must be \(ntimes, nstations\) = \(24, 2\)"):
        dataclasses.replace(s, values=np.ones((24, 3)))
    with pytest.raises(ValueError, match="lon has shape"):
        dataclasses.replace(s, lon=np.zeros(3))
    gap = s.times.copy()
    gap[-1] += 5
    with pytest.raises(ValueError, match="consecutive months"):
        dataclasses.replace(s, times=gap)
    assert s.values.flags.writeable is False


# -- masks ----------------------------------------------------------------------------------------

def climatology_by_loops(values, months, train):
    """Training mean of each (calendar month, station), by plain loops."""
    out = np.full((12, values.shape[1]), np.nan)
    for m in range(12):
        for j in range(values.shape[1]):
            obs = [values[t, j] for t in range(len(values))
                   if train[t] and months[t] == m + 1 and np.isfinite(values[t, j])]
            if obs:
                out[m, j] = sum(obs) / len(obs)
    return out


def test_regression_masks_mark_exactly_the_missing_entries_and_fill_with_training_means():
    v = seasonal(6, 7, seed=1, missing=0.2)
    s = series(v)
    n_lags = 4
    task = tasks.regression_task(s, n_lags=n_lags, test_years=[2004, 2005])
    train_months = s.years < 2004
    clim = climatology_by_loops(v, s.months, train_months)
    assert np.isfinite(clim).all()
    np.testing.assert_allclose(task.fill, clim, rtol=1e-12)
    index = {t: i for i, t in enumerate(s.times)}
    for split in (task.train, task.test):
        assert split.x.dtype == np.float32 and split.y_mask.dtype == bool
        for k, when in enumerate(split.times):
            t = index[when]
            for lag in range(n_lags):
                src = t - n_lags + lag
                obs = np.isfinite(v[src])
                np.testing.assert_array_equal(split.x[k, :, n_lags + lag], obs.astype(np.float32))
                np.testing.assert_allclose(split.x[k, obs, lag], v[src, obs], rtol=1e-6)
                np.testing.assert_allclose(split.x[k, ~obs, lag], clim[s.months[src] - 1, ~obs], rtol=1e-6)
            np.testing.assert_array_equal(split.y_mask[k], np.isfinite(v[t]))
            np.testing.assert_allclose(split.y[k, split.y_mask[k]], v[t, np.isfinite(v[t])], rtol=1e-6)
    assert np.all(np.isfinite(task.train.x)) and np.all(np.isfinite(task.train.y))
    assert (task.train.x[..., :n_lags] == 0).sum() == 0  # nothing silently zero


def test_regression_fill_falls_back_when_a_station_never_saw_a_calendar_month():
    v = seasonal(4, 3, seed=2, missing=0)
    v[np.arange(48) % 12 == 0, 1] = np.nan          # station 1: no January at all
    v[:36, 2] = np.nan                               # station 2: nothing in the training years
    s = series(v)
    task = tasks.regression_task(s, n_lags=2, test_years=[2003])
    assert task.fill[0, 1] == pytest.approx(np.nanmean(v[:36, 1]))       # its mean over all months
    # Station 2: the network's June (mean of the stations' June climatologies; 3 Junes each here).
    assert task.fill[5, 2] == pytest.approx(np.mean(v[:36][np.arange(36) % 12 == 5, :2]))
    assert np.isfinite(task.fill).all()


def test_regression_samples_without_any_observed_target_are_left_out():
    v = seasonal(3, 4, seed=3, missing=0)
    v[7] = np.nan
    s = series(v)
    task = tasks.regression_task(s, n_lags=1, test_years=[2002])
    assert s.times[7] not in task.train.times
    assert len(task.train) == 24 - 1 - 1  # 24 training months, minus one without history, minus month 7
    assert s.times[8] in task.train.times  # its inputs were all missing: kept, flagged 0
    assert np.all(task.train.x[task.train.times == s.times[8], :, 1] == 0)


def test_month_task_masks_and_a_fill_that_does_not_tell_the_month():
    v = seasonal(5, 6, seed=4, missing=0.3)
    v[14] = np.nan  # a snapshot with no observation: left out
    s = series(v)
    task = tasks.month_task(s, test_years=[2004])
    train = s.years < 2004
    assert task.fill.shape == (6,)
    np.testing.assert_allclose(task.fill, np.nanmean(v[train], axis=0), rtol=1e-12)
    index = {t: i for i, t in enumerate(s.times)}
    assert s.times[14] not in task.train.times and len(task.train) == 47 and len(task.test) == 12
    for split in (task.train, task.test):
        for k, when in enumerate(split.times):
            t = index[when]
            obs = np.isfinite(v[t])
            np.testing.assert_array_equal(split.x[k, :, 1], obs)
            np.testing.assert_allclose(split.x[k, obs, 0], v[t, obs], rtol=1e-6)
            np.testing.assert_allclose(split.x[k, ~obs, 0], task.fill[~obs], rtol=1e-6)
            assert split.y[k] == s.months[t] - 1
    assert task.n_classes == 12 and task.train.y_mask is None


# -- chronological split and leakage ------------------------------------------------------------------

def test_chronological_years():
    years = tasks.chronological_years(range(1957, 1997), 0.3, 0.1)
    assert years["train"].tolist() == list(range(1957, 1981))
    assert years["val"].tolist() == list(range(1981, 1985))
    assert years["test"].tolist() == list(range(1985, 1997))
    with pytest.raises(ValueError, match="at least one"):
        tasks.chronological_years([2000, 2001], 0.5, 0.5)


def test_splits_do_not_overlap_and_see_only_what_they_may():
    s = series(seasonal(10, 5, seed=5, missing=0.1))
    n_lags = 3
    task = tasks.regression_task(s, n_lags=n_lags, test_fraction=0.3, val_fraction=0.2)
    yrs = task.years
    assert yrs["train"].tolist() == list(range(2000, 2005)) and yrs["val"].tolist() == [2005, 2006]
    times = {name: set(split.times.tolist()) for name, split in task.splits().items()}
    assert not (times["train"] & times["val"] or times["train"] & times["test"] or times["val"] & times["test"])
    year_of = lambda t: t.astype("datetime64[Y]").astype(int) + 1970
    lag = np.arange(1, n_lags + 1).astype("timedelta64[M]")
    train_inputs = (task.train.times[:, None] - lag[None]).ravel()
    assert np.isin(year_of(task.train.times), yrs["train"]).all() and np.isin(year_of(train_inputs), yrs["train"]).all()
    val_inputs = (task.val.times[:, None] - lag[None]).ravel()
    assert np.isin(year_of(task.val.times), yrs["val"]).all() and not np.isin(year_of(val_inputs), yrs["test"]).any()
    assert np.isin(year_of(task.test.times), yrs["test"]).all()
    # Every month with a full history is in exactly one split: validation and test samples may look
    # back into earlier splits' months (a forecast knows the past), so only the first n_lags are lost.
    assert len(task.train) + len(task.val) + len(task.test) == 120 - n_lags
    assert str(task.val.times[0]) == "2005-01" and str(task.test.times[0]) == "2007-01"
    assert str(task.train.times[-1]) == "2004-12"


@pytest.mark.parametrize("make", [tasks.regression_task, tasks.month_task])
def test_changing_test_years_leaves_training_arrays_unchanged(make):
    v = seasonal(8, 6, seed=6, missing=0.15)
    s = series(v)
    test_years = [2005, 2006, 2007]
    base = make(s, test_years=test_years)
    w = v.copy()
    test = np.isin(s.years, test_years)
    rng = np.random.default_rng(0)
    w[test] = w[test] + 100 + rng.normal(0, 10, w[test].shape)  # new test values...
    w[test & (np.arange(96) % 5 == 0)] = np.nan                 # ...and new gaps
    changed = make(dataclasses.replace(s, values=w), test_years=test_years)
    for a, b in [(base.train.x, changed.train.x), (base.train.y, changed.train.y), (base.fill, changed.fill)]:
        np.testing.assert_array_equal(a, b)
    if base.train.y_mask is not None:
        np.testing.assert_array_equal(base.train.y_mask, changed.train.y_mask)
    assert (base.mean, base.std) == (changed.mean, changed.std)
    assert not np.array_equal(base.test.x, changed.test.x)  # the test split did see the change


def test_task_argument_errors():
    s = series(seasonal(3, 2))
    with pytest.raises(ValueError, match="n_lags must be at least 1"):
        tasks.regression_task(s, n_lags=0)
    with pytest.raises(ValueError, match=r"test_years \[1990\] are not in the series"):
        tasks.regression_task(s, test_years=[1990])
    with pytest.raises(ValueError, match="both test and validation"):
        tasks.month_task(s, test_years=[2002], val_years=[2002])
    with pytest.raises(ValueError, match="at least one test and one training year"):
        tasks.regression_task(s, test_years=[2000, 2001, 2002])
    with pytest.raises(ValueError, match="needs test_years"):
        tasks.regression_task(s, val_years=[2001])


def test_held_out_years_in_the_middle_keep_test_months_out_of_training_inputs():
    s = series(seasonal(8, 4, seed=7, missing=0))
    n_lags = 2
    task = tasks.regression_task(s, n_lags=n_lags, test_years=[2003], val_years=[2004])
    jan_feb = lambda year: [np.datetime64(f"{year}-01", "M"), np.datetime64(f"{year}-02", "M")]
    # Validation may look back into training years, never into test years: Jan-Feb 2004 would need 2003.
    assert not np.isin(jan_feb(2004), task.val.times).any()
    # Training may look only at training years: Jan-Feb 2005 would need 2004 (validation).
    assert not np.isin(jan_feb(2005), task.train.times).any()
    assert np.isin(jan_feb(2003), task.test.times).all()  # test may look back into training years
    lag = np.arange(1, n_lags + 1).astype("timedelta64[M]")
    input_years = ((task.train.times[:, None] - lag).astype("datetime64[Y]").astype(int) + 1970).ravel()
    assert not np.isin(input_years, [2003, 2004]).any()
    assert len(task.train) == 6 * 12 - n_lags - n_lags  # 6 training years, less 1/2000's and Jan-Feb 2005
    assert len(task.val) == 12 - n_lags and len(task.test) == 12
