"""The cosmology experiment of DeepSphere (2019), end to end.

Tell two cosmological models apart (Omega_m = 0.31, sigma_8 = 0.82 against
0.26, 0.91: nearly the same power spectrum) from partial-sky convergence maps
with noise. For every patch order, seed and noise level, on the same maps and
the same split by full-sky map, it trains and tests:

- ``deepsphere_fcn``: GC-P blocks, a last graph convolution to 2 features, global mean
  (rotation invariant; the paper: GC16-P4, GC32-P4, 3 x (GC64-P4), GC2, mean);
- ``deepsphere_cnn``: the same convolutions, then a fully connected layer;
- ``convnet2d``: a 2D ConvNet of about the same size on the patches as images;
- ``svm_histogram`` and ``svm_psd``: linear SVMs on pixel histograms and power spectra;

and writes the accuracy table (markdown and JSON), sample maps, training
curves and accuracy against noise. The three networks train through
:func:`graphsphere.train.fit` (standardised inputs, checkpoints, logs,
resume, the best epoch by validation loss); the SVMs are scikit-learn
estimators (:mod:`.baselines`).

A seed is a whole replication: its own maps, split, noise and initialisation.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .config import LABELS, METHODS, ExperimentConfig, load_config

__all__ = ["format_table", "run", "PAPER_ORDER4"]

#: The 2019 paper, order 4 (1/192 of the sky), noise 0 / 0.5 / 1 / 1.5 / 2 (REFERENCE.md section 5).
PAPER_ORDER4 = {"deepsphere_fcn": (100, 99.8, 97.7, 92.5, 86.8), "convnet2d": (98.8, 97.7, 92.9, 87.9, 81.0),
                "svm_histogram": (90.5, 89.0, 86.0, 80.0, 74.2), "svm_psd": (86.4, 77.8, 71.4, 68.0, 63.7)}


def _patches_per_batch(batch_pixels: int, npix_patch: int, n_train: int) -> int:
    # at least 2 (batch norm), at most the training set
    return int(min(max(2, batch_pixels // npix_patch), max(2, n_train)))


def _data_section(cfg: ExperimentConfig, order: int, noise: float, seed: int) -> dict:
    d = cfg.data
    data = {"name": "cosmology", "nside": d.nside, "order": order, "n_maps_per_class": d.n_maps_per_class,
            "shift_scale": d.shift_scale, "noise": noise, "test_fraction": d.test_fraction,
            "val_fraction": d.val_fraction, "seed": seed, "standardize_inputs": cfg.deepsphere.standardize}
    if d.cache_dir:
        data["cache_dir"] = d.cache_dir
    return data


def _train_config(cfg: ExperimentConfig, method: str, order: int, noise: float, seed: int, out: Path,
                  batch_size: int = 32) -> dict:
    """The graphsphere.train config of one network run (DeepSphere or the 2D ConvNet)."""
    if method == "convnet2d":
        net = cfg.convnet
        model = {"type": "ConvNet2D", "channels": list(net.channels)}
        accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[net.device]
        precision = "32"
    else:
        net = cfg.deepsphere
        model = {"type": "SphericalCNN", "channels": list(net.channels), "K": net.K, "pool": net.pool,
                 "head": "conv" if method == "deepsphere_fcn" else "fc"}
        accelerator, precision = net.accelerator, net.precision
    return {"task": "classification", "output_dir": str(out), "data": _data_section(cfg, order, noise, seed),
            "model": model,
            "optim": {"name": "adam", "lr": net.lr, "scheduler": "exponential" if net.lr_decay != 1 else "none",
                      "gamma": net.lr_decay, "interval": "step"},
            "trainer": {"max_epochs": net.epochs, "batch_size": batch_size, "seed": seed,
                        "accelerator": accelerator, "precision": precision, "loggers": ["csv"],
                        "progress_bar": cfg.progress, "checkpoint_every_n_steps": 100}}


def _arrays(subset) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, npix], y [n]) of a torch Subset of a MapDataset."""
    idx = np.asarray(subset.indices)
    x = np.asarray(subset.dataset.x)[idx]
    return x.reshape(len(idx), -1), np.asarray(subset.dataset.y)[idx]


def _svm(method: str, cfg: ExperimentConfig, order: int, splits, seed: int) -> tuple[float, dict, int]:
    """(test accuracy, no history, number of weights) of one SVM, trained on the training and
    validation maps (it chooses C by cross-validation) and scored on the test maps."""
    from .baselines import SVMBaseline

    xtr, ytr = _arrays(splits.train)
    xte, yte = _arrays(splits.test)
    if splits.val is not None:
        xva, yva = _arrays(splits.val)
        xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    kw = {"psd_method": cfg.psd_features, "order": order} if method == "svm_psd" else {}
    svm = SVMBaseline("psd" if method == "svm_psd" else "histogram", seed=seed, **kw).fit(xtr, ytr)
    return float(svm.score(xte, yte)), {}, svm.n_features + 1


def _history_from_csv(out: Path) -> dict:
    """Per-epoch train/val loss and accuracy from Lightning's CSV log."""
    import csv

    hist: dict[str, dict[int, float]] = {}
    for f in sorted(out.glob("logs/version_*/metrics.csv")):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                for key in ("train_loss_epoch", "val_loss", "train_acc_epoch", "val_acc"):
                    if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                        hist.setdefault(key, {})[int(row["epoch"])] = float(row[key])
    return {k: [v[e] for e in sorted(v)] for k, v in hist.items()}


def _network(cfg: ExperimentConfig, method: str, order: int, noise: float, seed: int, splits,
             out: Path) -> tuple[float, dict, int]:
    """(test accuracy of the best epoch, history, parameters) of one network trained by the engine."""
    from ...train import fit

    net = cfg.convnet if method == "convnet2d" else cfg.deepsphere
    n_train = len(splits.train)
    bs = _patches_per_batch(net.batch_pixels, splits.sampling.npix, n_train)
    train_cfg = _train_config(cfg, method, order, noise, seed, Path(), bs)
    # The folder name carries a digest of the run's settings: the same command resumes (or just
    # re-tests) its own checkpoints, and changed data or training settings never pick up a stale model.
    train_cfg["trainer"]["progress_bar"] = None
    digest = hashlib.sha1(json.dumps(train_cfg, sort_keys=True).encode()).hexdigest()[:8]
    run_dir = out / "runs" / f"{method}_order{order}_noise{noise:g}_seed{seed}_{digest}"
    train_cfg["output_dir"], train_cfg["trainer"]["progress_bar"] = str(run_dir), cfg.progress
    result = fit(train_cfg)
    acc = float(result.metrics["test"]["test_acc"])
    params = sum(p.numel() for p in result.module.model.parameters())
    return acc, _history_from_csv(run_dir), params


def run(cfg: ExperimentConfig | dict | None = None) -> dict:
    """Run the experiment; returns ``{"accuracy": {method: {"o<order>": {noise: [acc per seed]}}}, ...}``
    and writes ``results.json``, ``results.md``, ``sample_maps.png``, ``training_curves.png`` and
    ``accuracy.png`` to ``cfg.output_dir``."""
    from ...train.config import load_train_config
    from ...train.engine import build_data

    cfg = cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc: dict[str, dict[str, dict[str, list[float]]]] = {m: {} for m in cfg.methods}
    curves: dict[str, dict] = {}
    timings: dict[str, float] = {m: 0.0 for m in cfg.methods}
    params: dict[str, dict[str, int]] = {m: {} for m in cfg.methods}
    sizes: dict[str, dict] = {}
    t_start = time.perf_counter()
    data_seconds = 0.0
    for order in cfg.data.orders:
        for seed in cfg.seeds:
            for noise in cfg.noise_levels:
                t0 = time.perf_counter()
                splits = build_data(load_train_config(
                    _train_config(cfg, "deepsphere_fcn", order, noise, seed, out / "runs" / "data")))
                data_seconds += time.perf_counter() - t0
                sizes[f"o{order}"] = {"train": len(splits.train), "val": len(splits.val) if splits.val else 0,
                                      "test": len(splits.test), "pixels per sample": splits.sampling.npix}
                for method in cfg.methods:
                    t0 = time.perf_counter()
                    tag = f"order {order}, seed {seed}, noise {noise:g}: {LABELS[method]}"
                    print(f"[cosmology] {tag} ...", flush=True)
                    if method.startswith("svm"):
                        a, hist, n = _svm(method, cfg, order, splits, seed)
                    else:
                        a, hist, n = _network(cfg, method, order, noise, seed, splits, out)
                    timings[method] += time.perf_counter() - t0
                    params[method][f"o{order}"] = n
                    acc[method].setdefault(f"o{order}", {}).setdefault(f"{noise:g}", []).append(a)
                    # curves of the first seed, at the highest order (the most validation patches),
                    # without noise and at the highest noise level
                    if (seed == cfg.seeds[0] and order == max(cfg.data.orders)
                            and noise in (min(cfg.noise_levels), max(cfg.noise_levels))):
                        curves[f"{method}|{noise:g}"] = hist
                    print(f"[cosmology] {tag} test accuracy {100 * a:.1f}% "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {"config": cfg.model_dump(), "accuracy": acc, "sizes": sizes, "parameters": params,
               "seconds": {m: round(t, 1) for m, t in timings.items()}, "data_seconds": round(data_seconds, 1),
               "total_seconds": round(time.perf_counter() - t_start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = format_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    _pictures(cfg, curves, results, out)
    return results


def _cell(values) -> str:
    v = np.array(values, dtype=float) * 100
    if v.size == 0:
        return "-"
    return f"{v.mean():.1f}" + (f" ± {v.std(ddof=1):.1f}" if v.size > 1 else "")


def format_table(results: dict) -> str:
    """The paper-style table: accuracy (%) per order, method and noise level
    (mean ± sample std over seeds), with the settings it was measured at."""
    cfg = results["config"]
    d = cfg["data"]
    noises = [f"{n:g}" for n in cfg["noise_levels"]]
    orders = d.get("orders") or [d.get("order")]
    seeds = cfg["seeds"]
    head = (f"Test accuracy (%) on held-out maps: nside {d['nside']}, {d['n_maps_per_class']} full-sky maps per "
            f"class (shift_scale {d['shift_scale']:g}), split by whole maps "
            f"(test {d['test_fraction']:g}, validation {d['val_fraction']:g} of them); "
            f"{len(seeds)} run(s) per cell, seeds {seeds} (each seed: new maps, split, noise and initialisation)"
            + ("; mean ± std over seeds." if len(seeds) > 1 else "."))
    lines = [head, ""]
    for o in orders:
        s = results["sizes"].get(f"o{o}", {})
        lines.append(f"- order {o}: 1/{12 * o ** 2} of the sky per sample, {s.get('pixels per sample', '?')} pixels; "
                     f"{s.get('train', '?')} training / {s.get('val', '?')} validation / {s.get('test', '?')} "
                     "test patches")
    lines += ["", "| order | method | params | " + " | ".join(f"noise {n}" for n in noises) + " |",
              "|---|---|---|" + "---|" * len(noises)]
    for o in orders:
        for m, per_order in results["accuracy"].items():
            per_noise = per_order.get(f"o{o}", {})
            n_params = results.get("parameters", {}).get(m, {}).get(f"o{o}", "-")
            cells = " | ".join(_cell(per_noise.get(n, [])) for n in noises)
            lines.append(f"| {o} | {LABELS[m]} | {n_params} | {cells} |")
    secs = ", ".join(f"{LABELS[m]} {t:.0f} s" for m, t in results["seconds"].items())
    lines += ["", (f"Time: {results['total_seconds']:.0f} s in all "
                   f"(data {results.get('data_seconds', 0):.0f} s; {secs}).")]
    return "\n".join(lines)


def _pictures(cfg: ExperimentConfig, curves: dict, results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[cosmology] matplotlib missing: no pictures (pip install 'graphsphere[plot]')")
        return
    _sample_maps(cfg, plt, out / "sample_maps.png")
    _training_curves(curves, plt, out / "training_curves.png", max(cfg.data.orders))
    _accuracy_plot(results, plt, out / "accuracy.png")
    print(f"[cosmology] wrote {out / 'sample_maps.png'}, {out / 'training_curves.png'}, {out / 'accuracy.png'}")


def _sample_maps(cfg: ExperimentConfig, plt, path: Path) -> None:
    """One full-sky map per model, and one of its patches without noise and with the
    highest noise level of the run (2, the paper's highest, if the run has only 0)."""
    import healpy as hp

    from ...data import cosmology
    from .baselines import nested_to_image

    order = cfg.data.orders[0]
    data = cosmology.make_dataset(nside=cfg.data.nside, n_maps_per_class=1, order=order, progress=False,
                                  shift_scale=cfg.data.shift_scale, cache_dir=cfg.data.cache_dir,
                                  seed=cfg.seeds[0])
    level = max(cfg.noise_levels) or 2.0
    noisy = data.noisy(level)
    lo, hi = np.percentile(data.x, [0.5, 99.5])
    fig = plt.figure(figsize=(12, 6.5))
    for c in (0, 1):
        rows = np.flatnonzero(data.y == c)       # the 12 o^2 patches of map 0 of class c, NESTED
        om, s8 = data.cosmologies[c]
        hp.mollview(data.x[rows].reshape(-1), nest=True, fig=fig.number, sub=(2, 3, 1 + 3 * c), cmap="magma",
                    min=lo, max=hi, title=f"model {c + 1}: $\\Omega_m$={om}, $\\sigma_8$={s8}", cbar=False)
        # outline of patch 0 (HEALPix pixel 0 at nside = order), the patch shown on the right
        corners = hp.boundaries(order, 0, step=max(2, 64 // order), nest=True)
        theta, phi = hp.vec2ang(np.hstack([corners, corners[:, :1]]).T)
        hp.projplot(theta, phi, color="cyan", lw=1.2)
        for j, (img, what) in enumerate(((data.x[rows[0]], "noise 0"), (noisy[rows[0]], f"noise {level:g}"))):
            ax = fig.add_subplot(2, 3, 2 + j + 3 * c)
            ax.imshow(nested_to_image(img), cmap="magma", vmin=lo if j == 0 else None, vmax=hi if j == 0 else None)
            ax.set_title(f"patch 0 (order {order}, {data.npix_patch} pixels), {what}", fontsize=9)
            ax.axis("off")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _training_curves(curves: dict, plt, path: Path, order: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    noises = sorted({float(k.split("|")[1]) for k in curves})
    for key, hist in curves.items():
        method, noise = key.split("|")
        loss_t, acc_v = hist.get("train_loss_epoch"), hist.get("val_acc")
        style = {"color": colors[method], "label": f"{LABELS[method]}, noise {noise}",
                 "alpha": 1.0 - 0.6 * noises.index(float(noise)) / max(1, len(noises) - 1),
                 "ls": "-" if float(noise) == noises[0] else "--"}
        if loss_t:
            axes[0].plot(range(1, len(loss_t) + 1), loss_t, **style)
        if acc_v:
            axes[1].plot(range(1, len(acc_v) + 1), np.array(acc_v) * 100, **style)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy (held-out maps)")
    fig.suptitle(f"order {order}, first seed", fontsize=10)
    axes[1].axhline(50, color="gray", lw=0.8)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _accuracy_plot(results: dict, plt, path: Path) -> None:
    """Accuracy against noise, one panel per order, one line per method (error bars: std over seeds)."""
    cfg = results["config"]
    orders = cfg["data"]["orders"]
    noises = [float(n) for n in cfg["noise_levels"]]
    fig, axes = plt.subplots(1, len(orders), figsize=(4.6 * len(orders), 4), squeeze=False, sharey=True)
    for ax, o in zip(axes[0], orders):
        for i, m in enumerate(METHODS):
            per_noise = results["accuracy"].get(m, {}).get(f"o{o}")
            if not per_noise:
                continue
            v = [np.array(per_noise.get(f"{n:g}", [np.nan]), dtype=float) * 100 for n in noises]
            mean = [x.mean() for x in v]
            err = [x.std(ddof=1) if x.size > 1 else 0.0 for x in v]
            ax.errorbar(noises, mean, yerr=err, marker="o", ms=4, capsize=3, color=f"C{i}", label=LABELS[m])
        ax.axhline(50, color="gray", lw=0.8)
        ax.set(xlabel="noise (x pixel std)", title=f"order {o}: 1/{12 * o * o} of the sky")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"nside {cfg['data']['nside']}, {cfg['data']['n_maps_per_class']} maps per class, "
                 f"{len(cfg['seeds'])} seed(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
