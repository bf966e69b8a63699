"""Whole models, side by side: graphsphere's DeepSphere models against an
SHT-based spherical CNN (torch-harmonics) and deepsphere 0.2.1's U-Net.

    python benchmarks/bench_models.py                  # nside 32, 64, 128, 256 (~25 min on 2 busy cores)
    python benchmarks/bench_models.py --quick          # nside 32 and 64
    python benchmarks/bench_models.py --profile        # + torch.profiler tables of the SHREC'17 model
    python benchmarks/bench_models.py --device cuda    # the same tables on a GPU

Models (REFERENCE.md section 5):
- SHREC'17 classifier: ``SphericalCNN(HEALPix(N), 6, 55, channels=(16, 32, 64, 128, 256), K=4,
  head="global")``, against ``SHTCNN(grid_like_healpix(N), 6, 55, same channels, anchors=4)``: same
  depth, channels and number of weights, Gauss-Legendre grid of 2N x 6N = 12 N^2 pixels (HEALPix's count).
- Cosmology FCN: ``SphericalCNN(HEALPix(N, indices=base pixel 0), 1, 2, channels=(16, 32, 64, 64, 64),
  K=5, head="conv")`` on N^2 pixels, against an SHT CNN with those channels on a full N x N
  Gauss-Legendre grid (N^2 pixels: a spherical-harmonic model has no partial-sky form).
- U-Net: deepsphere 0.2.1's ``SphericalUNet`` architecture (16 -> 3 channels, 64 ... 512 features, 6
  levels, K=4, average pooling: its max pooling fails on torch 2.x; built from its Encoder/Decoder on
  our Laplacians, its own pygsp-based constructor does not run here), against ``SphericalUNet(
  HEALPix(N), 16, 3, channels=(64, 128, 256, 512, 512, 512), K=4, pool="avg")``; nside 32 and 64
  only (the peer's memory grows with K).
- graphsphere's blocks run batch norm and ReLU as one pass (``VertexBatchNorm(x, relu=True)``, the
  compiled ``batch_norm_relu`` kernel on CPU).

Method: one child process per nside, ``torch.set_num_threads(2)`` (``--threads``); per model pair and
mode (inference at batch 1, inference at a large batch, a training step: forward, cross-entropy,
backward, Adam step), a warm-up, then repetitions in which the models alternate, so that load from
other processes hits them alike. Reported: median time per sample (spread: min-max over
repetitions) and the median over repetitions of the per-repetition ratio peer / graphsphere.
Inference at batch 1 is a stream of single samples: each repetition times 5 consecutive calls of one
model (one call right after the other model's would time the wake-up of idle threads and the refill of
caches that the other model emptied, not the model).
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
RESULTS = ROOT / "benchmarks" / "results" / "bench_models.md"
CAP_BYTES = 16 * 2**30
LARGE_BATCH = {32: 32, 64: 32, 128: 32, 256: 4}   # the "large" batch per nside (memory of a shared machine)
TRAIN_BATCH = {32: 32, 64: 32, 128: 16, 256: 1}
REPS = {32: 7, 64: 5, 128: 3, 256: 2}
STREAM_CALLS = 5  # inference at batch 1: consecutive calls per repetition (a stream of single samples)
UNET_NSIDES = {32: 32, 64: 8}                       # nside: large batch of the U-Net comparison


# -- models ---------------------------------------------------------------------------------------

def deepsphere_unet(nside: int, K: int):
    """deepsphere 0.2.1's SphericalUNet (its Encoder and Decoder), on the same Laplacians as ours."""
    import warnings

    import numpy as np
    import torch
    from deepsphere.layers.samplings.healpix_pool_unpool import Healpix
    from deepsphere.models.spherical_unet.decoder import Decoder
    from deepsphere.models.spherical_unet.encoder import Encoder

    import graphsphere as gs

    laps = []
    for level in range(6):  # deepsphere's list: coarsest first
        L = gs.SphereGraph(gs.sampling.HEALPix(nside=nside // 2**(5 - level)), k=8).operator().tocoo()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            laps.append(torch.sparse_coo_tensor(np.stack([L.row, L.col]), L.data.astype(np.float32),
                                                L.shape).coalesce())
    pooling = Healpix(mode="average")  # its max pooling fails on torch 2.x (F.max_pool1d without a kernel size)

    class UNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder(pooling.pooling, laps, K)
            self.decoder = Decoder(pooling.unpooling, laps, K)

        def forward(self, x):
            return self.decoder(*self.encoder(x))

    return UNet()


def build(kind: str, nside: int):
    """{name: model} for one comparison, graphsphere's first; the input's (npix, channels, task)."""
    import numpy as np

    import graphsphere as gs
    from graphsphere.experiments.shapes.sht_cnn import SHTCNN, grid_like_healpix

    if kind == "shrec":
        s = gs.sampling.HEALPix(nside=nside)
        ch = (16, 32, 64, 128, 256)
        ours = gs.models.SphericalCNN(s, 6, 55, channels=ch, K=4, head="global")
        peer = SHTCNN(grid_like_healpix(nside), 6, 55, channels=ch, anchors=4)
        return {"graphsphere": ours, "SHT CNN": peer}, (s.npix, 6, 55)
    if kind == "cosmology":
        if nside < 64:
            raise ValueError("not run below nside 64: one base pixel of nside 32 has too few pixels for the "
                             "FCN's 4 poolings")
        s = gs.sampling.HEALPix(nside=nside, indices=np.arange(nside**2))  # NESTED base pixel 0
        ch = (16, 32, 64, 64, 64)
        ours = gs.models.SphericalCNN(s, 1, 2, channels=ch, K=5, head="conv")
        peer = SHTCNN(gs.sampling.GaussLegendre(nlat=nside, nlon=nside), 1, 2, channels=ch, anchors=5)
        return {"graphsphere": ours, "SHT CNN": peer}, (s.npix, 1, 2)
    if kind == "unet":
        s = gs.sampling.HEALPix(nside=nside)
        ch = (64, 128, 256, 512, 512, 512)
        ours = gs.models.SphericalUNet(s, 16, 3, channels=ch, K=4, pool="avg")
        return {"graphsphere": ours, "deepsphere 0.2.1": deepsphere_unet(nside, 4)}, (s.npix, 16, -3)
    raise ValueError(kind)


# -- measurement (child process) ------------------------------------------------------------------

def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _closures(model, npix, cin, classes, batch, device, train):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, npix, cin, generator=g).to(device)
    model.to(device)
    if not train:
        model.eval()

        def infer():
            with torch.no_grad():
                model(x)
            _sync(device)
        return infer
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if classes > 0:
        y = torch.randint(0, classes, (batch,), generator=g).to(device)
        loss_fn = lambda out: torch.nn.functional.cross_entropy(out, y)
    else:  # per-vertex segmentation (U-Net)
        y = torch.randint(0, -classes, (batch, npix), generator=g).to(device)
        loss_fn = lambda out: torch.nn.functional.cross_entropy(out.reshape(-1, -classes), y.reshape(-1))

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x)).backward()
        opt.step()
        _sync(device)
    return step


def _measure(models, spec, batch, train, reps, device, calls=1):
    """{name: [seconds per call]} with the models alternating in each repetition; each repetition
    times ``calls`` consecutive calls of one model (the per-call mean is recorded)."""
    npix, cin, classes = spec
    fns, out = {}, {}
    for name, m in models.items():
        try:
            fns[name] = _closures(m, npix, cin, classes, batch, device, train)
            fns[name]()  # warm-up (and: does it fit?)
            out[name] = []
        except (MemoryError, RuntimeError) as e:
            fns.pop(name, None)
            out[name] = f"{type(e).__name__}: {str(e)[:100]}"
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            out[name].append((time.perf_counter() - t) / calls)
    return out


def _profile(models, spec, batch, train, device, rows=14):
    from torch.profiler import ProfilerActivity, profile

    npix, cin, classes = spec
    text = {}
    for name, m in models.items():
        fn = _closures(m, npix, cin, classes, batch, device, train)
        fn()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                fn()
        text[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return text


def _child(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    nside, res = args.nside, {}
    kinds = ["shrec", "cosmology"] + (["unet"] if nside in UNET_NSIDES and not args.no_unet else [])
    for kind in kinds:
        t0 = time.perf_counter()
        try:
            models, spec = build(kind, nside)
        except (MemoryError, RuntimeError, ValueError) as e:  # e.g. a model that does not exist at this nside
            res[kind] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
            continue
        built = time.perf_counter() - t0
        large = UNET_NSIDES[nside] if kind == "unet" else LARGE_BATCH[nside]
        train_b = min(large, TRAIN_BATCH[nside])
        modes = {"infer_1": (1, False), f"infer_{large}": (large, False), f"train_{train_b}": (train_b, True)}
        res[kind] = {"built_s": built, "params": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
                     "modes": {}}
        for mode, (batch, train) in modes.items():
            print(f"  nside {nside} {kind} {mode} ...", file=sys.stderr, flush=True)
            calls = STREAM_CALLS if batch == 1 else 1
            res[kind]["modes"][mode] = {"batch": batch, "calls": calls,
                                        "times": _measure(models, spec, batch, train, REPS[nside], device, calls)}
        if args.profile and kind == "shrec":
            res[kind]["profile"] = {f"train_{train_b}": _profile(models, spec, train_b, True, device),
                                    "infer_1": _profile(models, spec, 1, False, device)}
        del models
    return res


def run_child(nside: int, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", "--nside", str(nside), "--threads", str(args.threads),
           "--device", args.device] + (["--profile"] if args.profile else []) + (["--no-unet"] if args.no_unet else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=4 * 3600, check=False)
    if r.stderr.strip():
        print("\n".join(line for line in r.stderr.splitlines() if line.startswith("  nside")), file=sys.stderr)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed ({tail[:200]})"}
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------

def fmt(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


TITLES = {"shrec": "SHREC'17 classifier (6 -> 55, channels 16-32-64-128-256, K=4)",
          "cosmology": "Cosmology FCN (1 -> 2, channels 16-32-64-64-64, K=5, one base pixel: N^2 pixels)",
          "unet": "U-Net (16 -> 3, 64 ... 512 features, 6 levels, K=4)"}


def report(all_res: dict, args) -> list[str]:
    import platform

    import torch

    lines = ["# Whole models: graphsphere vs an SHT CNN (torch-harmonics) and deepsphere 0.2.1", "",
             (f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
             f"{platform.processor() or platform.machine()}; machine shared with other jobs (timings noisy: "
             "the models alternate within each repetition; the ratio column is the median of per-repetition "
             "ratios). Times are per sample: the call's time divided by the batch (at batch 1: the mean of "
             f"{STREAM_CALLS} consecutive calls, a stream of single samples). Spread: min-max over "
             "repetitions. Ratio: the peer's time / graphsphere's (higher: graphsphere faster)."), ""]
    for kind in ("shrec", "cosmology", "unet"):
        rows = []
        for nside, res in all_res.items():
            if "error" in res:
                rows.append(f"| {nside} | | | {res['error']} | | |")
                continue
            r = res.get(kind)
            if r is None:
                continue
            if "error" in r:
                rows.append(f"| {nside} | | | {r['error']} | | |")
                continue
            for mode, m in r["modes"].items():
                times, batch = m["times"], m["batch"]
                ours = times.get("graphsphere")
                for name, t in times.items():
                    if isinstance(t, str):
                        rows.append(f"| {nside} | {mode.replace('_', ' b')} | {name} | {t} | | |")
                        continue
                    med = statistics.median(t) / batch
                    spread = f"{fmt(min(t) / batch)} - {fmt(max(t) / batch)}"
                    ratio = ""
                    if name != "graphsphere" and isinstance(ours, list):
                        ratio = f"{statistics.median(a / b for a, b in zip(t, ours)):.2f}x"
                    rows.append(f"| {nside} | {mode.replace('_', ' b')} | {name} | {fmt(med)} | {spread} | {ratio} |")
        if rows:
            params = next((r[kind]["params"] for r in all_res.values() if kind in r and "params" in r[kind]), {})
            lines += [f"## {TITLES[kind]}", "",
                      "Parameters: " + ", ".join(f"{n} {p:,}" for n, p in params.items()), "",
                      "| nside | mode | model | time per sample (median) | spread | ratio |",
                      "|---|---|---|---|---|---|", *rows, ""]
    for nside, res in all_res.items():
        prof = res.get("shrec", {}).get("profile") if isinstance(res, dict) else None
        if prof:
            lines += [f"## Profile: SHREC'17 model, nside {nside}", ""]
            for mode, tables in prof.items():
                for name, table in tables.items():
                    lines += [f"### {name}, {mode.replace('_', ' batch ')}", "", "```", table.strip(), "```", ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="nside 32 and 64 only")
    p.add_argument("--nsides", type=int, nargs="*", help="nsides to run (default 32 64 128 256)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--profile", action="store_true", help="add torch.profiler tables of the SHREC'17 model")
    p.add_argument("--no-unet", action="store_true", help="skip the U-Net comparison")
    p.add_argument("--output", default=str(RESULTS), help="markdown file to write")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nside", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.device == "cpu":
            resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))
        print(json.dumps(_child(args)))
        return
    nsides = args.nsides or ((32, 64) if args.quick else (32, 64, 128, 256))
    all_res = {}
    for nside in nsides:
        print(f"nside {nside} ...", flush=True)
        all_res[nside] = run_child(nside, args)
    out = Path(args.output)
    lines = report(all_res, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    json_out = out.with_suffix(".json")
    tmp = json_out.with_suffix(".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in all_res.items()}, indent=1))
    os.replace(tmp, json_out)
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
