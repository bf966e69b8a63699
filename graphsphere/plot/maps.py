"""Maps on the sphere: HEALPix maps through ``healpy.mollview``, maps of any
sampling drawn as their pixels' cells, and dots for scattered points.

* :func:`mollview`: a HEALPix map (full or partial sky) by ``healpy.mollview``.
  The ordering is never guessed: say ``nest=True`` (graphsphere's order) or
  ``nest=False`` (RING, healpy's default), or pass the ``sampling``; a
  full-sky map that looks like the other ordering is refused with the fix
  (:func:`graphsphere.sampling.check_map_order`).
* :func:`mapview`: values on any sampling (grids, icosahedral meshes, points),
  each point of the view coloured by its nearest pixel: a gap-free picture
  whatever the sampling.
* :func:`scatter`: dots at the pixels (stations, sparse points).

Each draws on a given ``ax`` (or a new figure), adds a colourbar labelled with
``unit``, and returns the axes it drew on.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> from graphsphere.plot.maps import mollview, mapview
>>> s = gs.sampling.HEALPix(nside=8)
>>> ax = mollview(s.xyz[:, 2], nest=True, title="z", unit="unit vector z")
>>> ax = mapview(gs.sampling.GaussLegendre(nlat=8), np.arange(128.0), unit="index")
>>> mollview(s.xyz[:, 2], nest=False)          # a NESTED map read as RING is refused
Traceback (most recent call last):
...
ValueError: mollview(nest=False): this map looks NESTED-ordered but RING is expected ...
"""

from __future__ import annotations

import warnings

import numpy as np

from ..sampling import HEALPix, Sampling, check_map_order
from .style import PAGE_WIDTH, colorbar, styled

__all__ = ["mollview", "mapview", "savefig", "scatter"]


def _mollweide_axes(ax, figsize=(PAGE_WIDTH / 2, PAGE_WIDTH / 4 + 0.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig = plt.figure(figsize=figsize)
        ax = fig.add_subplot(111, projection="mollweide")
    elif getattr(ax, "name", None) != "mollweide":
        raise ValueError("ax must be a Mollweide axes: fig.add_subplot(..., projection='mollweide')")
    ax.set_xticklabels([])
    ax.set_yticks(np.radians([-60, -30, 0, 30, 60]))
    ax.tick_params(labelsize=6)
    ax.grid(True, alpha=0.3, lw=0.5)
    return ax


def _finish(ax, mappable, title, colorbar_on, unit):
    if title:
        ax.set_title(title, pad=4)
    if colorbar_on:
        colorbar(mappable, ax, unit)
    return ax


def _resolve_order(nest, sampling, indices, nside):
    if sampling is not None:
        if not isinstance(sampling, HEALPix):
            raise ValueError(f"mollview draws HEALPix maps; for {sampling.describe()} use "
                             "graphsphere.plot.mapview(sampling, values)")
        if nest is not None and nest != sampling.nest:
            raise ValueError(f"nest={nest} contradicts the sampling, which is {'NESTED' if sampling.nest else 'RING'}")
        return sampling.nest, sampling.indices, sampling.nside
    if nest is None:
        raise ValueError("mollview needs the map's ordering: nest=True (NESTED, graphsphere's order) or "
                         "nest=False (RING, healpy's default), or sampling=<its HEALPix sampling>")
    return bool(nest), indices, nside


@styled
def mollview(m, nest: bool | None = None, *, sampling=None, indices=None, nside: int | None = None, ax=None,
             title: str | None = None, unit: str = "", cmap: str = "viridis", vmin: float | None = None,
             vmax: float | None = None, colorbar: bool = True, flip: str = "astro", check_order: bool = True,
             **healpy_kwargs):
    """Mollweide view of a HEALPix map, drawn by ``healpy.mollview``.

    ``m`` is a full map (12 nside^2 values), or the values of a partial sky
    with ``indices`` (its pixel ids, in the map's ordering) and ``nside``;
    the rest of the sky is grey, as are NaN and ``healpy.UNSEEN`` pixels.
    ``nest`` (required unless ``sampling`` says it) is the map's ordering.
    A full-sky map that is much smoother read in the other ordering is
    refused, missing pixels or not, as ``HEALPix.check_map`` refuses it
    (``check_order=False`` draws it anyway). ``ax``: an axes to
    replace by the map (any projection; healpy draws on its own axes at that
    place). Other keywords go to ``healpy.mollview`` (``rot``, ``coord``,
    ``norm``, ...). Returns healpy's axes.
    """
    import healpy as hp
    import matplotlib.pyplot as plt

    nest, indices, nside = _resolve_order(nest, sampling, indices, nside)
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 1:
        raise ValueError(f"a HEALPix map is 1-D, got shape {m.shape}")
    if indices is not None:
        ids = np.asarray(indices)
        if ids.shape != m.shape:
            raise ValueError(f"{m.size} values for {ids.size} indices")
        if nside is None:
            raise ValueError("a partial map (indices=...) needs its nside: mollview(values, indices=ids, nside=...)")
        full = np.full(12 * int(nside) ** 2, hp.UNSEEN)
        full[ids] = m
        m = full
    elif not hp.isnpixok(m.size):
        raise ValueError(f"{m.size} values is not a full HEALPix map (12 nside^2); for a partial sky "
                         "pass its pixel ids as indices=")
    if flip not in ("astro", "geo"):
        raise ValueError(f"flip must be 'astro' or 'geo', got {flip!r}")
    m = np.where(np.isfinite(m), m, hp.UNSEEN)
    if check_order and indices is None:  # missing pixels (NaN, UNSEEN) are left out of the check, not the map
        try:
            check_map_order(m, nest=nest)
        except ValueError as e:
            raise ValueError(f"mollview(nest={nest}): {e}; or draw it as it is with nest={not nest} "
                             "(check_order=False skips this check)") from None
    if ax is None:
        fig = plt.figure(figsize=(PAGE_WIDTH / 2, PAGE_WIDTH / 4 + 0.5))
        fig.add_subplot(111)
    else:
        fig = ax.figure
        plt.figure(fig.number)
        fig.sca(ax)
    before = set(fig.axes) - {fig.gca()}
    with warnings.catch_warnings():  # healpy 1.20 calls colormap setters that matplotlib 3.11 plans to deprecate
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        hp.mollview(m, nest=nest, fig=fig.number, hold=True, title="", unit="", cmap=cmap, min=vmin, max=vmax,
                    flip=flip, cbar=False, badcolor="0.85", **healpy_kwargs)
    new = [a for a in fig.axes if a not in before]
    hax = new[-1]
    if title:
        hax.set_title(title, fontsize=plt.rcParams["axes.titlesize"], pad=4)
    if colorbar:  # on a plain linear scale of the image's limits (healpy's own norm confuses tick locators)
        import matplotlib.colors as mcolors
        from matplotlib.cm import ScalarMappable

        from .style import colorbar as add_colorbar

        im = hax.get_images()[0]
        scale = ScalarMappable(norm=mcolors.Normalize(im.norm.vmin, im.norm.vmax), cmap=im.get_cmap())
        add_colorbar(scale, hax, unit)
    return hax


def _cell_image(xyz: np.ndarray, values: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Each grid point (lon, lat in radians) takes the value of the nearest sampling point."""
    from scipy.spatial import cKDTree

    clat = np.cos(lat)
    grid = np.stack([clat * np.cos(lon), clat * np.sin(lon), np.sin(lat)], axis=-1)
    _, nearest = cKDTree(xyz).query(grid.reshape(-1, 3))
    return values[nearest].reshape(lon.shape)


@styled
def mapview(sampling, values, ax=None, title: str | None = None, unit: str = "", cmap: str = "viridis",
            vmin: float | None = None, vmax: float | None = None, colorbar: bool = True, flip: str = "geo",
            resolution: int = 720):
    """Values on any sampling as a filled Mollweide map: every point of the view
    takes the value of the nearest pixel (the pixels' Voronoi cells), so that no
    sampling leaves gaps. ``sampling``: a graphsphere ``Sampling`` (values in its
    data order); ``flip="geo"``: east to the right, ``"astro"``: as ``mollview``;
    ``resolution``: columns of the image (rows: half).
    """
    if not isinstance(sampling, Sampling):
        raise ValueError("mapview takes a graphsphere Sampling; for bare lon/lat points use scatter()")
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size != sampling.npix:
        raise ValueError(f"{values.size} values for the {sampling.npix} pixels of {sampling.describe()}")
    if flip not in ("astro", "geo"):
        raise ValueError(f"flip must be 'astro' or 'geo', got {flip!r}")
    ax = _mollweide_axes(ax)
    nx, ny = int(resolution), int(resolution) // 2
    x_edges = np.linspace(-np.pi, np.pi, nx + 1)
    y_edges = np.linspace(-np.pi / 2, np.pi / 2, ny + 1)
    X, Y = np.meshgrid((x_edges[:-1] + x_edges[1:]) / 2, (y_edges[:-1] + y_edges[1:]) / 2)
    img = _cell_image(np.asarray(sampling.xyz, dtype=np.float64), values, -X if flip == "astro" else X, Y)
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(img), cmap=cmap, vmin=vmin, vmax=vmax,
                         shading="flat", rasterized=True)
    return _finish(ax, mesh, title, colorbar, unit)


@styled
def scatter(sampling, values, ax=None, title: str | None = None, cmap: str = "viridis", s: float | None = None,
            vmin: float | None = None, vmax: float | None = None, colorbar: bool = True, unit: str = "",
            flip: str = "geo"):
    """Values at scattered points (weather stations, a sparse sample), as dots on
    a Mollweide view; for a sampling that covers the sphere, :func:`mapview`
    leaves no gaps.

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
    if s is None:  # dots that stay apart at the default figure size
        s = float(np.clip(4e3 / max(values.size, 1), 0.2, 30))
    sc = ax.scatter(lon, lat, c=values, s=s, cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0, rasterized=True)
    return _finish(ax, sc, title, colorbar, unit)


def savefig(fig_or_ax, path, dpi: int | None = None) -> None:
    """Save a figure (or the figure of an axes) as PNG at print resolution
    (:data:`graphsphere.plot.style.DPI`), atomically, making parent folders; then close it."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ..files import atomic_write
    from .style import DPI

    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi or DPI, bbox_inches="tight")
    plt.close(fig)
