"""``graphsphere spectrum | alignment | filter``: the graph spectrum against
l(l+1), the alignment of graph Fourier modes with spherical harmonics, and a
heat-kernel filter compared with ``healpy.smoothing``. Each prints its numbers
and writes a PNG into ``--out`` (default ``out/<command>``).

    graphsphere spectrum --sampling healpix:16 --neighbours 8
    graphsphere alignment --sampling healpix:16 --neighbours 8 --lmax 12 --out out/alignment
    graphsphere filter --sampling healpix:64 --neighbours 8 --fwhm 10 --cheb-terms 20
"""

from __future__ import annotations

import time


def _graph(args, healpix_only: str | None = None):
    import graphsphere as gs
    from graphsphere import kernel_widths

    from .options import samplings

    (sampling,) = samplings(args.sampling)
    if healpix_only and not (isinstance(sampling, gs.sampling.HEALPix) and sampling.full_sphere):
        raise ValueError(f"{healpix_only} needs a full-sky HEALPix sampling (e.g. --sampling healpix:64), "
                         f"got {sampling.describe()}")
    kw = args.kernel_width
    if kw == "published":  # the DeepSphere v2 widths (and their sigma * nside law), fixed for reproducible docs
        if not isinstance(sampling, gs.sampling.HEALPix):
            raise ValueError(f"--kernel-width published: the published widths are HEALPix's, got "
                             f"{sampling.describe()}; use tuned, mean or a number")
        kw = kernel_widths.sigma_to_t(kernel_widths.published_sigma(sampling.nside, args.neighbours))
    return gs.SphereGraph(sampling, k=args.neighbours, kernel_width=kw, laplacian=args.laplacian)


def _name(g) -> str:
    """A short name of a graph's sampling and neighbours for titles."""
    return f"{g.sampling.describe()}, k={g.k}"


def _kernel_width(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def _common(p, sampling: str, command: str) -> None:
    from .options import add_neighbours, add_out, add_sampling

    add_sampling(p, sampling)
    add_neighbours(p)
    p.add_argument("--kernel-width", type=_kernel_width, default="auto",
                   help="auto | tuned | published | mean | a number t (default auto)")
    p.add_argument("--laplacian", choices=["normalized", "combinatorial"], default="normalized")
    add_out(p, command)


def run_spectrum(args) -> int:
    from ..plot.maps import savefig
    from ..plot.spectral import plot_spectrum
    from ..spectral import graph_spectrum_vs_ll1, harmonic_degree_groups
    from .options import output_path

    g = _graph(args)
    t0 = time.perf_counter()
    fit = graph_spectrum_vs_ll1(g, lmax=args.lmax, method=args.method)
    res = g.sampling.resolution()
    print(f"{g!r}\n{fit.method}: lambda_l ~ c l(l+1) with c = {fit.scale:.5g} (c resolution^2 = "
          f"{fit.scale * res**2:.4f}, resolution sqrt(npix/12) = {res:.4g}), {time.perf_counter() - t0:.1f} s")
    groups = harmonic_degree_groups(fit.eigenvalues, args.lmax) if fit.eigenvalues is not None else None
    print("   l  value       c l(l+1)    ratio   spread   gap")
    for l in fit.ell:
        extra = "" if groups is None else f"  {groups.spread[l]:7.4f}  {groups.gap[l]:6.3f}"
        ratio = f"{fit.ratio[l]:6.4f}" if l else "     -"
        print(f"{l:4d}  {fit.value[l]:.4e}  {fit.scale * fit.ll1[l]:.4e}  {ratio}{extra}")
    path = output_path(args.out, "spectrum.png")
    savefig(plot_spectrum(fit, title=f"{_name(g)}: graph spectrum vs l(l+1)"), path)
    print(f"wrote {path}")
    return 0


def run_alignment(args) -> int:
    import numpy as np

    from ..plot.maps import savefig
    from ..plot.spectral import plot_alignment
    from ..spectral import alignment_matrix
    from .options import output_path

    g = _graph(args)
    t0 = time.perf_counter()
    A = alignment_matrix(g, lmax=args.lmax, lmax_sh=args.lmax_sh)
    print(f"{g!r}\nalignment matrix ({time.perf_counter() - t0:.1f} s); share of group l's energy in degree l:")
    for l, v in enumerate(np.diag(A)):
        print(f"  l={l:3d}: {v:.4f}")
    ax = plot_alignment(A, log=args.log, title=f"{_name(g)}: alignment")
    path = output_path(args.out, "alignment_log.png" if args.log else "alignment.png")
    savefig(ax, path)
    print(f"wrote {path}")
    return 0


def run_filter(args) -> int:
    import healpy as hp
    import numpy as np

    from ..spectral import (
        apply_filter,
        chebyshev_coefficients,
        chebyshev_order,
        fit_ll1_scale,
        gaussian_beam,
        transfer_function,
    )
    from .options import output_path

    g = _graph(args, healpix_only="graphsphere filter (it compares with healpy.smoothing)")
    nside, nest = g.sampling.nside, g.sampling.nest
    fwhm = np.radians(args.fwhm)
    c = fit_ll1_scale(g)
    response = gaussian_beam(fwhm=fwhm, scale=c)
    K = args.cheb_terms or chebyshev_order(response, g.lambda_max, tol=1e-3)
    theta = chebyshev_coefficients(response, K, g.lambda_max)
    print(f"{g!r}\nc = {c:.5g}; beam fwhm {args.fwhm} deg -> heat kernel t = {(fwhm**2 / (8 * np.log(2))) / (2 * c):.4g}"
          f", {K} Chebyshev terms")

    # A delta at (lon, lat) = (0, 30), in the sampling's order, filtered on the graph and by healpy.
    delta = np.zeros(g.npix)
    delta[hp.ang2pix(nside, 0.0, 30.0, lonlat=True, nest=nest)] = 1.0
    apply_filter(g, delta, theta[:2])  # build and cache the operator outside the timing
    t0 = time.perf_counter()
    y = apply_filter(g, delta, theta)
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = _in_order(hp.smoothing(_in_order(delta, nest, to_ring=True), fwhm=fwhm, iter=3, use_pixel_weights=False),
                    nest)
    t_hp = time.perf_counter() - t0
    err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    print(f"delta: graph filter {t_graph * 1e3:.1f} ms, healpy.smoothing {t_hp * 1e3:.1f} ms, "
          f"relative difference {err:.3f}")

    # The transfer function on a Gaussian map with a flat spectrum up to 2 nside.
    rng = np.random.default_rng(0)
    lmax_in = 2 * nside
    ell, m = hp.Alm.getlm(lmax_in)
    alm = rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)
    alm[m == 0] = alm[m == 0].real * np.sqrt(2)
    x = _in_order(hp.alm2map(alm, nside, lmax=lmax_in), nest)
    tf = transfer_function(x, apply_filter(g, x, theta), nest=nest, lmax=lmax_in)
    b2 = hp.gauss_beam(fwhm, lmax=lmax_in) ** 2
    # Compared where the beam^2 is above 1e-2 (below, relative errors only
    # measure the floor) and l <= nside / 2 (where lambda_l ~ c l(l+1) holds).
    band = int(min(nside // 2, np.nonzero(b2 > 1e-2)[0].max()))
    dev = np.abs(tf[1:band + 1] / b2[1:band + 1] - 1).max()
    print(f"transfer function vs beam^2, 1 <= l <= {band}: max relative deviation {dev:.4f}")

    # Radial profiles: value against angular distance from the delta.
    centre = hp.ang2vec(0.0, 30.0, lonlat=True)
    dist = np.degrees(np.arccos(np.clip(g.sampling.xyz @ centre, -1, 1)))
    sigma = fwhm / np.sqrt(8 * np.log(2))
    near = dist < 3 * args.fwhm
    # A unit delta of one pixel's area smoothed by a unit-integral Gaussian beam.
    grid = np.linspace(0, 3 * args.fwhm, 200)
    gauss = hp.nside2pixarea(nside) / (2 * np.pi * sigma**2) * np.exp(-np.radians(grid) ** 2 / (2 * sigma**2))
    path = output_path(args.out, "filter.png")
    _filter_figure(g, K, args.fwhm, y, ref, err, (dist[near], ref[near], y[near], grid, gauss),
                   (response, theta), (np.arange(lmax_in + 1), tf, b2, band), path)
    print(f"wrote {path}")
    return 0


def _in_order(m, nest: bool, to_ring: bool = False):
    """A RING map in the sampling's order (or, ``to_ring``, a map of the sampling's order in RING)."""
    import healpy as hp

    if not nest:
        return m
    return hp.reorder(m, n2r=True) if to_ring else hp.reorder(m, r2n=True)


def _filter_figure(g, K, fwhm_deg, y, ref, err, profile, fit, transfer, path) -> None:
    """Six panels: the filtered delta by the graph and by healpy and their difference (maps), the
    radial profiles, the Chebyshev fit of the response, the transfer function."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..plot import style
    from ..plot.maps import mollview, savefig
    from ..plot.spectral import plot_filter_response, plot_transfer_function

    style.use_agg()
    with plt.rc_context(style.STYLE):
        # the top row as tall as three 2:1 maps and their colourbars need, no more
        fig = plt.figure(figsize=(style.PAGE_WIDTH, 4.1))
        grid = fig.add_gridspec(2, 3, height_ratios=(0.62, 1.0), hspace=0.45, wspace=0.42, top=0.9)
        unit = "filtered unit delta (no unit)"
        vmax = max(y.max(), ref.max())
        kw = {"sampling": g.sampling, "vmin": 0, "vmax": vmax, "cmap": "magma", "unit": unit, "check_order": False}
        mollview(y, ax=fig.add_subplot(grid[0, 0]), title=f"graph filter ({K} terms)", **kw)
        mollview(ref, ax=fig.add_subplot(grid[0, 1]), title=f"healpy.smoothing ({fwhm_deg:g}\u00b0 FWHM)", **kw)
        lim = float(np.abs(y - ref).max())
        mollview(y - ref, ax=fig.add_subplot(grid[0, 2]), sampling=g.sampling, cmap="RdBu_r", vmin=-lim, vmax=lim,
                 unit="graph \u2212 healpy (no unit)", check_order=False, title=f"difference (rel. norm {err:.3f})")
        ax = fig.add_subplot(grid[1, 0])
        dist, ref_near, y_near, line_x, gauss = profile
        ax.plot(dist, ref_near, "o", color="k", ms=2.5, mfc="none", mew=0.5, label="healpy")
        ax.plot(dist, y_near, ".", color="C1", ms=1.5, label="graph")
        ax.plot(line_x, gauss, "C0-", lw=1, label="Gaussian")
        ax.set_xlabel("angular distance from the delta (deg)")
        ax.set_ylabel("filtered delta (no unit)")
        ax.set_title("radial profile")
        ax.legend(loc="upper right", markerscale=1.5, handlelength=1.2)
        response, theta = fit
        plot_filter_response(response, theta, g.lambda_max, ax=fig.add_subplot(grid[1, 1]), logy=True,
                             title="response exp(\u2212t$\\lambda$) and its fit")
        plot_transfer_function(*transfer[:3], band=transfer[3], ax=fig.add_subplot(grid[1, 2]),
                               title="transfer function")
        fig.suptitle(f"{_name(g)}: graph filter vs spherical-harmonic smoothing")
        savefig(fig, path)


def register(sub) -> None:
    from .options import add_cheb_terms

    p = sub.add_parser("spectrum", help="graph Laplacian eigenvalues vs l(l+1) (PNG)")
    _common(p, "healpix:16", "spectrum")
    p.add_argument("--lmax", type=int, default=10, help="highest degree to group and fit (default 10)")
    p.add_argument("--method", choices=["auto", "eig", "rayleigh"], default="eig",
                   help="eigenvalues (eig) or Rayleigh quotients of degree-l maps (default eig)")
    p.set_defaults(func=run_spectrum)

    p = sub.add_parser("alignment", help="alignment of graph Fourier modes with spherical harmonics (PNG)")
    _common(p, "healpix:16", "alignment")
    p.add_argument("--lmax", type=int, default=12, help="highest eigenvector group (default 12)")
    p.add_argument("--lmax-sh", type=int, default=None, help="highest harmonic degree shown (default lmax)")
    p.add_argument("--log", action="store_true", help="log colour scale (shows the small leaks)")
    p.set_defaults(func=run_alignment)

    p = sub.add_parser("filter", help="heat-kernel graph filter vs healpy.smoothing (PNG)")
    _common(p, "healpix:64", "filter")
    p.add_argument("--fwhm", type=float, default=15.0, help="beam FWHM in degrees (default 15)")
    add_cheb_terms(p, None, help="terms of the Chebyshev polynomial (default: the fewest within 1e-3 of the beam)")
    p.set_defaults(func=run_filter)
