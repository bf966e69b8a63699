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
curves and accuracy against noise. DeepSphere trains through
:func:`graphsphere.train.fit` (checkpoints, logs, resume); the baselines
through :mod:`graphsphere.baselines`.

A seed is a whole replication: its own maps, split, noise and initialisation.
The DeepSphere models see standardised inputs (:class:`StandardizedSphericalCNN`:
mean and std of the training patches, kept with the weights), like the ConvNet.

>>> cfg = ExperimentConfig(noise_levels=[0.0], methods=["svm_histogram"])
>>> cfg.data.nside, cfg.data.orders
(64, [1])
>>> ExperimentConfig.model_validate({"data": {"nside": 128, "order": 4}}).data.orders
[4]
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from ..models import SphericalCNN

__all__ = ["METHODS", "ExperimentConfig", "StandardizedSphericalCNN", "format_table", "load_config", "run"]

METHODS = ("deepsphere_fcn", "deepsphere_cnn", "convnet2d", "svm_histogram", "svm_psd")
LABELS = {"deepsphere_fcn": "DeepSphere FCN", "deepsphere_cnn": "DeepSphere CNN", "convnet2d": "2D ConvNet",
          "svm_histogram": "SVM on histograms", "svm_psd": "SVM on power spectra"}
#: The 2019 paper, order 4 (1/192 of the sky), noise 0 / 0.5 / 1 / 1.5 / 2 (REFERENCE.md section 5).
PAPER_ORDER4 = {"deepsphere_fcn": (100, 99.8, 97.7, 92.5, 86.8), "convnet2d": (98.8, 97.7, 92.9, 87.9, 81.0),
                "svm_histogram": (90.5, 89.0, 86.0, 80.0, 74.2), "svm_psd": (86.4, 77.8, 71.4, 68.0, 63.7)}


class StandardizedSphericalCNN(SphericalCNN):
    """A :class:`~graphsphere.models.SphericalCNN` that first standardises its
    input, ``(x - input_mean) / input_std``, with constants kept as buffers
    (saved with the weights, so the model takes raw maps at predict time).

    Why: convergence maps have a pixel std of ~0.006. Fed raw, the first
    convolution's outputs have a variance of ~4e-5, the size of batch norm's
    eps (1e-5); while the weights grow out of that regime the running
    statistics lag behind, and in eval mode the model predicts one class
    for every patch for several epochs (measured: validation loss 0.95-2.7
    against 0.60-0.65 with standardised inputs, same seed). The 2019 code
    divided the maps by their std, too.

    >>> import torch, graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=8, indices=range(64))
    >>> m = StandardizedSphericalCNN(s, 1, 2, channels=[4, 4], K=3, input_mean=0.0, input_std=0.01)
    >>> m(0.01 * torch.randn(5, 64, 1)).shape
    torch.Size([5, 2])
    """

    def __init__(self, sampling, in_channels: int, out_features: int, input_mean: float = 0.0,
                 input_std: float = 1.0, **kwargs):
        if not input_std > 0:
            raise ValueError(f"input_std must be positive, got {input_std}")
        super().__init__(sampling, in_channels, out_features, **kwargs)
        self.config.update(input_mean=float(input_mean), input_std=float(input_std))
        self.register_buffer("input_mean", torch.tensor(float(input_mean)))
        self.register_buffer("input_std", torch.tensor(float(input_std)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().features((x - self.input_mean) / self.input_std)


def _config_error(field: str, message: str):
    """A ConfigError naming ``field`` (pydantic passes it through as the validator's error)."""
    from ..train.config import ConfigError

    return ConfigError([(field, message)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    """Which maps (see :func:`graphsphere.data.cosmology.make_dataset`)."""

    nside: PositiveInt = 64
    #: patch orders: each sample is 1/(12 o^2) of the sky, (nside/o)^2 pixels (the paper: 1, 2, 4)
    orders: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    n_maps_per_class: PositiveInt = 24
    #: scales the lognormal shift of both models; < 1: more skewed maps (docs/cosmology_data.md)
    shift_scale: PositiveFloat = 1.0
    #: whole maps per class held out for testing and validation (the rest trains)
    test_fraction: float = Field(0.4, gt=0, lt=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    cache_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _order_alias(cls, v):
        # `data.order=4` (one order) reads as orders=[4]
        if isinstance(v, dict) and "order" in v:
            if "orders" in v:
                raise _config_error("data.order", ": give data.orders (a list) or data.order (one order), not both")
            v = {k: val for k, val in v.items() if k != "order"} | {"orders": [v["order"]]}
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.nside & (self.nside - 1):
            raise _config_error("data.nside", f" = {self.nside}: must be a power of 2 (HEALPix)")
        for o in self.orders:
            if o & (o - 1) or o > self.nside:
                raise _config_error("data.orders", f": order {o} must be a power of 2 and at most nside "
                                                   f"({self.nside})")
        return self


class DeepSphereSection(_Strict):
    """The DeepSphere models and their training (through graphsphere.train)."""

    #: one graph convolution + pooling (by 4) per entry; the paper (65k-pixel patches): [16, 32, 64, 64, 64]
    channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16, 32, 32], min_length=1)
    K: PositiveInt = 5
    #: "avg": as accurate as "max" on these maps and steadier in the first epochs (measured); the paper: "max"
    pool: Literal["avg", "max"] = "avg"
    epochs: PositiveInt = 8
    #: pixels per batch: a batch holds batch_pixels / (nside/o)^2 patches, so the number of steps per epoch
    #: does not depend on the order (the paper: 16 o^2 patches of (1024/o)^2 pixels, i.e. 2^24 pixels)
    batch_pixels: PositiveInt = 32768
    lr: PositiveFloat = 3e-4
    #: learning-rate decay per step (the paper: 2e-4 decayed by 0.999 per step over ~80 epochs)
    lr_decay: PositiveFloat = 1.0
    #: standardise inputs with the training patches' mean and std (see StandardizedSphericalCNN)
    standardize: bool = True
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"


class ConvNetSection(_Strict):
    """The 2D ConvNet baseline: 3x3 conv - batch norm - ReLU - 2x2 max pool per entry."""

    #: about the parameter count of the DeepSphere FCN (a 3x3 kernel has 9 weights, a K=5 filter 5);
    #: the paper size is [16, 32, 46, 46, 46]
    channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16, 23, 23], min_length=1)
    #: twice DeepSphere's by default: its training loss falls more slowly, and an epoch costs ~1/3
    epochs: PositiveInt = 16
    batch_pixels: PositiveInt = 32768
    lr: PositiveFloat = 3e-4
    lr_decay: PositiveFloat = 1.0
    #: "auto": the GPU when there is one
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ExperimentConfig(_Strict):
    """Everything the experiment does; the defaults are the quick run (about a minute on 2 cores)."""

    output_dir: str = "out/cosmology"
    data: DataSection = Field(default_factory=DataSection)
    noise_levels: list[NonNegativeFloat] = Field(default_factory=lambda: [0.0, 2.0], min_length=1)
    #: one replication per seed: its own maps, split, noise draw and initialisation
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: list[Literal[METHODS]] = Field(default_factory=lambda: list(METHODS), min_length=1)  # type: ignore
    deepsphere: DeepSphereSection = Field(default_factory=DeepSphereSection)
    convnet: ConvNetSection = Field(default_factory=ConvNetSection)
    #: power-spectrum features: "anafast" (the paper's, one full-sky transform per patch) or "fft" (fast)
    psd_features: Literal["anafast", "fft"] = "fft"
    progress: bool = True

    @model_validator(mode="after")
    def _check_depth(self):
        # Fail before any map is made: every patch must survive the poolings.
        for o in self.data.orders:
            side = self.data.nside // o
            uses = [("deepsphere", len(self.deepsphere.channels), 2)] if any(
                m.startswith("deepsphere") for m in self.methods) else []
            if "convnet2d" in self.methods:
                uses.append(("convnet", len(self.convnet.channels), 1))
            for name, depth, coarsest in uses:
                if side < coarsest * 2**depth:
                    raise _config_error(
                        f"{name}.channels", f": {depth} poolings by 2x2 need patches of at least "
                        f"{coarsest * 2 ** depth}x{coarsest * 2 ** depth} pixels, but order {o} at nside "
                        f"{self.data.nside} gives {side}x{side}; use fewer channels, a smaller order or a larger nside")
        return self


def load_config(source=None, overrides=()) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a YAML path, a dict or ``None`` (the
    quick run), plus ``key=value`` overrides; every problem is reported at
    once as a :class:`graphsphere.train.config.ConfigError` naming the key.

    >>> load_config(None, ["data.nside=64", "noise_levels=[0, 1]"]).noise_levels
    [0.0, 1.0]
    >>> load_config({"data": {"nsid": 64}})
    Traceback (most recent call last):
    ...
    graphsphere.train.config.ConfigError: config error:
      data.nsid: unknown field (value 64); did you mean 'nside'? ...
    """
    from ..train.config import ConfigError, _issues_from, apply_overrides

    where = ""
    if isinstance(source, ExperimentConfig):
        raw = source.model_dump()
    elif isinstance(source, dict) or source is None:
        raw = dict(source or {})
    else:
        import yaml

        where = str(source)
        with open(source) as f:
            raw = yaml.safe_load(f) or {}
    raw = apply_overrides(raw, list(overrides))
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_issues_from(e, ExperimentConfig), source=where or None) from None


def _patches_per_batch(batch_pixels: int, npix_patch: int, n_train: int) -> int:
    # at least 2 (batch norm), at most the training set
    return int(min(max(2, batch_pixels // npix_patch), max(2, n_train)))


def _train_config(cfg: ExperimentConfig, method: str, order: int, noise: float, seed: int, out: Path,
                  input_stats: tuple[float, float] | None = None, batch_size: int = 32) -> dict:
    """The graphsphere.train config of one DeepSphere run (also builds the baselines' data)."""
    d, ds = cfg.data, cfg.deepsphere
    data = {"name": "cosmology", "nside": d.nside, "order": order, "n_maps_per_class": d.n_maps_per_class,
            "shift_scale": d.shift_scale, "noise": noise, "test_fraction": d.test_fraction,
            "val_fraction": d.val_fraction, "seed": seed}
    if d.cache_dir:
        data["cache_dir"] = d.cache_dir
    model = {"type": "SphericalCNN", "channels": list(ds.channels), "K": ds.K, "pool": ds.pool,
             "head": "conv" if method == "deepsphere_fcn" else "fc"}
    if input_stats is not None:
        model.update(type=f"{__name__}:StandardizedSphericalCNN", input_mean=input_stats[0],
                     input_std=input_stats[1])
    return {"task": "classification", "output_dir": str(out), "data": data, "model": model,
            "optim": {"name": "adam", "lr": ds.lr, "scheduler": "exponential" if ds.lr_decay != 1 else "none",
                      "gamma": ds.lr_decay, "interval": "step"},
            "trainer": {"max_epochs": ds.epochs, "batch_size": batch_size, "seed": seed,
                        "accelerator": ds.accelerator, "precision": ds.precision, "loggers": ["csv"],
                        "progress_bar": cfg.progress, "checkpoint_every_n_steps": 100}}


def _arrays(subset) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, npix], y [n]) of a torch Subset of a MapDataset."""
    idx = np.asarray(subset.indices)
    x = np.asarray(subset.dataset.x)[idx]
    return x.reshape(len(idx), -1), np.asarray(subset.dataset.y)[idx]


def _baseline(method: str, cfg: ExperimentConfig, order: int, splits, seed: int) -> tuple[float, dict, int]:
    """(test accuracy, per-epoch history, parameter count) of one baseline."""
    from .. import baselines

    xtr, ytr = _arrays(splits.train)
    xte, yte = _arrays(splits.test)
    if method == "convnet2d":
        xva, yva = _arrays(splits.val) if splits.val is not None else (None, None)
        c = cfg.convnet
        model = baselines.ConvNet2D(channels=tuple(c.channels))
        bs = _patches_per_batch(c.batch_pixels, xtr.shape[1], len(xtr))
        device = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
        model, hist = baselines.train_convnet(xtr, ytr, xva, yva, epochs=c.epochs, batch_size=bs, lr=c.lr,
                                              lr_decay=c.lr_decay, seed=seed, model=model, device=device,
                                              progress=cfg.progress)
        return float(model.score(xte, yte)), hist, sum(p.numel() for p in model.parameters())
    if splits.val is not None:  # the SVMs choose C by cross-validation: give them the validation maps too
        xva, yva = _arrays(splits.val)
        xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    kw = {"psd_method": cfg.psd_features, "order": order} if method == "svm_psd" else {}
    svm = baselines.SVMBaseline("psd" if method == "svm_psd" else "histogram", **kw)
    svm.fit(xtr, ytr)
    return float(svm.score(xte, yte)), {}, int(svm.transform(xte[:1]).shape[1]) + 1


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


def _deepsphere(cfg: ExperimentConfig, method: str, order: int, noise: float, seed: int, splits,
                out: Path) -> tuple[float, dict, int]:
    from ..train import fit

    x, _ = _arrays(splits.train)
    stats = (float(x.mean()), float(x.std())) if cfg.deepsphere.standardize else None
    bs = _patches_per_batch(cfg.deepsphere.batch_pixels, x.shape[1], len(x))
    train_cfg = _train_config(cfg, method, order, noise, seed, Path(), stats, bs)
    # The folder name carries a digest of the run's settings: the same command resumes (or just
    # re-tests) its own checkpoints, and changed data or training settings never pick up a stale model.
    train_cfg["trainer"]["progress_bar"] = None
    digest = hashlib.sha1(json.dumps(train_cfg, sort_keys=True).encode()).hexdigest()[:8]
    run_dir = out / "runs" / f"{method}_order{order}_noise{noise:g}_seed{seed}_{digest}"
    train_cfg["output_dir"], train_cfg["trainer"]["progress_bar"] = str(run_dir), cfg.progress
    result = fit(train_cfg)
    test = result.metrics["test"]
    acc = float(test["test_acc"] if "test_acc" in test else test["acc"])
    params = sum(p.numel() for p in result.module.model.parameters())
    return acc, _history_from_csv(run_dir), params


def run(cfg: ExperimentConfig | dict | None = None) -> dict:
    """Run the experiment; returns ``{"accuracy": {method: {"o<order>": {noise: [acc per seed]}}}, ...}``
    and writes ``results.json``, ``results.md``, ``sample_maps.png``, ``training_curves.png`` and
    ``accuracy.png`` to ``cfg.output_dir``."""
    from ..train.config import load_config as load_train_config
    from ..train.datasets import build_splits

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
                splits = build_splits(load_train_config(
                    _train_config(cfg, "deepsphere_fcn", order, noise, seed, out / "runs" / "data")))
                data_seconds += time.perf_counter() - t0
                sizes[f"o{order}"] = {"train": len(splits.train), "val": len(splits.val) if splits.val else 0,
                                      "test": len(splits.test), "pixels per sample": splits.sampling.npix}
                for method in cfg.methods:
                    t0 = time.perf_counter()
                    tag = f"order {order}, seed {seed}, noise {noise:g}: {LABELS[method]}"
                    print(f"[cosmology] {tag} ...", flush=True)
                    if method.startswith("deepsphere"):
                        a, hist, n = _deepsphere(cfg, method, order, noise, seed, splits, out)
                    else:
                        a, hist, n = _baseline(method, cfg, order, splits, seed)
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

    from ..baselines import nested_to_image
    from ..data import cosmology

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
        if method.startswith("deepsphere"):
            loss_t, acc_v = hist.get("train_loss_epoch"), hist.get("val_acc")
        else:
            loss_t, acc_v = hist.get("train_loss"), hist.get("val_accuracy")
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
