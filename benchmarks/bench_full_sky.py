"""Full sky at Planck resolution: the HEALPix graph, its operator and one Chebyshev layer, phase by
phase, with the time and the peak resident memory of each (issue 14: nside 2048 within 24 GB).

    python benchmarks/bench_full_sky.py                 # nside 1024 and 2048 (~15 min on 2 cores)
    python benchmarks/bench_full_sky.py --nsides 1024   # one resolution

Each nside runs in its own process, one phase after the other, as a user would: build the k = 8
graph (k-d tree, Gaussian weights, symmetrisation), its normalized Laplacian and largest eigenvalue
(Lanczos), the layer's operator L~ in float32 (then the graph is dropped: the layer keeps only its
operator), and one forward + backward of a 16 -> 16 channel, K = 5 layer on one map. Peak memory is
the process's resident high-water mark (VmHWM), reset at the start of each phase
(/proc/self/clear_refs), so every phase reports its own peak over everything alive at the time;
the largest of them is what the machine must hold. Writes benchmarks/results/bench_full_sky.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_full_sky.md"
K, CHANNELS, THREADS = 5, 16, 2


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return 1024 * int(next(line for line in f if line.startswith(key)).split()[1])


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _child(nside: int) -> dict:
    import gc

    import torch

    import graphsphere as gs
    from graphsphere.nn.functional.chebyshev import as_operator, cheb_conv

    torch.set_num_threads(THREADS)
    phases = {}

    def phase(name, fn):
        gc.collect()
        _reset_peak()
        t = time.perf_counter()
        out = fn()
        phases[name] = {"seconds": time.perf_counter() - t, "peak_bytes": _status("VmHWM"),
                        "resident_after": _status("VmRSS")}
        print(f"  nside {nside}: {name}: {phases[name]['seconds']:.1f} s, "
              f"peak {phases[name]['peak_bytes'] / 2**30:.2f} GB", file=sys.stderr, flush=True)
        return out

    s = gs.sampling.HEALPix(nside=nside)
    phase("pixel centres", lambda sampling=s: sampling.xyz)
    g = phase("graph (k-NN, weights, symmetrised)",
              lambda sampling=s: gs.SphereGraph(sampling, k=8, kernel_width="tuned"))
    phase("normalized Laplacian", lambda graph=g: graph.L)
    phase("largest eigenvalue (Lanczos)", lambda graph=g: graph.lambda_max)
    op = phase("operator L~ (float32)", lambda graph=g: as_operator(graph, dtype=torch.float32))
    edges, npix = g.n_edges, s.npix
    del g, s  # the layer keeps only its operator (the pixel centres alone are 1.2 GB at nside 2048)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, npix, CHANNELS, generator=gen, requires_grad=True)  # an inner layer's input: dx too
    w = (torch.randn(K, CHANNELS, CHANNELS, generator=gen) / (K * CHANNELS) ** 0.5).requires_grad_()

    def layer():
        cheb_conv(x, op, w).sum().backward()

    phase("one layer, forward + backward", layer)
    return {"nside": nside, "npix": npix, "edges": edges, "nnz": int(op.values.numel()), "phases": phases}


def _fmt_gb(b: int) -> str:
    return f"{b / 2**30:.2f} GB"


def report(results: list[dict]) -> str:
    import platform

    import torch

    lines = ["# Full sky: graph, operator and one layer at HEALPix nside 1024 and 2048", "",
             (f"HEALPix k = 8 graph (tuned kernel width), normalized Laplacian, one Chebyshev layer "
              f"16 -> 16 channels, K = {K}, batch 1, float32, {THREADS} threads, torch {torch.__version__}, "
              f"{platform.machine()}, {os.cpu_count()} cores, machine shared with other jobs (times are "
              "indicative; memory does not depend on load). Peak: the process's resident high-water mark "
              "during the phase, everything alive included."), ""]
    for r in results:
        if "error" in r:
            lines += [f"## nside {r['nside']}", "", f"failed: {r['error']}", ""]
            continue
        lines += [f"## nside {r['nside']}: {r['npix']:,} pixels, {r['edges']:,} edges", "",
                  "| phase | time | peak resident memory |", "|---|---|---|"]
        for name, p in r["phases"].items():
            lines.append(f"| {name} | {p['seconds']:.1f} s | {_fmt_gb(p['peak_bytes'])} |")
        peak = max(p["peak_bytes"] for p in r["phases"].values())
        lines += ["", f"Largest peak: {_fmt_gb(peak)}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nsides", type=int, nargs="*", default=[1024, 2048])
    p.add_argument("--output", default=str(RESULTS))
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return
    results = []
    for nside in args.nsides:
        print(f"nside {nside} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(nside)], capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            results.append({"nside": nside, "error": f"exit code {proc.returncode}: {proc.stderr.strip()[-300:]}"})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    text = report(results)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
