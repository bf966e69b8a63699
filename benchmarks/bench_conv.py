"""Chebyshev graph convolution, side by side: graphsphere vs deepsphere 0.2.1
vs torch_geometric on the same HEALPix graph (k=8, normalized Laplacian), and
torch-harmonics' DISCO and spectral convolutions at equal pixel count.

    python benchmarks/bench_conv.py                  # everything (~25 min on 2 cores)
    python benchmarks/bench_conv.py --quick          # nside 32 and 64 only, no full sky
    python benchmarks/bench_conv.py --device cuda    # the same tables on a GPU

Method (see docs/performance.md):
- One layer, batch 8, 16 -> 16 channels, K = 5, float32, torch.set_num_threads(2).
- torch-harmonics 0.9.3 peers, on a (2N, 6N) latitude-longitude grid: 12 N^2 pixels, HEALPix's
  count. DISCO (``DiscreteContinuousConvS2``, its compiled CPU kernel): K = 5 isotropic
  piecewise-linear radial basis functions (as many weights as our K = 5), equiangular grid, cutoff
  radius K pixel spacings (spacing = sqrt(4 pi / npix)): the reach of our order-4 filter on the
  k = 8 graph. Spectral (``SpectralConvS2``: SHT, one weight per degree, inverse SHT) on the
  Gauss-Legendre grid, where building the transforms fits (nside <= 128). Peers take their native
  [batch, channels, lat, lon] layout (no transposition charged to them).
- Times: median over repetitions of forward (autograd on, as in training) and
  forward + backward; the implementations are interleaved within each
  repetition, so that load from other processes hits them alike. Ratios are
  the robust numbers on a shared machine.
- Memory: each (implementation, nside) runs in its own process with glibc told
  to mmap every allocation above 64 KB (MALLOC_MMAP_THRESHOLD_), so freed
  tensors leave the resident set at once; after a warm-up pass the peak RSS is
  reset (/proc/self/clear_refs) and the peak RSS increase over one forward +
  backward is read from VmHWM. Our kernel's kept temporaries are released
  before the reset, so they count in our peak, not in the baseline. Inputs,
  weights and the graph are in the baseline; what is measured is the layer's
  activations, temporaries and gradients. Each process runs under an
  address-space cap (RLIMIT_AS), so a peer that needs more fails with
  MemoryError instead of upsetting the machine. On CUDA: the peak of
  torch.cuda.max_memory_allocated over the pass.
- Roofline: our sparse product Y = L~ X (X: [V, 8 x 16] float32) and one
  Chebyshev step 2 L~ X - Y against a plain copy of X into a preallocated
  buffer, timed interleaved in the same process; bandwidth = bytes read +
  written / time (the copy moves 2 |X|, the product 2 |X| plus the CSR arrays).
- Full sky, nside 1024 (12.6 M pixels), batch 1, 16 channels, K = 5: ours only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_conv.md"
B, CIN, COUT, K, THREADS = 8, 16, 16, 5, 2
CAP_BYTES = 14 * 2**30  # address-space cap of each measuring process


# -- the three implementations ----------------------------------------------------

def build(nside: int):
    import graphsphere as gs

    return gs.SphereGraph(gs.sampling.HEALPix(nside=nside), k=8, laplacian="normalized")


def _lambda_max(graph) -> float:
    """The graph's largest Laplacian eigenvalue (named lmax before graphsphere 0.2)."""
    return graph.lambda_max if hasattr(graph, "lambda_max") else graph.lmax


def _grid(nside: int) -> tuple[int, int]:
    """The (nlat, nlon) latitude-longitude grid with HEALPix's 12 nside^2 pixels."""
    return 2 * nside, 6 * nside


def make(impl: str, graph, batch: int = B, device: str = "cpu"):
    """Returns (forward, forward_backward) closures on fixed inputs."""
    import math

    import numpy as np
    import torch

    torch.manual_seed(0)
    nside = round((graph.npix / 12) ** 0.5)
    if impl in ("disco", "sht_spectral"):
        nlat, nlon = _grid(nside)
        x = torch.randn(batch, CIN, nlat, nlon, device=device, requires_grad=True)
    else:
        x = torch.randn(batch, graph.npix, CIN, device=device, requires_grad=True)
    if impl == "graphsphere":
        from graphsphere.nn.conv import ChebConv

        m = ChebConv(CIN, COUT, K, graph=graph).to(device)  # default check_finite=True: the cost users get
        fwd = lambda: m(x)
    elif impl == "deepsphere":
        import warnings

        from deepsphere.layers.chebyshev import cheb_conv as ds_cheb_conv

        L = graph.operator().tocoo()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Lt = torch.sparse_coo_tensor(np.stack([L.row, L.col]), L.data.astype(np.float32), L.shape).coalesce()
        Lt = Lt.to(device)
        w = torch.nn.Parameter(torch.randn(K, CIN, COUT, device=device) * (2 / (CIN * K)) ** 0.5)
        bias = torch.nn.Parameter(torch.zeros(COUT, device=device))
        fwd = lambda: ds_cheb_conv(Lt, x, w) + bias
    elif impl == "torch_geometric":
        from torch_geometric.nn import ChebConv as PygChebConv

        W = graph.W.tocoo()
        ei = torch.from_numpy(np.stack([W.row, W.col]).astype(np.int64)).to(device)
        ew = torch.from_numpy(W.data.astype(np.float32)).to(device)
        lam = torch.tensor(_lambda_max(graph), dtype=torch.float32, device=device)
        m = PygChebConv(CIN, COUT, K, normalization="sym").to(device)  # builds the same L~ = 2 L / lmax - I
        fwd = lambda: m(x, ei, ew, lambda_max=lam)
    elif impl == "disco":
        import torch_harmonics as th

        reach = K * math.sqrt(4 * math.pi / graph.npix)  # K pixel spacings
        m = th.DiscreteContinuousConvS2(CIN, COUT, (nlat, nlon), (nlat, nlon), kernel_shape=(K,),
                                        basis_type="piecewise linear", grid_in="equiangular",
                                        grid_out="equiangular", theta_cutoff=reach).to(device)
        fwd = lambda: m(x)
    elif impl == "sht_spectral":
        import torch_harmonics as th

        if nside > SPECTRAL_MAX_NSIDE:
            raise MemoryError(f"not run above nside {SPECTRAL_MAX_NSIDE}: building the transforms takes ~50 s "
                              "and 6 GB at nside 256")
        m = th.SpectralConvS2((nlat, nlon), (nlat, nlon), CIN, COUT, grid_in="legendre-gauss",
                              grid_out="legendre-gauss").to(device)
        fwd = lambda: m(x)
    else:
        raise ValueError(impl)

    def fwd_bwd():
        fwd().sum().backward()
        x.grad = None

    if device != "cpu":
        def sync(fn):
            def run():
                fn()
                torch.cuda.synchronize()
            return run
        return sync(fwd), sync(fwd_bwd)
    return fwd, fwd_bwd


IMPLS = ("graphsphere", "deepsphere", "torch_geometric", "disco", "sht_spectral")
SPECTRAL_MAX_NSIDE = 128


# -- measurements, each in its own process ------------------------------------------

def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return 1024 * int(next(line for line in f if line.startswith(key)).split()[1])


def _child(args) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    dev = args.device
    cuda = dev != "cpu"
    if args.child == "time":
        graph = build(args.nside)
        fns, errors = {}, {}
        for impl in IMPLS:
            try:
                fns[impl] = make(impl, graph, device=dev)
                fns[impl][1]()  # warm-up (and: does it fit?)
            except (MemoryError, RuntimeError, ImportError) as e:
                fns.pop(impl, None)
                errors[impl] = f"{type(e).__name__}: {str(e)[:120]}"
                print(f"  {impl}: {errors[impl]}", file=sys.stderr)
        times = {impl: {"fwd": [], "fwd_bwd": []} for impl in fns}
        for _ in range(args.reps):
            for impl, (fwd, fwd_bwd) in fns.items():
                t = time.perf_counter()
                fwd()
                times[impl]["fwd"].append(time.perf_counter() - t)
                t = time.perf_counter()
                fwd_bwd()
                times[impl]["fwd_bwd"].append(time.perf_counter() - t)
        out = {impl: {k: statistics.median(v) for k, v in d.items()} for impl, d in times.items()}
        for impl, d in times.items():  # per-repetition ratios to ours: their median and spread
            if impl != "graphsphere" and "graphsphere" in times:
                r = [a / b for a, b in zip(d["fwd_bwd"], times["graphsphere"]["fwd_bwd"])]
                out[impl]["ratio_fwd_bwd"] = [statistics.median(r), min(r), max(r)]
        out["_errors"] = errors
        return out
    if args.child == "memory":
        batch = 1 if args.nside >= 1024 else B
        graph = build(args.nside)
        try:
            fwd, fwd_bwd = make(args.impl, graph, batch, device=dev)
            if args.nside >= 1024:
                graph = None  # keep only the layer's own copy of the operator
            fwd_bwd()
            if args.impl == "graphsphere":
                from graphsphere.nn.functional import _cpu_kernel

                _cpu_kernel.release()  # kept temporaries count in our peak, not in the baseline
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            else:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak RSS
                before = _status("VmRSS")
            t = time.perf_counter()
            fwd_bwd()
            elapsed = time.perf_counter() - t
            peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
            return {"peak_bytes": peak - before, "fwd_bwd_s": elapsed, "rss_before": before}
        except MemoryError as e:
            return {"error": f"MemoryError under a {CAP_BYTES / 2**30:.0f} GB address-space cap ({str(e)[:80]})"}
        except RuntimeError as e:
            if "alloc" not in str(e).lower() and "memory" not in str(e).lower():
                raise
            return {"error": f"out of memory under a {CAP_BYTES / 2**30:.0f} GB address-space cap"}
    if args.child == "roofline":
        from graphsphere.nn.functional.chebyshev import as_operator, laplacian_matmul

        graph = build(args.nside)
        op = as_operator(graph, device=dev)
        X = torch.randn(graph.npix, B, CIN, device=dev)
        Y, out, cp = torch.randn_like(X), torch.empty_like(X), torch.empty_like(X)
        res = {"bytes_x": X.numel() * X.element_size(),
               "bytes_csr": sum(t.numel() * t.element_size() for t in (op.indptr, op.indices, op.values))}

        def timed(fn):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - t

        for threads in ((1, THREADS) if not cuda else (THREADS,)):
            torch.set_num_threads(threads)
            t_mm, t_fused, t_copy = [], [], []
            for _ in range(args.reps * 4):
                t_mm.append(timed(lambda: laplacian_matmul(op, X, out=out)))
                t_fused.append(timed(lambda: laplacian_matmul(op, X, 2.0, Y, -1.0, out=Y)))  # a recursion step
                t_copy.append(timed(lambda: cp.copy_(X)))
            # Minimum over repetitions: other processes only ever add time.
            res[threads] = {"spmm_s": min(t_mm), "fused_s": min(t_fused), "copy_s": min(t_copy)}
        return res
    raise ValueError(args.child)


def run_child(kind: str, nside: int, impl: str = "", reps: int = 5, timeout: float = 3600, device: str = "cpu") -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if kind == "memory":  # freed tensors leave the resident set at once (timings keep glibc's defaults)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, __file__, "--child", kind, "--nside", str(nside), "--impl", impl, "--reps", str(reps),
           "--device", device]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed ({tail[:160]})"}
    if r.stderr.strip():
        print(r.stderr.strip(), file=sys.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- report -------------------------------------------------------------------------

def fmt_t(s):
    return "—" if s is None else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def fmt_mb(b):
    return "—" if b is None else (f"{b / 2**20:.0f} MB" if b < 2**30 else f"{b / 2**30:.2f} GB")


NAMES = {"graphsphere": "graphsphere", "deepsphere": "deepsphere 0.2.1", "torch_geometric": "torch_geometric",
         "disco": "torch-harmonics DISCO", "sht_spectral": "torch-harmonics spectral"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="nside 32 and 64 only, no full sky")
    p.add_argument("--no-full-sky", action="store_true", help="skip nside 1024")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--output", default=str(RESULTS), help="markdown file to write")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--nside", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--impl", default="", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.device == "cpu":
            _cap_memory()
        print(json.dumps(_child(args)))
        return

    import platform

    import torch

    versions = []
    for mod, name in (("torch_geometric", "torch_geometric"), ("torch_harmonics", "torch-harmonics"),
                      ("deepsphere", "deepsphere")):
        try:
            versions.append(f"{name} {__import__(mod).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{name} not installed" if mod != "deepsphere" else "deepsphere 0.2.1")
    dev = args.device
    where = (torch.cuda.get_device_name(0) if dev != "cpu" else
             f"{THREADS} threads, {platform.processor() or platform.machine()}")
    nsides = (32, 64) if args.quick else (32, 64, 256)
    lines = ["# Chebyshev convolution: graphsphere vs deepsphere 0.2.1, torch_geometric and torch-harmonics", "",
             (f"One layer, batch {B}, {CIN} -> {COUT} channels, K = {K}, float32, HEALPix k=8 graph, "
             f"normalized Laplacian, torch {torch.__version__}, device {dev}, {where}; machine shared with "
             "other jobs (timings noisy: compare the ratios, measured interleaved in one process)."), "",
             "; ".join(versions) + ". torch-harmonics peers on a (2 nside, 6 nside) grid (HEALPix's pixel count): "
             f"DISCO with {K} isotropic basis functions and a cutoff of {K} pixel spacings (our filter's reach), "
             "equiangular grid; spectral (SHT) convolution on the Gauss-Legendre grid.", ""]
    rows, roof_rows, mem_256 = [], [], {}
    for nside in nsides:
        reps = 5 if nside < 256 else 3
        print(f"nside {nside}: timing ...", flush=True)
        tm = run_child("time", nside, reps=reps, device=dev)
        mem = {}
        for impl in IMPLS:
            print(f"nside {nside}: memory of {impl} ...", flush=True)
            mem[impl] = run_child("memory", nside, impl, device=dev)
        print(f"nside {nside}: roofline ...", flush=True)
        roof = run_child("roofline", nside, reps=reps, device=dev)
        if nside == 256:
            mem_256 = mem
        ours = tm.get("graphsphere", {})
        errors = tm.get("_errors", {})
        for impl in IMPLS:
            t = tm.get(impl)
            m = mem[impl]
            note = errors.get(impl) or (m.get("error", "") if "error" in m else "")
            if t is None and "error" in tm:
                note = tm["error"]
            r_f = t["fwd"] / ours["fwd"] if t and ours else None
            r_fb = t["fwd_bwd"] / ours["fwd_bwd"] if t and ours else None
            spread = t.get("ratio_fwd_bwd") if t else None
            pk = m.get("peak_bytes")
            r_m = pk / mem["graphsphere"]["peak_bytes"] if pk and mem["graphsphere"].get("peak_bytes") else None
            rows.append(f"| {nside} | {12 * nside**2:,} | {NAMES[impl]} | {fmt_t(t and t['fwd'])} | "
                        f"{fmt_t(t and t['fwd_bwd'])} | {fmt_mb(pk)} | "
                        f"{'' if r_f is None else f'{r_f:.1f}x'} | {'' if r_fb is None else f'{r_fb:.1f}x'} | "
                        f"{'' if spread is None else f'{spread[1]:.1f}-{spread[2]:.1f}x'} | "
                        f"{'' if r_m is None else f'{r_m:.1f}x'} | {note} |")
        if "error" not in roof:
            bx, bc = roof["bytes_x"], roof["bytes_csr"]
            for threads in [k for k in roof if k not in ("bytes_x", "bytes_csr")]:
                r = roof[threads]
                bw_copy = 2 * bx / r["copy_s"] / 1e9
                bw_mm = (2 * bx + bc) / r["spmm_s"] / 1e9
                bw_fused = (3 * bx + bc) / r["fused_s"] / 1e9
                roof_rows.append(f"| {nside} | {threads} | {fmt_mb(bx)} | {fmt_t(r['copy_s'])} ({bw_copy:.1f} GB/s) | "
                                 f"{fmt_t(r['spmm_s'])} ({bw_mm:.1f} GB/s) | {bw_copy / bw_mm:.2f} | "
                                 f"{fmt_t(r['fused_s'])} ({bw_fused:.1f} GB/s) | {bw_copy / bw_fused:.2f} |")
        else:
            roof_rows.append(f"| {nside} | | | | | {roof['error']} | | |")
    lines += ["## Time and memory of one layer", "",
              ("Ratios are the peer's time or memory divided by graphsphere's (higher: graphsphere better); "
              "the spread is the min-max of the per-repetition forward + backward ratios. Memory: peak "
              "increase over one forward + backward (RSS on CPU)."), "",
              ("| nside | pixels | implementation | forward | forward + backward | peak memory | "
              "fwd ratio | fwd+bwd ratio | fwd+bwd ratio spread | memory ratio | note |"),
              "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
              "## Sparse product against the copy roofline", "",
              (f"X is [V, {B} x {CIN}] float32. Copy: torch's copy of X into a preallocated buffer (reads and "
              "writes |X|). Product: L~ X (reads X and the CSR arrays, writes |X|). Fused: 2 L~ X - Y written "
              "over Y (one Chebyshev step: reads X, Y and the CSR arrays, writes |X|). Bandwidth = bytes "
              "read + written / time; ratio = copy bandwidth / product bandwidth (1 = at the roofline). "
              "Best of 20 repetitions, all three interleaved."), "",
              "| nside | threads | size of X | copy | L~ X | bandwidth ratio | 2 L~ X - Y | bandwidth ratio |",
              "|---|---|---|---|---|---|---|---|", *roof_rows, ""]
    if not (args.quick or args.no_full_sky):
        print("nside 1024 (full sky): graphsphere only ...", flush=True)
        m = run_child("memory", 1024, "graphsphere", timeout=3 * 3600, device=dev)
        lines += ["## Full sky, nside 1024", "",
                  ("12,582,912 pixels, batch 1, 16 -> 16 channels, K = 5, one layer, forward + backward "
                  "(graph construction not included)."), ""]
        if "error" in m:
            lines.append(f"graphsphere: {m['error']}")
        else:
            act = 12 * 1024**2 * CIN * 4
            lines.append(f"graphsphere: forward + backward {fmt_t(m['fwd_bwd_s'])}, peak memory increase "
                         f"{fmt_mb(m['peak_bytes'])} ({m['peak_bytes'] / act:.1f} activations of "
                         f"{fmt_mb(act)}), resident before the pass (operator, input, weights) "
                         f"{fmt_mb(m['rss_before'])}.")
        lines += ["", ("Peers were not run at nside 1024 (each would need minutes and most of this shared "
                  "machine's 24 GB). Their memory is linear in pixels x batch, so the nside 256 rows above "
                  "(batch 8) predict it: times 16 pixels / 8 batch = 2x:")]
        for impl in IMPLS:
            pk = mem_256.get(impl, {}).get("peak_bytes")
            if pk:
                lines.append(f"- {NAMES[impl]}: ~{fmt_mb(2 * pk)} predicted "
                             f"({2 * pk / (12 * 1024**2 * CIN * 4):.1f} activations).")
        lines.append("")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
