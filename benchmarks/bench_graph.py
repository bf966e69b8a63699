"""Graph construction: time and peak memory per sampling.

Each case runs in a fresh subprocess, so its peak resident memory (ru_maxrss)
is its own; the machine's load (1-minute average, at the end of the case) stands
beside each time, as other jobs slow the k-d tree query in proportion. Targets:
full-sky HEALPix nside 1024, k = 8, under 25 s on 2 cores (issue 14; 60 s and
8 GB in issue "Foundation"); nside 256, k = 20, under 30 s.

    python benchmarks/bench_graph.py                                  # all cases (~2-3 min)
    python benchmarks/bench_graph.py --quick                          # small cases only
    python benchmarks/bench_graph.py --case HEALPix:1024:8 --repeat 3  # one case, several runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, os, resource, sys, time
import numpy as np
import graphsphere as gs
kind, arg, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if kind == "Points":
    rng = np.random.default_rng(0)
    s = gs.sampling.Points(lon=rng.uniform(0, 360, arg), lat=np.rad2deg(np.arcsin(rng.uniform(-1, 1, arg))))
else:
    s = {"HEALPix": lambda a: gs.sampling.HEALPix(nside=a),
         "Equiangular": lambda a: gs.sampling.Equiangular(nlat=a, nlon=2 * a, poles="SOFT"),
         "GaussLegendre": lambda a: gs.sampling.GaussLegendre(nlat=a),
         "Icosahedral": lambda a: gs.sampling.Icosahedral(level=a)}[kind](arg)
c0 = time.process_time(); t0 = time.perf_counter(); s.xyz; t1 = time.perf_counter()
import warnings; warnings.simplefilter("ignore")
g = gs.SphereGraph(s, k=k); t2 = time.perf_counter(); c2 = time.process_time()
g.L; t3 = time.perf_counter()
g.lambda_max; t4 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"sampling": s.describe(), "npix": s.npix, "k": k, "edges": g.n_edges,
                  "points_s": t1 - t0, "graph_s": t2 - t1, "build_cpu_s": c2 - c0, "laplacian_s": t3 - t2,
                  "lmax_s": t4 - t3, "peak_gb": peak / 1e6, "import_gb": base / 1e6, "load": os.getloadavg()[0]}))
"""

FULL = [("HEALPix", 1024, 8), ("HEALPix", 256, 20), ("HEALPix", 128, 8), ("Equiangular", 314, 8),
        ("GaussLegendre", 314, 8), ("Icosahedral", 7, 8), ("Points", 196608, 8)]
QUICK = [("HEALPix", 64, 8), ("Icosahedral", 5, 8), ("Points", 12288, 8)]


def run_case(kind: str, arg: int, k: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CASE, kind, str(arg), str(k)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--case", action="append", metavar="KIND:ARG:K",
                   help="run this case only (repeatable), e.g. HEALPix:1024:8")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case, each in a fresh process")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_graph.md"))
    args = p.parse_args()
    cases = [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2])) for c in args.case or []]
    rows = []
    for case in cases or (QUICK if args.quick else FULL):
        for _ in range(args.repeat):
            r = run_case(*case)
            total = r["points_s"] + r["graph_s"]
            print(f"{r['sampling']:>50} k={r['k']:<3} npix={r['npix']:>9,}  build {total:6.1f} s "
                  f"(cpu {r['build_cpu_s']:5.1f} s, load {r['load']:4.1f})  L {r['laplacian_s']:5.1f} s  "
                  f"lmax {r['lmax_s']:5.1f} s  peak {r['peak_gb']:5.2f} GB", flush=True)
            rows.append(r)
    lines = ["| sampling | k | pixels | edges | build W (s) | build CPU (s) | load | Laplacian (s) | lmax (s) "
             "| peak memory (GB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampling']} | {r['k']} | {r['npix']:,} | {r['edges']:,} | "
                     f"{r['points_s'] + r['graph_s']:.1f} | {r['build_cpu_s']:.1f} | {r['load']:.1f} | "
                     f"{r['laplacian_s']:.1f} | {r['lmax_s']:.1f} | {r['peak_gb']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
