"""``graphsphere demo``: graphs of every sampling, their statistics, a filtered map.

A real end-to-end run of the foundation in a few seconds: it builds the graph
of each sampling at a comparable number of pixels (or of the ``--sampling``
specs given), prints vertices, edges, degrees, edge lengths, build times and
the Laplacian's largest eigenvalue, then smooths white noise on each with a
Chebyshev heat-kernel filter and draws both, one row per sampling.

    graphsphere demo                                   # out/demo/graphs.md, out/demo/filtered_maps.png
    graphsphere demo --sampling healpix:32 gl:48 --neighbours 20 --out out/demo20
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np


def demo_samplings(scale: int = 1):
    """One sampling of each scheme with about ``3072 * scale**2`` pixels."""
    import graphsphere as gs

    rng = np.random.default_rng(0)
    n = 3072 * scale**2
    lon = rng.uniform(0, 360, n)
    lat = np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))
    return [
        gs.sampling.HEALPix(nside=16 * scale),
        gs.sampling.Equiangular(nlat=40 * scale, nlon=80 * scale, poles="SOFT"),
        gs.sampling.GaussLegendre(nlat=40 * scale),
        gs.sampling.Icosahedral(level=4 + (scale.bit_length() - 1)),
        gs.sampling.Points(lon=lon, lat=lat),
    ]


def graph_table(samplings, k: int = 8) -> tuple[list[dict], list]:
    """Build each sampling's graph; return one row of statistics per graph, and the graphs."""
    import graphsphere as gs

    rows, graphs = [], []
    for s in samplings:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # disconnected graphs are reported in the table
            warnings.simplefilter("ignore", UserWarning)
            g = gs.SphereGraph(s, k=k)
        t1 = time.perf_counter()
        lambda_max = g.lambda_max
        st = g.stats()
        rows.append({"sampling": s.describe(), "npix": s.npix, "edges": st["edges"],
                     "degree": f"{st['neighbours_min']}-{st['neighbours_max']}",
                     "edge (deg)": round(st["edge_deg_mean"], 3), "t": f"{g.t:.3g}",
                     "lambda_max": round(lambda_max / 1.02, 4), "components": g.n_components,
                     "build (s)": round(t1 - t0, 3)})
        graphs.append(g)
    return rows, graphs


def filtered_maps_figure(graphs, path: Path, fwhm_deg: float = 20.0) -> None:
    """White noise on each sampling and the same noise smoothed by a Chebyshev heat-kernel
    filter (a Gaussian beam of ``fwhm_deg`` through lambda ~ c l(l+1)), side by side: one
    row per sampling, each map drawn as its pixels' cells, one colour scale per column."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .. import spectral
    from ..plot import maps, style

    rng = np.random.default_rng(0)
    noise = [rng.standard_normal(g.npix) for g in graphs]
    smooth = [spectral.smooth(g, x, fwhm=np.radians(fwhm_deg)) for g, x in zip(graphs, noise)]
    # one symmetric scale per column: the same colour is the same value on every sampling
    limits = [float(np.percentile(np.abs(np.concatenate(v)), q)) for v, q in ((noise, 99), (smooth, 99.5))]
    units = ["value (arbitrary units, std 1)", "value (units of the white noise)"]
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig, axes = plt.subplots(len(graphs), 2, figsize=(style.PAGE_WIDTH, 1.75 * len(graphs) + 0.9),
                                 subplot_kw={"projection": "mollweide"}, squeeze=False)
        for row, g in enumerate(graphs):
            for col, values in enumerate((noise[row], smooth[row])):
                maps.mapview(g.sampling, values, ax=axes[row, col], cmap="RdBu_r", vmin=-limits[col],
                             vmax=limits[col], colorbar=False)
            axes[row, 0].set_ylabel(f"{type(g.sampling).__name__}\n{g.npix:,} pixels", labelpad=14)
        axes[0, 0].set_title("white noise (unit variance)", pad=6)
        axes[0, 1].set_title(f"heat-kernel filtered: {fwhm_deg:g} deg Gaussian beam", pad=6)
        for col in (0, 1):
            scale = ScalarMappable(norm=Normalize(-limits[col], limits[col]), cmap="RdBu_r")
            style.colorbar(scale, axes[:, col].tolist(), units[col], shrink=0.8, pad=0.03, fraction=0.02, aspect=40)
        maps.savefig(fig, path)


def format_table(rows: list[dict]) -> str:
    """A markdown table of dict rows."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def run(args) -> int:
    from .options import samplings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = samplings(args.sampling) if args.sampling else demo_samplings(args.scale)
    rows, graphs = graph_table(chosen, k=args.neighbours)
    table = format_table(rows)
    print(table)
    (out / "graphs.md").write_text(table + "\n")
    print(f"wrote {out / 'graphs.md'}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is missing: no picture (pip install -e '.[plot]' in the repository)")
        return 0
    filtered_maps_figure(graphs, out / "filtered_maps.png")
    print(f"wrote {out / 'filtered_maps.png'}")
    return 0


def register(sub) -> None:
    from .options import add_neighbours, add_out, add_sampling

    p = sub.add_parser("demo", help="graphs of every sampling, their statistics, a filtered map",
                       description="Build the graph of each sampling, print its statistics and filter a white-noise "
                                   "map on it. Default: one sampling of each kind, ~3072 x scale^2 pixels.")
    add_sampling(p, None, multiple=True, help="samplings to use instead of the default five, e.g. healpix:32 gl:40")
    p.add_argument("--scale", type=int, default=1, choices=[1, 2, 4],
                   help="resolution multiplier of the default samplings (default 1)")
    add_neighbours(p)
    add_out(p, "demo")
    p.set_defaults(func=run)
