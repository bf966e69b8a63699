"""Graphs and balanced coarsening on irregular points (issue 12).

Target: the k-NN graph (k = 5, the paper's kernel width) and the coarsening pyramid of 10,000 random
points on the sphere in under 2 s, with cluster sizes within 2x of each other at every level. Also
measured on the real networks (the 123 Colorado stations of the stations experiment, the 1,720 North
American rainfall stations) and on a clumpy network (cities in a sparse countryside), and the whole
pyramid a pooled model needs (a graph at every level).

Each timing is the median of ``--repeats`` runs in this process, one torch-free NumPy/SciPy thread
(``OMP_NUM_THREADS=1``); the machine is shared, so take the numbers as +-30%.

    python benchmarks/bench_station_graph.py              # writes benchmarks/results/bench_station_graph.md
    python benchmarks/bench_station_graph.py --quick      # 2,000 points only, no real data
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import graphsphere as gs
from graphsphere.experiments.stations.graphs import paper_kernel_width


def random_sphere(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return gs.sampling.Points(lon=rng.uniform(-180, 180, n), lat=np.rad2deg(np.arcsin(rng.uniform(-1, 1, n))))


def clumpy(n: int, seed: int = 0):
    """Half the points in 20 tight 'cities' (0.5 degree), half spread over a 30 x 20 degree region."""
    rng = np.random.default_rng(seed)
    centres = np.c_[rng.uniform(-120, -90, 20), rng.uniform(30, 50, 20)]
    pick = rng.integers(0, 20, n // 2)
    city = centres[pick] + rng.normal(0, 0.5, (n // 2, 2))
    rural = np.c_[rng.uniform(-120, -90, n - n // 2), rng.uniform(30, 50, n - n // 2)]
    ll = np.r_[city, rural]
    return gs.sampling.Points(lon=ll[:, 0], lat=ll[:, 1])


def pyramid_levels(s, min_points: int = 16):
    """Coarsen by 4 while at least ``min_points`` points remain: [(sampling, assign), ...]."""
    levels = []
    cur = s
    while cur.npix // 4 >= max(4, min_points // 4):
        coarse, assign = cur.coarsen()
        levels.append((coarse, assign))
        cur = coarse
    return levels


def measure(name: str, s, k: int = 5, repeats: int = 3) -> dict:
    times = {"graph": [], "coarsen": [], "both": [], "all_graphs": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        t = paper_kernel_width(s, k)
        g = gs.SphereGraph(s, k=k, kernel_width=t)
        g.L  # noqa: B018 - the Laplacian is part of a usable graph
        t1 = time.perf_counter()
        levels = pyramid_levels(s)
        t2 = time.perf_counter()
        for coarse, _ in levels:           # what a pooled model builds on top: a graph per level
            kk = min(k, coarse.npix - 1)
            gs.SphereGraph(coarse, k=kk, kernel_width=paper_kernel_width(coarse, kk)).L  # noqa: B018
        t3 = time.perf_counter()
        times["graph"].append(t1 - t0)
        times["coarsen"].append(t2 - t1)
        times["both"].append(t2 - t0)
        times["all_graphs"].append(t3 - t0)
    sizes = []
    for coarse, assign in levels:
        counts = np.asarray(assign.sum(axis=1)).ravel()
        sizes.append((coarse.npix, int(counts.min()), int(counts.max())))
    return {"name": name, "npix": s.npix, "edges": g.n_edges, "components": g.n_components,
            **{f"{key}_s": float(np.median(v)) for key, v in times.items()}, "levels": sizes}


def table(rows: list[dict]) -> str:
    lines = [("| points | n | edges | graph k=5 (s) | pyramid (s) | graph + pyramid (s) | + graphs at every level (s) "
             "| levels: clusters (min-max size) | worst size ratio |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lv = ", ".join(f"{n} ({a}-{b})" for n, a, b in r["levels"])
        worst = max(b / a for _, a, b in r["levels"]) if r["levels"] else float("nan")
        lines.append(f"| {r['name']} | {r['npix']:,} | {r['edges']:,} | {r['graph_s']:.3f} | {r['coarsen_s']:.3f} | "
                     f"**{r['both_s']:.3f}** | {r['all_graphs_s']:.3f} | {lv} | {worst:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_station_graph.md"))
    args = p.parse_args()
    cases = [("random on the sphere", random_sphere(2000 if args.quick else 10_000))]
    if not args.quick:
        cases.append(("random on the sphere", random_sphere(100_000)))
        cases.append(("clumpy region (20 cities + countryside)", clumpy(10_000)))
        try:
            from graphsphere.data import stations as st

            co = st.read_colorado(variable="tmax")
            start, end = st.best_period(co, 40, 0.9)
            cases.append(("Colorado stations (stations experiment)", st.clean(co, start, end, 0.9).to_points()))
            na = st.read_north_american_rainfall()
            cases.append(("North American rainfall stations", na.to_points()))
        except Exception as e:  # noqa: BLE001 - the real networks are optional (data fetched from Debian)
            print(f"real networks skipped: {e}")
    rows = []
    for name, s in cases:
        r = measure(name, s, repeats=args.repeats)
        rows.append(r)
        print(f"{name}: n={r['npix']}, graph {r['graph_s']:.3f} s, pyramid {r['coarsen_s']:.3f} s, "
              f"both {r['both_s']:.3f} s, with every level's graph {r['all_graphs_s']:.3f} s; sizes {r['levels']}",
              flush=True)
    text = table(rows)
    print(text)
    if not args.quick:
        head = (__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1] + "\n\n"
                "Measured with `python benchmarks/bench_station_graph.py` (median of "
                f"{args.repeats} runs, OMP_NUM_THREADS=1, a shared 2-core machine).\n\n")
        Path(args.out).write_text(head + text + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
