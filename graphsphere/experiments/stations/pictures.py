"""Pictures of the stations experiment: the graph on a map, its spectrum, predictions against the
truth, the error per station on a map, and the month task's confusion matrices.

Maps are plain longitude-latitude plots of the region (one degree of longitude drawn
``cos(latitude)`` as wide as one of latitude), which is what a regional network needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "draw_all",
    "error_map_figure",
    "graph_figure",
    "month_figure",
    "predictions_figure",
    "spectrum_figure",
]

_WIDTH = 7.0
_RC = {"font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
       "legend.fontsize": 7, "figure.titlesize": 9.5}


def _setup():
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _lonlat(sampling) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes in [-180, 180) (samplings give [0, 360)) and latitudes, degrees."""
    ll = np.asarray(sampling.lonlat)
    return (ll[:, 0] + 180) % 360 - 180, ll[:, 1]


def _map_axes(ax, lon, lat, pad=0.3):
    ax.set_xlim(lon.min() - pad, lon.max() + pad)
    ax.set_ylim(lat.min() - pad, lat.max() + pad)
    ax.set_aspect(1 / np.cos(np.deg2rad(np.mean(lat))))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")


def _colorbar(fig, mappable, ax, label):
    cb = fig.colorbar(mappable, ax=ax, shrink=0.8, pad=0.02)
    cb.set_label(label)
    return cb


def _save(fig, path: Path) -> Path:
    from ...plot import savefig

    savefig(fig, path)
    return path


def graph_figure(points, series, graph_info: dict, neighbours: int, kernel_width, laplacian: str, raw=None,
                 period=None):
    """The k-NN graph (edges shaded by weight, stations coloured by elevation, dropped stations as grey
    crosses) and the first two levels of balanced clusters that the pooled models use."""
    from matplotlib.collections import LineCollection

    from .graphs import station_graph

    plt = _setup()
    g = station_graph(points, neighbours, kernel_width, laplacian)
    W = g.W.tocoo()
    upper = W.row < W.col
    lon, lat = series.lon, series.lat
    segs = np.stack([np.c_[lon[W.row[upper]], lat[W.row[upper]]], np.c_[lon[W.col[upper]], lat[W.col[upper]]]], 1)
    w = W.data[upper]
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 2, figsize=(_WIDTH, 3.3), constrained_layout=True)
        ax = axes[0]
        if raw is not None:
            gone = ~np.isin(raw.ids, series.ids)
            ax.scatter(raw.lon[gone], raw.lat[gone], marker="x", s=6, lw=0.5, color="0.65",
                       label=f"dropped ({int(gone.sum())})")
        lc = LineCollection(segs, colors=plt.cm.Greys(0.35 + 0.65 * w / w.max()), linewidths=0.4 + 1.2 * w / w.max())
        ax.add_collection(lc)
        sc = ax.scatter(lon, lat, c=series.elevation, s=10, cmap="terrain", vmin=900, vmax=3700, zorder=3,
                        edgecolors="k", linewidths=0.2, label=f"kept ({series.nstations})")
        _map_axes(ax, np.r_[lon, raw.lon if raw is not None else []], np.r_[lat, raw.lat if raw is not None else []])
        ax.set_title(f"k = {neighbours} nearest neighbours, {g.n_edges} edges, t = {g.t:.2g}\n"
                     f"(weight 1/2 at the mean neighbour distance, {graph_info['mean_neighbour_distance_km']:.0f} km)")
        _colorbar(fig, sc, ax, "elevation (m)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, markerscale=1.5)
        ax = axes[1]
        coarse, assign = points.coarsen()
        labels = np.asarray(assign.argmax(axis=0)).ravel()
        perm = np.random.default_rng(3).permutation(coarse.npix)
        ax.scatter(lon, lat, c=perm[labels] % 20, cmap="tab20", s=12, edgecolors="k", linewidths=0.2)
        ax.scatter(*_lonlat(coarse), marker="+", s=25, c="k", lw=0.8, label=f"level 1: {coarse.npix} centres")
        coarser, _ = coarse.coarsen()
        ax.scatter(*_lonlat(coarser), marker="o", s=40, facecolors="none", edgecolors="r", lw=1,
                   label=f"level 2: {coarser.npix}")
        sizes = np.bincount(labels)
        _map_axes(ax, lon, lat)
        size = f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()}-{sizes.max()}"
        ax.set_title(f"pooling: balanced clusters of {size} stations\n"
                     "(colours: level-1 clusters)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        if period:
            fig.suptitle(f"{series.nstations} stations, {period[0]}-{period[1]}")
    return fig


def spectrum_figure(spectral: dict, series, kernel_width: str = "paper"):
    """Top left: the graph's low eigenvalues (scaled by the one fitted factor) against Weyl's law for
    the stations' region and the bounding rectangle's exact Neumann eigenvalues, for both widths; top
    right: the scale-free ratios lambda_j / lambda_1 against the rectangle's. Bottom: eigenvectors 1-3
    on the map, with the fraction of each that is a smooth rectangle mode."""
    from matplotlib.ticker import MaxNLocator

    plt = _setup()
    s = spectral[kernel_width]
    j = np.arange(len(s["eigenvalues"]))
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(_WIDTH, 5.0), constrained_layout=True)
        grid = fig.add_gridspec(2, 3, height_ratios=(1.1, 1))
        ax = fig.add_subplot(grid[0, :2])
        ax.plot(j, s["weyl"], "k-", lw=1, label="Weyl's law (two terms) for the stations' convex hull")
        ax.plot(j, s["rectangle"], "s", ms=3.5, mfc="none", color="0.45", label="bounding rectangle, exact (Neumann)")
        for name, marker, color in (("paper", "o", "C0"), ("mean", "^", "C1")):
            if name in spectral:
                c = spectral[name]
                ax.plot(j, c["scaled"], marker, ms=3.5, color=color, mfc=color if name == kernel_width else "none",
                        label=f"graph, width '{name}', scaled (Weyl R² {c['weyl_r2']:.3f})")
        ax.set(xlabel="index j", ylabel="eigenvalue (1/sr)", title="low spectrum of the station graph")
        ax.legend(loc="upper left")
        ax = fig.add_subplot(grid[0, 2])
        ax.plot(j[1:], np.asarray(s["rectangle_ratios"])[1:], "s", ms=3.5, mfc="none", color="0.45",
                label="rectangle")
        for name, marker, color in (("paper", "o", "C0"), ("mean", "^", "C1")):
            if name in spectral:
                c = spectral[name]
                ax.plot(j[1:], np.asarray(c["ratios"])[1:], marker, ms=3.5, color=color,
                        mfc=color if name == kernel_width else "none", label=f"'{name}' (R² {c['rect_r2']:.2f})")
        ax.set(xlabel="index j", ylabel="λ_j / λ_1", title="shape of the spectrum (scale-free)")
        ax.legend(loc="upper left")
        vecs = np.asarray(s["eigenvectors"])
        for i in (1, 2, 3):
            ax = fig.add_subplot(grid[1, i - 1])
            v = vecs[:, i]
            lim = np.abs(v).max()
            ax.scatter(series.lon, series.lat, c=v, cmap="RdBu_r", vmin=-lim, vmax=lim, s=10, edgecolors="k",
                       linewidths=0.2)
            _map_axes(ax, series.lon, series.lat)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.set_title(f"eigenvector {i}: {100 * s['mode_corr'][i - 1]:.0f}% smooth")
            if i > 1:
                ax.set_ylabel("")
    return fig


def predictions_figure(reg: dict, network_key: str, units: str):
    """Predicted against true departures from the climatology over the test years (per-station linear
    and a network), and one station's test years: truth, climatology, the per-station linear and the
    network."""
    plt = _setup()
    data, truth = reg["_data"], reg["_truth"]
    preds = {k: data.values("test", v) for k, v in reg["_preds"].items()}
    ok = np.isfinite(truth)
    lin = preds.get("per_station_linear|None")
    net = preds[network_key]
    clim = data.climatology[data.times["test"].astype(int) % 12]
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 2, figsize=(_WIDTH, 2.8), constrained_layout=True,
                                 gridspec_kw={"width_ratios": (1, 1.8)})
        ax = axes[0]
        # departures: the seasonal cycle (known to every method) would hide the differences
        d_truth = truth - clim
        lo, hi = np.nanpercentile(d_truth, [0.2, 99.8])
        for name, p, color in (("per-station linear", lin, "C1"), (_net_name(network_key), net, "C0")):
            if p is None:
                continue
            r = np.corrcoef(d_truth[ok], (p - clim)[ok])[0, 1]
            ax.scatter(d_truth[ok], (p - clim)[ok], s=1, alpha=0.15, color=color, rasterized=True,
                       label=f"{name} (correlation {r:.2f})")
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"true departure ({units})",
               ylabel=f"predicted departure ({units})", title="test years, every station")
        leg = ax.legend(loc="upper left", markerscale=6)
        for h in leg.legend_handles:
            h.set_alpha(1)
        # the station closest to the median error of the network
        err = np.nanmean((net - truth) ** 2, axis=0)
        s = int(np.nanargmin(np.abs(err - np.nanmedian(err))))
        ax = axes[1]
        t = data.times["test"].astype("datetime64[M]").astype("datetime64[D]")
        dep = lambda a: a[:, s] - clim[:, s]
        ax.plot(t, dep(truth), "k.-", lw=0.6, ms=2, label="truth")
        if lin is not None:
            ax.plot(t, dep(lin), "-", color="C1", lw=0.8, label="per-station linear")
        ax.plot(t, dep(net), "-", color="C0", lw=0.8, label=_net_name(network_key))
        ax.axhline(0, color="0.5", lw=0.6, label="climatology")
        ax.set(ylabel=f"departure from the climatology ({units})",
               title=f"station {data.series.ids[s]} ({data.series.names[s].title()}), a median error")
        ax.legend(loc="upper left", ncol=4, fontsize=6)
    return fig


def _net_name(key: str) -> str:
    net, K = key.split("|")
    return f"{net}, K = {K}"


def error_map_figure(reg: dict, network_key: str, units: str):
    """Test MSE per station of a network (seed mean) on the map, and its difference from the
    per-station linear baseline (blue: the network is better)."""
    plt = _setup()
    data = reg["_data"]
    series = data.series
    mse = np.asarray(reg["per_station_mse"][network_key])
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 2, figsize=(_WIDTH, 2.8), constrained_layout=True)
        ax = axes[0]
        sc = ax.scatter(series.lon, series.lat, c=mse, cmap="viridis", s=14, edgecolors="k", linewidths=0.2)
        _map_axes(ax, series.lon, series.lat)
        ax.set_title(f"{_net_name(network_key)}: test MSE per station")
        _colorbar(fig, sc, ax, f"MSE ({units}²)")
        ax = axes[1]
        if "per_station_linear|None" in reg["per_station_mse"]:
            diff = mse - np.asarray(reg["per_station_mse"]["per_station_linear|None"])
            lim = np.nanpercentile(np.abs(diff), 98)
            sc = ax.scatter(series.lon, series.lat, c=diff, cmap="RdBu_r", vmin=-lim, vmax=lim, s=14, edgecolors="k",
                            linewidths=0.2)
            _colorbar(fig, sc, ax, f"difference ({units}²)")
            ax.set_title(f"minus per-station linear: better at {int(np.sum(diff < 0))} of {diff.size} stations")
        _map_axes(ax, series.lon, series.lat)
    return fig


def month_figure(mon: dict):
    """Confusion matrices (test snapshots, rows normalised) of the per-station naive Bayes, the
    all-station LDA and the graph CNN (first seed of each K)."""
    from ...data.station_tasks import MONTH_NAMES

    plt = _setup()
    keys = list(mon["confusion"])
    names = {"per_station_bayes": "per-station naive Bayes", "lda": "all-station LDA"}
    ncols = min(len(keys), 2)
    nrows = -(-len(keys) // ncols)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(_WIDTH * ncols / 2, 3.1 * nrows), constrained_layout=True,
                                 squeeze=False)
        for ax, key in zip(axes.ravel(), keys):
            m = np.asarray(mon["confusion"][key], dtype=float)
            im = ax.imshow(m / np.maximum(m.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(12), [n[0] for n in MONTH_NAMES])
            ax.set_yticks(range(12), [n[0] for n in MONTH_NAMES])
            ax.set(xlabel="predicted month", ylabel="true month")
            name = names.get(key) or f"graph CNN, K = {key.split('|')[1]} (first seed)"
            ax.set_title(f"{name}: {100 * np.trace(m) / m.sum():.1f}%")
        for ax in axes.ravel()[len(keys):]:
            ax.axis("off")
        _colorbar(fig, im, axes.ravel()[:len(keys)].tolist(), "fraction of the true month")
    return fig


def draw_all(cfg, out: Path, splits, graph: dict, reg: dict | None, mon: dict | None, raw=None) -> list[Path]:
    """Every picture the run can draw; returns the files written."""
    data = splits.info["data"]
    series, units = data.series, data.series.units
    written = []
    period = splits.info["selection"]["period"]
    written.append(_save(graph_figure(splits.sampling, series, graph, cfg.graph.neighbours, cfg.graph.kernel_width,
                                      cfg.graph.laplacian, raw=raw, period=period), out / "stations_graph.png"))
    width = cfg.graph.kernel_width if isinstance(cfg.graph.kernel_width, str) else "paper"
    written.append(_save(spectrum_figure(graph["spectral"], series, width), out / "stations_spectrum.png"))
    if reg is not None:
        nets = [k for k in reg["_preds"] if not k.startswith(("climatology", "per_station"))]
        if nets:
            key = max(nets, key=lambda k: (k.split("|")[0] == nets[0].split("|")[0], int(k.split("|")[1])))
            written.append(_save(predictions_figure(reg, key, units), out / "stations_predictions.png"))
            written.append(_save(error_map_figure(reg, key, units), out / "stations_error_map.png"))
    if mon is not None:
        written.append(_save(month_figure(mon), out / "stations_month.png"))
    return written
