"""``graphsphere equivariance`` and ``graphsphere tune``: measure how
rotation-equivariant graph Laplacians are, and tune their kernel widths.

    graphsphere equivariance --sampling healpix:64 --graphs k8:mean k8:tuned k20:tuned k40:tuned \\
        --degrees 10 50 100 190 --rotation accurate non_iterated --out out/equivariance
    graphsphere equivariance --sampling equiangular:192 --graphs grid --degrees 10 50 100 190
    graphsphere tune --table graphsphere/data/kernel_widths.json --out out/tune     # the shipped table
    graphsphere tune --sampling healpix:256 --neighbours 40 --out out/more

Samplings are written as ``graphsphere.sampling.parse_spec`` reads them:
``healpix:NSIDE``, ``equiangular:NLAT`` (``NLATxNLON``, default ``nlon = 2
nlat``, Driscoll-Healy poles; ``equiangular-soft:`` for SOFT), ``gl:NLAT``
(Gauss-Legendre) and ``icosahedral:LEVEL``. Graphs are
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


def parse_graph(spec: str, sampling):
    """``(label, graph)`` for a graph spec such as ``k20:tuned`` or ``grid``.

    >>> from graphsphere.sampling import parse_spec
    >>> parse_graph("k8:t=0.01", parse_spec("healpix:4"))[0]
    'k=8, t=0.01'
    """
    try:
        return _parse_graph(spec, sampling)
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot build graph {spec!r} on {sampling.describe()}: {err}") from None


def _parse_graph(spec: str, sampling):
    from graphsphere import SphereGraph
    from graphsphere import kernel_widths as kw
    from graphsphere.sampling import HEALPix

    if spec == "grid":
        return "4-neighbour grid", SphereGraph(sampling, k=4, neighbours="grid")
    head, _, width = spec.partition(":")
    if not head.startswith("k") or not head[1:].isdigit():
        raise ValueError("use kK:WIDTH (e.g. k20:tuned) or grid")
    k = int(head[1:])
    width = width or "tuned"
    if width == "native":
        return "k=8 HEALPix neighbours, mean", SphereGraph(sampling, k=8, kernel_width="mean", neighbours="healpix")
    if width == "published":
        if not isinstance(sampling, HEALPix):
            raise ValueError("published widths exist for HEALPix only")
        return f"k={k}, published", SphereGraph(sampling, k=k, kernel_width=kw.published_t(sampling.nside, k))
    if width.startswith("t="):
        return f"k={k}, t={width[2:]}", SphereGraph(sampling, k=k, kernel_width=float(width[2:]))
    if width not in ("mean", "tuned"):
        raise ValueError("use a width among mean, tuned, published, native or t=VALUE")
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
    from graphsphere.sampling import parse_spec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with limit_threads(args.threads):
        sampling = parse_spec(args.sampling)
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
    from graphsphere import tuning
    from graphsphere.plot.equivariance import plot_tuning
    from graphsphere.sampling import parse_spec

    plan = DEFAULT_PLAN if not args.sampling else [(args.sampling, args.neighbours or [8, 20, 40])]
    if args.neighbours and not args.sampling:
        plan = [(specs, args.neighbours) for specs, _ in plan]
    results = []
    start = time.perf_counter()
    with limit_threads(args.threads):
        for specs, ks in plan:
            for spec in specs:
                sampling = parse_spec(spec)
                for k in ks:
                    r = tuning.tune(sampling, k, cache=not args.no_cache, verbose=args.verbose)
                    results.append(r)
                    pub = f", published {r['sigma_published'] * r['resolution']:.3f}" if "sigma_published" in r else ""
                    print(f"{spec:>16} k={k:<3} sigma*res={r['sigma_resolution']:.3f}{pub}  error {r['objective']:.4g} "
                          f"(heuristic {r['objective_heuristic']:.4g})  {r['seconds']:.1f}s", flush=True)
    table = tuning.make_table(results, law_from_finest=args.law_from_finest)
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
    from .options import add_neighbours, add_out, add_sampling

    p = sub.add_parser("equivariance", help="equivariance error of graph Laplacians against degree",
                       description=__doc__, formatter_class=_raw())
    add_sampling(p, "healpix:32")
    p.add_argument("--graphs", nargs="+", default=["k8:mean", "k8:tuned", "k20:tuned", "k40:tuned"],
                   help="kK:WIDTH with WIDTH in mean, tuned, published, native, t=VALUE; or grid")
    p.add_argument("--degrees", nargs="+", type=int, default=[4, 8, 16, 32, 48, 64])
    p.add_argument("--rotation", nargs="+", default=["accurate"], choices=["accurate", "non_iterated"])
    p.add_argument("--signals", type=int, default=4, help="random signals per degree")
    p.add_argument("--rotations", type=int, default=4, help="random rotations per degree")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (0: leave as is)")
    add_out(p, "equivariance")
    p.set_defaults(func=run_equivariance)

    t = sub.add_parser("tune", help="tune kernel widths for equivariance and write the table",
                       description=__doc__, formatter_class=_raw())
    add_sampling(t, None, multiple=True, help="samplings to tune (default: the shipped table's plan)")
    add_neighbours(t, None, multiple=True, help="neighbour counts to tune (default 8 20 40)")
    t.add_argument("--table", help="where to write the table (default OUT/kernel_widths.json)")
    t.add_argument("--law-from-finest", type=int, default=2,
                   help="fit sigma * resolution = c on this many finest tuned resolutions")
    t.add_argument("--no-cache", action="store_true", help="recompute cached tunings")
    t.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (0: leave as is)")
    t.add_argument("--verbose", action="store_true")
    add_out(t, "tune")
    t.set_defaults(func=run_tune)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter
