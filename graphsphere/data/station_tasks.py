"""Learning tasks from a station series (:mod:`graphsphere.data.stations`), split by held-out years.

``regression_task`` (next month at every station from the previous ``n_lags`` months) and
``month_task`` (the month of the year from one snapshot). Missing inputs are filled with a
training-years mean and flagged in a mask channel (never silently zero); missing targets are flagged
in ``y_mask`` to be left out of losses and metrics. Every statistic comes from the training years.

The training engine's data set ``stations`` (:func:`build_stations`) puts them together:
:func:`select_stations` (the period and the coverage rule), :func:`station_data` (departures from
the training-years climatology, NaN where missing, for the engine's masks and
``data.missing_inputs: flag``) and the stations' ``Points`` sampling. :func:`synthetic_series` is
an offline network where the neighbours carry the signal.

Offline, on a made-up series (two stations, three years, one missing month):

>>> import numpy as np
>>> v = np.tile(np.arange(12.0), 3)[:, None] + np.array([0.0, 10.0])
>>> v[5, 1] = np.nan
>>> from graphsphere.data.stations import StationSeries, month_range
>>> s = StationSeries(ids=np.array(["a", "b"]), names=np.array(["A", "B"]), lon=np.array([-105.0, -104.0]),
...                   lat=np.array([39.0, 40.0]), elevation=np.array([1600.0, 1500.0]), values=v,
...                   times=month_range(2000, 2002), variable="tmax", units="degC")
>>> s.coverage.round(3).tolist()
[1.0, 0.972]
>>> task = regression_task(s, n_lags=2, test_years=[2002])
>>> task.train.x.shape, task.test.x.shape, task.channels
((22, 2, 4), (12, 2, 4), ('value[t-2]', 'value[t-1]', 'observed[t-2]', 'observed[t-1]'))
>>> float(task.train.x[4, 1, 1]), float(task.train.x[4, 1, 3])  # June 2000 at b: June 2001's 15, flagged
(15.0, 0.0)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from .registry import Params, Splits, register_dataset
from .stations import StationSeries, _readonly, month_range

__all__ = ["MONTH_NAMES", "SEASONAL", "StationData", "StationTask", "StationsParams", "TaskSplit", "build_stations",
           "chronological_years", "month_task", "regression_task", "select_stations", "station_data",
           "synthetic_series"]

_SPLITS = ("train", "val", "test")


def chronological_years(years, test_fraction: float = 0.3, val_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """Split the distinct ``years`` in time order: the last ``round(test_fraction * n)`` are
    ``"test"``, the ``round(val_fraction * n)`` before them ``"val"``, the rest ``"train"``.

    >>> {k: v.tolist() for k, v in chronological_years(range(1990, 2000), 0.3, 0.2).items()}
    {'train': [1990, 1991, 1992, 1993, 1994], 'val': [1995, 1996], 'test': [1997, 1998, 1999]}
    """
    years = np.unique(np.asarray(years, dtype=np.int64))
    n = years.size
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1) or n_test < 1 or n - n_test - n_val < 1:
        raise ValueError(f"test_fraction={test_fraction} and val_fraction={val_fraction} of {n} years leave "
                         f"{n_test} test and {n - n_test - n_val} training years; each needs at least one")
    return {"train": years[: n - n_test - n_val], "val": years[n - n_test - n_val: n - n_test],
            "test": years[n - n_test:]}


def _year_splits(series: StationSeries, test_years, val_years, test_fraction, val_fraction) -> dict[str, np.ndarray]:
    all_years = np.unique(series.years)
    if test_years is None:
        if val_years is not None:
            raise ValueError("val_years needs test_years too (or give neither and use the fractions)")
        return chronological_years(all_years, test_fraction, val_fraction)
    test = np.unique(np.asarray(test_years, dtype=np.int64))
    val = np.unique(np.asarray([] if val_years is None else val_years, dtype=np.int64))
    for name, ys in (("test_years", test), ("val_years", val)):
        outside = np.setdiff1d(ys, all_years)
        if outside.size:
            raise ValueError(f"{name} {outside.tolist()} are not in the series ({all_years[0]}-{all_years[-1]})")
    if np.intersect1d(test, val).size:
        raise ValueError(f"years {np.intersect1d(test, val).tolist()} are both test and validation years")
    train = np.setdiff1d(all_years, np.union1d(test, val))
    if test.size == 0 or train.size == 0:
        raise ValueError(f"need at least one test and one training year; got {test.size} test, {train.size} training")
    return {"train": train, "val": val, "test": test}


@dataclass(frozen=True, eq=False)
class TaskSplit:
    """One split of a task, ready for ``torch.as_tensor``.

    x : float32 (samples, stations, channels); filled values and 0/1 observation masks.
    y : float32 (samples, stations) for regression, int64 (samples,) month index 0-11 for ``month_task``.
    y_mask : bool (samples, stations), True where the target was observed (regression; None otherwise).
        Where False, ``y`` holds the fill value, a placeholder that must not enter a loss or a metric.
    times : datetime64[M] (samples,), the target month (regression) or the snapshot's month.
    """

    x: np.ndarray
    y: np.ndarray
    y_mask: np.ndarray | None
    times: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class StationTask:
    """Arrays of a station task and the training statistics behind them.

    kind : ``"regression"`` or ``"month"``.
    train, val, test : :class:`TaskSplit` (``val`` may have no samples).
    channels : names of the input channels.
    years : the years of each split.
    fill : the values that stand in for missing ones, from training years only: (12, stations), per
        calendar month, for regression; (stations,) for the month task (a per-month fill would give
        the answer away).
    mean, std : mean and standard deviation of the observed values of the training years (to
        standardise inputs and targets; the arrays are in the series' units).
    series : the series the task was built from (station ids and coordinates).
    """

    kind: str
    train: TaskSplit
    val: TaskSplit
    test: TaskSplit
    channels: tuple
    years: dict
    fill: np.ndarray
    mean: float
    std: float
    series: StationSeries

    @property
    def n_classes(self) -> int | None:
        return 12 if self.kind == "month" else None

    def splits(self) -> dict[str, TaskSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _split_codes(series: StationSeries, years: dict[str, np.ndarray]) -> np.ndarray:
    """For every month: 0 train, 1 val, 2 test."""
    code = np.full(series.ntimes, -1, dtype=np.int64)
    for c, name in enumerate(_SPLITS):
        code[np.isin(series.years, years[name])] = c
    return code


def _training_stats(series: StationSeries, train_months: np.ndarray) -> tuple[np.ndarray, float, float]:
    v = series.values[train_months]
    obs = np.isfinite(v)
    if not obs.any():
        raise ValueError("the training years hold no observed value; choose other years or stations")
    return v, float(np.nanmean(v)), float(np.nanstd(v))


def _nanmean_axis0(v: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled by the fall-backs
        return np.nanmean(v, axis=0)


def _empty_like_split(x_shape_tail, y_tail, y_dtype, with_mask) -> TaskSplit:
    return TaskSplit(x=np.zeros((0, *x_shape_tail), np.float32), y=np.zeros((0, *y_tail), y_dtype),
                     y_mask=np.zeros((0, *y_tail), bool) if with_mask else None,
                     times=np.zeros(0, "datetime64[M]"))


def regression_task(series: StationSeries, n_lags: int = 3, test_years=None, val_years=None,
                    test_fraction: float = 0.3, val_fraction: float = 0.0) -> StationTask:
    """Next month's value at every station from the previous ``n_lags`` months.

    Inputs ``x`` (samples, stations, 2 n_lags): channels ``value[t-n_lags] .. value[t-1]`` then
    ``observed[t-n_lags] .. observed[t-1]`` (1.0 observed, 0.0 missing). A missing value is replaced
    by the **training climatology** of its station and calendar month (the mean over the training
    years); where a station has none for that month, by its training mean over all months; failing
    that, by the network's training mean for that month, then the overall training mean. Targets
    ``y`` (samples, stations) with ``y_mask`` True where observed.

    Years: ``test_years`` and ``val_years`` (the rest train), or, when ``test_years`` is None, the
    last ``test_fraction`` of the years test and the ``val_fraction`` before them validation
    (:func:`chronological_years`). A sample belongs to the split of its target month and may only
    use inputs from years of that split or of splits it may see: training samples use training
    months only, validation samples training and validation months, test samples any earlier month.
    Samples whose target is missing at every station are left out, and so are the first ``n_lags``
    months (no full history). Statistics (fill, mean, std) come from training years only, so test
    values never shape training inputs.
    """
    n_lags = int(n_lags)
    if n_lags < 1:
        raise ValueError(f"n_lags must be at least 1, got {n_lags}")
    if series.ntimes <= n_lags:
        raise ValueError(f"the series has {series.ntimes} months, too few for {n_lags} lags plus a target")
    years = _year_splits(series, test_years, val_years, test_fraction, val_fraction)
    code = _split_codes(series, years)
    train_v, mean, std = _training_stats(series, code == 0)
    month = series.months - 1
    train_month = month[code == 0]
    clim = np.stack([_nanmean_axis0(train_v[train_month == m]) if np.any(train_month == m)
                     else np.full(series.nstations, np.nan) for m in range(12)])  # (12, stations)
    station_mean = _nanmean_axis0(train_v)
    network_month = np.array([np.nanmean(clim[m]) if np.isfinite(clim[m]).any() else np.nan for m in range(12)])
    fill = np.where(np.isfinite(clim), clim, station_mean[None, :])
    fill = np.where(np.isfinite(fill), fill, network_month[:, None])
    fill = np.where(np.isfinite(fill), fill, mean)

    observed = series.observed
    filled = np.where(observed, series.values, fill[month])
    win_v = np.lib.stride_tricks.sliding_window_view(filled, n_lags + 1, axis=0)  # (T - n_lags, S, n_lags + 1)
    win_m = np.lib.stride_tricks.sliding_window_view(observed, n_lags + 1, axis=0)
    win_c = np.lib.stride_tricks.sliding_window_view(code, n_lags + 1)            # (T - n_lags, n_lags + 1)
    target_code = win_c[:, -1]
    allowed = np.all(win_c[:, :-1] <= target_code[:, None], axis=1) & win_m[:, :, -1].any(axis=1)
    channels = tuple(f"value[t-{k}]" for k in range(n_lags, 0, -1)) + \
        tuple(f"observed[t-{k}]" for k in range(n_lags, 0, -1))
    out = {}
    for c, name in enumerate(_SPLITS):
        rows = np.flatnonzero(allowed & (target_code == c))
        if rows.size == 0:
            out[name] = _empty_like_split((series.nstations, 2 * n_lags), (series.nstations,), np.float32, True)
            continue
        x = np.concatenate([win_v[rows, :, :-1], win_m[rows, :, :-1]], axis=-1).astype(np.float32)
        out[name] = TaskSplit(x=x, y=win_v[rows, :, -1].astype(np.float32), y_mask=win_m[rows, :, -1].copy(),
                              times=series.times[rows + n_lags])
    if len(out["train"]) == 0 or len(out["test"]) == 0:
        raise ValueError(f"the split leaves {len(out['train'])} training and {len(out['test'])} test samples; "
                         "use longer runs of years per split or fewer lags")
    return StationTask(kind="regression", train=out["train"], val=out["val"], test=out["test"], channels=channels,
                       years=years, fill=_readonly(fill), mean=mean, std=std, series=series)


def month_task(series: StationSeries, test_years=None, val_years=None, test_fraction: float = 0.3,
               val_fraction: float = 0.0) -> StationTask:
    """The month of the year (class 0 = January .. 11) from one snapshot of all stations.

    Inputs ``x`` (samples, stations, 2): channel ``value`` and channel ``observed`` (1.0 / 0.0). A
    missing value is replaced by its station's training mean over *all* months (then the network's
    training mean): a per-month fill would tell the model the month. Snapshots with no observed
    station are left out. Years are split as in :func:`regression_task`; each snapshot belongs to
    the split of its year.
    """
    years = _year_splits(series, test_years, val_years, test_fraction, val_fraction)
    code = _split_codes(series, years)
    train_v, mean, std = _training_stats(series, code == 0)
    fill = _nanmean_axis0(train_v)
    fill = np.where(np.isfinite(fill), fill, mean)
    observed = series.observed
    x_all = np.stack([np.where(observed, series.values, fill[None, :]), observed], axis=-1).astype(np.float32)
    any_obs = observed.any(axis=1)
    out = {}
    for c, name in enumerate(_SPLITS):
        rows = np.flatnonzero((code == c) & any_obs)
        if rows.size == 0:
            out[name] = _empty_like_split((series.nstations, 2), (), np.int64, False)
            continue
        out[name] = TaskSplit(x=x_all[rows], y=(series.months[rows] - 1).astype(np.int64), y_mask=None,
                              times=series.times[rows])
    if len(out["train"]) == 0 or len(out["test"]) == 0:
        raise ValueError(f"the split leaves {len(out['train'])} training and {len(out['test'])} test snapshots")
    return StationTask(kind="month", train=out["train"], val=out["val"], test=out["test"],
                       channels=("value", "observed"), years=years, fill=_readonly(fill), mean=mean, std=std,
                       series=series)


# -- a synthetic network, for tests and for checking what a graph filter can gain ------------------

def synthetic_series(n_stations: int = 100, n_years: int = 30, first_year: int = 1961, missing: float = 0.05,
                     signal: float = 2.0, noise: float = 2.0, persistence: float = 0.9, length_scale: float = 1.5,
                     seed: int = 0) -> StationSeries:
    """A made-up monthly temperature network where the neighbours carry the signal.

    Stations are drawn uniformly over a Colorado-sized box (lon -109 to -102, lat 37 to 41). Each
    value is a seasonal cycle (July warmest, 6.5 degC colder per km of a smooth made-up elevation),
    plus a **smooth anomaly field** (standard deviation ``signal``, correlation length
    ``length_scale`` degrees: a Gaussian process drawn with 64 random Fourier features whose
    amplitudes follow an AR(1) process of lag-one correlation ``persistence`` from month to month),
    plus **independent noise** per station and month (standard deviation ``noise``); a fraction
    ``missing`` of the values is NaN. A station's own past is a noisy view of the field; the mean over
    its neighbours is a cleaner one, so a filter with reach beats a per-station predictor by a margin
    known in advance: with the defaults, a linear forecast of the next departure from the station's own
    past has an error variance of about 6.4 degC^2 with one month of history (5.8 with six), and one
    from the field itself, known exactly, about 4.8 (the noise's 4 plus what the AR(1) cannot tell).

    >>> s = synthetic_series(n_stations=20, n_years=2, seed=1)
    >>> s.values.shape, s.nstations, str(s.times[0]), s.units
    ((24, 20), 20, '1961-01', 'degC')
    >>> bool(np.nanmean(s.values[6]) > np.nanmean(s.values[0]) + 15)     # July is warmer than January
    True
    """
    n_stations, n_years = int(n_stations), int(n_years)
    if n_stations < 4 or n_years < 1:
        raise ValueError(f"a synthetic network needs at least 4 stations and 1 year, got {n_stations} and {n_years}")
    if not (0 <= missing < 1 and 0 <= persistence < 1 and length_scale > 0):
        raise ValueError("missing and persistence must be in [0, 1) and length_scale > 0")
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(-109, -102, n_stations), rng.uniform(37, 41, n_stations)
    x = np.stack([(lon + 105.5) * np.cos(np.deg2rad(39)), lat - 39], axis=1)   # degrees, locally flat
    elevation = 1800 + 700 * np.sin(x[:, 0] / 2.0) * np.cos(x[:, 1] / 1.5)
    n_modes, months = 64, 12 * n_years
    freq = rng.normal(0, 1 / length_scale, (n_modes, 2))
    phase = rng.uniform(0, 2 * np.pi, n_modes)
    basis = np.sqrt(2 / n_modes) * np.cos(x @ freq.T + phase)               # (stations, modes)
    amp = np.empty((months, n_modes))
    amp[0] = rng.normal(size=n_modes)
    for t in range(1, months):
        amp[t] = persistence * amp[t - 1] + np.sqrt(1 - persistence**2) * rng.normal(size=n_modes)
    field = signal * amp @ basis.T
    month = np.arange(months) % 12
    cycle = 17 - 13 * np.cos(2 * np.pi * (month - 0.5) / 12)[:, None] - 6.5e-3 * (elevation - 1500)[None, :]
    values = cycle + field + noise * rng.normal(size=(months, n_stations))
    values[rng.random(values.shape) < missing] = np.nan
    ids = np.array([f"syn{i:04d}" for i in range(n_stations)])
    return StationSeries(ids=ids, names=np.char.add("synthetic ", ids), lon=lon, lat=lat, elevation=elevation,
                         values=values, times=month_range(first_year, first_year + n_years - 1),
                         variable="tmax", units="degC")


# -- the `stations` data set of the training engine ----------------------------------------------

#: How a regression model sees the seasonal cycle: ``anomaly`` (departures from the training-years
#: climatology of each station and calendar month, the default) or ``raw`` (the values themselves).
SEASONAL = ("anomaly", "raw")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class StationsParams(Params):
    """The ``data`` section of a training config with ``name: stations`` (see :func:`build_stations`)."""

    #: "colorado": COmonthlyMet.rda of r-cran-fields (data source "fields-stations"); "synthetic":
    #: :func:`synthetic_series` (offline; the neighbours carry the signal).
    source: Literal["colorado", "synthetic"] = "colorado"
    #: Folder holding COmonthlyMet.rda (or the file); None fetches the data source.
    path: str | None = None
    variable: Literal["tmax", "tmin", "ppt"] = "tmax"
    #: The period: ``start``-``end`` (inclusive) if given, else the ``n_years`` consecutive years that keep
    #: the most stations with at least ``min_coverage`` of their months observed (best_period).
    n_years: PositiveInt = 40
    min_coverage: float = Field(0.9, ge=0, le=1)
    start: int | None = None
    end: int | None = None
    #: Stations at one location: "error", or "merge" them (stations.clean).
    duplicates: Literal["error", "merge"] = "error"
    #: Regression: months of history per sample.
    n_lags: PositiveInt = 3
    seasonal: Literal["anomaly", "raw"] = "anomaly"
    #: Held-out years: the last test_fraction of the period (and val_fraction before them), or explicit lists.
    test_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_years: list[int] | None = None
    val_years: list[int] | None = None
    #: Neighbours of the k-NN graph the models will build: the network must keep more stations than this.
    neighbours: PositiveInt = 5
    #: source "synthetic" only: its size and seed.
    synthetic_stations: PositiveInt = 100
    synthetic_years: PositiveInt = 30
    synthetic_seed: int = 0


@dataclass(frozen=True, eq=False)
class StationData:
    """A station task as arrays the engine and the baselines share.

    kind : ``"regression"`` (next month at every station) or ``"month"`` (month of the year).
    x : split -> float32 (samples, stations, channels); NaN where the value is missing (the engine fills and
        flags it: ``data.missing_inputs``).
    y : split -> float32 (samples, stations), NaN where missing (regression); int64 (samples,) 0-11 (month).
    times : split -> datetime64[M] (samples,): the target month (regression) or the snapshot's month.
    offset : float (12, stations): what was subtracted from every value of calendar month m at station s
        (the training-years climatology for ``seasonal="anomaly"``, zeros for ``"raw"``; the month task:
        the station's training mean, the same for every month). ``values(split, y)`` adds it back.
    climatology : float (12, stations), regression only: the training-years mean of each calendar month
        and station (with :func:`regression_task`'s fall-backs), in the series' units.
    channels : input channel names; seasonal : how the seasonal cycle was handled.
    series : the cleaned series (stations, coordinates, the raw values); years : the years of each split.
    selection : how the stations were chosen (period, rule, stations before and after).
    """

    kind: str
    x: dict
    y: dict
    times: dict
    offset: np.ndarray
    climatology: np.ndarray | None
    channels: tuple
    seasonal: str
    series: StationSeries
    years: dict
    selection: dict

    def values(self, split: str, y: np.ndarray) -> np.ndarray:
        """Regression targets or predictions ``y`` (samples, stations) of ``split`` in the series' units."""
        month = self.times[split].astype(int) % 12
        return np.asarray(y, dtype=np.float64) + self.offset[month]


@lru_cache(maxsize=8)
def _read_series(source: str, path: str | None, variable: str, n_stations: int, n_years: int,
                 seed: int) -> StationSeries:
    # Memoised: an experiment builds the same data for every model it trains (the series is read-only).
    if source == "synthetic":
        return synthetic_series(n_stations=n_stations, n_years=n_years, seed=seed)
    from .stations import read_colorado

    return read_colorado(path, variable=variable)


def select_stations(series: StationSeries, n_years: int = 40, min_coverage: float = 0.9, start: int | None = None,
                    end: int | None = None, duplicates: str = "error", neighbours: int = 5
                    ) -> tuple[StationSeries, dict]:
    """The stations fit for learning, by the documented rule, and a record of the choice.

    The period is ``start``-``end`` when given (a missing end: the record's last year), else the
    ``n_years`` window of :func:`graphsphere.data.stations.best_period` (the whole record when it is
    shorter); then
    :func:`graphsphere.data.stations.clean` (NaN coordinates are an error, duplicate locations an
    error or merged, stations with less than ``min_coverage`` of the period's months observed are
    dropped). A network left with ``neighbours`` stations or fewer cannot have a k-NN graph: an error.

    >>> s = synthetic_series(n_stations=30, n_years=4, seed=0)
    >>> kept, record = select_stations(s, n_years=3, min_coverage=0.9)
    >>> record["period"], record["stations"], kept.nstations == record["kept"]
    ((1962, 1964), 30, True)
    """
    from .stations import best_period, clean

    if start is None and end is None:
        n_years = min(int(n_years), int(np.unique(series.years).size))
        start, end = best_period(series, n_years, min_coverage)
        how = f"the {n_years} consecutive years keeping the most stations"
    else:
        start = int(series.years[0]) if start is None else int(start)
        end = int(series.years[-1]) if end is None else int(end)
        how = "given"
    kept = clean(series, start, end, min_coverage=min_coverage, duplicates=duplicates)
    if kept.nstations <= neighbours:
        raise ValueError(f"{kept.nstations} station(s) have {min_coverage:.0%} of the months of {start}-{end} "
                         f"observed, but a graph of {neighbours} neighbours needs at least {neighbours + 1}; lower "
                         "min_coverage, choose another period or use fewer neighbours")
    record = {"period": (start, end), "period_rule": how, "min_coverage": float(min_coverage),
              "stations": series.nstations, "kept": kept.nstations, "dropped": series.nstations - kept.nstations,
              "observed": float(kept.observed.mean())}
    return kept, record


def station_data(series: StationSeries, task: str, n_lags: int = 3, seasonal: str = "anomaly", test_years=None,
                 val_years=None, test_fraction: float = 0.3, val_fraction: float = 0.1,
                 selection: dict | None = None) -> StationData:
    """The arrays of a task on a clean series: ``task="regression"`` (:func:`regression_task`, inputs
    the ``n_lags`` previous months) or ``"classification"`` (:func:`month_task`).

    Regression with ``seasonal="anomaly"``: inputs and targets are departures from the training-years
    climatology of their station and calendar month (the task's ``fill``), so a model learns what
    the seasonal cycle does not already say, and a prediction of 0 is the climatology forecast.
    ``"raw"``: the values themselves. The month task's input is the departure from the station's
    training mean over all months (a per-month offset would give the answer away). Missing values
    are NaN in ``x`` and ``y``: never a silent zero.

    >>> s = synthetic_series(n_stations=10, n_years=5, seed=0)
    >>> d = station_data(s, "regression", n_lags=2, test_fraction=0.2, val_fraction=0.2)
    >>> d.x["train"].shape, d.y["train"].shape, d.channels
    ((34, 10, 2), (34, 10), ('departure[t-2]', 'departure[t-1]'))
    >>> bool(np.isnan(d.x["train"]).any()), d.years["test"].tolist()
    (True, [1965])
    """
    if seasonal not in SEASONAL:
        raise ValueError(f"seasonal must be one of {SEASONAL}, got {seasonal!r}")
    split_args = {"test_years": test_years, "val_years": val_years, "test_fraction": test_fraction,
                  "val_fraction": val_fraction}
    x, y, times, climatology = {}, {}, {}, None
    if task == "regression":
        t = regression_task(series, n_lags=n_lags, **split_args)
        climatology = _readonly(t.fill)
        offset = np.asarray(t.fill) if seasonal == "anomaly" else np.zeros_like(t.fill)
        for name, sp in t.splits().items():
            target_month = sp.times.astype(int) % 12
            lag_month = (target_month[:, None] - np.arange(n_lags, 0, -1)[None, :]) % 12   # (samples, lags)
            values, observed = sp.x[..., :n_lags], sp.x[..., n_lags:] > 0.5
            lag_offset = offset[lag_month].transpose(0, 2, 1)                                # (samples, stations, lags)
            x[name] = np.where(observed, values - lag_offset, np.nan).astype(np.float32)
            y[name] = np.where(sp.y_mask, sp.y - offset[target_month], np.nan).astype(np.float32)
            times[name] = sp.times
        word = "departure" if seasonal == "anomaly" else "value"
        channels = tuple(f"{word}[t-{k}]" for k in range(n_lags, 0, -1))
    elif task == "classification":
        t = month_task(series, **split_args)
        offset = np.broadcast_to(np.asarray(t.fill), (12, series.nstations)).copy()
        for name, sp in t.splits().items():
            x[name] = np.where(sp.x[..., 1:] > 0.5, sp.x[..., :1] - offset[0][None, :, None], np.nan).astype(np.float32)
            y[name], times[name] = sp.y, sp.times
        channels, seasonal = ("departure from the station mean",), "station mean removed"
    else:
        raise ValueError(f"the stations data set does task 'regression' (next month at every station) or "
                         f"'classification' (the month of the year), not {task!r}")
    return StationData(kind="regression" if task == "regression" else "month", x=x, y=y, times=times,
                       offset=_readonly(offset), climatology=climatology, channels=channels, seasonal=seasonal,
                       series=series, years=t.years, selection=dict(selection or {}))


@register_dataset("stations", params=StationsParams,
                  hint="the Colorado stations come from Debian's r-cran-fields: graphsphere data fetch fields-stations")
def build_stations(sampling, task, seed, **params) -> Splits:
    """Weather stations for the training engine: ``task: regression`` (next month at every station,
    a per-vertex model such as StationGCN or SphericalUNet) or ``task: classification`` (the month
    of the year, a per-map model such as SphericalCNN). The sampling is the stations' ``Points``
    (leave the config's ``sampling`` out); missing inputs are NaN (set ``data.missing_inputs: flag``),
    missing targets NaN (left out of the loss and the metrics). ``Splits.info["data"]`` is the
    :class:`StationData` (times, climatology, stations) for the runner and the pictures.

    >>> from graphsphere.data.registry import build_splits
    >>> sp = build_splits("stations", {"source": "synthetic", "synthetic_stations": 40, "synthetic_years": 6,
    ...                                "min_coverage": 0.8, "n_years": 6}, None, "regression", 0)
    >>> sp.sampling.npix, sp.in_channels, sp.n_out, len(sp.train) + len(sp.val) + len(sp.test)
    (40, 3, 1, 69)
    """
    from ..sampling import Points
    from .maps import MapDataset

    p = StationsParams.model_validate(params)
    raw = _read_series(p.source, p.path, p.variable, p.synthetic_stations, p.synthetic_years, p.synthetic_seed)
    series, record = select_stations(raw, p.n_years, p.min_coverage, p.start, p.end, p.duplicates, p.neighbours)
    data = station_data(series, task, p.n_lags, p.seasonal, p.test_years, p.val_years, p.test_fraction,
                        p.val_fraction, selection=record)
    points = Points(lon=series.lon, lat=series.lat)
    sets = {name: MapDataset(data.x[name], data.y[name], sampling=points, what=f"stations {name} split")
            if len(data.x[name]) else None for name in _SPLITS}
    month = data.kind == "month"
    return Splits(sets["train"], sets["val"], sets["test"], sampling=points, in_channels=len(data.channels),
                  n_out=12 if month else 1, class_names=list(MONTH_NAMES) if month else None,
                  info={"data": data, "selection": record})
