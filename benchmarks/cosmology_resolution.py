"""Accuracy against resolution in the cosmology experiment (issue 14 item 5).

The hardest setting of the experiment, order-4 patches (1/192 of the sky), measured at several HEALPix
resolutions with everything else fixed: the same maps per class, split, epochs, steps per epoch and
network at every nside. The runner (``graphsphere cosmology``) takes one nside per invocation, so this
script runs it once per nside, each into its own folder, then gathers the results:

    OMP_NUM_THREADS=2 nohup .venv/bin/python benchmarks/cosmology_resolution.py > resolution.log 2>&1 &
    .venv/bin/python benchmarks/cosmology_resolution.py --report-only      # table and figure again
    .venv/bin/python benchmarks/cosmology_resolution.py --nsides 64 128 --set seeds=[0,1,2]

writes ``benchmarks/results/cosmology_resolution.md`` (accuracy per nside, method and noise, mean ± std
over seeds; times) and ``docs/images/cosmology_resolution.png`` (accuracy against nside and pixel size).

What varies with nside: the pixels per patch ((nside/4)^2) and, through them, the pixels per step: the
batch holds the same number of patches at every nside (the config's ``batch_pixels`` at its own nside
fixes it), so every nside takes the same number of steps per epoch. The network has as many poolings
at every nside as the smallest patch allows (3 for the 16 x 16 patches of nside 64). An nside whose
folder already holds every run of the config (same settings) is not run again unless ``--force``
(the runner would only re-test it, but the recorded wall time would then be the re-test's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "cosmology_resolution.yaml"
OUT_ROOT = ROOT / "out" / "cosmology_resolution"
TABLE = ROOT / "benchmarks" / "results" / "cosmology_resolution.md"
FIGURE = ROOT / "docs" / "images" / "cosmology_resolution.png"
NSIDES = (64, 128, 256)
#: The paper's resolution, where PAPER_ORDER4 was measured (on N-body maps).
PAPER_NSIDE = 1024
#: The noise levels of PAPER_ORDER4's tuples.
PAPER_NOISES = (0.0, 0.5, 1.0, 1.5, 2.0)
#: The settings of the 27-arcmin results table (experiments/cosmology_table.yaml) that this sweep keeps.
COMPARED = ("data", "deepsphere", "psd_features")


def pixel_arcmin(nside: int) -> float:
    """The side of a HEALPix pixel, sqrt(4 pi / (12 nside^2)) in arcmin.

    >>> round(pixel_arcmin(128), 1), round(pixel_arcmin(1024), 2)
    (27.5, 3.44)
    """
    return math.degrees(math.sqrt(4 * math.pi / (12 * nside**2))) * 60


def load(config=CONFIG, overrides=()):
    """The experiment config (a YAML path or a dict) with ``key=value`` overrides."""
    from graphsphere.experiments.cosmology import load_config

    return load_config(str(config) if isinstance(config, Path) else config, list(overrides))


def patches_per_step(cfg) -> int:
    """Patches per DeepSphere step that the config's ``batch_pixels`` gives at its own nside, which
    the sweep keeps at every nside.

    >>> patches_per_step(load({"data": {"nside": 128, "orders": [4]}, "deepsphere": {"batch_pixels": 65536}}))
    64
    """
    order = single_order(cfg)
    npix = (cfg.data.nside // order) ** 2
    if cfg.deepsphere.batch_pixels % npix:
        raise ValueError(f"deepsphere.batch_pixels = {cfg.deepsphere.batch_pixels} is not a whole number of "
                         f"{npix}-pixel patches (order {order} at nside {cfg.data.nside}); give a multiple of {npix}")
    return cfg.deepsphere.batch_pixels // npix


def single_order(cfg) -> int:
    """The config's one patch order (a resolution sweep compares one order)."""
    if len(cfg.data.orders) != 1:
        raise ValueError(f"data.orders = {cfg.data.orders}: the resolution sweep takes one order; "
                         "give data.orders=[4] (or another single order)")
    return cfg.data.orders[0]


def nside_overrides(cfg, nside: int, out_root: Path) -> list[str]:
    """The ``key=value`` overrides that move ``cfg`` to ``nside``, keeping the patches per step (so the
    steps per epoch) and writing to ``out_root/nside<nside>``.

    >>> base = load({"data": {"nside": 128, "orders": [4]}, "deepsphere": {"batch_pixels": 65536}})
    >>> nside_overrides(base, 256, Path("out"))
    ['data.nside=256', 'deepsphere.batch_pixels=262144', 'output_dir=out/nside256']
    """
    side = nside // single_order(cfg)
    return [f"data.nside={nside}", f"deepsphere.batch_pixels={patches_per_step(cfg) * side * side}",
            f"output_dir={Path(out_root) / f'nside{nside}'}"]


def plan(config, nsides, out_root: Path, extra=()) -> dict[int, list[str]]:
    """The overrides of every nside, each checked by the config's validation before anything runs
    (a patch too small for the network's poolings is refused here, naming the key)."""
    base = load(config, extra)
    overrides = {}
    for nside in nsides:
        ov = list(extra) + nside_overrides(base, nside, out_root)
        load(config, ov)
        overrides[nside] = ov
    return overrides


def complete(cfg, out: Path) -> bool:
    """Whether ``out/results.json`` holds every (method, noise, seed) run of ``cfg`` at its order,
    measured with the same data and training settings."""
    path = Path(out) / "results.json"
    if not path.exists():
        return False
    try:
        results = json.loads(path.read_text())
    except ValueError:
        return False
    mine = cfg.model_dump()
    theirs = results.get("config", {})
    for section in ("data", "deepsphere", "psd_features"):
        a, b = mine.get(section), theirs.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            a, b = {k: v for k, v in a.items() if k != "orders"}, {k: v for k, v in b.items() if k != "orders"}
        if a != b:
            return False
    done = {(r["method"], r["order"], float(r["noise"]), r["seed"]) for r in results.get("runs", [])}
    order = single_order(cfg)
    return all((m, order, float(n), s) in done for m in cfg.methods for n in cfg.noise_levels for s in cfg.seeds)


def _atomic_text(path: Path, text: str) -> None:
    # a reader (or a killed sweep) never sees half a file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "graphsphere"
    exe = str(exe) if exe.exists() else shutil.which("graphsphere")
    if not exe:
        raise SystemExit("the graphsphere command is missing: pip install -e . in the repository")
    return [exe, "cosmology"]


def sweep(config, nsides, out_root: Path, extra=(), force: bool = False) -> dict:
    """Run ``graphsphere cosmology`` once per nside (skipping complete ones unless ``force``); returns
    and records in ``out_root/sweep.json`` each invocation's wall time, load and threads."""
    overrides = plan(config, nsides, out_root, extra)
    log_path = Path(out_root) / "sweep.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    for nside, ov in overrides.items():
        cfg = load(config, ov)
        if not force and complete(cfg, Path(cfg.output_dir)):
            print(f"[resolution] nside {nside}: complete in {cfg.output_dir}, not run again (--force to)", flush=True)
            continue
        cmd = _cli() + [str(config)] + ov
        print(f"[resolution] nside {nside}: {' '.join(cmd)}", flush=True)
        load_before, t0, c0 = os.getloadavg(), time.perf_counter(), os.times()
        subprocess.run(cmd, check=True, cwd=ROOT)
        c1 = os.times()
        log[str(nside)] = {"wall_s": round(time.perf_counter() - t0, 1),
                           "cpu_s": round(c1.children_user + c1.children_system - c0.children_user
                                          - c0.children_system, 1),
                           "load_before": [round(v, 2) for v in load_before],
                           "load_after": [round(v, 2) for v in os.getloadavg()],
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                           "overrides": ov, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        _atomic_text(log_path, json.dumps(log, indent=1))
        print(f"[resolution] nside {nside}: {log[str(nside)]['wall_s']:.0f} s wall", flush=True)
    return log


def gather(out_root: Path, nsides) -> dict:
    """``{nside: results.json}`` of the nsides whose folder has results."""
    found = {}
    for nside in nsides:
        path = Path(out_root) / f"nside{nside}" / "results.json"
        if path.exists():
            found[nside] = json.loads(path.read_text())
    return found


def cells(results: dict) -> dict:
    """``{(method, noise): accuracies in %}`` of one nside's results (its one order)."""
    order = results["config"]["data"]["orders"][0]
    out = {}
    for method, per_order in results["accuracy"].items():
        for noise, accs in per_order.get(f"o{order}", {}).items():
            out[(method, float(noise))] = np.asarray(accs, dtype=float) * 100
    return out


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (NaN below 2 values).

    >>> mean_std([60.0, 62.0])
    (61.0, 1.4142135623730951)
    """
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _fmt(values) -> str:
    if len(values) == 0:
        return "-"
    m, s = mean_std(values)
    return f"{m:.1f}" + (f" ± {s:.1f}" if np.isfinite(s) else "")


def run_seconds(results: dict) -> dict:
    """``{method: mean seconds per run}`` (training and testing; a re-tested run keeps its training time)."""
    per: dict[str, list[float]] = {}
    for r in results.get("runs", []):
        per.setdefault(r["method"], []).append(float(r["seconds"]))
    return {m: float(np.mean(t)) for m, t in per.items()}


def format_report(found: dict, log: dict) -> str:
    """The markdown of benchmarks/results/cosmology_resolution.md."""
    from graphsphere.experiments.cosmology import LABELS, METHODS

    nsides = sorted(found)
    if not nsides:
        raise ValueError("no results to report: run the sweep first")
    per_nside = {n: cells(found[n]) for n in nsides}
    keys = sorted({k for c in per_nside.values() for k in c}, key=lambda k: (METHODS.index(k[0]), k[1]))
    cfg = found[nsides[0]]["config"]
    d, ds = cfg["data"], cfg["deepsphere"]
    order = d["orders"][0]
    seeds = sorted({s for n in nsides for s in found[n]["config"]["seeds"]})
    lines = [
        "# Cosmology experiment: accuracy against resolution",
        "",
        f"Test accuracy (%) telling the two cosmologies apart from **order-{order} patches (1/{12 * order ** 2} of the "
        f"sky)** at several HEALPix resolutions, everything else fixed. "
        + (f"Mean ± sample std over seeds {seeds}" if len(seeds) > 1 else f"One seed ({seeds[0]}), no spread")
        + " (a seed: its own maps, split, noise draw and initialisation).",
        "",
        "Produced by `benchmarks/cosmology_resolution.py` (one `graphsphere cosmology "
        "experiments/cosmology_resolution.yaml data.nside=N ...` per nside); the figure: "
        "[docs/images/cosmology_resolution.png](../../docs/images/cosmology_resolution.png).",
        "",
        "| method | noise | " + " | ".join(f"nside {n} ({pixel_arcmin(n):.0f}')" for n in nsides)
        + (f" | change {nsides[0]} → {nsides[-1]}" if len(nsides) > 1 else "") + " |",
        "|---|---|" + "---|" * (len(nsides) + (len(nsides) > 1)),
    ]
    for method, noise in keys:
        row = [per_nside[n].get((method, noise), []) for n in nsides]
        change = ""
        if len(nsides) > 1 and len(row[0]) and len(row[-1]):
            change = f" | {np.mean(row[-1]) - np.mean(row[0]):+.1f}"
        lines.append(f"| {LABELS[method]} | {noise:g} | " + " | ".join(_fmt(v) for v in row) + change + " |")
    lines += ["", "Settings (`experiments/cosmology_resolution.yaml`, the same at every nside but the pixels):", ""]
    for n in nsides:
        s = found[n]["sizes"].get(f"o{order}", {})
        bp = found[n]["config"]["deepsphere"]["batch_pixels"]
        lines.append(f"- nside {n}: {pixel_arcmin(n):.1f} arcmin pixels, lmax {3 * n - 1}, {s.get('pixels per sample')} "
                     f"pixels per patch; {s.get('train')} training / {s.get('val')} validation / {s.get('test')} test "
                     f"patches; {bp // s['pixels per sample'] if s.get('pixels per sample') else '?'} patches "
                     f"({bp} pixels) per step")
    lines += [
        f"- maps: {d['n_maps_per_class']} full-sky lognormal maps per class (shift_scale {d['shift_scale']:g}, "
        f"3 arcmin beam), split by whole maps (test {d['test_fraction']:g}, validation {d['val_fraction']:g}); "
        "noise: white Gaussian, the level times the clean maps' pixel std **at that nside**;",
        f"- DeepSphere FCN: {', '.join(f'GC{c}-P4' for c in ds['channels'])}, GC2, global mean (K = {ds['K']}, "
        f"batch norm, {ds['pool']} pooling; {len(ds['channels'])} poolings at every nside), standardised inputs, "
        f"Adam lr {ds['lr']:g}, {ds['epochs']} epochs, the epoch of lowest validation loss;",
        f"- SVMs: linear, C by 5-fold cross-validation; 80-bin pixel histograms, or log power in rings of the "
        f"2D periodogram (`psd_features: {cfg['psd_features']}`).",
        "",
        "Time per run (training and testing, seconds, mean over the runs of a method):",
        "",
        "| method | " + " | ".join(f"nside {n}" for n in nsides) + " |",
        "|---|" + "---|" * len(nsides),
    ]
    secs = {n: run_seconds(found[n]) for n in nsides}
    for m in [m for m in METHODS if any(m in secs[n] for n in nsides)]:
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{secs[n][m]:.0f}" if m in secs[n] else "-" for n in nsides)
                     + " |")
    walls = [f"nside {n}: {log[str(n)]['wall_s']:.0f} s wall ({log[str(n)]['cpu_s']:.0f} s CPU; load average "
             f"{log[str(n)]['load_before'][0]:.1f} before, {log[str(n)]['load_after'][0]:.1f} after; OMP_NUM_THREADS="
             f"{log[str(n)]['omp_num_threads']})" for n in nsides if str(n) in log]
    if walls:
        lines += ["", "Whole invocations (maps from the cache where made before): " + "; ".join(walls) + "."]
    return "\n".join(lines) + "\n"


def figure(found: dict, paper: bool = True):
    """Accuracy against nside (bottom axis) and pixel size (top axis): one line per method and noise
    level, error bars (std over seeds) only where a point has 2 seeds or more; the paper's order-4
    accuracies at nside 1024 (N-body maps) as stars."""
    import matplotlib.pyplot as plt

    from graphsphere.experiments.cosmology import LABELS, METHODS, PAPER_ORDER4
    from graphsphere.plot import style

    nsides = sorted(found)
    per_nside = {n: cells(found[n]) for n in nsides}
    keys = sorted({k for c in per_nside.values() for k in c}, key=lambda k: (METHODS.index(k[0]), k[1]))
    noises = sorted({k[1] for k in keys})
    dashes = ["-", "--", ":", "-."]
    markers = dict(zip(METHODS, "osD^v"))
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig, ax = plt.subplots(figsize=(style.PAGE_WIDTH * 0.62, 4.4))
        for i, (method, noise) in enumerate(keys):
            # nudge the lines apart along the (log) axis so that equal accuracies and bars stay visible
            nudge = 2 ** (0.035 * (i - (len(keys) - 1) / 2))
            xs, means, errs = [], [], []
            for n in nsides:
                v = per_nside[n].get((method, noise))
                if v is not None and v.size:
                    m, s = mean_std(v)
                    xs.append(n * nudge), means.append(m), errs.append(s)
            color = f"C{METHODS.index(method)}"
            ls = dashes[noises.index(noise) % len(dashes)]
            ax.plot(xs, means, ls=ls, marker=markers[method], mfc="none" if noise else color, ms=4.5, mew=1, lw=1.1,
                    color=color, label=f"{LABELS[method]}, noise {noise:g}")
            errs = np.asarray(errs)
            if np.isfinite(errs).any():
                ax.errorbar(xs, means, yerr=np.where(np.isfinite(errs), errs, 0), fmt="none", ecolor=color,
                            elinewidth=0.8, capsize=2)
            if paper and method in PAPER_ORDER4 and noise in PAPER_NOISES:
                ax.plot([PAPER_NSIDE * nudge], [PAPER_ORDER4[method][PAPER_NOISES.index(noise)]], marker="*", ms=7,
                        mfc="none" if noise else color, mew=0.9, color=color, ls="none")
        if paper:
            ax.plot([], [], marker="*", ms=7, color="gray", ls="none", label="the paper, nside 1024 (N-body maps)")
        ticks = nsides + ([PAPER_NSIDE] if paper else [])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.set_xlim(ticks[0] / 1.3, ticks[-1] * 1.3)
        ax.axhline(50, color="gray", lw=0.8, ls=":")
        ax.set(xlabel="HEALPix nside", ylabel="test accuracy (%)")
        top = ax.secondary_xaxis("top", functions=(lambda n: pixel_arcmin(1) / np.maximum(n, 1e-9),
                                                   lambda a: pixel_arcmin(1) / np.maximum(a, 1e-9)))
        top.set_xticks([pixel_arcmin(n) for n in ticks], [f"{pixel_arcmin(n):.1f}'" for n in ticks])
        top.minorticks_off()
        top.set_xlabel("pixel size (arcmin)")
        ax.grid(alpha=0.3)
        cfg = found[nsides[0]]["config"]
        order = cfg["data"]["orders"][0]
        seeds = sorted({s for n in nsides for s in found[n]["config"]["seeds"]})
        bars = "error bars: std over seeds" if len(seeds) > 1 else "one seed: no error bars"
        ax.set_title(f"order {order} (1/{12 * order * order} of the sky), {cfg['data']['n_maps_per_class']} maps per "
                     f"class, {len(seeds)} seed(s); {bars}", fontsize=7.5)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False, fontsize=7)
        fig.tight_layout()
    return fig


def report(out_root: Path, nsides, table: Path = TABLE, image: Path = FIGURE) -> str:
    """Write the table and the figure from the results under ``out_root``; returns the markdown."""
    from graphsphere.plot import maps

    found = gather(out_root, nsides)
    log_path = Path(out_root) / "sweep.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    text = format_report(found, log)
    _atomic_text(Path(table), text)
    image.parent.mkdir(parents=True, exist_ok=True)
    maps.savefig(figure(found), image)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--nsides", type=int, nargs="+", default=list(NSIDES))
    p.add_argument("--out-root", type=Path, default=OUT_ROOT, help="one folder nside<N> per nside under it")
    p.add_argument("--set", dest="extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for every nside, e.g. seeds=[0,1,2] data.n_maps_per_class=8")
    p.add_argument("--force", action="store_true", help="run (re-test) complete nsides again")
    p.add_argument("--report-only", action="store_true", help="only write the table and the figure")
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--figure", type=Path, default=FIGURE)
    args = p.parse_args(argv)
    if not args.report_only:
        sweep(args.config, args.nsides, args.out_root, args.extra, args.force)
    print(report(args.out_root, args.nsides, args.table, args.figure))
    print(f"[resolution] wrote {args.table} and {args.figure}")


if __name__ == "__main__":
    main()
