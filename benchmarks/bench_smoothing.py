"""Smoothing a HEALPix map: Chebyshev graph filter vs healpy.smoothing, time vs nside.

The claim under test (DeepSphere 2019, REFERENCE.md section 5): a K = 5
Chebyshev filter costs O(npix) and beats spherical-harmonic smoothing, which
costs O(npix^1.5) (205 s vs 16 s on one core at nside 2048, lmax = 2 nside).

What runs, one command:
  * per nside, a builder subprocess makes the k = 8 graph (published widths) and
    reports its construction time (excluded from the filter times), fits
    c in lambda_l ~ c l(l+1), picks the heat kernel matching a Gaussian beam
    of FWHM = 2 pixels (K = 5 at 1e-3 accuracy), and saves the rescaled
    Laplacian and a test map (red spectrum C_l ~ (l+10)^-2 up to 3 nside - 1);
  * per thread count (1, 2), a timing subprocess with OMP_NUM_THREADS set
    (healpy's OpenMP) and torch.set_num_threads: the graph filter with SciPy
    (single-threaded) and with torch's cheb_conv (the ChebConv kernel, float64
    and float32), healpy.smoothing with lmax = 3 nside - 1 (its default) and
    2 nside (the paper's), iter = 3 (healpy's default);
  * the partial sky: 1/12 of the sky at nside 1024 (base pixel 0), graph
    filter on its own graph vs healpy, which must transform the full sky.
Writes benchmarks/results/bench_smoothing.{md,json,png}.

    python benchmarks/bench_smoothing.py              # nside 64..1024 (~8-10 min)
    python benchmarks/bench_smoothing.py --quick      # nside 64..256 (~1 min)
    python benchmarks/bench_smoothing.py --try-2048   # adds nside 2048 if memory allows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
FWHM_PIXELS = 2.0  # the beam, in pixels, at every nside: the same work per pixel
TOL = 1e-3  # Chebyshev accuracy that picks K (K = 5 for a 2-pixel beam)


# -- builder: one graph, in its own process (peak memory is its own) ---------------

def build(nside: int, partial: bool, workdir: Path, scale: float | None) -> dict:
    import resource

    import healpy as hp
    import scipy.sparse as sp

    import graphsphere as gs
    from graphsphere import spectral as S

    npix_full = 12 * nside**2
    indices = np.arange(npix_full // 12) if partial else None
    t0 = time.perf_counter()
    # The published DeepSphere v2 widths (fixed, unlike the retunable "tuned" table).
    t = gs.kernel_widths.sigma_to_t(gs.kernel_widths.published_sigma(nside, 8))
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=nside, indices=indices), k=8, kernel_width=t)
    t1 = time.perf_counter()
    lmax = g.lambda_max
    t2 = time.perf_counter()
    op = g.operator()
    t3 = time.perf_counter()
    if scale is None:
        scale = S.fit_ll1_scale(g, lmax=8, method="rayleigh")
    t4 = time.perf_counter()
    fwhm = FWHM_PIXELS * hp.nside2resol(nside)
    response = S.gaussian_beam(fwhm=fwhm, scale=scale)
    K = S.chebyshev_order(response, lmax, TOL)
    theta = S.chebyshev_coefficients(response, K, lmax)
    tag = f"{nside}{'p' if partial else ''}"
    sp.save_npz(workdir / f"op{tag}.npz", op)
    np.save(workdir / f"theta{tag}.npy", theta)
    if not partial:
        # The test map, RING: Gaussian with C_l ~ (l + 10)^-2 up to 3 nside - 1.
        lmax_in = 3 * nside - 1
        ell, m = hp.Alm.getlm(lmax_in)
        rng = np.random.default_rng(nside)
        alm = (rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)) / (ell + 10.0)
        alm[m == 0] = alm[m == 0].real * np.sqrt(2)
        np.save(workdir / f"map{nside}.npy", hp.alm2map(alm, nside, lmax=lmax_in))
    return {"nside": nside, "partial": partial, "npix": g.npix, "edges": g.n_edges, "K": K,
            "fwhm_arcmin": float(np.degrees(fwhm) * 60), "c_nside2": scale * nside**2, "scale": scale,
            "t": g.t, "lmax": lmax, "graph_s": t1 - t0, "lmax_s": t2 - t1, "operator_s": t3 - t2,
            "fit_s": t4 - t3, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


# -- timer: all nsides at one thread count, in its own process ---------------------

def _best(fn, reps: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _interior(nside: int, ids: np.ndarray, rings: int) -> np.ndarray:
    """Mask of the NESTED pixels ``ids`` more than ``rings`` neighbour steps from
    the rest of the sky (where a local filter cannot see the cut)."""
    import healpy as hp

    inside = np.zeros(12 * nside**2, bool)
    inside[ids] = True
    nb = hp.get_all_neighbours(nside, ids, nest=True)  # (8, n)
    edge = np.any((nb >= 0) & ~inside[np.maximum(nb, 0)], axis=0)
    reached = np.zeros_like(inside)
    front = ids[edge]
    reached[front] = True
    for _ in range(rings - 1):
        nb = hp.get_all_neighbours(nside, front, nest=True).ravel()
        nb = np.unique(nb[nb >= 0])
        front = nb[inside[nb] & ~reached[nb]]
        reached[front] = True
    return ~reached[ids]


def time_all(nsides: list[int], threads: int, workdir: Path, partial_nside: int | None) -> list[dict]:
    import healpy as hp
    import scipy.sparse as sp
    import torch

    from graphsphere import spectral as S
    from graphsphere.nn.functional.chebyshev import as_operator, cheb_conv

    torch.set_num_threads(threads)
    rows = []
    full_out = {}

    def graph_times(op, theta, x_nest, reps):
        K = len(theta)
        r = {}
        if threads == 1:  # SciPy's sparse product is single-threaded
            r["scipy_s"], y = _best(lambda: S.apply_filter(op, x_nest, theta), reps)
        else:
            y = None
        for name, dt in (("torch64_s", torch.float64), ("torch32_s", torch.float32)):
            top = as_operator(op, dtype=dt, check=False)
            xt = torch.from_numpy(x_nest).to(dt).reshape(1, -1, 1)
            w = torch.from_numpy(theta).to(dt).reshape(K, 1, 1)
            with torch.no_grad():
                cheb_conv(xt, top, w)  # warm-up: compiles/loads the kernel once
                r[name], yt = _best(lambda xt=xt, top=top, w=w: cheb_conv(xt, top, w), reps)
            if y is None and dt == torch.float64:
                y = yt.reshape(-1).numpy()
        return r, y

    for nside in nsides:
        reps = 5 if nside <= 256 else (2 if nside <= 512 else 1)
        op = sp.load_npz(workdir / f"op{nside}.npz").tocsr()
        theta = np.load(workdir / f"theta{nside}.npy")
        x_ring = np.load(workdir / f"map{nside}.npy")
        x_nest = hp.reorder(x_ring, r2n=True)
        fwhm = FWHM_PIXELS * hp.nside2resol(nside)
        row = {"nside": nside, "threads": threads}
        r, y = graph_times(op, theta, x_nest, reps)
        row.update(r)
        def smooth(lmax, x_ring=x_ring, fwhm=fwhm):
            return hp.smoothing(x_ring, fwhm=fwhm, lmax=lmax, iter=3, use_pixel_weights=False)

        row["healpy_3n_s"], ref = _best(lambda n=nside: smooth(3 * n - 1), reps)
        row["healpy_2n_s"], _ = _best(lambda n=nside: smooth(2 * n), reps)
        if threads == 1:
            y_ring = hp.reorder(y, n2r=True)
            row["rel_err"] = float(np.linalg.norm(y_ring - ref) / np.linalg.norm(ref))
            full_out[nside] = (y, hp.reorder(ref, r2n=True))
        rows.append(row)
        print(json.dumps(row), flush=True)
        del op, x_ring, x_nest, y, ref

    if partial_nside is not None:
        nside = partial_nside
        op = sp.load_npz(workdir / f"op{nside}p.npz").tocsr()
        theta = np.load(workdir / f"theta{nside}p.npy")
        ids = np.arange(12 * nside**2 // 12)
        x_nest = hp.reorder(np.load(workdir / f"map{nside}.npy"), r2n=True)[ids]
        row = {"nside": nside, "threads": threads, "partial": True, "npix": int(ids.size)}
        r, y = graph_times(op, theta, x_nest, 1)
        row.update(r)
        if threads == 1 and nside in full_out:
            y_full, ref_nest = full_out[nside]
            # The K-term filter reaches K - 1 graph hops (~1 pixel each with
            # k = 8): beyond 2K rings from the cut it cannot see the cut.
            inner = _interior(nside, ids, rings=2 * len(theta))
            row["interior_share"] = float(inner.mean())
            row["rel_err_vs_fullsky_graph"] = float(np.linalg.norm((y - y_full[ids])[inner])
                                                    / np.linalg.norm(y_full[ids][inner]))
            row["rel_err_vs_healpy"] = float(np.linalg.norm((y - ref_nest[ids])[inner])
                                             / np.linalg.norm(ref_nest[ids][inner]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# -- the parent: orchestration, fits, report ------------------------------------------

def _child(args: list[str], threads: int) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _mem_available_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("nan")


def _slope(nsides, times) -> float:
    """Exponent p of time ~ npix^p (least squares on log-log)."""
    npix = 12 * np.asarray(nsides, float) ** 2
    return float(np.polyfit(np.log(npix), np.log(np.asarray(times, float)), 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="nside 64..256 only")
    p.add_argument("--try-2048", action="store_true", help="add nside 2048 if memory allows")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default=str(RESULTS / "bench_smoothing"))
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the saved .json")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.report_only:
        d = json.loads(Path(args.out).with_suffix(".json").read_text())
        m = d["meta"]
        builds = {("partial" if b["partial"] else b["nside"]): b for b in d["builds"]}
        write_report(Path(args.out), builds, d["rows"], m["nsides"], m["threads"], m["notes"],
                     (m["load"][0],), (m["load"][1],), m["total_s"])
        return

    if args.child:  # inside a subprocess
        kind, workdir = args.child[0], Path(args.child[1])
        if kind == "build":
            nside, partial = int(args.child[2]), args.child[3] == "1"
            scale = None if args.child[4] == "none" else float(args.child[4])
            print(json.dumps(build(nside, partial, workdir, scale)))
        else:
            threads, nsides = int(args.child[2]), [int(n) for n in args.child[3].split(",")]
            partial = None if args.child[4] == "none" else int(args.child[4])
            time_all(nsides, threads, workdir, partial)
        return

    start = time.perf_counter()
    load0 = os.getloadavg()
    nsides = [64, 128, 256] if args.quick else [64, 128, 256, 512, 1024]
    partial_nside = None if args.quick else 1024
    notes = []
    with tempfile.TemporaryDirectory(prefix="bench_smoothing_") as tmp:
        workdir = Path(tmp)
        builds = {}
        for nside in nsides:
            b = _child(["--child", "build", str(workdir), str(nside), "0", "none"], 1)[0]
            builds[nside] = b
            print(f"nside {nside:5d}: graph {b['graph_s']:6.1f} s, lmax {b['lmax_s']:5.1f} s, operator "
                  f"{b['operator_s']:4.1f} s, peak {b['peak_gb']:5.2f} GB; c nside^2 = {b['c_nside2']:.4f}, "
                  f"K = {b['K']}", flush=True)
        need = 4.3 * builds[max(nsides)]["peak_gb"] * (2048 / max(nsides)) ** 2 / 4
        have = _mem_available_gb()
        if not args.try_2048 and max(nsides) == 1024:
            notes.append(f"nside 2048 not run (--try-2048 adds it when memory allows): its graph build would need "
                         f"about {need:.0f} GB (4x the nside-1024 peak); {have:.0f} GB is available")
        if args.try_2048:
            if max(nsides) == 1024 and need < 0.8 * have:
                b = _child(["--child", "build", str(workdir), "2048", "0", "none"], 1)[0]
                builds[2048] = b
                nsides.append(2048)
            else:
                msg = (f"nside 2048 skipped: the graph build would need about {need:.0f} GB "
                       f"(4x the nside-1024 peak) and {have:.0f} GB is available")
                notes.append(msg)
                print(msg, flush=True)
        if partial_nside is not None:
            b = _child(["--child", "build", str(workdir), str(partial_nside), "1",
                        repr(builds[partial_nside]["scale"])], 1)[0]
            builds["partial"] = b
            print(f"partial sky nside {partial_nside} ({b['npix']:,} pixels): graph {b['graph_s']:.1f} s, "
                  f"lmax {b['lmax_s']:.1f} s", flush=True)
        rows = []
        for th in args.threads:
            rows += _child(["--child", "time", str(workdir), str(th), ",".join(map(str, nsides)),
                            "none" if partial_nside is None else str(partial_nside)], th)
            print(f"timed with {th} thread(s)", flush=True)
    load1 = os.getloadavg()
    total = time.perf_counter() - start
    write_report(Path(args.out), builds, rows, nsides, args.threads, notes, load0, load1, total)


def write_report(out: Path, builds, rows, nsides, threads, notes, load0, load1, total) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    full = [r for r in rows if not r.get("partial")]
    part = [r for r in rows if r.get("partial")]
    big = [n for n in nsides if n >= 128]  # small nsides are overhead-dominated
    L = ["# Smoothing: Chebyshev graph filter vs healpy.smoothing",
         "",
         f"Generated by `python benchmarks/bench_smoothing.py` in {total / 60:.1f} min. "
         f"Beam FWHM = {FWHM_PIXELS:g} pixels at every nside; graph: HEALPix k = 8, published v2 widths, "
         f"normalized Laplacian; heat kernel exp(-t lambda) with t = sigma^2 / (2c), "
         f"lambda_l ~ c l(l+1); K = {builds[nsides[0]]['K']} Chebyshev terms (accuracy {TOL:g}). "
         "healpy.smoothing with iter = 3 (its default), no pixel weights. Times are the best of "
         "5 (nside <= 256), 2 (512) or 1 (1024+) runs.",
         "",
         f"Machine: {os.cpu_count()} cores shared with other jobs (load average {load0[0]:.1f} at the start, "
         f"{load1[0]:.1f} at the end): expect noise of tens of percent, more on the 2-thread runs.",
         "",
         "## Graph construction (excluded from the filter times)",
         "",
         "| nside | pixels | edges | build graph (s) | lmax Lanczos (s) | operator (s) | peak memory (GB) | c nside^2 | K |",
         "|---|---|---|---|---|---|---|---|---|"]
    for b in builds.values():
        name = f"{b['nside']} (1/12 sky)" if b["partial"] else str(b["nside"])
        L.append(f"| {name} | {b['npix']:,} | {b['edges']:,} | {b['graph_s']:.1f} | {b['lmax_s']:.1f} | "
                 f"{b['operator_s']:.1f} | {b['peak_gb']:.2f} | {b['c_nside2']:.4f} | {b['K']} |")
    for th in threads:
        rs = [r for r in full if r["threads"] == th]
        L += ["", f"## {th} thread{'s' if th > 1 else ''}", "",
              "| nside | pixels | graph SciPy (s) | graph torch f64 (s) | graph torch f32 (s) | healpy lmax 3n-1 (s) "
              "| healpy lmax 2n (s) | speed-up vs 3n-1 | speed-up vs 2n | rel. diff. vs healpy |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            g = min(r[k] for k in ("scipy_s", "torch64_s", "torch32_s") if k in r)  # the fastest graph filter
            L.append(f"| {r['nside']} | {12 * r['nside']**2:,} | {r.get('scipy_s', float('nan')):.4f} | "
                     f"{r['torch64_s']:.4f} | {r['torch32_s']:.4f} | {r['healpy_3n_s']:.3f} | {r['healpy_2n_s']:.3f} | "
                     f"{r['healpy_3n_s'] / g:.0f}x | {r['healpy_2n_s'] / g:.0f}x | "
                     f"{r.get('rel_err', float('nan')):.3f} |".replace("nan", "-"))
        sel = [r for r in rs if r["nside"] in big]
        if len(sel) >= 2:
            ns = [r["nside"] for r in sel]
            fits = {k: _slope(ns, [r[k] for r in sel]) for k in ("scipy_s", "torch64_s", "torch32_s",
                                                                  "healpy_3n_s", "healpy_2n_s") if k in sel[0]}
            L += ["", f"Scaling exponents p in time ~ npix^p (nside {ns[0]}..{ns[-1]}): "
                  + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in fits.items()) + "."]
    if part:
        L += ["", f"## Partial sky: 1/12 of the sky at nside {part[0]['nside']} ({part[0]['npix']:,} pixels)", "",
              "The graph filter runs on the patch's own graph; healpy must transform the full sky "
              "(its full-sky time is repeated here).", "",
              "| threads | graph SciPy (s) | graph torch f64 (s) | graph torch f32 (s) | healpy lmax 3n-1, full sky (s) "
              "| speed-up |", "|---|---|---|---|---|---|"]
        for r in part:
            hp_t = next(f["healpy_3n_s"] for f in full if f["nside"] == r["nside"] and f["threads"] == r["threads"])
            g = min(r[k] for k in ("scipy_s", "torch64_s", "torch32_s") if k in r)
            L.append(f"| {r['threads']} | {r.get('scipy_s', float('nan')):.4f} | {r['torch64_s']:.4f} | "
                     f"{r['torch32_s']:.4f} | {hp_t:.2f} | {hp_t / g:.0f}x |".replace("nan", "-"))
        r1 = next((r for r in part if "rel_err_vs_healpy" in r), None)
        if r1:
            L += ["", f"On the {100 * r1['interior_share']:.0f}% of the patch farther than 2K pixel rings from its "
                  f"edge, the patch's filter equals the full-sky graph filter to a relative "
                  f"{r1['rel_err_vs_fullsky_graph']:.1e} and differs from healpy's full-sky smoothing by "
                  f"{r1['rel_err_vs_healpy']:.3f} (relative), as on the full sky."]
    L += ["", "## Notes", "",
          "* speed-up: healpy's time over the fastest graph filter of the row (SciPy is single-threaded, "
          "so the 2-thread rows use torch).",
          "* rel. diff. vs healpy: ||graph - healpy|| / ||healpy|| on the test map (C_l ~ (l+10)^-2 up to "
          "3 nside - 1). It is dominated by the degrees near the pixel scale, where the graph's eigenvalues fall "
          "below c l(l+1) and a 2-pixel beam still passes power (see docs/spectral.md for the transfer function).",
          "* The paper's single-core numbers at nside 2048 were 205 s (SHT, lmax 2 nside) vs 16 s (K = 5).",
          "* Graph filter times exclude graph construction, lmax and the operator (made once per sampling).",
          *[f"* {n}" for n in notes]]
    out.with_suffix(".md").write_text("\n".join(L) + "\n")
    meta = {"nsides": nsides, "threads": threads, "notes": notes, "load": [load0[0], load1[0]], "total_s": total}
    out.with_suffix(".json").write_text(json.dumps({"builds": list(builds.values()), "rows": rows, "meta": meta},
                                                   indent=1))
    plot(out.with_suffix(".png"), full, part, threads)
    print("\n".join(L))
    print(f"wrote {out.with_suffix('.md')}, .json, .png")


def plot(path: Path, full, part, threads) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {1: "-", 2: "--"}
    for th in threads:
        rs = [r for r in full if r["threads"] == th]
        npix = np.array([12 * r["nside"] ** 2 for r in rs])
        ls = styles.get(th, ":")
        for key, color, label in (("torch64_s", "C1", "graph K-term filter (torch f64)"),
                                  ("scipy_s", "C2", "graph filter (SciPy)"),
                                  ("healpy_3n_s", "C0", "healpy.smoothing lmax 3n-1"),
                                  ("healpy_2n_s", "C9", "healpy.smoothing lmax 2n")):
            if key in rs[0]:
                ax.loglog(npix, [r[key] for r in rs], ls, color=color, marker="o", ms=4,
                          label=f"{label}, {th} thr")
    for r in part:
        ax.loglog([r["npix"]], [r["torch64_s"]], "*", color="C3", ms=12 if r["threads"] == 1 else 8,
                  label=f"graph filter, 1/12 sky at nside {r['nside']}, {r['threads']} thr")
    # Guides: slopes 1 (graph filter, O(npix)) and 1.5 (SHT, O(npix^1.5)) through the 1-thread nside-128 points.
    ref = {r["nside"]: r for r in full if r["threads"] == threads[0]}
    if 128 in ref:
        n = np.array([12 * 128**2, 12 * max(ref) ** 2], float)
        for key, p, label in (("torch64_s", 1.0, "slope 1"), ("healpy_3n_s", 1.5, "slope 1.5")):
            ax.loglog(n, ref[128][key] * (n / n[0]) ** p, ":", color="gray", lw=1)
            ax.annotate(label, (n[1], ref[128][key] * (n[1] / n[0]) ** p), fontsize=7, color="gray")
    ax.set_xlabel("pixels")
    ax.set_ylabel("time (s)")
    ax.set_title("smoothing a HEALPix map: graph filter vs spherical harmonics")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
