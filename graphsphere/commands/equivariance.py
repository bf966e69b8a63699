"""``graphsphere equivariance`` and ``graphsphere tune``: measure how
rotation-equivariant graph Laplacians are, and tune their kernel widths.

    graphsphere equivariance --sampling healpix:64 --graphs k8:mean k8:tuned k20:tuned k40:tuned \\
        --degrees 10 50 100 190 --rotation accurate non_iterated --out out/equivariance
    graphsphere equivariance --sampling equiangular:192 --graphs grid --degrees 10 50 100 190
    graphsphere tune --table graphsphere/data/kernel_widths.json --out out/tune     # the shipped table

Samplings are written ``healpix:NSIDE``, ``equiangular:NLAT`` (``NLATxNLON``,
default ``nlon = 2 nlat``, Driscoll-Healy poles; ``equiangular-soft:`` for
SOFT), ``gl:NLAT`` (Gauss-Legendre) and ``icosahedral:LEVEL``. Graphs are
``kK:WIDTH`` with WIDTH one of ``mean`` (heuristic), ``tuned`` (the shipped
table), ``published`` (DeepSphere v2 HEALPix widths), ``native`` (the 8
HEALPix neighbours, heuristic width, as in the 2019 paper) or ``t=VALUE``;
or ``grid``, the 4-neighbour graph of a latitude-longitude grid.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

#: What ``graphsphere tune`` tunes by default: (sampling specs, k values).
#: About 10 minutes on one core; HEALPix nside 128 takes most of it.
DEFAULT_PLAN = [
    (["healpix:8", "healpix:16", "healpix:32", "healpix:64", "healpix:128"], [8, 20, 40]),
    (["equiangular:16", "equiangular:32", "equiangular:64"], [8, 20, 40]),
    (["gl:16", "gl:32", "gl:64"], [8, 20, 40]),
    (["icosahedral:2", "icosahedral:3", "icosahedral:4"], [6, 8, 20, 40]),
]


def parse_sampling(spec: str):
    """A sampling from a short spec such as ``healpix:64`` (see the module docstring).

    >>> parse_sampling("gl:8").grid_shape
    (8, 16)
    """
    from graphsphere.sampling import HEALPix

    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    try:
        if name == "healpix":
            return HEALPix(nside=int(arg))
        if name in ("equiangular", "equiangular-soft", "equiangular-dh"):
            from graphsphere.sampling.equiangular import Equiangular

            nlat, _, nlon = arg.lower().partition("x")
            poles = "SOFT" if name.endswith("soft") else "DH"
            return Equiangular(int(nlat), int(nlon) if nlon else 2 * int(nlat), poles=poles)
        if name in ("gl", "gausslegendre", "gauss-legendre"):
            from graphsphere.sampling.gauss_legendre import GaussLegendre

            nlat, _, nlon = arg.lower().partition("x")
            return GaussLegendre(int(nlat), int(nlon) if nlon else None)
        if name in ("icosahedral", "ico"):
            from graphsphere.sampling.icosahedral import Icosahedral

            return Icosahedral(int(arg))
    except ValueError as err:
        raise SystemExit(f"bad sampling {spec!r}: {err}") from None
    raise SystemExit(f"unknown sampling {spec!r}: use healpix:NSIDE, equiangular:NLAT[xNLON], "
                     "equiangular-soft:NLAT, gl:NLAT or icosahedral:LEVEL")


def parse_graph(spec: str, sampling):
    """``(label, operator)`` for a graph spec such as ``k20:tuned`` or ``grid``."""
    try:
        return _parse_graph(spec, sampling)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"cannot build graph {spec!r} on {sampling.describe()}: {err}") from None


def _parse_graph(spec: str, sampling):
    from graphsphere import SphereGraph
    from graphsphere.graph import laplacian
    from graphsphere import equivariance as eq
    from graphsphere import kernel_widths as kw

    if spec == "grid":
        return "4-neighbour grid", laplacian(eq.equiangular_grid_graph(sampling))
    head, _, width = spec.partition(":")
    if not head.startswith("k") or not head[1:].isdigit():
        raise SystemExit(f"bad graph {spec!r}: use kK:WIDTH (e.g. k20:tuned) or grid")
    k = int(head[1:])
    width = width or "tuned"
    if width == "native":
        return "k=8 HEALPix neighbours, mean", SphereGraph(sampling, k=8, kernel_width="mean", neighbours="healpix")
    if width == "published":
        if type(sampling).__name__ != "HEALPix":
            raise SystemExit("published widths exist for HEALPix only")
        t = kw.sigma_to_t(kw.published_sigma(sampling.nside, k))
        return f"k={k}, published", SphereGraph(sampling, k=k, kernel_width=t)
    if width.startswith("t="):
        return f"k={k}, t={width[2:]}", SphereGraph(sampling, k=k, kernel_width=float(width[2:]))
    if width not in ("mean", "tuned"):
        raise SystemExit(f"bad width in {spec!r}: use mean, tuned, published, native or t=VALUE")
    return f"k={k}, {width}", SphereGraph(sampling, k=k, kernel_width=width)


def limit_threads(n: int | None):
    """Limit OpenMP/BLAS threads (healpy's transforms slow down 10-100x when
    their OpenMP threads compete with other processes for few cores)."""
    if not n:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


def run_equivariance(args) -> int:
    from graphsphere.equivariance import EquivarianceProbe
    from graphsphere.plot.equivariance import plot_equivariance

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with limit_threads(args.threads):
        sampling = parse_sampling(args.sampling)
        graphs = dict(parse_graph(g, sampling) for g in args.graphs)
        tag = args.sampling.replace(":", "")
        record = {"sampling": sampling.describe(), "results": {}}
        for rotation in args.rotation:
            start = time.perf_counter()
            probe = EquivarianceProbe(sampling, args.degrees, args.signals, args.rotations, args.seed, rotation)
            res = {label: probe.measure(op, label=label) for label, op in graphs.items()}
            for r in res.values():
                print(r, "\n")
            record["results"][rotation] = {k: r.to_dict() for k, r in res.items()}
            record.setdefault("seconds", {})[rotation] = time.perf_counter() - start
            plot_equivariance(res, title=f"{sampling.describe()}, {rotation.replace('_', '-')} rotations",
                              path=out / f"equivariance_{tag}_{rotation}.png")
        (out / f"equivariance_{tag}.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out}/equivariance_{tag}.json and its pictures")
    return 0


def run_tune(args) -> int:
    from graphsphere import kernel_widths as kw
    from graphsphere.plot.equivariance import plot_tuning

    plan = DEFAULT_PLAN if not args.samplings else [(args.samplings, args.k or [8, 20, 40])]
    if args.k and not args.samplings:
        plan = [(specs, args.k) for specs, _ in plan]
    results = []
    start = time.perf_counter()
    with limit_threads(args.threads):
        for specs, ks in plan:
            for spec in specs:
                sampling = parse_sampling(spec)
                for k in ks:
                    r = kw.tune(sampling, k, cache=not args.no_cache, verbose=args.verbose)
                    results.append(r)
                    pub = f", published {r['sigma_published'] * r['resolution']:.3f}" if "sigma_published" in r else ""
                    print(f"{spec:>16} k={k:<3} sigma*res={r['sigma_resolution']:.3f}{pub}  error {r['objective']:.4g} "
                          f"(heuristic {r['objective_heuristic']:.4g})  {r['seconds']:.1f}s", flush=True)
    table = kw.make_table(results, law_from_finest=args.law_from_finest)
    print(f"tuned {len(results)} widths in {time.perf_counter() - start:.0f}s (cached ones are free)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table_path = Path(args.table) if args.table else out / "kernel_widths.json"
    table_path.write_text(json.dumps(table, indent=1) + "\n")
    plot_tuning(table, k=sorted({r["k"] for r in results}), path=out / "kernel_widths.png")
    for name, fam in table["families"].items():
        laws = ", ".join(f"k={k}: {v['c']:.3f}" for k, v in fam["law"].items())
        print(f"{name}: sigma * resolution = {laws}")
    print(f"wrote {table_path} and {out / 'kernel_widths.png'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("equivariance", help="equivariance error of graph Laplacians against degree",
                       description=__doc__, formatter_class=_raw())
    p.add_argument("--sampling", default="healpix:32", help="e.g. healpix:64, equiangular:64, gl:32, icosahedral:4")
    p.add_argument("--graphs", nargs="+", default=["k8:mean", "k8:tuned", "k20:tuned", "k40:tuned"],
                   help="kK:WIDTH with WIDTH in mean, tuned, published, native, t=VALUE; or grid")
    p.add_argument("--degrees", nargs="+", type=int, default=[4, 8, 16, 32, 48, 64])
    p.add_argument("--rotation", nargs="+", default=["accurate"], choices=["accurate", "non_iterated"])
    p.add_argument("--signals", type=int, default=4, help="random signals per degree")
    p.add_argument("--rotations", type=int, default=4, help="random rotations per degree")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (0: leave as is)")
    p.add_argument("--out", default="out/equivariance")
    p.set_defaults(func=run_equivariance)

    t = sub.add_parser("tune", help="tune kernel widths for equivariance and write the table",
                       description=__doc__, formatter_class=_raw())
    t.add_argument("--samplings", nargs="+", help="sampling specs (default: the shipped table's plan)")
    t.add_argument("--k", nargs="+", type=int, help="neighbour counts (default 8 20 40)")
    t.add_argument("--table", help="where to write the table (default OUT/kernel_widths.json)")
    t.add_argument("--law-from-finest", type=int, default=2,
                   help="fit sigma * resolution = c on this many finest tuned resolutions")
    t.add_argument("--no-cache", action="store_true", help="recompute cached tunings")
    t.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (0: leave as is)")
    t.add_argument("--verbose", action="store_true")
    t.add_argument("--out", default="out/tune")
    t.set_defaults(func=run_tune)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter
