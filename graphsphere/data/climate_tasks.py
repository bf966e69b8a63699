"""Learning tasks from the ferret winds (:mod:`graphsphere.data.climate`): extreme-wind labels and
forecasting arrays, with every statistic taken from the training years.

Wind-extreme labels (the segmentation task): wind speed ``|(UWND, VWND)|``; for each calendar month
and each cell, its 90th and 99th percentiles over the *training years only*; label 2 (extreme)
above the 99th, 1 (strong) above the 90th, 0 otherwise, -1 where the speed or a threshold is
missing. By default (``month_window=1``) a calendar month's sample pools it with the months on
either side: with 9 training years a single calendar month has only 9 values per cell, and NumPy's
linear percentiles of 9 values put both thresholds between the two largest, so only the maximum
exceeds them and "strong" is empty on the training years (``month_window=0``, the literal rule).
Class frequencies (background / strong / extreme) on ``monthly_navy_winds.cdf``, training years
1982-1990, test years 1991-1992 (:func:`class_frequencies`):

================  ======================  ======================
``month_window``  training years          test years
================  ======================  ======================
0                 88.9% / 0.0% / 11.1%    82.7% / 6.9% / 10.4%
1 (default)       89.9% / 7.0% / 3.1%     88.0% / 8.4% / 3.6%
2                 90.1% / 8.1% / 1.8%     89.3% / 8.4% / 2.3%
================  ======================  ======================

Exceedances are more frequent in the test years than in the training years, as expected of
thresholds estimated from few years (a new year beats the largest of n earlier values with
probability 1 / (n + 1)).

The training engine's data sets ``climate_segmentation`` and ``climate_forecast`` (configs'
``data.name``), built on these functions, are in :mod:`graphsphere.data.climate_datasets`.

Example
-------
>>> import numpy as np
>>> times = np.arange("1982-01", "1986-01", dtype="datetime64[M]")      # 4 years of months
>>> speed = np.random.default_rng(0).gamma(4.0, 1.5, size=(times.size, 3, 5))
>>> labels, thresholds = extreme_wind_labels_from_speed(speed, times, train_years=[1982, 1983, 1984],
...                                                     month_window=1)
>>> labels.shape, thresholds.shape, sorted(np.unique(labels).tolist())
((48, 3, 5), (12, 2, 3, 5), [0, 1, 2])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LABELS", "ForecastArrays", "class_frequencies", "extreme_wind_labels", "extreme_wind_labels_from_speed",
           "forecast_arrays", "monthly_climatology", "monthly_thresholds", "wind_labels", "wind_speed"]

#: Names of the segmentation labels (value -1: missing, ignored).
LABELS = ("background", "strong", "extreme")


# Labels for the segmentation task
# --------------------------------------------------------------------------------------------------

def wind_speed(u, v) -> np.ndarray:
    """Wind speed ``sqrt(u^2 + v^2)``; NaN where either component is."""
    return np.hypot(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))


def _years(times) -> np.ndarray:
    return np.asarray(times).astype("datetime64[Y]").astype(np.int64) + 1970


def _months(times) -> np.ndarray:
    return np.asarray(times).astype("datetime64[M]").astype(np.int64) % 12     # 0 = January


def _check_times(values: np.ndarray, times) -> np.ndarray:
    times = np.asarray(times)
    if times.ndim != 1 or times.size != values.shape[0]:
        raise ValueError(f"times must be 1-D with one entry per time step ({values.shape[0]}), got shape {times.shape}")
    if not np.issubdtype(times.dtype, np.datetime64):
        raise ValueError(f"times must be datetime64 (e.g. GriddedField.times), got dtype {times.dtype}")
    return times.astype("datetime64[M]")


def _year_set(years, times, what: str) -> np.ndarray:
    years = np.unique(np.asarray(list(years) if not isinstance(years, np.ndarray) else years, dtype=np.int64))
    present = np.unique(_years(times))
    absent = np.setdiff1d(years, present)
    if years.size == 0 or absent.size:
        raise ValueError(f"{what} {absent.tolist() or '[]'} not in the data (years {present.min()}-{present.max()})")
    return years


def monthly_thresholds(speed, times, train_years: Iterable[int], quantiles: Sequence[float] = (90, 99),
                       month_window: int = 1, min_samples: int = 3) -> np.ndarray:
    """Per calendar month and cell, the ``quantiles`` (percent) of ``speed`` over the training years.

    Parameters
    ----------
    speed : array [time, ...]
        Any field with time first (lat-lon ``[time, lat, lon]`` or regridded ``[time, npix]``).
    times : datetime64 array [time]
    train_years : iterable of int
        The years whose values set the thresholds; no other value is read.
    quantiles : sequence of float
        Percentiles, increasing (default the 90th and 99th).
    month_window : int
        Pool each calendar month with the ``month_window`` months on either side (cyclic).
    min_samples : int
        A cell-month with fewer valid training values gets NaN thresholds (labelled -1).

    Returns
    -------
    ndarray [12, len(quantiles), ...], January first.
    """
    speed = np.asarray(speed, dtype=np.float64)
    times = _check_times(speed, times)
    train = np.isin(_years(times), _year_set(train_years, times, "training years"))
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 1 or (np.diff(q) <= 0).any() or q.min() <= 0 or q.max() >= 100:
        raise ValueError(f"quantiles must be increasing percentiles in (0, 100), got {list(quantiles)}")
    if not 0 <= int(month_window) <= 5:
        raise ValueError(f"month_window must be between 0 and 5 months, got {month_window!r}")
    months = _months(times)
    out = np.full((12, q.size) + speed.shape[1:], np.nan)
    for m in range(12):
        near = np.abs((months - m + 6) % 12 - 6) <= month_window
        sel = speed[train & near]
        if sel.shape[0] == 0:
            raise ValueError(f"no training values for calendar month {m + 1}; add training years")
        finite = np.isfinite(sel)
        count = finite.sum(axis=0)
        if finite.all():                      # nanpercentile is ~10x slower: only where values are missing
            thr = np.percentile(sel, q, axis=0)
        else:
            with np.errstate(invalid="ignore"), _quiet_all_nan():
                thr = np.nanpercentile(sel, q, axis=0)
        out[m] = np.where(count >= min_samples, thr, np.nan)
    return out


class _quiet_all_nan:
    """Silence NumPy's 'All-NaN slice' warning: such cells are labelled -1 on purpose."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message="All-NaN slice")
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def wind_labels(speed, times, thresholds) -> np.ndarray:
    """Labels (int8): 0 background, 1 above the first threshold, 2 above the second, -1 missing.

    ``thresholds`` is :func:`monthly_thresholds`' output (two quantiles); each time step uses its
    calendar month's thresholds. Strictly above: a speed equal to a threshold stays below it.
    """
    speed = np.asarray(speed, dtype=np.float64)
    times = _check_times(speed, times)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape != (12, 2) + speed.shape[1:]:
        raise ValueError(f"thresholds must have shape (12, 2, *space) = {(12, 2) + speed.shape[1:]}, got {thr.shape}")
    t = thr[_months(times)]                                   # [time, 2, ...]
    labels = (speed > t[:, 0]).astype(np.int8) + (speed > t[:, 1]).astype(np.int8)
    labels[~(np.isfinite(speed) & np.isfinite(t).all(axis=1))] = -1
    return labels


def extreme_wind_labels_from_speed(speed, times, train_years: Iterable[int], quantiles: Sequence[float] = (90, 99),
                                   month_window: int = 1, min_samples: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and thresholds from a wind speed field (see the module docstring for the rule)."""
    if len(quantiles) != 2:
        raise ValueError(f"two quantiles (strong, extreme) are needed, got {list(quantiles)}")
    thr = monthly_thresholds(speed, times, train_years, quantiles, month_window, min_samples)
    return wind_labels(speed, times, thr), thr


def extreme_wind_labels(u, v, times, train_years: Iterable[int], quantiles: Sequence[float] = (90, 99),
                        month_window: int = 1, min_samples: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation labels from the wind components: ``(labels [time, ...], thresholds [12, 2, ...])``.

    >>> w = navy_winds()                                                        # doctest: +SKIP
    >>> labels, thr = extreme_wind_labels(w["UWND"].values, w["VWND"].values, w["UWND"].times,
    ...                                   train_years=range(1982, 1991), month_window=1)  # doctest: +SKIP
    """
    return extreme_wind_labels_from_speed(wind_speed(u, v), times, train_years, quantiles, month_window, min_samples)


def class_frequencies(labels, times=None, years: Iterable[int] | None = None) -> np.ndarray:
    """Share of each label 0, 1, 2 among the labelled (not -1) values, optionally over some years.

    >>> class_frequencies(np.array([[0, 0, 1, 2], [0, -1, 0, 0]])).round(3).tolist()
    [0.714, 0.143, 0.143]
    """
    labels = np.asarray(labels)
    if years is not None:
        if times is None:
            raise ValueError("years needs times")
        labels = labels[np.isin(_years(_check_times(labels, times)), list(years))]
    counts = np.bincount(labels[labels >= 0].ravel().astype(np.int64), minlength=3)[:3]
    return counts / max(int(counts.sum()), 1)


# --------------------------------------------------------------------------------------------------
# Forecasting arrays
# --------------------------------------------------------------------------------------------------

def monthly_climatology(values, times, years: Iterable[int]) -> np.ndarray:
    """Mean of each calendar month over ``years`` (NaN ignored): ``[12, ...]``, January first — the
    climatology baseline, computed from training years only."""
    values = np.asarray(values, dtype=np.float64)
    times = _check_times(values, times)
    sel = np.isin(_years(times), _year_set(years, times, "years"))
    months = _months(times)
    out = np.full((12,) + values.shape[1:], np.nan)
    for m in range(12):
        chosen = values[sel & (months == m)]
        if chosen.shape[0]:
            with np.errstate(invalid="ignore"), _quiet_mean():
                out[m] = np.nanmean(chosen, axis=0)
    return out


class _quiet_mean(_quiet_all_nan):
    def __enter__(self):
        import warnings

        super().__enter__()
        warnings.filterwarnings("ignore", message="Mean of empty slice")
        return self


@dataclass(frozen=True)
class ForecastArrays:
    """Samples for next-month forecasting, ``[samples, *space, channels]`` (graphsphere's
    ``[batch, vertices, channels]`` when space is a sampling's pixels).

    ``x``: the previous ``n_input`` months of u and v (oldest first: ``u[t-n], v[t-n], ...,
    u[t-1], v[t-1]``) and the land mask last; ``y``: u and v of the target month ``t``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    times_train: np.ndarray
    times_test: np.ndarray
    channels: tuple[str, ...]
    targets: tuple[str, ...] = ("u", "v")


def forecast_arrays(u, v, times, land, test_years: Iterable[int], n_input: int = 3,
                    dtype=np.float32) -> ForecastArrays:
    """Inputs and targets for next-month wind forecasting, split by a held-out block of years.

    Parameters
    ----------
    u, v : array [time, *space]
        Monthly wind components on a grid (``[time, lat, lon]``) or a sampling (``[time, npix]``),
        consecutive months.
    times : datetime64 array [time]
    land : array [*space]
        Land mask or land fraction, repeated as the last input channel.
    test_years : iterable of int
        Samples whose target month falls in these years are the test set. A training sample has its
        target *and* its inputs outside them, so no test-year value is ever a training input.
    n_input : int
        Months of history per sample.

    >>> t = np.arange("1982-01", "1984-01", dtype="datetime64[M]")
    >>> u = np.random.default_rng(0).normal(size=(24, 5)); v = -u
    >>> a = forecast_arrays(u, v, t, land=np.zeros(5), test_years=[1983], n_input=3)
    >>> a.x_train.shape, a.y_train.shape, a.x_test.shape, str(a.times_test[0]), a.channels[-1]
    ((9, 5, 7), (9, 5, 2), (12, 5, 7), '1983-01', 'land')
    """
    u = np.asarray(u)
    v = np.asarray(v)
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {u.shape} and {v.shape}")
    times = _check_times(u, times)
    land = np.asarray(land)
    if land.shape != u.shape[1:]:
        raise ValueError(f"land must have the fields' spatial shape {u.shape[1:]}, got {land.shape}")
    n_input = int(n_input)
    if not 1 <= n_input < u.shape[0]:
        raise ValueError(f"n_input must be between 1 and the number of months - 1 ({u.shape[0] - 1}), got {n_input}")
    steps = np.diff(times.astype(np.int64))
    if (steps != 1).any():
        i = int(np.argmax(steps != 1))
        raise ValueError(f"months must be consecutive; {times[i]} is followed by {times[i + 1]}")
    test = np.isin(_years(times), _year_set(test_years, times, "test years"))
    targets = np.arange(n_input, u.shape[0])
    window = targets[:, None] - np.arange(n_input, 0, -1)[None, :]              # [samples, n_input], oldest first
    is_test = test[targets]
    is_train = ~is_test & ~test[window].any(axis=1)
    hist = np.stack([u, v], axis=-1)                                           # [time, *space, 2]
    x = hist[window]                                                           # [samples, n_input, *space, 2]
    x = np.moveaxis(x, 1, -2).reshape(x.shape[:1] + u.shape[1:] + (2 * n_input,))
    land_ch = np.broadcast_to(land.astype(dtype)[None, ..., None], x.shape[:-1] + (1,))
    x = np.concatenate([x.astype(dtype), land_ch], axis=-1)
    y = hist[targets].astype(dtype)
    channels = tuple(f"{c}[t-{k}]" for k in range(n_input, 0, -1) for c in ("u", "v")) + ("land",)
    return ForecastArrays(x[is_train], y[is_train], x[is_test], y[is_test], times[targets[is_train]],
                          times[targets[is_test]], channels)


# --------------------------------------------------------------------------------------------------
# The training engine's data sets: climate_segmentation and climate_forecast
# --------------------------------------------------------------------------------------------------
