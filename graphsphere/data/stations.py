"""Real weather-station data: Colorado monthly temperatures and precipitation, North American rainfall.

Both data sets ship in Debian's ``r-cran-fields`` package (data source ``"fields-stations"`` of
:mod:`graphsphere.data.sources`) as R ``.rda`` files, read here with the PyPI package ``rdata``
(no R needed):

- ``COmonthlyMet.rda``: 376 stations in and around Colorado (lon -109.5 to -101, lat 36.5 to 41.5),
  monthly mean daily maximum and minimum temperature (degrees C) and monthly precipitation,
  1895-1997, as R arrays ``[year, month, station]``; 62% of the entries are missing (NaN).
  The file's documentation gives precipitation in millimetres, but its values are centimetres:
  Fort Collins (station 053005) averages 38.6 a year, and its measured normal is 15 inches = 38 cm.
- ``NorthAmericanRainfall.rda``: 1,720 stations, one number each: mean June-August precipitation
  1950-2010 (tenths of a millimetre) with its trend, no time series. A larger irregular network for
  graphs and interpolation, not for the forecasting tasks.

From a series to learning tasks, with every choice documented and testable:

1. ``best_period``: the window of years that keeps the most well-covered stations.
2. ``clean``: restrict to a period, resolve duplicate locations, drop stations with less than
   ``min_coverage`` of the months observed; NaN coordinates are an error.
3. :mod:`graphsphere.data.station_tasks` turns a clean series into learning tasks.

Example
-------
>>> from graphsphere.data import stations
>>> co = stations.read_colorado(variable="tmax")                      # doctest: +SKIP
>>> co.values.shape, co.units, str(co.times[0]), co.nstations         # doctest: +SKIP
((1236, 376), 'degC', '1895-01', 376)
>>> start, end = stations.best_period(co, n_years=40, min_coverage=0.9)   # doctest: +SKIP
>>> co = stations.clean(co, start, end, min_coverage=0.9)             # doctest: +SKIP
>>> co.coverage.min() >= 0.9                                       # doctest: +SKIP
True

"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = [
    "COLORADO_FILE", "COLORADO_VARIABLES", "DUPLICATE_TOL", "RAINFALL_FILE", "SOURCE", "RainfallStations",
    "StationSeries", "best_period", "clean", "month_range", "read_colorado", "read_north_american_rainfall",
]

#: Name of the data set in :mod:`graphsphere.data.sources`, and its two files.
SOURCE = "fields-stations"
COLORADO_FILE = "COmonthlyMet.rda"
RAINFALL_FILE = "NorthAmericanRainfall.rda"

#: variable -> (object in COmonthlyMet.rda, units, description).
COLORADO_VARIABLES = {
    "tmax": ("CO.tmax", "degC", "monthly mean of the daily maximum temperature"),
    "tmin": ("CO.tmin", "degC", "monthly mean of the daily minimum temperature"),
    # Centimetres, not the millimetres of the file's documentation: see the module docstring.
    "ppt": ("CO.ppt", "cm", "monthly total precipitation"),
}

#: Stations closer than this chord on the unit sphere (radians, about 6 m on the Earth) share a
#: location; the tolerance at which ``graphsphere.sampling.Points`` rejects duplicates.
DUPLICATE_TOL = 1e-6



# -- containers ------------------------------------------------------------------------------------

def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def month_range(first_year: int, last_year: int) -> np.ndarray:
    """Every month from January of ``first_year`` to December of ``last_year``, as ``datetime64[M]``.

    >>> month_range(1990, 1990)[[0, -1]].astype(str).tolist()
    ['1990-01', '1990-12']
    """
    return np.arange(np.datetime64(f"{int(first_year):04d}-01", "M"),
                     np.datetime64(f"{int(last_year) + 1:04d}-01", "M"))


@dataclass(frozen=True, eq=False)
class StationSeries:
    """Monthly values of one variable at a set of stations.

    Attributes
    ----------
    ids, names : str arrays (nstations,)
    lon, lat : float arrays (nstations,)
        Degrees; longitude in [-180, 180] (west is negative), latitude in [-90, 90].
    elevation : float array (nstations,)
        Metres.
    values : float64 array (ntimes, nstations)
        NaN where missing.
    times : datetime64[M] array (ntimes,)
        Consecutive months.
    variable, units : str

    The arrays are read-only copies; make a changed series with ``dataclasses.replace``.
    """

    ids: np.ndarray
    names: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    elevation: np.ndarray
    values: np.ndarray
    times: np.ndarray
    variable: str
    units: str

    def __post_init__(self):
        conv = {"ids": str, "names": str, "lon": np.float64, "lat": np.float64, "elevation": np.float64,
                "values": np.float64}
        for name, dtype in conv.items():
            object.__setattr__(self, name, _readonly(np.asarray(getattr(self, name), dtype=dtype)))
        times = np.asarray(self.times)
        if not np.issubdtype(times.dtype, np.datetime64):
            raise ValueError(f"times must be datetime64 months, got dtype {times.dtype}")
        object.__setattr__(self, "times", _readonly(times.astype("datetime64[M]")))
        n = self.ids.shape
        for name in ("names", "lon", "lat", "elevation"):
            if getattr(self, name).shape != n:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, but there are {n[0]} station ids")
        if self.values.shape != (self.times.size, n[0]):
            raise ValueError(f"values must be (ntimes, nstations) = ({self.times.size}, {n[0]}), "
                             f"got {self.values.shape}")
        if self.times.size > 1 and np.any(np.diff(self.times).astype(int) != 1):
            raise ValueError("times must be consecutive months with no gaps (fill gaps with NaN values)")

    @property
    def nstations(self) -> int:
        return int(self.ids.size)

    @property
    def ntimes(self) -> int:
        return int(self.times.size)

    @property
    def years(self) -> np.ndarray:
        """Calendar year of each time step (ntimes,)."""
        return self.times.astype("datetime64[Y]").astype(int) + 1970

    @property
    def months(self) -> np.ndarray:
        """Month of the year of each time step, 1 to 12 (ntimes,)."""
        return self.times.astype(int) % 12 + 1

    @property
    def observed(self) -> np.ndarray:
        """True where a value is present (ntimes, nstations)."""
        return np.isfinite(self.values)

    @property
    def coverage(self) -> np.ndarray:
        """Fraction of the months observed at each station (nstations,)."""
        return self.observed.mean(axis=0) if self.ntimes else np.zeros(self.nstations)

    def select(self, stations=None, start: int | None = None, end: int | None = None) -> StationSeries:
        """A subset: ``stations`` (boolean mask or indices, in the order given), years ``start`` to ``end``
        inclusive (None: from the first, to the last)."""
        idx = np.arange(self.nstations) if stations is None else np.asarray(stations)
        if idx.dtype == bool:
            if idx.shape != (self.nstations,):
                raise ValueError(f"a boolean station mask needs {self.nstations} entries, got {idx.shape}")
            idx = np.flatnonzero(idx)
        first, last = int(self.years[0]), int(self.years[-1])
        start = first if start is None else int(start)
        end = last if end is None else int(end)
        if not first <= start <= end <= last:
            raise ValueError(f"period {start}-{end} is not within the record {first}-{last} (or start > end)")
        t = (self.years >= start) & (self.years <= end)
        return StationSeries(ids=self.ids[idx], names=self.names[idx], lon=self.lon[idx], lat=self.lat[idx],
                             elevation=self.elevation[idx], values=self.values[t][:, idx], times=self.times[t],
                             variable=self.variable, units=self.units)

    def to_points(self):
        """The stations as a ``graphsphere.sampling.Points`` sampling (in station order)."""
        from ..sampling import Points

        return Points(lon=self.lon, lat=self.lat)

    def __repr__(self) -> str:
        span = f"{self.times[0]} to {self.times[-1]}" if self.ntimes else "no months"
        return (f"StationSeries({self.variable} [{self.units}], {self.nstations} stations, {span}, "
                f"{self.observed.mean():.0%} observed)" if self.values.size else
                f"StationSeries({self.variable} [{self.units}], {self.nstations} stations, {span})")


@dataclass(frozen=True, eq=False)
class RainfallStations:
    """``NorthAmericanRainfall.rda``: one summary per station, no time series.

    Attributes (arrays of 1,720 stations)
    ----------
    lon, lat : degrees (longitude in [-180, 180]); elevation : metres (0 at 118 stations, which may
        mean unknown; the file does not say)
    precip : mean June-August precipitation 1950-2010 in tenths of a millimetre, the intercept at
        1980.5 of a straight line fitted to the station's record; precip_se : its standard error
    trend, trend_se : the slope of that line and its standard error (the file does not state the
        time unit of the slope)
    adjusted : True where GHCN adjusted (homogenised) the record, False for raw records
    """

    lon: np.ndarray
    lat: np.ndarray
    elevation: np.ndarray
    precip: np.ndarray
    precip_se: np.ndarray
    trend: np.ndarray
    trend_se: np.ndarray
    adjusted: np.ndarray
    units: dict = field(default_factory=lambda: {"precip": "0.1 mm", "elevation": "m", "lon": "deg", "lat": "deg"})

    @property
    def nstations(self) -> int:
        return int(self.lon.size)

    def to_points(self):
        """The stations as a ``graphsphere.sampling.Points`` sampling (in file order)."""
        from ..sampling import Points

        return Points(lon=self.lon, lat=self.lat)


# -- reading ------------------------------------------------------------------------------------

def _rda_file(path, filename: str) -> Path:
    if path is None:
        from .sources import fetch

        path = fetch(SOURCE)
    path = Path(path).expanduser()
    file = path / filename if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found. Pass the folder holding {filename} (Debian package r-cran-fields, "
            f"usr/lib/R/site-library/fields/data/) or the file itself, or path=None to fetch data set "
            f"{SOURCE!r} (graphsphere data fetch {SOURCE})")
    return file


def _read_rda(file: Path) -> dict:
    try:
        import rdata
    except ImportError as err:
        raise ImportError("reading the station data (.rda files) needs the PyPI package rdata: "
                          "pip install rdata  (no R needed)") from err
    return rdata.read_rda(str(file))


def _expect(objects: dict, file: Path, names) -> None:
    missing = [n for n in names if n not in objects]
    if missing:
        raise ValueError(f"{file} lacks the object(s) {missing} (found {sorted(map(str, objects))}); "
                         "is it the COmonthlyMet.rda / NorthAmericanRainfall.rda of r-cran-fields 14.1?")


def read_colorado(path=None, variable: str = "tmax") -> StationSeries:
    """Read one variable of ``COmonthlyMet.rda`` as a :class:`StationSeries` (all 376 stations,
    1895-01 to 1997-12, NaN where missing).

    Parameters
    ----------
    path : folder holding ``COmonthlyMet.rda``, or the file; None fetches data source ``"fields-stations"``.
    variable : ``"tmax"`` or ``"tmin"`` (degrees C), or ``"ppt"`` (centimetres: see the module docstring).

    >>> co = read_colorado(variable="tmin")      # doctest: +SKIP
    >>> co.ids[:2].tolist(), co.lon[:2].tolist(), co.lat[:2].tolist()   # doctest: +SKIP
    (['028468', '050109'], [-109.1, -103.15], [36.9, 40.15])
    """
    if variable not in COLORADO_VARIABLES:
        raise ValueError(f"unknown variable {variable!r}; choose one of {sorted(COLORADO_VARIABLES)}")
    file = _rda_file(path, COLORADO_FILE)
    obj = _read_rda(file)
    key, units, _ = COLORADO_VARIABLES[variable]
    _expect(obj, file, [key, "CO.id", "CO.names", "CO.loc", "CO.elev", "CO.years"])
    cube = np.asarray(obj[key], dtype=np.float64)
    years = np.asarray(obj["CO.years"], dtype=np.int64)
    ids = np.asarray(obj["CO.id"]).astype(str)
    loc = obj["CO.loc"]
    if cube.ndim != 3 or cube.shape[1] != 12 or cube.shape[0] != years.size or cube.shape[2] != ids.size:
        raise ValueError(f"{key} in {file} has shape {cube.shape}; expected [year, month, station] = "
                         f"({years.size}, 12, {ids.size})")
    if years.size and np.any(np.diff(years) != 1):
        raise ValueError(f"CO.years in {file} is not a run of consecutive years")
    # [year, month, station] -> [year * 12 + month, station]: the rows run through time in order.
    values = cube.reshape(years.size * 12, ids.size)
    return StationSeries(
        ids=ids, names=np.char.strip(np.asarray(obj["CO.names"]).astype(str)),
        lon=np.asarray(loc["lon"], dtype=np.float64), lat=np.asarray(loc["lat"], dtype=np.float64),
        elevation=np.asarray(obj["CO.elev"], dtype=np.float64), values=values,
        times=month_range(years[0], years[-1]), variable=variable, units=units)


def read_north_american_rainfall(path=None) -> RainfallStations:
    """Read ``NorthAmericanRainfall.rda`` (1,720 stations, summer precipitation and its trend).

    ``path``: folder holding the file, or the file; None fetches data source ``"fields-stations"``.

    >>> na = read_north_american_rainfall()            # doctest: +SKIP
    >>> na.nstations, float(na.lon[0]), float(na.lat[0])   # doctest: +SKIP
    (1720, -123.7, 48.7)
    """
    file = _rda_file(path, RAINFALL_FILE)
    obj = _read_rda(file)
    _expect(obj, file, ["NorthAmericanRainfall"])
    d = obj["NorthAmericanRainfall"]
    _expect(d, file, ["longitude", "latitude", "elevation", "precip", "precipSE", "trend", "trendSE", "type"])
    kinds = np.asarray(d["type"]).astype(str)
    if not set(kinds) <= {"adjusted", "raw"}:
        raise ValueError(f"unexpected station types {sorted(set(kinds))} in {file}; expected 'adjusted'/'raw'")
    f = {k: _readonly(np.asarray(d[k], dtype=np.float64))
         for k in ("longitude", "latitude", "elevation", "precip", "precipSE", "trend", "trendSE")}
    return RainfallStations(lon=f["longitude"], lat=f["latitude"], elevation=f["elevation"], precip=f["precip"],
                            precip_se=f["precipSE"], trend=f["trend"], trend_se=f["trendSE"],
                            adjusted=_readonly(kinds == "adjusted"))


# -- cleaning -------------------------------------------------------------------------------------

def _check_coverage(min_coverage) -> float:
    min_coverage = float(min_coverage)
    if not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage is a fraction of the months, in [0, 1]; got {min_coverage}")
    return min_coverage


def best_period(series: StationSeries, n_years: int, min_coverage: float = 0.8) -> tuple[int, int]:
    """The ``n_years`` consecutive years that keep the most stations under :func:`clean`'s rule
    (at least ``min_coverage`` of the months observed); among equally good windows, the latest.

    Returns ``(start, end)``, inclusive. Duplicate locations are not merged for this count.

    >>> v = np.full((48, 2), np.nan); v[12:, 0] = 1.0; v[:36, 1] = 2.0    # a: 2001-2003, b: 2000-2002
    >>> s = StationSeries(np.array(["a", "b"]), np.array(["A", "B"]), np.zeros(2), np.zeros(2),
    ...                   np.zeros(2), v, month_range(2000, 2003), "tmax", "degC")
    >>> best_period(s, 2), best_period(s, 3)
    ((2001, 2002), (2001, 2003))
    """
    min_coverage = _check_coverage(min_coverage)
    years = np.unique(series.years)
    n_years = int(n_years)
    if not 1 <= n_years <= years.size:
        raise ValueError(f"n_years must be between 1 and the record's {years.size} years, got {n_years}")
    # Observed months per station and year, then a running sum over windows of n_years.
    per_year = np.add.reduceat(series.observed.astype(np.int64), np.searchsorted(series.years, years), axis=0)
    months = np.bincount(np.searchsorted(years, series.years))  # 12, except for a partial first/last year
    window = np.lib.stride_tricks.sliding_window_view(per_year, n_years, axis=0).sum(axis=-1)
    window_months = np.lib.stride_tricks.sliding_window_view(months, n_years).sum(axis=-1)
    kept = (window >= min_coverage * window_months[:, None] - 1e-9).sum(axis=1)
    best = int(np.flatnonzero(kept == kept.max())[-1])
    return int(years[best]), int(years[best + n_years - 1])


def _merge_duplicates(series: StationSeries, groups: list[np.ndarray]) -> StationSeries:
    keep = np.ones(series.nstations, dtype=bool)
    ids, names = series.ids.astype(object), series.names.astype(object)
    values, elevation = series.values.copy(), series.elevation.copy()
    for g in groups:
        first = g[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": a month no one observed
            values[:, first] = np.nanmean(series.values[:, g], axis=1)
        elevation[first] = np.mean(series.elevation[g])
        ids[first] = "+".join(series.ids[g])
        keep[g[1:]] = False
    return StationSeries(ids=ids[keep].astype(str), names=names[keep].astype(str), lon=series.lon[keep],
                         lat=series.lat[keep], elevation=elevation[keep], values=values[:, keep],
                         times=series.times, variable=series.variable, units=series.units)


def _duplicate_groups(series: StationSeries) -> list[np.ndarray]:
    from ..sampling import lonlat_to_xyz

    xyz = lonlat_to_xyz(series.lon, series.lat)
    pairs = cKDTree(xyz).query_pairs(DUPLICATE_TOL, output_type="ndarray")
    if not len(pairs):
        return []
    n = series.nstations
    adj = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    sizes = np.bincount(comp)
    return [np.flatnonzero(comp == c) for c in np.flatnonzero(sizes > 1)]


def clean(series: StationSeries, start: int | None = None, end: int | None = None, min_coverage: float = 0.8,
          duplicates: str = "error") -> StationSeries:
    """Stations fit for learning, by a fixed rule applied in this order:

    1. **Period**: keep the years ``start`` to ``end`` inclusive (None: the record's first / last
       year; :func:`best_period` chooses a window).
    2. **Coordinates**: a station with a NaN or infinite longitude or latitude is an error (drop it
       with ``series.select(np.isfinite(series.lon) & np.isfinite(series.lat))`` if that is meant).
    3. **Duplicate locations** (stations closer than ``DUPLICATE_TOL``, about 6 m): with
       ``duplicates="error"`` a ValueError names them; with ``"merge"`` each group becomes one
       station at the first one's location, with the mean of the members' observed values month by
       month (NaN where none observed), the mean elevation, the first one's name and the ids joined
       by ``"+"``. Merging comes before the coverage rule, so two partial records can make one that
       passes it.
    4. **Coverage**: drop stations with fewer than ``min_coverage`` (a fraction) of the period's
       months observed. The paper's GHCN experiment kept complete records only: ``min_coverage=1``.

    >>> v = np.ones((24, 3)); v[:12, 1] = np.nan; v[:3, 2] = np.nan        # b: 50%, c: 87.5% observed
    >>> s = StationSeries(np.array(["a", "b", "c"]), np.array(["A", "B", "C"]), np.array([0.0, 1, 2]),
    ...                   np.zeros(3), np.zeros(3), v, month_range(2000, 2001), "tmax", "degC")
    >>> clean(s, min_coverage=0.8).ids.tolist(), clean(s, start=2001, min_coverage=0.8).ids.tolist()
    (['a', 'c'], ['a', 'b', 'c'])
    """
    min_coverage = _check_coverage(min_coverage)
    if duplicates not in ("error", "merge"):
        raise ValueError(f"duplicates must be 'error' or 'merge', got {duplicates!r}")
    series = series.select(start=start, end=end)
    bad = ~(np.isfinite(series.lon) & np.isfinite(series.lat))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} station(s) have NaN or infinite coordinates: {series.ids[bad][:10].tolist()}; "
            "drop them first: series.select(np.isfinite(series.lon) & np.isfinite(series.lat))")
    if series.lat.size and np.max(np.abs(series.lat)) > 90:
        i = int(np.argmax(np.abs(series.lat)))
        raise ValueError(f"station {series.ids[i]} has latitude {series.lat[i]}, outside [-90, 90]; "
                         "are lon and lat swapped?")
    groups = _duplicate_groups(series)
    if groups and duplicates == "error":
        shown = "; ".join(f"{' = '.join(series.ids[g])} at ({series.lon[g[0]]:g}, {series.lat[g[0]]:g})"
                          for g in groups[:5])
        raise ValueError(f"{len(groups)} location(s) hold more than one station: {shown}. "
                         "Pass duplicates='merge' to average them into one station each, or drop all but one")
    if groups:
        series = _merge_duplicates(series, groups)
    if np.unique(series.ids).size != series.nstations:
        ids, counts = np.unique(series.ids, return_counts=True)
        raise ValueError(f"station ids repeat at different locations: {ids[counts > 1][:10].tolist()}; "
                         "ids must name one station each")
    coverage = series.coverage
    keep = coverage >= min_coverage - 1e-12
    if not keep.any():
        raise ValueError(
            f"no station has {min_coverage:.0%} of the months of {series.years[0]}-{series.years[-1]} "
            f"observed (the best has {coverage.max():.1%}); lower min_coverage or choose another period "
            "(best_period)")
    return series.select(keep)
