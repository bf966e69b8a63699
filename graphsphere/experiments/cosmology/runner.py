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

Re-running is cheap and never loses results: a network run whose folder
holds a finished training (``metrics.json``) is only re-tested from its
``best.ckpt``; a killed one resumes from ``last.ckpt``; and the table and
pictures merge the runs of every invocation with the same settings (a
re-run with fewer methods, noise levels, orders or seeds adds to
``results.json`` and never shrinks it). Each run prints ``run i/N`` with
the time left, estimated from the runs done so far.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...data.progress import SweepClock
from ..results import previous_results, settings_digest
from .config import LABELS, METHODS, ExperimentConfig, load_config

__all__ = ["format_table", "run", "PAPER_ORDER4", "merge_results", "accuracy_figure", "RunRecord"]

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


@dataclass
class RunRecord:
    """One cell of one seed: a method trained and tested at an order and a noise level."""

    method: str
    order: int
    noise: float
    seed: int
    accuracy: float
    params: int
    seconds: float
    #: True when a finished network run was only re-tested from its checkpoint
    retested: bool = False
    #: the run's folder under ``runs/`` (networks), for its logs and checkpoints
    run: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return self.method, self.order, float(self.noise), self.seed


def _arrays(subset) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, npix], y [n]) of a torch Subset of a MapDataset."""
    idx = np.asarray(subset.indices)
    x = np.asarray(subset.dataset.x)[idx]
    return x.reshape(len(idx), -1), np.asarray(subset.dataset.y)[idx]


def _svm(method: str, cfg: ExperimentConfig, order: int, splits, seed: int) -> tuple[float, int]:
    """(test accuracy, number of weights) of one SVM, trained on the training and
    validation maps (it chooses C by cross-validation) and scored on the test maps."""
    from .baselines import SVMBaseline

    xtr, ytr = _arrays(splits.train)
    xte, yte = _arrays(splits.test)
    if splits.val is not None:
        xva, yva = _arrays(splits.val)
        xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    kw = {"psd_method": cfg.psd_features, "order": order} if method == "svm_psd" else {}
    svm = SVMBaseline("psd" if method == "svm_psd" else "histogram", seed=seed, **kw).fit(xtr, ytr)
    return float(svm.score(xte, yte)), svm.n_features + 1


def _history_from_csv(run_dir: Path) -> dict:
    """Per-epoch train/val loss and accuracy from Lightning's CSV logs (every version: a
    resumed run continues in a new one)."""
    import csv

    hist: dict[str, dict[int, float]] = {}
    for f in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                for key in ("train_loss_epoch", "val_loss", "train_acc_epoch", "val_acc"):
                    if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                        hist.setdefault(key, {})[int(row["epoch"])] = float(row[key])
    return {k: [v[e] for e in sorted(v)] for k, v in hist.items()}


def _run_dir(cfg: ExperimentConfig, method: str, order: int, noise: float, seed: int, out: Path,
             batch_size: int) -> tuple[Path, dict]:
    """The folder of one network run and its train config. The folder name carries a digest of the
    run's settings: the same command resumes (or re-tests) its own checkpoints, and changed data or
    training settings never pick up a stale model."""
    train_cfg = _train_config(cfg, method, order, noise, seed, Path(), batch_size)
    train_cfg["trainer"]["progress_bar"] = None
    digest = hashlib.sha1(json.dumps(train_cfg, sort_keys=True).encode()).hexdigest()[:8]
    run_dir = out / "runs" / f"{method}_order{order}_noise{noise:g}_seed{seed}_{digest}"
    train_cfg["output_dir"], train_cfg["trainer"]["progress_bar"] = str(run_dir), cfg.progress
    return run_dir, train_cfg


def _finished(run_dir: Path) -> Path | None:
    """The best checkpoint of a run whose training finished (the engine writes ``metrics.json``
    only then; a killed run has ``last.ckpt`` and no ``metrics.json``)."""
    best = run_dir / "checkpoints" / "best.ckpt"
    return best if (run_dir / "metrics.json").exists() and best.exists() else None


def _network(cfg: ExperimentConfig, method: str, order: int, noise: float, seed: int, splits,
             out: Path) -> tuple[float, int, bool, str]:
    """(test accuracy of the best epoch, parameters, re-tested?, run folder) of one network:
    trained by the engine (resuming a killed run), or only re-tested if it finished earlier."""
    from ...train import evaluate, fit
    from ...train.module import SphereTask

    net = cfg.convnet if method == "convnet2d" else cfg.deepsphere
    bs = _patches_per_batch(net.batch_pixels, splits.sampling.npix, len(splits.train))
    run_dir, train_cfg = _run_dir(cfg, method, order, noise, seed, out, bs)
    best = _finished(run_dir)
    if best is not None:
        module = SphereTask.from_checkpoint(best)
        acc = float(evaluate(module)["test_acc"])
        return acc, sum(p.numel() for p in module.model.parameters()), True, run_dir.name
    result = fit(train_cfg)
    acc = float(result.metrics["test"]["test_acc"])
    return acc, sum(p.numel() for p in result.module.model.parameters()), False, run_dir.name


def _prepare_maps(cfg: ExperimentConfig) -> float:
    """Make every map the sweep needs (with progress), so that the runs only load them; returns seconds."""
    from ...data.cosmology import generate_maps

    t0 = time.perf_counter()
    d = cfg.data
    for seed in cfg.seeds:
        generate_maps(nside=d.nside, n_maps_per_class=d.n_maps_per_class, seed=seed, cache_dir=d.cache_dir,
                      progress=cfg.progress, shift_scale=d.shift_scale)
    return time.perf_counter() - t0


def run(cfg: ExperimentConfig | dict | None = None) -> dict:
    """Run the experiment; returns ``{"accuracy": {method: {"o<order>": {noise: [acc per seed]}}}, ...}``
    (merged with the earlier runs of the same settings in ``cfg.output_dir``) and writes
    ``results.json``, ``results.md``, ``sample_maps.png``, ``training_curves.png`` and
    ``accuracy.png`` there."""
    from ...train.config import load_train_config
    from ...train.engine import build_data

    cfg = cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    plan = [m for _ in cfg.data.orders for _ in cfg.seeds for _ in cfg.noise_levels for m in cfg.methods]
    clock = SweepClock(plan)
    print(f"[cosmology] {len(plan)} runs: orders {cfg.data.orders} x seeds {cfg.seeds} x noise levels "
          f"{[float(n) for n in cfg.noise_levels]} x {len(cfg.methods)} methods; results in {out}", flush=True)
    data_seconds = _prepare_maps(cfg)
    records: list[RunRecord] = []
    sizes: dict[str, dict] = {}
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
                    tag = clock.tag
                    print(f"[cosmology] {tag}: order {order}, seed {seed}, noise {noise:g}, {LABELS[method]} ...",
                          flush=True)
                    if method.startswith("svm"):
                        (a, n), retested, run_name = _svm(method, cfg, order, splits, seed), False, None
                    else:
                        a, n, retested, run_name = _network(cfg, method, order, noise, seed, splits, out)
                    seconds = time.perf_counter() - t0
                    records.append(RunRecord(method, order, float(noise), seed, a, n, round(seconds, 1), retested,
                                             run_name))
                    how = "re-tested (trained earlier)" if retested else f"in {seconds:.0f} s"
                    print(f"[cosmology] {tag} done: test accuracy {100 * a:.1f}% {how}; "
                          f"{clock.finished(method, seconds)}", flush=True)
    results = merge_results(out, cfg, records, sizes, data_seconds=data_seconds,
                            total_seconds=time.perf_counter() - t_start)
    table = format_table(results)
    from ...files import atomic_write

    with atomic_write(out / "results.json", "w") as f:
        f.write(json.dumps(results, indent=1))
    with atomic_write(out / "results.md", "w") as f:
        f.write(table + "\n")
    print(table)
    _pictures(results, out)
    return results


# -- results of several invocations ----------------------------------------------------------------
#: What may change between invocations whose results merge: the sweep itself (and where it prints).
_SWEEP = frozenset({"methods", "noise_levels", "seeds", "progress", "output_dir", "data.orders"})


def _previous(out: Path, digest: str) -> list[dict]:
    """The runs recorded in ``out/results.json`` under the same settings (others are kept aside)."""
    old = previous_results(out, digest, "cosmology", usable=lambda old: isinstance(old.get("runs"), list))
    return old.get("runs", [])


def merge_results(out, cfg: ExperimentConfig, records, sizes: dict, data_seconds: float = 0.0,
                  total_seconds: float = 0.0) -> dict:
    """The results of ``records`` merged with those already in ``out/results.json`` of the same
    settings: a run (method, order, noise, seed) measured again replaces the earlier one (keeping
    the training time of a run that was only re-tested); the others stay. The config's lists
    (methods, orders, noise levels, seeds) become the union, so the table never shrinks."""
    out = Path(out)
    config = cfg.model_dump()
    digest = settings_digest(config, _SWEEP)
    old_results = {}
    if (out / "results.json").exists():
        try:
            old_results = json.loads((out / "results.json").read_text())
        except ValueError:
            old_results = {}
    runs = {RunRecord(**r).key: RunRecord(**r) for r in _previous(out, digest)}
    for r in records:
        r = r if isinstance(r, RunRecord) else RunRecord(**r)
        if r.retested and r.key in runs:
            r = RunRecord(**{**asdict(r), "seconds": runs[r.key].seconds})
        runs[r.key] = r
    ordered = sorted(runs.values(), key=lambda r: (METHODS.index(r.method), r.order, r.noise, r.seed))
    methods = [m for m in METHODS if any(r.method == m for r in ordered)]
    config["methods"] = methods
    config["noise_levels"] = sorted({r.noise for r in ordered})
    config["seeds"] = sorted({r.seed for r in ordered})
    config["data"]["orders"] = sorted({r.order for r in ordered})
    acc: dict = {m: {} for m in methods}
    params: dict = {m: {} for m in methods}
    seconds: dict = {m: 0.0 for m in methods}
    for r in ordered:
        acc[r.method].setdefault(f"o{r.order}", {}).setdefault(f"{r.noise:g}", []).append(r.accuracy)
        params[r.method][f"o{r.order}"] = r.params
        seconds[r.method] += r.seconds
    merged_sizes = dict(old_results.get("sizes", {})) if old_results.get("settings") == digest else {}
    merged_sizes.update(sizes)
    return {"config": config, "settings": digest, "accuracy": acc, "sizes": merged_sizes, "parameters": params,
            "seconds": {m: round(t, 1) for m, t in seconds.items()}, "data_seconds": round(data_seconds, 1),
            "total_seconds": round(total_seconds, 1), "runs": [asdict(r) for r in ordered]}


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
    n_runs = len(results.get("runs", [])) or None
    lines += ["", (f"Time: {sum(results['seconds'].values()):.0f} s of training and testing"
                   + (f" over {n_runs} runs" if n_runs else "") + f" ({secs}); the last invocation took "
                   f"{results['total_seconds']:.0f} s (data {results.get('data_seconds', 0):.0f} s).")]
    return "\n".join(lines)


def _pictures(results: dict, out: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("[cosmology] matplotlib missing: no pictures (pip install -e '.[plot]' in the repository)")
        return
    cfg = results["config"]
    _sample_maps(cfg, out / "sample_maps.png")
    _training_curves(results, out, out / "training_curves.png")
    _accuracy_plot(results, out / "accuracy.png")
    print(f"[cosmology] wrote {out / 'sample_maps.png'}, {out / 'training_curves.png'}, {out / 'accuracy.png'}")


_KAPPA = "convergence \u03ba (no unit)"


def _sample_maps(cfg: dict, path: Path) -> None:
    """One full-sky map per model, and one of its patches without noise and with the
    highest noise level of the run (2, the paper's highest, if the run has only 0)."""
    import healpy as hp
    import matplotlib.pyplot as plt

    from ...data import cosmology
    from ...plot import maps, style
    from .baselines import nested_to_image

    d = cfg["data"]
    order = d["orders"][0]
    data = cosmology.make_dataset(nside=d["nside"], n_maps_per_class=1, order=order, progress=False,
                                  shift_scale=d["shift_scale"], cache_dir=d["cache_dir"], seed=cfg["seeds"][0])
    level = max(cfg["noise_levels"]) or 2.0
    noisy = data.noisy(level)
    lo, hi = (float(v) for v in np.percentile(data.x, [0.5, 99.5]))
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig = plt.figure(figsize=(style.PAGE_WIDTH, 4.4))
        grid = fig.add_gridspec(2, 3, width_ratios=(2.0, 1.0, 1.0), hspace=0.3, wspace=0.25, top=0.9)
        for c in (0, 1):
            rows = np.flatnonzero(data.y == c)       # the 12 o^2 patches of map 0 of class c, NESTED
            om, s8 = data.cosmologies[c]
            hax = maps.mollview(data.x[rows].reshape(-1), nest=True, ax=fig.add_subplot(grid[c, 0]), cmap="magma",
                                vmin=lo, vmax=hi, unit=_KAPPA, check_order=False,
                                title=f"model {c + 1}: $\\Omega_m$ = {om}, $\\sigma_8$ = {s8}")
            # outline of patch 0 (HEALPix pixel 0 at nside = order), the patch shown on the right
            corners = hp.boundaries(order, 0, step=max(2, 64 // order), nest=True)
            theta, phi = hp.vec2ang(np.hstack([corners, corners[:, :1]]).T)
            plt.sca(hax)
            hp.projplot(theta, phi, color="cyan", lw=1.0)
            for j, (img, what) in enumerate(((data.x[rows[0]], "no noise"), (noisy[rows[0]], f"noise {level:g}"))):
                ax = fig.add_subplot(grid[c, 1 + j])
                im = ax.imshow(nested_to_image(img), cmap="magma", vmin=lo if j == 0 else None,
                               vmax=hi if j == 0 else None)
                ax.set_title(f"patch 0, {what}")
                ax.set_xticks([])
                ax.set_yticks([])
                style.colorbar(im, ax, _KAPPA, ticks=3, shrink=0.9)
        fig.suptitle(f"nside {d['nside']}, order {order}: 1/{12 * order ** 2} of the sky, "
                     f"{data.npix_patch} pixels per patch")
        maps.savefig(fig, path)


def _training_curves(results: dict, out: Path, path: Path) -> None:
    """Training loss and validation accuracy per epoch of the networks: first seed, highest order
    (the most validation patches), without noise and at the highest noise level."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from ...plot import maps, style

    cfg = results["config"]
    order, seed = max(cfg["data"]["orders"]), min(cfg["seeds"])
    noises = sorted({min(cfg["noise_levels"]), max(cfg["noise_levels"])})
    picked = [r for r in results.get("runs", []) if r.get("run") and r["order"] == order and r["seed"] == seed
              and r["noise"] in noises]
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    style.use_agg()
    with plt.rc_context(style.STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(style.PAGE_WIDTH, 2.7))
        for r in picked:
            hist = _history_from_csv(out / "runs" / r["run"])
            loss_t, acc_v = hist.get("train_loss_epoch"), hist.get("val_acc")
            style_kw = {"color": colors[r["method"]], "label": f"{LABELS[r['method']]}, noise {r['noise']:g}",
                        "ls": "-" if r["noise"] == noises[0] else "--", "marker": "o" if r["noise"] == noises[0]
                        else "s", "ms": 2.5, "mfc": "none", "lw": 1}
            if loss_t:
                axes[0].plot(range(1, len(loss_t) + 1), loss_t, **style_kw)
            if acc_v:
                axes[1].plot(range(1, len(acc_v) + 1), np.array(acc_v) * 100, **style_kw)
        axes[0].set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)", title="training loss")
        axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy (held-out maps)")
        axes[1].axhline(50, color="gray", lw=0.8, ls=":")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if picked:
            axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"order {order}, seed {seed}")
        fig.tight_layout()
        maps.savefig(fig, path)


def _accuracy_plot(results: dict, path: Path) -> None:
    from ...plot import maps

    maps.savefig(accuracy_figure(results), path)


def accuracy_figure(results: dict):
    """Accuracy against noise, one panel per order, one line per method (the figure of
    ``accuracy.png``). Error bars (std over seeds) only where a cell has 2 seeds or more; open
    markers of different shapes, moved a little apart along the noise axis, so that equal
    accuracies stay visible."""
    import matplotlib.pyplot as plt

    from ...plot import style

    cfg = results["config"]
    orders = cfg["data"]["orders"]
    noises = [float(n) for n in cfg["noise_levels"]]
    methods = [m for m in METHODS if m in results["accuracy"]]
    span = (max(noises) - min(noises)) or 1.0
    markers = dict(zip(METHODS, "osD^v"))
    style.use_agg()
    with plt.rc_context(style.STYLE):
        width = style.PAGE_WIDTH if len(orders) > 1 else style.PAGE_WIDTH * 0.6
        fig, axes = plt.subplots(1, len(orders), figsize=(width, 2.9), squeeze=False, sharey=True)
        for ax, o in zip(axes[0], orders):
            for i, m in enumerate(methods):
                per_noise = results["accuracy"][m].get(f"o{o}", {})
                cells = [np.array(per_noise.get(f"{n:g}", []), dtype=float) * 100 for n in noises]
                x = np.array(noises) + 0.012 * span * (i - (len(methods) - 1) / 2)
                mean = np.array([v.mean() if v.size else np.nan for v in cells])
                err = np.array([v.std(ddof=1) if v.size > 1 else np.nan for v in cells])
                color = f"C{METHODS.index(m)}"
                ax.plot(x, mean, marker=markers[m], mfc="none", ms=4.5, mew=1, lw=1, color=color, label=LABELS[m])
                if np.isfinite(err).any():
                    ax.errorbar(x, mean, yerr=np.where(np.isfinite(err), err, 0), fmt="none", ecolor=color,
                                elinewidth=0.8, capsize=2)
            ax.axhline(50, color="gray", lw=0.8, ls=":")
            ax.set(xlabel="noise (\u00d7 pixel std of the clean maps)", title=f"order {o}: 1/{12 * o * o} of the sky")
            ax.set_xticks(noises)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test accuracy (%)")
        seeds = cfg["seeds"]
        bars = "error bars: std over seeds" if len(seeds) > 1 else "one seed: no error bars"
        fig.suptitle(f"nside {cfg['data']['nside']}, {cfg['data']['n_maps_per_class']} maps per class, "
                     f"{len(seeds)} seed(s) ({bars})")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False)
    return fig
