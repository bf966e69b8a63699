"""The cosmology experiment of DeepSphere (2019), end to end.

Tell two cosmological models apart (Omega_m = 0.31, sigma_8 = 0.82 against
0.26, 0.91: nearly the same power spectrum) from partial-sky convergence maps
with noise. For every noise level and seed, on the same maps and the same
split by full-sky map, it trains and tests:

- ``deepsphere_fcn``: GC16-P, GC32-P, 3 x (GC64-P), GC2, global mean (rotation invariant);
- ``deepsphere_cnn``: the same convolutions, then a fully connected layer;
- ``convnet2d``: a 2D ConvNet of matched size on the patches as images;
- ``svm_histogram`` and ``svm_psd``: linear SVMs on pixel histograms and power spectra;

and writes the accuracy table (markdown and JSON), sample maps and training
curves. DeepSphere trains through :func:`graphsphere.train.fit` (checkpoints,
logs, resume); the baselines through :mod:`graphsphere.baselines`.

>>> cfg = ExperimentConfig(noise_levels=[0.0], methods=["svm_histogram"])
>>> cfg.data.nside, cfg.data.order
(128, 4)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt

__all__ = ["ExperimentConfig", "run", "METHODS"]

METHODS = ("deepsphere_fcn", "deepsphere_cnn", "convnet2d", "svm_histogram", "svm_psd")
LABELS = {"deepsphere_fcn": "DeepSphere FCN", "deepsphere_cnn": "DeepSphere CNN", "convnet2d": "2D ConvNet",
          "svm_histogram": "SVM on histograms", "svm_psd": "SVM on power spectra"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    """Which maps (see :func:`graphsphere.data.cosmology.make_dataset`)."""

    nside: PositiveInt = 128
    order: PositiveInt = 4
    n_maps_per_class: PositiveInt = 8
    shift_scale: PositiveFloat = 1.0
    test_fraction: float = Field(0.25, gt=0, lt=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    cache_dir: str | None = None


class DeepSphereSection(_Strict):
    #: one graph convolution + pooling per entry; the paper (65k-pixel patches) used [16, 32, 64, 64, 64]
    channels: list[PositiveInt] = [16, 32, 64, 64]
    K: PositiveInt = 5
    epochs: PositiveInt = 6
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    #: learning-rate decay per step (the paper: 2e-4 decayed by 0.999 per step)
    lr_decay: PositiveFloat = 0.999
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"


class ConvNetSection(_Strict):
    epochs: PositiveInt = 6
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    lr_decay: PositiveFloat = 0.999


class ExperimentConfig(_Strict):
    """Everything the experiment does; the defaults are the quick run (a few minutes on 2 cores)."""

    output_dir: str = "out/cosmology"
    data: DataSection = Field(default_factory=DataSection)
    noise_levels: list[NonNegativeFloat] = [0.0, 1.0, 2.0]
    seeds: list[int] = [0]
    methods: list[Literal[METHODS]] = list(METHODS)  # type: ignore[valid-type]
    deepsphere: DeepSphereSection = Field(default_factory=DeepSphereSection)
    convnet: ConvNetSection = Field(default_factory=ConvNetSection)
    #: power-spectrum features: "anafast" (the paper's, one full-sky transform per patch) or "fft" (fast)
    psd_features: Literal["anafast", "fft"] = "fft"
    progress: bool = True


def _train_config(cfg: ExperimentConfig, method: str, noise: float, seed: int, out: Path) -> dict:
    """The graphsphere.train config of one DeepSphere run."""
    d, ds = cfg.data, cfg.deepsphere
    data = {"name": "cosmology", "nside": d.nside, "order": d.order, "n_maps_per_class": d.n_maps_per_class,
            "shift_scale": d.shift_scale, "noise": noise, "test_fraction": d.test_fraction,
            "val_fraction": d.val_fraction, "seed": 0}
    if d.cache_dir:
        data["cache_dir"] = d.cache_dir
    return {"task": "classification", "output_dir": str(out),
            "data": data,
            "model": {"type": "SphericalCNN", "channels": list(ds.channels), "K": ds.K,
                      "head": "conv" if method == "deepsphere_fcn" else "fc"},
            "optim": {"name": "adam", "lr": ds.lr, "scheduler": "exponential", "gamma": ds.lr_decay,
                      "interval": "step"},
            "trainer": {"max_epochs": ds.epochs, "batch_size": ds.batch_size, "seed": seed,
                        "accelerator": ds.accelerator, "precision": ds.precision, "loggers": ["csv"],
                        "progress_bar": cfg.progress, "checkpoint_every_n_steps": 100}}


def _arrays(subset) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, npix], y [n]) of a torch Subset of a MapDataset."""
    idx = np.asarray(subset.indices)
    x = np.asarray(subset.dataset.x)[idx]
    return x.reshape(len(idx), -1), np.asarray(subset.dataset.y)[idx]


def _baseline(method: str, cfg: ExperimentConfig, train, val, test, seed: int) -> tuple[float, dict]:
    from .. import baselines

    xtr, ytr = _arrays(train)
    xte, yte = _arrays(test)
    if method == "convnet2d":
        xva, yva = _arrays(val) if val is not None else (None, None)
        c = cfg.convnet
        model, hist = baselines.train_convnet(xtr, ytr, xva, yva, epochs=c.epochs, batch_size=c.batch_size,
                                              lr=c.lr, lr_decay=c.lr_decay, seed=seed, progress=cfg.progress)
        return float(model.score(xte, yte)), hist
    if val is not None:  # the SVMs choose C by cross-validation: give them the validation maps too
        xva, yva = _arrays(val)
        xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    kw = {"psd_method": cfg.psd_features, "order": cfg.data.order} if method == "svm_psd" else {}
    svm = baselines.SVMBaseline("psd" if method == "svm_psd" else "histogram", **kw)
    svm.fit(xtr, ytr)
    return float(svm.score(xte, yte)), {}


def _history_from_csv(out: Path) -> dict:
    """Per-epoch train/val loss and accuracy from Lightning's CSV log."""
    import csv

    files = sorted(out.glob("logs/version_*/metrics.csv"))
    hist: dict[str, dict[int, float]] = {}
    for f in files:
        with open(f) as fh:
            for row in csv.DictReader(fh):
                for key in ("train_loss_epoch", "val_loss", "train_acc_epoch", "val_acc"):
                    if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                        hist.setdefault(key, {})[int(row["epoch"])] = float(row[key])
    return {k: [v[e] for e in sorted(v)] for k, v in hist.items()}


def run(cfg: ExperimentConfig | dict | None = None) -> dict:
    """Run the experiment; returns ``{"accuracy": {method: {noise: [acc per seed]}}, ...}``
    and writes ``results.json``, ``results.md``, ``sample_maps.png`` and
    ``training_curves.png`` to ``cfg.output_dir``."""
    from ..train import fit
    from ..train.config import load_config
    from ..train.datasets import build_splits

    cfg = cfg if isinstance(cfg, ExperimentConfig) else ExperimentConfig.model_validate(cfg or {})
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc: dict[str, dict[str, list[float]]] = {m: {} for m in cfg.methods}
    curves: dict[str, dict] = {}
    timings: dict[str, float] = {m: 0.0 for m in cfg.methods}
    sizes = {}
    t_start = time.perf_counter()
    for noise in cfg.noise_levels:
        for seed in cfg.seeds:
            base = _train_config(cfg, "deepsphere_fcn", noise, seed, out / "runs" / "data")
            splits = build_splits(load_config(base))
            sizes = {"train": len(splits.train), "val": len(splits.val) if splits.val else 0,
                     "test": len(splits.test), "pixels per sample": splits.sampling.npix}
            for method in cfg.methods:
                t0 = time.perf_counter()
                print(f"[cosmology] noise {noise:g}, seed {seed}: {LABELS[method]} ...", flush=True)
                if method.startswith("deepsphere"):
                    run_dir = out / "runs" / f"{method}_noise{noise:g}_seed{seed}"
                    result = fit(_train_config(cfg, method, noise, seed, run_dir))
                    a = float(result.metrics["test"]["test_acc" if "test_acc" in result.metrics["test"]
                                                    else "acc"])
                    hist = _history_from_csv(run_dir)
                else:
                    a, hist = _baseline(method, cfg, splits.train, splits.val, splits.test, seed)
                timings[method] += time.perf_counter() - t0
                acc[method].setdefault(f"{noise:g}", []).append(a)
                if seed == cfg.seeds[0]:
                    curves[f"{method}|{noise:g}"] = hist
                print(f"[cosmology] noise {noise:g}, seed {seed}: {LABELS[method]} test accuracy {100 * a:.1f}%",
                      flush=True)
    results = {"config": cfg.model_dump(), "accuracy": acc, "sizes": sizes,
               "seconds": {m: round(t, 1) for m, t in timings.items()},
               "total_seconds": round(time.perf_counter() - t_start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = format_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    _pictures(cfg, curves, out)
    return results


def format_table(results: dict) -> str:
    """The paper-style table: accuracy (%) per method and noise level (mean ± std over seeds)."""
    cfg = results["config"]
    noises = [f"{n:g}" for n in cfg["noise_levels"]]
    d = cfg["data"]
    head = (f"Accuracy (%) on held-out maps; nside {d['nside']}, order {d['order']} "
            f"(1/{12 * d['order'] ** 2} of the sky, {results['sizes'].get('pixels per sample', '?')} pixels), "
            f"{d['n_maps_per_class']} full-sky maps per class, seeds {cfg['seeds']}, "
            f"{results['sizes'].get('train', '?')} training / {results['sizes'].get('test', '?')} test patches.")
    lines = [head, "", "| method | " + " | ".join(f"noise {n}" for n in noises) + " | time (s) |",
             "|---|" + "---|" * (len(noises) + 1)]
    for m, per_noise in results["accuracy"].items():
        cells = []
        for n in noises:
            v = np.array(per_noise.get(n, []), dtype=float) * 100
            cells.append("-" if v.size == 0 else f"{v.mean():.1f}" + (f" ± {v.std():.1f}" if v.size > 1 else ""))
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {results['seconds'][m]} |")
    return "\n".join(lines)


def _pictures(cfg: ExperimentConfig, curves: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[cosmology] matplotlib missing: no pictures (pip install 'graphsphere[plot]')")
        return
    from ..data import cosmology

    # Sample maps: one full-sky map per model and one patch with and without noise.
    data = cosmology.make_dataset(nside=cfg.data.nside, n_maps_per_class=1, order=cfg.data.order, progress=False,
                                  shift_scale=cfg.data.shift_scale, cache_dir=cfg.data.cache_dir)
    import healpy as hp

    fig = plt.figure(figsize=(12, 6.5))
    npatch = 12 * cfg.data.order**2
    for c in (0, 1):
        full = data.x[data.y == c][:npatch].reshape(-1)  # the patches of map 0, in NESTED order
        om, s8 = data.cosmologies[c]
        hp.mollview(full, nest=True, fig=fig.number, sub=(2, 3, 1 + 3 * c), cmap="magma",
                    title=f"model {c + 1}: $\\Omega_m$={om}, $\\sigma_8$={s8}", cbar=False)
        patch = data.x[data.y == c][0]
        for j, level in enumerate((0.0, max(cfg.noise_levels))):
            ax = fig.add_subplot(2, 3, 2 + j + 3 * c)
            from ..baselines import nested_to_image

            img = nested_to_image(data.noisy(level)[data.y == c][0] if level else patch)
            ax.imshow(img, cmap="magma")
            ax.set_title(f"one patch, noise {level:g}")
            ax.axis("off")
    fig.savefig(out / "sample_maps.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, hist in curves.items():
        method, noise = key.split("|")
        if method.startswith("deepsphere"):
            loss_t, loss_v, acc_v = hist.get("train_loss_epoch"), hist.get("val_loss"), hist.get("val_acc")
        else:
            loss_t, loss_v, acc_v = hist.get("train_loss"), hist.get("val_loss"), hist.get("val_accuracy")
        if loss_t:
            axes[0].plot(range(1, len(loss_t) + 1), loss_t, label=f"{LABELS[method]}, noise {noise}")
        if acc_v:
            axes[1].plot(range(1, len(acc_v) + 1), np.array(acc_v) * 100, label=f"{LABELS[method]}, noise {noise}")
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=90)
    plt.close(fig)
    print(f"[cosmology] wrote {out / 'sample_maps.png'} and {out / 'training_curves.png'}")
