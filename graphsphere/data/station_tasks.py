"""Learning tasks from a station series (:mod:`graphsphere.data.stations`), split by held-out years.

``regression_task`` (next month at every station from the previous ``n_lags`` months) and
``month_task`` (the month of the year from one snapshot). Missing inputs are filled with a
training-years mean and flagged in a mask channel (never silently zero); missing targets are flagged
in ``y_mask`` to be left out of losses and metrics. Every statistic comes from the training years.

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

import numpy as np

from .stations import StationSeries, _readonly

__all__ = ["StationTask", "TaskSplit", "chronological_years", "month_task", "regression_task"]

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
