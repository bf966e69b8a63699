"""Maps on the sphere: a Mollweide view of a HEALPix map, and a scatter of
values at the pixels of any sampling.

matplotlib is imported inside the functions (an optional extra). Both
functions draw on a Mollweide ``Axes`` (made when ``ax`` is None) and return
it, so that they compose into multi-panel figures.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> from graphsphere.plot.maps import mollview, scatter
>>> s = gs.sampling.HEALPix(nside=8)
>>> ax = mollview(s.xyz[:, 2], title="z (NESTED)")          # doctest: +SKIP
>>> ax = scatter(s, s.lonlat[:, 1], title="latitude")        # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ..sampling import Sampling

__all__ = ["mollview", "savefig", "scatter"]


def _mollweide_axes(ax, figsize=(8, 4.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig = plt.figure(figsize=figsize)
        ax = fig.add_subplot(111, projection="mollweide")
    elif getattr(ax, "name", None) != "mollweide":
        raise ValueError("ax must be a Mollweide axes: fig.add_subplot(..., projection='mollweide')")
    ax.set_xticklabels([])
    ax.grid(True, alpha=0.3)
    return ax


def _finish(ax, mesh, title, colorbar, unit):
    if title:
        ax.set_title(title)
    if colorbar:
        cb = ax.figure.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.6, pad=0.05)
        if unit:
            cb.set_label(unit)
    return ax


def mollview(m, nest: bool = True, indices=None, nside: int | None = None, ax=None, title: str | None = None, cmap: str = "viridis",
             vmin: float | None = None, vmax: float | None = None, colorbar: bool = True, unit: str = "",
             flip: str = "astro", resolution: int = 800):
    """Mollweide view of a HEALPix map, NESTED by default.

    ``m`` is a full map (12 nside^2 values), or the values of a partial sky
    with ``indices`` (its pixel ids) and ``nside``; the rest of the sky is blank. NaN
    and ``healpy.UNSEEN`` pixels are blank. ``flip="astro"`` puts longitude 0
    in the middle increasing to the left, as ``healpy.mollview`` does;
    ``"geo"`` increases to the right. ``resolution``: grid columns.
    """
    import healpy as hp

    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 1:
        raise ValueError(f"a HEALPix map is 1-D, got shape {m.shape}")
    if indices is not None:
        ids = np.asarray(indices)
        if ids.shape != m.shape:
            raise ValueError(f"{m.size} values for {ids.size} indices")
        if nside is None:
            raise ValueError("a partial map (indices=...) needs its nside: mollview(values, indices=ids, nside=...)")
        full = np.full(12 * int(nside) ** 2, np.nan)
        full[ids] = m
        m = full
    try:
        nside = hp.npix2nside(m.size)
    except ValueError:
        raise ValueError(f"{m.size} values is not a full HEALPix map (12 nside^2); for a partial sky "
                         "pass its pixel ids as indices=") from None
    if flip not in ("astro", "geo"):
        raise ValueError(f"flip must be 'astro' or 'geo', got {flip!r}")
    m = np.where(m == hp.UNSEEN, np.nan, m)
    ax = _mollweide_axes(ax)
    # Cell centres of a lon/lat grid, looked up in the map (nearest pixel).
    nx, ny = int(resolution), int(resolution) // 2
    x_edges = np.linspace(-np.pi, np.pi, nx + 1)
    y_edges = np.linspace(-np.pi / 2, np.pi / 2, ny + 1)
    xc, yc = (x_edges[:-1] + x_edges[1:]) / 2, (y_edges[:-1] + y_edges[1:]) / 2
    X, Y = np.meshgrid(xc, yc)
    lon = -X if flip == "astro" else X
    pix = hp.ang2pix(nside, np.pi / 2 - Y, np.mod(lon, 2 * np.pi), nest=nest)
    img = np.ma.masked_invalid(m[pix])
    mesh = ax.pcolormesh(x_edges, y_edges, img, cmap=cmap, vmin=vmin, vmax=vmax, shading="flat",
                         rasterized=True)
    return _finish(ax, mesh, title, colorbar, unit)


def scatter(sampling, values, ax=None, title: str | None = None, cmap: str = "viridis", s: float | None = None,
            vmin: float | None = None, vmax: float | None = None, colorbar: bool = True, unit: str = "",
            flip: str = "geo"):
    """Values at the pixels of any sampling, as dots on a Mollweide view.

    ``sampling`` is a graphsphere ``Sampling`` or an (n, 2) array of
    (lon, lat) in degrees. ``flip="geo"``: east to the right (maps, weather);
    ``"astro"`` as ``mollview``. ``s``: dot size (default from the count).
    """
    lonlat = np.asarray(sampling.lonlat if isinstance(sampling, Sampling) else sampling, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).ravel()
    if lonlat.ndim != 2 or lonlat.shape[1] != 2:
        raise ValueError(f"coordinates must be (n, 2) lon/lat in degrees, got shape {lonlat.shape}")
    if values.size != lonlat.shape[0]:
        raise ValueError(f"{values.size} values for {lonlat.shape[0]} points")
    if flip not in ("astro", "geo"):
        raise ValueError(f"flip must be 'astro' or 'geo', got {flip!r}")
    ax = _mollweide_axes(ax)
    lon = np.radians((lonlat[:, 0] + 180.0) % 360.0 - 180.0)
    if flip == "astro":
        lon = -lon
    lat = np.radians(lonlat[:, 1])
    if s is None:  # dots that roughly tile the view
        s = float(np.clip(2e4 / max(values.size, 1), 0.2, 40))
    sc = ax.scatter(lon, lat, c=values, s=s, cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0, rasterized=True)
    return _finish(ax, sc, title, colorbar, unit)


def savefig(fig_or_ax, path, dpi: int = 110) -> None:
    """Save a figure (or the figure of an axes) as PNG, making parent folders, and close it."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
