"""The climate experiment's pictures: Mollweide maps of inputs, labels, predictions and forecasts
with coastlines from the ETOPO land mask, and per-class precision-recall curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import FORECAST_LABELS, LABELS

__all__ = ["coastlines", "segmentation_maps", "pr_curves", "forecast_maps"]

#: background, strong, extreme
CLASS_COLORS = ("#f2f2f2", "#f4a442", "#b2182b")
CLASS_NAMES = ("background", "strong (> 90th pct)", "extreme (> 99th pct)")


def coastlines(path=None):
    """``(lon, lat, land)`` for ``ax.contour`` on Mollweide axes: radians, longitudes -180..180
    increasing, the ETOPO 1-degree land mask (relief above sea level) as 0/1."""
    from ...data.climate import land_mask

    land = land_mask(path, 60)
    lon = (land.grid.lon + 180.0) % 360.0 - 180.0
    order = np.argsort(lon)
    lat = land.grid.lat
    rows = np.argsort(lat)
    mask = np.asarray(land.values, dtype=float)[rows][:, order]
    return np.radians(lon[order]), np.radians(lat[rows]), mask


def _draw_coast(ax, coast) -> None:
    lon, lat, mask = coast
    ax.contour(lon, lat, mask, levels=[0.5], colors="k", linewidths=0.35)


def _class_map(ax, sampling, labels, title, coast):
    from matplotlib.colors import ListedColormap

    from ...plot.maps import mapview

    values = np.where(np.asarray(labels) >= 0, labels, np.nan).astype(float)
    mapview(sampling, values, ax=ax, title=title, cmap=ListedColormap(CLASS_COLORS), vmin=-0.5, vmax=2.5,
            colorbar=False)
    _draw_coast(ax, coast)


def _pick_month(y_test: np.ndarray) -> int:
    """The test month with the most extreme pixels: where there is most to see."""
    return int(np.argmax((np.asarray(y_test) == 2).sum(axis=1)))


def _other_labels(task, fields, at: int, window: int) -> np.ndarray:
    """Month ``at`` labelled by the rule the task did not use (the regridding check, as a map)."""
    from ...data.climate_tasks import extreme_wind_labels, extreme_wind_labels_from_speed, wind_speed
    from ...data.regrid import Regridder

    if task.labels_on == "target":
        labels, _ = extreme_wind_labels(fields.source_u, fields.source_v, fields.times, task.years["train"],
                                        month_window=window)
        out = Regridder(fields.source_grid, fields.sampling, method="nearest").apply(labels[at].astype(float))
        return np.where(np.isfinite(out), out, -1)
    labels, _ = extreme_wind_labels_from_speed(wind_speed(fields.u, fields.v), fields.times, task.years["train"],
                                               month_window=window)
    return labels[at]


def segmentation_maps(seg: dict, fields, coast, path: Path, month_window: int = 1) -> Path:
    """One test month: wind speed and the land fraction (inputs), the labels, the labels of the
    other rule (the regridding check), and each method's predicted classes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ...data.climate_tasks import wind_speed
    from ...plot import style
    from ...plot.maps import mapview, savefig

    task, preds = seg["_task"], seg["_predictions"]
    y = np.asarray(task.y["test"])
    i = _pick_month(y)
    month = str(task.times["test"][i])
    at = int(np.flatnonzero(fields.times == task.times["test"][i])[0])
    speed = wind_speed(fields.u[at], fields.v[at])
    s = fields.sampling
    other = _other_labels(task, fields, at, month_window)
    on_target = task.labels_on == "target"
    panels = [("speed", f"input: wind speed {month}"), ("land", "input: land fraction (ETOPO)"),
              ("labels", f"labels: rule on the {'regridded winds' if on_target else '2.5-degree grid'}"),
              ("other", f"rule on the {'2.5-degree grid' if on_target else 'regridded winds'} (not used)")]
    panels += [(m, "predicted: " + LABELS[m].replace(" loss", "").replace(" net", "")) for m in preds]
    ncols = 3
    nrows = -(-len(panels) // ncols)
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig = plt.figure(figsize=(style.PAGE_WIDTH, 1.7 * nrows + 0.5))
        for k, (what, title) in enumerate(panels):
            ax = fig.add_subplot(nrows, ncols, k + 1, projection="mollweide")
            if what == "speed":
                mapview(s, speed, ax=ax, title=title, unit="m/s", cmap="viridis")
                _draw_coast(ax, coast)
            elif what == "land":
                mapview(s, fields.land, ax=ax, title=title, unit="share of the cell", cmap="Greys", vmin=0, vmax=1)
                _draw_coast(ax, coast)
            elif what == "labels":
                _class_map(ax, s, y[i], title, coast)
            elif what == "other":
                _class_map(ax, s, other, title, coast)
            else:
                _class_map(ax, s, preds[what][i], title, coast)
        fig.legend([Patch(color=c, ec="0.5", lw=0.3) for c in CLASS_COLORS], CLASS_NAMES, loc="lower center",
                   ncol=3, frameon=False)
        fig.suptitle(f"wind extremes, test month {month}, {s.describe()}", y=1.0)
        fig.tight_layout(rect=(0, 0.05, 1, 0.97))
        savefig(fig, path)
    return path


def pr_curves(seg: dict, path: Path) -> Path:
    """Precision against recall on the test pixels, one panel per event class, one line per method
    (first seed), with the class frequency as the no-skill level."""
    import matplotlib.pyplot as plt

    from ...plot import style
    from ...plot.maps import savefig

    first = {}
    for r in seg["runs"]:
        first.setdefault(r["method"], r)
    freq = seg["class_frequencies"].get("test") or [np.nan] * 3
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(style.PAGE_WIDTH, 2.9), sharey=True)
        for ax, c in zip(axes, (1, 2)):
            for k, (m, r) in enumerate(first.items()):
                curve = r["curves"][c]
                if curve is None:
                    continue
                ax.plot(curve["recall"], curve["precision"], color=f"C{k}", lw=1.1,
                        ls="-" if m.startswith("unet") else "--", label=f"{LABELS[m]} (AP {100 * r['ap'][c]:.1f})")
            ax.axhline(freq[c], color="0.5", lw=0.8, ls=":", label=f"no skill ({100 * freq[c]:.1f}% of pixels)")
            ax.set(xlabel="recall", title=f"{CLASS_NAMES[c]}", xlim=(0, 1), ylim=(0, 1.02))
            ax.grid(alpha=0.3)
            ax.legend(loc="upper right", fontsize=6)
        axes[0].set_ylabel("precision")
        fig.suptitle("precision-recall on the test years (per pixel)")
        fig.tight_layout()
        savefig(fig, path)
    return path


def forecast_maps(fc: dict, fields, coast, path: Path) -> Path:
    """One test month: the observed departure of u from the training climatology and each
    forecast's, on one colour scale, and the RMSE of every method per variable."""
    import matplotlib.pyplot as plt

    from ...plot import style
    from ...plot.maps import mapview, savefig

    task, forecasts = fc["_task"], fc["_forecasts"]
    observed, clim = fc["_observed"], fc["_climatology"]
    anomaly = observed - clim
    i = int(np.argmax((anomaly[..., 0] ** 2).mean(axis=1)))        # the month with the largest departures
    month = str(task.times["test"][i])
    shown = [("observed", observed)] + [(m, f) for m, f in forecasts.items() if m != "climatology"]
    lim = float(np.percentile(np.abs(anomaly[i, :, 0]), 99))
    s = fields.sampling
    ncols = 3
    nrows = -(-(len(shown) + 1) // ncols)
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig = plt.figure(figsize=(style.PAGE_WIDTH, 1.95 * nrows + 0.3))
        for k, (what, values) in enumerate(shown):
            ax = fig.add_subplot(nrows, ncols, k + 1, projection="mollweide")
            title = f"observed u - climatology, {month}" if what == "observed" else FORECAST_LABELS[what]
            mapview(s, values[i, :, 0] - clim[i, :, 0], ax=ax, title=title, unit="m/s", cmap="RdBu_r", vmin=-lim,
                    vmax=lim)
            _draw_coast(ax, coast)
        ax = fig.add_subplot(nrows, ncols, len(shown) + 1)
        first = {}
        for r in fc["runs"]:
            first.setdefault(r["method"], r)
        names = list(first)
        x = np.arange(len(names))
        for j, (var, marker) in enumerate((("u", "o"), ("v", "s"))):
            ax.plot(x, [first[m]["rmse"][j] for m in names], marker, mfc="none", color=f"C{j}", label=var, ms=5)
        ax.set_xticks(x, [FORECAST_LABELS[m].split(" (")[0] for m in names], rotation=30, ha="right")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set(ylabel="RMSE, test years (m/s)", title="next-month RMSE (lower is better)")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        fig.suptitle(f"next-month zonal wind u, departures from the training climatology; {s.describe()}", y=1.0)
        fig.tight_layout()
        savefig(fig, path)
    return path
