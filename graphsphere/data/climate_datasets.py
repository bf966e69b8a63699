"""The climate experiment's data sets for the training engine: the ferret winds regridded onto any
sampling (:func:`climate_fields`), split by held-out years (:func:`split_years`), as the extreme-wind
segmentation task (:func:`segmentation_task`) and the next-month forecast (:func:`forecast_task`);
configs name them ``data.name: climate_segmentation`` and ``climate_forecast``.

The labels and the statistics behind them (thresholds, climatologies, lagged arrays) are plain
array functions of :mod:`graphsphere.data.climate_tasks`; the files come from
:mod:`graphsphere.data.climate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from .climate_tasks import (
    LABELS,
    _check_times,
    _months,
    _year_set,
    _years,
    class_frequencies,
    extreme_wind_labels,
    extreme_wind_labels_from_speed,
    forecast_arrays,
    monthly_climatology,
    wind_speed,
)
from .registry import Params, Splits, register_dataset

__all__ = ["SEGMENTATION_INPUTS", "ClimateFields", "ForecastParams", "ForecastTask", "SegmentationParams",
           "SegmentationTask", "build_climate_forecast", "build_climate_segmentation", "climate_fields",
           "forecast_task", "segmentation_task", "split_years"]

#: The input channels the segmentation task can give the models ("month": cos and sin of the month).
SEGMENTATION_INPUTS = ("u", "v", "speed", "land", "month")


def _readonly(a) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ClimateFields:
    """Monthly winds ``u``, ``v`` (float32 ``[time, npix]``, m/s) and the land fraction ``land``
    (``[npix]``) on ``sampling``, with the winds on their ``source_grid`` (``source_u``,
    ``source_v``: ``[time, nlat, nlon]``) for the labels of the source grid."""

    sampling: object
    u: np.ndarray
    v: np.ndarray
    times: np.ndarray
    land: np.ndarray
    source_u: np.ndarray
    source_v: np.ndarray
    source_grid: object
    regrid: str

    @classmethod
    def from_arrays(cls, sampling, source_grid, u, v, times, land, regrid: str = "conservative",
                    supersample: int = 16) -> ClimateFields:
        """Regrid winds ``[time, nlat, nlon]`` of ``source_grid`` onto ``sampling``.

        >>> import graphsphere as gs
        >>> from graphsphere.data.regrid import LatLonGrid
        >>> grid, t = LatLonGrid.regular(10.0), np.arange("1982-01", "1984-01", dtype="datetime64[M]")
        >>> u = np.ones((24,) + grid.shape, np.float32)
        >>> f = ClimateFields.from_arrays(gs.sampling.HEALPix(nside=2), grid, u, -u, t, land=np.zeros(48))
        >>> f.u.shape, bool(np.allclose(f.v, -1))
        ((24, 48), True)
        """
        from .regrid import Regridder

        u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
        times = _check_times(u, times)
        land = np.asarray(land, np.float32)
        if land.shape != (sampling.npix,):
            raise ValueError(f"land must have one value per pixel ({sampling.npix}), got shape {land.shape}")
        r = Regridder(source_grid, sampling, method=regrid, supersample=supersample)
        ru, rv = (_readonly(np.asarray(r.apply(a), np.float32)) for a in (u, v))
        return cls(sampling, ru, rv, times, _readonly(land), _readonly(u), _readonly(v), source_grid, regrid)


@lru_cache(maxsize=4)
def climate_fields(sampling, path: str | None = None, regrid: str = "conservative",
                   supersample: int = 16) -> ClimateFields:
    """The FNOC winds (:func:`~graphsphere.data.climate.navy_winds`) and the ETOPO land fraction on
    ``sampling``; ``path``: the folder of the ``ferret`` files (None: fetched and verified by
    :mod:`graphsphere.data.sources`). Memoised: an experiment trains several models on one sampling."""
    from .climate import land_fraction, navy_winds

    if regrid not in ("conservative", "bilinear", "bicubic"):
        raise ValueError(f"regrid must be 'conservative', 'bilinear' or 'bicubic' for the winds, got {regrid!r}")
    winds = navy_winds(path)
    u, v, land = winds["UWND"], winds["VWND"], land_fraction(sampling, path, supersample=supersample)
    return ClimateFields.from_arrays(sampling, u.grid, u.values, v.values, u.times, land, regrid, supersample)


def split_years(times, test_years: Iterable[int], val_years: Iterable[int] = ()) -> dict[str, np.ndarray]:
    """The years of each split; every year neither test nor validation trains.

    >>> t = np.arange("1982-01", "1993-01", dtype="datetime64[M]")
    >>> {k: v.tolist() for k, v in split_years(t, [1991, 1992], [1990]).items()}["train"][-1]
    1989
    """
    test = _year_set(test_years, times, "test years")
    val = np.unique(np.asarray(list(val_years), dtype=np.int64))
    val = _year_set(val, times, "validation years") if val.size else val
    if np.intersect1d(test, val).size:
        raise ValueError(f"years {np.intersect1d(test, val).tolist()} are both test and validation years")
    train = np.setdiff1d(np.unique(_years(times)), np.union1d(test, val))
    if train.size == 0:
        raise ValueError(f"no training year is left (test {test.tolist()}, validation {val.tolist()})")
    return {"train": train, "val": val, "test": test}


@dataclass(frozen=True, eq=False)
class SegmentationTask:
    """Per split (``"train"``, ``"val"``, ``"test"``): ``x`` float32 ``[months, npix, channels]``,
    ``y`` int8 ``[months, npix]`` (0 background, 1 strong, 2 extreme, -1 unknown), ``times``. Also
    the training years' ``thresholds`` (``[12, 2, *space]`` of the grid the rule ran on), the
    ``channels``, the ``years``, where the labels were made (``labels_on``) and ``label_check``."""

    x: dict
    y: dict
    times: dict
    thresholds: np.ndarray
    channels: tuple
    years: dict
    labels_on: str
    label_check: dict


def _label_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Share of equal labels and per-class IoU of two labelings, where both are known."""
    ok = (a >= 0) & (b >= 0)
    a, b = a[ok], b[ok]
    iou = [float(((a == c) & (b == c)).sum() / max(((a == c) | (b == c)).sum(), 1)) for c in range(3)]
    return {"agreement": float((a == b).mean()) if a.size else float("nan"), "iou": iou,
            "frequency_target": class_frequencies(a).tolist(), "frequency_source": class_frequencies(b).tolist()}


def segmentation_task(fields: ClimateFields, test_years: Iterable[int] = (1991, 1992),
                      val_years: Iterable[int] = (1990,), inputs: Sequence[str] = ("u", "v", "speed", "land"),
                      quantiles: Sequence[float] = (90, 99), month_window: int = 1,
                      labels: str = "target") -> SegmentationTask:
    """Inputs and labels of the wind-extreme segmentation, split by held-out years.

    Thresholds come from the training years alone: validation and test months are labelled as new
    data would be. ``inputs``: channels among :data:`SEGMENTATION_INPUTS` (``speed`` is that of the
    regridded components). ``labels="target"``: the rule applied on the sampling to the regridded
    winds (the labels are a function of what the models see); ``"source"``: on the source grid,
    carried to the sampling by nearest neighbour. ``label_check`` compares the two per split (share
    of equal labels, per-class IoU, class frequencies): the regridding's own error on the labels,
    what a perfect model of one rule would score against the other.

    >>> import graphsphere as gs
    >>> from graphsphere.data.regrid import LatLonGrid
    >>> grid, t = LatLonGrid.regular(10.0), np.arange("1982-01", "1986-01", dtype="datetime64[M]")
    >>> u = np.random.default_rng(0).normal(5, 3, (48,) + grid.shape)
    >>> f = ClimateFields.from_arrays(gs.sampling.HEALPix(nside=4), grid, u, 0 * u, t, land=np.zeros(192))
    >>> task = segmentation_task(f, test_years=[1985], val_years=[1984])
    >>> task.x["train"].shape, task.y["test"].shape, task.channels
    ((24, 192, 4), (12, 192), ('u', 'v', 'speed', 'land'))
    """
    from .regrid import Regridder

    if labels not in ("target", "source"):
        raise ValueError(f"labels must be 'target' or 'source', got {labels!r}")
    if not inputs or len(set(inputs)) != len(inputs) or set(inputs) - set(SEGMENTATION_INPUTS):
        raise ValueError(f"inputs must be distinct names among {SEGMENTATION_INPUTS}, got {list(inputs)}")
    years = split_years(fields.times, test_years, val_years)
    speed = wind_speed(fields.u, fields.v)
    on_target, thr_target = extreme_wind_labels_from_speed(speed, fields.times, years["train"], quantiles,
                                                           month_window)
    on_source, thr_source = extreme_wind_labels(fields.source_u, fields.source_v, fields.times, years["train"],
                                                quantiles, month_window)
    carried = Regridder(fields.source_grid, fields.sampling, method="nearest").apply(on_source.astype(np.float64))
    # A pixel that finds no source cell (on the grid's longitude seam, within rounding) stays unknown.
    carried = np.where(np.isfinite(carried), np.rint(carried), -1).astype(np.int8)
    y_all, thr = (on_target, thr_target) if labels == "target" else (carried, thr_source)
    angle = 2 * np.pi * _months(fields.times)[:, None] / 12
    full = {"u": [fields.u], "v": [fields.v], "speed": [speed], "land": [fields.land[None, :]],
            "month": [np.cos(angle), np.sin(angle)]}
    names = [n for c in inputs for n in (["cos(month)", "sin(month)"] if c == "month" else [c])]
    x_all = np.stack([np.broadcast_to(a, fields.u.shape) for c in inputs for a in full[c]], -1).astype(np.float32)
    rows = {k: np.flatnonzero(np.isin(_years(fields.times), ys)) for k, ys in years.items()}
    check = {k: _label_agreement(on_target[i], carried[i]) for k, i in rows.items() if i.size}
    return SegmentationTask({k: _readonly(x_all[i]) for k, i in rows.items()},
                            {k: _readonly(y_all[i]) for k, i in rows.items()},
                            {k: _readonly(fields.times[i]) for k, i in rows.items()},
                            _readonly(thr), tuple(names), years, labels, check)


@dataclass(frozen=True, eq=False)
class ForecastTask:
    """Per split: ``x`` float32 ``[samples, npix, 2 n_input + 1]`` (u and v of the previous months,
    oldest first, then the land fraction), ``y`` ``[samples, npix, 2]`` (u and v of the target
    month), both as departures from the training ``climatology`` (``[12, npix, 2]``) when
    ``anomalies``; ``times`` (the target months); ``persistence`` (the last input month, m/s);
    ``offset`` (what :meth:`values` adds back)."""

    x: dict
    y: dict
    times: dict
    climatology: np.ndarray
    persistence: dict
    offset: dict
    channels: tuple
    years: dict
    anomalies: bool

    def values(self, split: str, y) -> np.ndarray:
        """Targets or predictions ``[samples, npix, 2]`` of ``split`` in m/s."""
        return np.asarray(y, dtype=np.float64) + self.offset[split]


def forecast_task(fields: ClimateFields, test_years: Iterable[int] = (1991, 1992), val_years: Iterable[int] = (1990,),
                  n_input: int = 3, anomalies: bool = True) -> ForecastTask:
    """Next month's u and v from the previous ``n_input`` months and the land, split by the year of
    the target month (:func:`forecast_arrays`): a training sample has its target *and* its inputs
    in training years; validation and test samples may look back into earlier splits. The
    climatology comes from the training years alone.

    >>> import graphsphere as gs
    >>> from graphsphere.data.regrid import LatLonGrid
    >>> grid, t = LatLonGrid.regular(30.0), np.arange("1982-01", "1986-01", dtype="datetime64[M]")
    >>> u = np.random.default_rng(0).normal(0, 1, (48,) + grid.shape)
    >>> f = ClimateFields.from_arrays(gs.sampling.HEALPix(nside=1), grid, u, u, t, land=np.zeros(12))
    >>> task = forecast_task(f, test_years=[1985], val_years=[1984], n_input=2)
    >>> task.x["train"].shape, task.y["val"].shape, task.x["test"].shape, str(task.times["val"][0])
    ((22, 12, 5), (12, 12, 2), (12, 12, 5), '1984-01')
    """
    years = split_years(fields.times, test_years, val_years)
    clim = np.stack([monthly_climatology(a, fields.times, years["train"]) for a in (fields.u, fields.v)], -1)
    base = clim[_months(fields.times)] if anomalies else np.zeros(fields.u.shape + (2,))
    arrays = forecast_arrays(fields.u - base[..., 0], fields.v - base[..., 1], fields.times, fields.land,
                             np.union1d(years["val"], years["test"]), n_input)
    index = {t: i for i, t in enumerate(fields.times.astype(np.int64))}
    raw = np.stack([fields.u, fields.v], axis=-1)
    parts = {"train": (arrays.x_train, arrays.y_train, arrays.times_train)}
    for name in ("val", "test"):
        keep = np.isin(_years(arrays.times_test), years[name])
        parts[name] = (arrays.x_test[keep], arrays.y_test[keep], arrays.times_test[keep])
    out = {k: {} for k in ("x", "y", "t", "persistence", "offset")}
    for name, (xs, ys, ts) in parts.items():
        at = np.array([index[k] for k in ts.astype(np.int64)], dtype=np.int64)
        for key, value in (("x", xs), ("y", ys), ("t", ts), ("persistence", raw[at - 1]), ("offset", base[at])):
            out[key][name] = _readonly(value)
    return ForecastTask(out["x"], out["y"], out["t"], _readonly(clim), out["persistence"], out["offset"],
                        arrays.channels, years, bool(anomalies))


class _ClimateParams(Params):
    #: Folder holding the ferret files (monthly_navy_winds.cdf, etopo60.cdf); null: the fetched data set.
    path: str | None = None
    regrid: Literal["conservative", "bilinear", "bicubic"] = "conservative"   # the land fraction: conservative
    supersample: PositiveInt = 16
    #: Held out: test years (never used for thresholds, statistics or training inputs) and validation years.
    test_years: list[int] = Field(default_factory=lambda: [1991, 1992], min_length=1)
    val_years: list[int] = Field(default_factory=lambda: [1990])


class SegmentationParams(_ClimateParams):
    """The ``data`` section of ``name: climate_segmentation`` (see :func:`segmentation_task`)."""

    inputs: list[Literal[SEGMENTATION_INPUTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["u", "v", "speed", "land"], min_length=1)
    labels: Literal["target", "source"] = "target"
    quantiles: list[float] = Field(default_factory=lambda: [90.0, 99.0], min_length=2, max_length=2)
    month_window: int = Field(1, ge=0, le=5)


class ForecastParams(_ClimateParams):
    """The ``data`` section of ``name: climate_forecast`` (see :func:`forecast_task`)."""

    n_input: PositiveInt = 3
    anomalies: bool = True


def _splits(name: str, sampling, task: str, want: str, params: dict, make) -> Splits:
    from ..config import ConfigError
    from .maps import MapDataset

    if sampling is None:
        raise ConfigError([("sampling", f": {name} regrids the winds onto the configured sampling; add a sampling "
                            "section, e.g. {type: Icosahedral, level: 5} or {type: HEALPix, nside: 32}")])
    if task != want:
        raise ConfigError([("task", f" = {task!r}: {name} is a {want} data set; set task: {want}")])
    t = make(climate_fields(sampling, params["path"], params["regrid"], params["supersample"]))
    sets = [MapDataset(t.x[k], t.y[k], sampling=sampling, what=f"{name} {k} split") if len(t.x[k]) else None
            for k in ("train", "val", "test")]
    seg = want == "segmentation"
    return Splits(*sets, sampling=sampling, in_channels=len(t.channels), n_out=3 if seg else 2,
                  class_names=list(LABELS) if seg else None, info={"task": t, "channels": t.channels})


_HINT = "fetch the data with: graphsphere data fetch ferret (or set data.path to the folder of its files)"


@register_dataset("climate_segmentation", params=SegmentationParams, hint=_HINT)
def build_climate_segmentation(sampling, task, seed, **p) -> Splits:
    """Wind extremes per pixel, one sample per month; ``info["task"]``: the :class:`SegmentationTask`."""
    return _splits("climate_segmentation", sampling, task, "segmentation", p, lambda f: segmentation_task(
        f, p["test_years"], p["val_years"], p["inputs"], p["quantiles"], p["month_window"], p["labels"]))


@register_dataset("climate_forecast", params=ForecastParams, hint=_HINT)
def build_climate_forecast(sampling, task, seed, **p) -> Splits:
    """Next month's u and v per pixel; ``info["task"]``: the :class:`ForecastTask` (climatology, persistence)."""
    return _splits("climate_forecast", sampling, task, "regression", p, lambda f: forecast_task(
        f, p["test_years"], p["val_years"], p["n_input"], p["anomalies"]))
