"""``graphsphere spectrum | alignment | filter``: the graph spectrum against
l(l+1), the alignment of graph Fourier modes with spherical harmonics, and a
heat-kernel filter compared with ``healpy.smoothing``. Each prints its numbers
and writes a PNG.

    graphsphere spectrum --nside 16 --k 8 --out spectrum.png
    graphsphere alignment --nside 16 --k 8 --lmax 12 --out alignment.png
    graphsphere filter --nside 64 --k 8 --fwhm 10 --out filter.png
"""

from __future__ import annotations

import time


def _graph(args):
    import graphsphere as gs
    from graphsphere import kernel_widths

    kw = args.kernel_width
    if kw == "published":  # the DeepSphere v2 widths (and their sigma * nside law), fixed for reproducible docs
        kw = kernel_widths.sigma_to_t(kernel_widths.published_sigma(args.nside, args.k))
    return gs.SphereGraph(gs.sampling.HEALPix(nside=args.nside), k=args.k, kernel_width=kw,
                          laplacian=args.laplacian)


def _kernel_width(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def _common(p, nside: int, out: str) -> None:
    p.add_argument("--nside", type=int, default=nside, help=f"HEALPix resolution (default {nside})")
    p.add_argument("--k", type=int, default=8, help="neighbours per vertex (default 8)")
    p.add_argument("--kernel-width", type=_kernel_width, default="auto",
                   help="auto | tuned | published | mean | a number t (default auto)")
    p.add_argument("--laplacian", choices=["normalized", "combinatorial"], default="normalized")
    p.add_argument("--out", default=out, help=f"PNG to write (default {out})")


def run_spectrum(args) -> int:
    from ..plot.maps import savefig
    from ..plot.spectral import plot_spectrum
    from ..spectral import graph_spectrum_vs_ll1, harmonic_degree_groups

    g = _graph(args)
    t0 = time.perf_counter()
    fit = graph_spectrum_vs_ll1(g, lmax=args.lmax, method=args.method)
    print(f"{g!r}\n{fit.method}: lambda_l ~ c l(l+1) with c = {fit.scale:.5g} (c nside^2 = "
          f"{fit.scale * args.nside**2:.4f}), {time.perf_counter() - t0:.1f} s")
    groups = harmonic_degree_groups(fit.eigenvalues, args.lmax) if fit.eigenvalues is not None else None
    print("   l  value       c l(l+1)    ratio   spread   gap")
    for l in fit.ell:
        extra = "" if groups is None else f"  {groups.spread[l]:7.4f}  {groups.gap[l]:6.3f}"
        ratio = f"{fit.ratio[l]:6.4f}" if l else "     -"
        print(f"{l:4d}  {fit.value[l]:.4e}  {fit.scale * fit.ll1[l]:.4e}  {ratio}{extra}")
    savefig(plot_spectrum(fit, title=f"HEALPix nside {args.nside}, k={args.k}: graph spectrum vs l(l+1)"), args.out)
    print(f"wrote {args.out}")
    return 0


def run_alignment(args) -> int:
    import numpy as np

    from ..plot.maps import savefig
    from ..plot.spectral import plot_alignment
    from ..spectral import alignment_matrix

    g = _graph(args)
    t0 = time.perf_counter()
    A = alignment_matrix(g, lmax=args.lmax, lmax_sh=args.lmax_sh)
    print(f"{g!r}\nalignment matrix ({time.perf_counter() - t0:.1f} s); share of group l's energy in degree l:")
    for l, v in enumerate(np.diag(A)):
        print(f"  l={l:3d}: {v:.4f}")
    ax = plot_alignment(A, log=args.log, title=f"HEALPix nside {args.nside}, k={args.k}: alignment")
    savefig(ax, args.out)
    print(f"wrote {args.out}")
    return 0


def run_filter(args) -> int:
    import healpy as hp
    import matplotlib.pyplot as plt
    import numpy as np

    from ..plot.maps import mollview, savefig
    from ..plot.spectral import plot_filter_response, plot_transfer_function
    from ..spectral import (
        apply_filter,
        chebyshev_coefficients,
        chebyshev_order,
        fit_ll1_scale,
        gaussian_beam,
        transfer_function,
    )

    g = _graph(args)
    nside = args.nside
    fwhm = np.radians(args.fwhm)
    c = fit_ll1_scale(g)
    response = gaussian_beam(fwhm=fwhm, scale=c)
    K = args.K or chebyshev_order(response, g.lambda_max, tol=1e-3)
    theta = chebyshev_coefficients(response, K, g.lambda_max)
    print(f"{g!r}\nc = {c:.5g}; beam fwhm {args.fwhm} deg -> heat kernel t = {(fwhm**2 / (8 * np.log(2))) / (2 * c):.4g}"
          f", K = {K}")

    # A delta at (lon, lat) = (0, 30), NESTED, filtered on the graph and by healpy.
    delta = np.zeros(g.npix)
    delta[hp.ang2pix(nside, 0.0, 30.0, lonlat=True, nest=True)] = 1.0
    apply_filter(g, delta, theta[:2])  # build and cache the operator outside the timing
    t0 = time.perf_counter()
    y = apply_filter(g, delta, theta)
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = hp.reorder(hp.smoothing(hp.reorder(delta, n2r=True), fwhm=fwhm, iter=3, use_pixel_weights=False), r2n=True)
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
    x = hp.reorder(hp.alm2map(alm, nside, lmax=lmax_in), r2n=True)
    tf = transfer_function(x, apply_filter(g, x, theta), lmax=lmax_in)
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
    fig = plt.figure(figsize=(16, 8))
    vmax = max(y.max(), ref.max())
    kw = {"vmin": 0, "vmax": vmax, "cmap": "magma", "colorbar": True}
    mollview(y, ax=fig.add_subplot(2, 3, 1, projection="mollweide"), title=f"graph heat kernel, K={K}", **kw)
    mollview(ref, ax=fig.add_subplot(2, 3, 2, projection="mollweide"), title=f"healpy.smoothing, fwhm {args.fwhm} deg",
             **kw)
    lim = np.abs(y - ref).max()
    mollview(y - ref, ax=fig.add_subplot(2, 3, 3, projection="mollweide"), cmap="RdBu_r", vmin=-lim, vmax=lim,
             title=f"difference (relative norm {err:.3f})")
    ax = fig.add_subplot(2, 3, 4)
    ax.plot(dist[near], ref[near], "k.", ms=3, label="healpy.smoothing")
    ax.plot(dist[near], y[near], "C1.", ms=2, label="graph filter")
    grid = np.linspace(0, 3 * args.fwhm, 200)
    # A unit delta of one pixel's area smoothed by a unit-integral Gaussian beam.
    ax.plot(grid, hp.nside2pixarea(nside) / (2 * np.pi * sigma**2) * np.exp(-np.radians(grid) ** 2 / (2 * sigma**2)),
            "C0-", lw=1, label="Gaussian (flat-sky)")
    ax.set_xlabel("angular distance from the delta (deg)")
    ax.set_ylabel("filtered delta")
    ax.set_title("radial profile")
    ax.legend()
    plot_filter_response(response, theta, g.lambda_max, ax=fig.add_subplot(2, 3, 5), logy=True,
                         title="response exp(-t lambda), Chebyshev fit")
    plot_transfer_function(np.arange(lmax_in + 1), tf, b2, band=band, ax=fig.add_subplot(2, 3, 6),
                           title="transfer function of a flat-spectrum map")
    fig.suptitle(f"HEALPix nside {nside}, k={args.k}: graph filter vs spherical-harmonic smoothing")
    fig.tight_layout()
    savefig(fig, args.out)
    print(f"wrote {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("spectrum", help="graph Laplacian eigenvalues vs l(l+1) (PNG)")
    _common(p, 16, "spectrum.png")
    p.add_argument("--lmax", type=int, default=10, help="highest degree to group and fit (default 10)")
    p.add_argument("--method", choices=["auto", "eig", "rayleigh"], default="eig",
                   help="eigenvalues (eig) or Rayleigh quotients of degree-l maps (default eig)")
    p.set_defaults(func=run_spectrum)

    p = sub.add_parser("alignment", help="alignment of graph Fourier modes with spherical harmonics (PNG)")
    _common(p, 16, "alignment.png")
    p.add_argument("--lmax", type=int, default=12, help="highest eigenvector group (default 12)")
    p.add_argument("--lmax-sh", type=int, default=None, help="highest harmonic degree shown (default lmax)")
    p.add_argument("--log", action="store_true", help="log colour scale (shows the small leaks)")
    p.set_defaults(func=run_alignment)

    p = sub.add_parser("filter", help="heat-kernel graph filter vs healpy.smoothing (PNG)")
    _common(p, 64, "filter.png")
    p.add_argument("--fwhm", type=float, default=15.0, help="beam FWHM in degrees (default 15)")
    p.add_argument("--K", type=int, default=None, help="Chebyshev order (default: the smallest within 1e-3)")
    p.set_defaults(func=run_filter)
