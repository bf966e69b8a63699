"""Projection throughput: meshes to 6-channel HEALPix nside-32 maps, samples per second.

Three measurements, on real meshes of the ``cgal-meshes`` data set (fetched if needed):

1. per mesh, steady state: one ``MeshProjector`` (mesh, hull and their ray structures built once),
   then random SO(3) rotations with translations up to 0.1, Embree and trimesh's own intersector;
2. a collection end to end (``ShapeCollection.samples``, no cache): every file read, hulled and
   projected under several perturbations, in 1 and 2 processes;
3. what else ran on the machine meanwhile (load average, busiest other processes), since the
   machine is shared.

Target (issue 10): at least 100 samples/s at nside 32 on 2 cores with Embree.

    python benchmarks/bench_projection.py            # ~1 min
    python benchmarks/bench_projection.py --quick    # trimesh's intersector on the smallest mesh only
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import graphsphere as gs
from graphsphere.data import sources
from graphsphere.data.meshes import MeshProjector, available_engines, load_mesh, random_perturbation
from graphsphere.data.shapes import ShapeCollection

MESHES = ["meshes/cube-meshed.off", "meshes/cow.off", "meshes/fandisk.off", "meshes/bunny00.off",
          "meshes/refined_elephant.off"]


def machine_state() -> str:
    """Load average and the busiest processes other than this one, as one line of text."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        ps = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True,
                            text=True, timeout=10).stdout.splitlines()
        others = [line.split(None, 2) for line in ps if line.split()[0] != str(os.getpid())]
        busy = "; ".join(f"{c} {p}% CPU" for _, p, c in others[:3] if float(p) >= 5) or "none above 5% CPU"
    except (OSError, subprocess.SubprocessError):
        busy = "unknown"
    return f"load average {load}; busiest other processes: {busy}"


def _cpu_seconds() -> float:
    """CPU time of this process, of its finished children and of multiprocessing's fork server with its finished
    children: the worker processes of ``ShapeCollection.samples(workers=2)`` are children of the fork server, not
    of this process, and the fork server collects them when they end (their CPU time then counts in its
    cutime and cstime). The fork server's own time is mostly its one import of the package."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            return float("nan")
    return total


def per_mesh(root: Path, sampling, engine: str, n: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for name in MESHES:
        if engine == "triangle" and name not in per_mesh.triangle_meshes:
            continue
        t0 = time.perf_counter()
        mesh = load_mesh(root / name)
        t1 = time.perf_counter()
        projector = MeshProjector(mesh, engine=engine)
        perturbations = [random_perturbation(rng, "SO3", max_translation=0.1) for _ in range(n)]
        directions = sampling.xyz
        cpu0 = time.process_time()
        t2 = time.perf_counter()
        for p in perturbations:
            projector.project(directions, *p)
        t3 = time.perf_counter()
        cpu = time.process_time() - cpu0
        rows.append({"mesh": name.split("/")[-1], "faces": len(mesh.faces), "hull faces": len(projector.hull.faces),
                     "engine": engine, "load_s": t1 - t0, "build_s": t2 - t1, "samples": n,
                     "per_sample_ms": 1e3 * (t3 - t2) / n, "samples_per_s": n / (t3 - t2),
                     "cpu_ms": 1e3 * cpu / n})
        print(rows[-1], flush=True)
    return rows


def collection(root: Path, sampling, workers: int, seeds: int, names=None) -> dict:
    shapes = ShapeCollection(sampling, root, names=names, cache_dir=False, max_translation=0.1, engine="embree")
    pairs = [(i, j) for i in range(len(shapes)) for j in range(seeds)]
    load = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    shapes.samples(pairs, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    row = {"meshes": len(shapes), "seeds": seeds, "samples": len(pairs), "workers": workers, "seconds": dt,
           "samples_per_s": len(pairs) / dt, "cpu_s": cpu, "per_cpu_s": len(pairs) / cpu,
           "load": f"{load:.1f} / {os.getloadavg()[0]:.1f}",
           "faces": sum(len(load_mesh(e.path).faces) for e in shapes.entries)}
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--nside", type=int, default=32)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_projection.md"))
    args = p.parse_args()
    warnings.simplefilter("ignore")
    if "embree" not in available_engines():
        sys.exit("embreex is not installed: pip install embreex")
    root = sources.fetch("cgal-meshes")
    sampling = gs.sampling.HEALPix(nside=args.nside)
    per_mesh.triangle_meshes = MESHES[:1] if args.quick else MESHES[:2]
    before = machine_state()
    embree = per_mesh(root, sampling, "embree", 50)
    triangle = per_mesh(root, sampling, "triangle", 1)
    # 2 processes twice: the first call of a Python process also starts multiprocessing's fork server (it imports
    # the package, 1-2 s of CPU); later calls find it running
    whole = [collection(root, sampling, w, 4) for w in (1, 2, 2)]
    whole[1]["workers"], whole[2]["workers"] = "2, first call", "2, later call"
    fixed = [collection(root, sampling, w, 25, names=MESHES) for w in (1, 2)]
    after = machine_state()

    import trimesh
    try:
        from importlib.metadata import version
        embreex = version("embreex")
    except Exception:
        embreex = "?"
    lines = [
        f"# Projection throughput, HEALPix nside {args.nside} ({sampling.npix:,} rays per shape, twice: mesh and "
        "convex hull)", "",
        f"`python benchmarks/bench_projection.py{' --quick' if args.quick else ''}`, "
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, NumPy {np.__version__}, trimesh {trimesh.__version__}, "
        f"embreex {embreex}.", "",
        "Samples are random SO(3) rotations with translations up to 0.1 (the normalised mesh has radius 1).", "",
        "## Per mesh, steady state (mesh, hull and ray structures built once)", "",
        "| mesh | faces | hull faces | engine | read (s) | build (s) | samples | ms / sample | CPU ms / sample | "
        "samples / s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in embree + triangle:
        lines.append(f"| {r['mesh']} | {r['faces']:,} | {r['hull faces']:,} | {r['engine']} | {r['load_s']:.3f} | "
                     f"{r['build_s']:.3f} | {r['samples']} | {r['per_sample_ms']:.1f} | {r['cpu_ms']:.1f} | "
                     f"{r['samples_per_s']:.1f} |")
    lines += ["", "`embree`: Intel Embree through embreex; `triangle`: trimesh's own intersector (the fallback "
              "without embreex), one sample each.", "",
              "## Collections end to end (`ShapeCollection.samples`, no cache: read, hull, build, project)", "",
              "| meshes | total faces | seeds per mesh | samples | processes | seconds | samples / s | CPU seconds | "
              "samples / CPU second | load average (1 min) before / after |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in whole + fixed:
        lines.append(f"| {r['meshes']} | {r['faces']:,} | {r['seeds']} | {r['samples']} | {r['workers']} | "
                     f"{r['seconds']:.1f} | {r['samples_per_s']:.1f} | {r['cpu_s']:.1f} | {r['per_cpu_s']:.1f} | "
                     f"{r['load']} |")
    steady = [r for r in embree]
    lines += ["", f"The first rows are all {whole[0]['meshes']} meshes of the data set (point sets left out); "
              f"the last rows the {len(MESHES)} meshes of the first table. CPU seconds count this process, the "
              "worker processes and multiprocessing's fork server, whose one import of the package (about 1-2 s, "
              "once per Python process) falls in the row \"2, first call\"; the other 2-process rows find it "
              "running.", "",
              "## Against the target (100 samples/s at nside 32 on 2 cores with Embree)", "",
              f"- measured, wall clock, 2 processes, all meshes (read and build included): "
              f"{whole[1]['samples_per_s']:.0f} samples/s in the first call of a Python process (the fork server's "
              f"start included), {whole[2]['samples_per_s']:.0f} samples/s in a later call;",
              f"- CPU cost, 1 process, all meshes: {1e3 / whole[0]['per_cpu_s']:.1f} ms per sample, i.e. "
              f"{2 * whole[0]['per_cpu_s']:.0f} samples/s on 2 cores that do nothing else;",
              f"- CPU cost, 2 processes, all meshes: {1e3 / whole[1]['per_cpu_s']:.1f} ms per sample in the first "
              f"call (the fork server's start included), {1e3 / whole[2]['per_cpu_s']:.1f} ms in a later call;",
              f"- CPU cost, steady state (a mesh projected many times): {min(r['cpu_ms'] for r in steady):.1f} to "
              f"{max(r['cpu_ms'] for r in steady):.1f} ms per sample, i.e. "
              f"{2e3 / max(r['cpu_ms'] for r in steady):.0f} to {2e3 / min(r['cpu_ms'] for r in steady):.0f} "
              "samples/s on 2 free cores.", "",
              "Wall-clock figures depend on what else ran (the load column and below): with a load average of n on "
              "this shared 2-core machine, a process gets about 2/n of a core, and 2 processes cannot reach twice "
              "what 1 does.", "",
              "## The machine meanwhile (shared with other developers)", "",
              f"- before: {before}", f"- after: {after}", ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
