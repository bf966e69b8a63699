"""Baselines of the stations experiment, and its metrics.

- :func:`climatology`: the next month is its calendar month's training-years mean (a departure of 0).
- :class:`PerStationLinear`: one least-squares line per station, from its own ``n_lags`` previous
  months (the issue's per-station baseline; the graph models' K = 1 shares one set of weights across
  stations instead).
- :class:`PerStationBayes`: the month of the year from one snapshot, each station on its own: a
  Gaussian per station and calendar month (training years), the stations' log-likelihoods added as
  if they were independent (naive Bayes).

Missing inputs are filled with the station's training mean of that input (0 for departures, the
climatology); missing targets are left out of fitting and of every metric.

Both are scikit-learn estimators (``get_params``, ``set_params``, ``sklearn.base.clone``, ``score``;
fitted attributes end in ``_``). Their inputs are (samples, stations, lags) arrays, not scikit-learn's
(samples, features) tables, so scikit-learn's generic estimator checks do not apply.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 3, 2)); y = 0.5 * x[..., 1] + 0.1 * rng.normal(size=(200, 3))
>>> y[0, 0] = np.nan                                      # a missing target: left out
>>> lin = PerStationLinear().fit(x, y)
>>> np.round(lin.coef_[:, 2], 1).tolist()                  # the weight of the last lag at each station
[0.5, 0.5, 0.5]
>>> m = regression_metrics(lin.predict(x), y)
>>> round(m["r2"], 2), m["n"]
(0.96, 599)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

__all__ = [
    "PerStationBayes",
    "PerStationLinear",
    "accuracy",
    "climatology",
    "per_station_mse",
    "regression_metrics",
]


def _fill(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, means[None])


def climatology(x: np.ndarray) -> np.ndarray:
    """Departures of 0 at every station (samples, stations): the calendar month's training mean."""
    return np.zeros(x.shape[:2])


class PerStationLinear(RegressorMixin, BaseEstimator):
    """``y[t, s] = a_s + sum_l b_sl x[t, s, l]``, fitted by least squares at each station ``s``.

    ``x`` (samples, stations, lags), NaN where missing (filled with the station's training mean of
    that lag); ``y`` (samples, stations), NaN where missing (left out). Fitted: ``coef_`` (stations,
    1 + lags: the intercept, then the lags) and ``means_`` (stations, lags: the fill values).
    """

    def fit(self, x: np.ndarray, y: np.ndarray) -> PerStationLinear:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim != 3 or y.shape != x.shape[:2]:
            raise ValueError(f"x must be (samples, stations, lags) and y (samples, stations); got {x.shape}, {y.shape}")
        with np.errstate(invalid="ignore"):
            self.means_ = np.where(np.isfinite(x).any(axis=0), np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
                                  if np.isfinite(x).any() else 0.0, 0.0)
        xf = _fill(x, self.means_)
        n_s, n_l = x.shape[1], x.shape[2]
        self.coef_ = np.zeros((n_s, 1 + n_l))
        for s in range(n_s):
            ok = np.isfinite(y[:, s])
            if ok.sum() == 0:
                continue                           # never observed: predicts 0 (the climatology)
            A = np.c_[np.ones(ok.sum()), xf[ok, s]]
            self.coef_[s] = np.linalg.lstsq(A, y[ok, s], rcond=None)[0]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        xf = _fill(np.asarray(x, np.float64), self.means_)
        return self.coef_[None, :, 0] + np.einsum("nsl,sl->ns", xf, self.coef_[:, 1:])

    def score(self, x: np.ndarray, y: np.ndarray, sample_weight=None) -> float:
        """R^2 of the predictions of ``x``, pooled over every (sample, station) whose ``y`` is known
        (as :func:`regression_metrics`; scikit-learn's default would average it over the stations
        and refuse NaN)."""
        if sample_weight is not None:
            raise ValueError("PerStationLinear.score takes no sample_weight")
        return regression_metrics(self.predict(x), y)["r2"]

    @property
    def n_params(self) -> int:
        return int(self.coef_.size)


class PerStationBayes(ClassifierMixin, BaseEstimator):
    """The month of the year (0-11) from one snapshot: at each station a Gaussian per month
    (mean and variance of the training values of that month), the log-likelihoods of the
    observed stations summed (naive Bayes, equal priors). ``x`` (samples, stations, 1), NaN where
    missing (a missing station adds nothing); ``y`` (samples,) months. Fitted: ``mu_`` and ``var_``
    (classes, stations), ``seen_`` (per class: present in training?), ``classes_`` (0 ..
    ``n_classes`` - 1).

    >>> x = np.array([[[0.0]], [[10.0]], [[0.2]], [[9.8]]]); y = np.array([0, 6, 0, 6])
    >>> PerStationBayes(n_classes=12).fit(x, y).predict(np.array([[[1.0]], [[8.0]]])).tolist()
    [0, 6]
    """

    def __init__(self, n_classes: int = 12, var_floor: float = 1e-2):
        self.n_classes = n_classes
        self.var_floor = var_floor

    def fit(self, x: np.ndarray, y: np.ndarray) -> PerStationBayes:
        v = np.asarray(x, np.float64)[..., 0]
        y = np.asarray(y)
        n_classes, var_floor = int(self.n_classes), float(self.var_floor)
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            # a station never observed in some month stands in with its all-months Gaussian
            n_all = ok.sum(axis=0)
            mean_all = np.where(n_all > 0, np.where(ok, v, 0).sum(axis=0) / np.maximum(n_all, 1), 0.0)
            var_all = np.where(n_all > 1, np.where(ok, (v - mean_all) ** 2, 0).sum(axis=0) / np.maximum(n_all - 1, 1),
                               1.0)
            floor = var_floor * np.maximum(var_all, 1e-12)
            mu = np.tile(mean_all, (n_classes, 1))
            var = np.tile(np.maximum(var_all, floor), (n_classes, 1))
            for c in range(n_classes):
                rows, rok = v[y == c], ok[y == c]
                n = rok.sum(axis=0)
                m = np.where(rok, rows, 0).sum(axis=0) / np.maximum(n, 1)
                s2 = np.where(rok, (rows - m) ** 2, 0).sum(axis=0) / np.maximum(n - 1, 1)
                mu[c] = np.where(n > 0, m, mu[c])
                var[c] = np.where(n > 1, np.maximum(s2, floor), var[c])
        self.mu_, self.var_ = mu, var
        self.classes_ = np.arange(n_classes)
        self.seen_ = np.isin(self.classes_, y)      # a month never seen in training is never predicted
        return self

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """(samples, classes): the summed log-likelihood of each month over the observed stations."""
        v = np.asarray(x, np.float64)[..., 0]                         # (n, S)
        ll = -0.5 * ((v[:, None, :] - self.mu_[None]) ** 2 / self.var_[None]
                     + np.log(2 * np.pi * self.var_[None]))
        total = np.where(np.isfinite(v)[:, None, :], ll, 0.0).sum(axis=2)
        return np.where(self.seen_[None], total, -np.inf)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.log_likelihood(x), axis=1)

    @property
    def n_params(self) -> int:
        return int(self.mu_.size + self.var_.size)


def regression_metrics(pred: np.ndarray, truth: np.ndarray, baseline: np.ndarray | None = None) -> dict:
    """MSE, MAE and R^2 over every (sample, station) whose truth is known, pooled as the training
    engine pools them (R^2 = 1 - SS_res / SS_tot about the mean of all those targets). With
    ``baseline`` (predictions of the same targets, e.g. the climatology), also ``skill``:
    ``1 - MSE / MSE_baseline``. ``n`` counts the entries.
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    ok = np.isfinite(truth)
    if not ok.any():
        raise ValueError("no known target to score")
    if not np.all(np.isfinite(pred[ok])):
        raise ValueError("predictions are NaN where the truth is known")
    err = pred[ok] - truth[ok]
    mse = float(np.mean(err**2))
    out = {"mse": mse, "mae": float(np.mean(np.abs(err))),
           "r2": float(1 - np.sum(err**2) / np.sum((truth[ok] - truth[ok].mean()) ** 2)), "n": int(ok.sum())}
    if baseline is not None:
        out["skill"] = float(1 - mse / np.mean((np.asarray(baseline, np.float64)[ok] - truth[ok]) ** 2))
    return out


def per_station_mse(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """MSE of each station over its known targets (stations,); NaN for a station never known."""
    err = np.where(np.isfinite(truth), (np.asarray(pred, np.float64) - truth) ** 2, np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(err, axis=0) if err.shape[0] else np.full(err.shape[1], np.nan)


def accuracy(pred_classes: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred_classes) == np.asarray(truth)))
