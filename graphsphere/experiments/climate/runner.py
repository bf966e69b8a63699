"""The climate experiment, end to end: real monthly winds (FNOC, 1982-1992) regridded onto a
sampling of the sphere, segmented and forecast, on a held-out block of years.

**Segmentation** (the 2020 paper's climate task, on data that install offline): each month's
pixels are labelled background, strong (wind speed above the local 90th percentile of that
calendar month) or extreme (above the 99th), thresholds from the training years only
(:mod:`graphsphere.data.climate_datasets`). A graph U-Net (Chebyshev filters, pooling pyramid) is
compared, with and without class-weighted loss, to a per-pixel network with the same inputs and no
neighbourhood (:class:`.baselines.PixelNet`): per-class accuracy (recall), IoU and average
precision on the test years, their means ("mean accuracy" over the three classes and mAP over the
two event classes, as the paper reports them), precision-recall curves.

**Forecasting**: next month's u and v from the previous months (as departures from the training
climatology), a graph U-Net and the per-pixel network against persistence (the last month) and the
monthly climatology of the training years: RMSE and anomaly correlation per variable on the test
years, area-weighted.

Networks train through :func:`graphsphere.train.fit` (standardised inputs and targets, balanced
class weights from the training labels, best epoch on the validation year). A run whose folder
holds a finished training is only re-evaluated; a killed one resumes. Writes ``results.json``,
``results.md`` and the pictures ``segmentation_maps.png``, ``pr_curves.png``,
``forecast_maps.png``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ...data.progress import SweepClock
from ..results import previous_results, settings_digest
from .config import FORECAST_LABELS, FORECAST_METHODS, LABELS, SEGMENTATION_METHODS, ExperimentConfig, load_config

__all__ = ["run", "format_tables", "segmentation_scores", "forecast_scores", "PAPER"]

#: The 2020 paper's climate numbers (CAM5 cyclones and atmospheric rivers, icosahedral level 5; REFERENCE.md 5):
#: mean accuracy over the classes and mAP over the two event classes, percent.
PAPER = {"weighted": (97.8, 77.2), "unweighted": (87.8, 89.2)}
CLASSES = ("background", "strong", "extreme")


# -- scores ---------------------------------------------------------------------------------------

def segmentation_scores(proba: np.ndarray, labels: np.ndarray) -> dict:
    """Per-class recall ("accuracy"), IoU and average precision of probabilities ``[..., 3]``
    against labels ``[...]`` (-1 left out), their means, and the precision-recall curves.

    ``mean_accuracy`` is the mean recall over the three classes, ``map_events`` the mean AP over
    the two event classes (strong, extreme). AP is scikit-learn's (step-wise, every threshold).

    >>> y = np.array([0, 0, 1, 2, -1])
    >>> p = np.eye(3)[[0, 0, 1, 1, 2]]
    >>> s = segmentation_scores(p, y)
    >>> s["recall"], round(s["mean_accuracy"], 3), s["iou"][1]
    ([1.0, 1.0, 0.0], 0.667, 0.5)
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    p = np.asarray(proba, dtype=np.float64).reshape(-1, proba.shape[-1])
    y = np.asarray(labels).reshape(-1)
    keep = y >= 0
    p, y = p[keep], y[keep]
    pred = p.argmax(-1)
    recall, iou, ap, curves = [], [], [], []
    for c in range(p.shape[1]):
        true, hit = y == c, pred == c
        tp = int((true & hit).sum())
        recall.append(tp / int(true.sum()) if true.any() else float("nan"))
        union = int((true | hit).sum())
        iou.append(tp / union if union else float("nan"))
        if true.any():
            ap.append(float(average_precision_score(true, p[:, c])))
            prec, rec, _ = precision_recall_curve(true, p[:, c])
            step = max(1, rec.size // 400)               # a few hundred points draw the same curve
            curves.append({"precision": prec[::step].round(4).tolist(), "recall": rec[::step].round(4).tolist()})
        else:
            ap.append(float("nan"))
            curves.append(None)
    return {"recall": recall, "iou": iou, "ap": ap, "mean_accuracy": float(np.nanmean(recall)),
            "miou": float(np.nanmean(iou)), "map_events": float(np.nanmean(ap[1:])), "curves": curves,
            "pixels": int(y.size)}


def forecast_scores(forecast: np.ndarray, observed: np.ndarray, climatology: np.ndarray, area: np.ndarray) -> dict:
    """RMSE and anomaly correlation per variable (u, v) of ``forecast`` against ``observed``
    (``[samples, npix, 2]``, m/s), area-weighted; anomalies are departures from ``climatology``
    (the target months' training-years means). A forecast without anomalies (the climatology
    itself) has no anomaly correlation (NaN).

    >>> area = np.ones(4)
    >>> obs = np.zeros((1, 4, 2)); obs[0, :, 0] = [1, -1, 2, -2]
    >>> s = forecast_scores(obs * 0.5, obs, np.zeros_like(obs), area)
    >>> s["rmse"][0], s["acc"][0], s["rmse"][1]
    (0.7906, 1.0, 0.0)
    """
    w = np.asarray(area, dtype=np.float64)
    w = (w / w.sum())[None, :, None]
    err = np.asarray(forecast, np.float64) - observed
    rmse = np.sqrt((w * err**2).sum((0, 1)) / err.shape[0])
    fa, oa = np.asarray(forecast, np.float64) - climatology, np.asarray(observed, np.float64) - climatology
    num, den = (w * fa * oa).sum((0, 1)), np.sqrt((w * fa**2).sum((0, 1)) * (w * oa**2).sum((0, 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(den > 1e-12, num / den, np.nan)
    return {"rmse": [round(float(r), 4) for r in rmse], "acc": [round(float(a), 4) for a in acc]}


# -- one network run ------------------------------------------------------------------------------

def _data_params(cfg: ExperimentConfig, task: str) -> dict:
    d = cfg.data
    common = {"path": d.path, "regrid": d.regrid, "supersample": d.supersample, "test_years": list(d.test_years),
              "val_years": list(d.val_years)}
    if task == "segmentation":
        s = cfg.segmentation
        return {"name": "climate_segmentation", **common, "inputs": list(s.inputs), "labels": s.labels,
                "month_window": s.month_window}
    f = cfg.forecast
    return {"name": "climate_forecast", **common, "n_input": f.n_input, "anomalies": f.anomalies}


def train_config(cfg: ExperimentConfig, task: str, method: str, seed: int) -> dict:
    """The :func:`graphsphere.train.fit` config of one network (``output_dir`` left empty)."""
    section = getattr(cfg, task)
    kind = "unet" if method.startswith("unet") else "pixel"
    net = getattr(section, kind)
    if kind == "unet":
        model = {"type": "SphericalUNet", "channels": list(net.channels), "K": net.K, "pool": net.pool}
    else:
        model = {"type": "PixelNet", "hidden": list(net.hidden)}
    data = _data_params(cfg, task)
    segmentation = task == "segmentation"
    if segmentation:
        data["class_weights"] = "balanced" if method.endswith("_weighted") else "none"
    return {"task": "segmentation" if segmentation else "regression", "output_dir": "",
            "data": data, "sampling": {"type": cfg.sampling.type, **cfg.sampling.args}, "model": model,
            "optim": {"name": "adam", "lr": net.lr},
            "trainer": {"max_epochs": net.epochs, "batch_size": net.batch_size, "seed": seed,
                        "accelerator": cfg.accelerator, "loggers": ["csv"], "progress_bar": cfg.progress,
                        # the table's metric picks the epoch, the same way for weighted and unweighted losses
                        "monitor": "val_map" if segmentation else "val_loss",
                        "monitor_mode": "max" if segmentation else "min", "checkpoint_every_n_steps": 0}}


def _run_dir(out: Path, task: str, method: str, seed: int, config: dict) -> Path:
    """A folder per run, named with a digest of its settings: the same command re-uses (or resumes)
    its own runs, and changed settings never pick up a stale model."""
    digest = hashlib.sha1(json.dumps({k: v for k, v in config.items() if k != "output_dir"} | {
        "trainer": {k: v for k, v in config["trainer"].items() if k != "progress_bar"}},
        sort_keys=True).encode()).hexdigest()[:8]
    return out / "runs" / f"{task}_{method}_seed{seed}_{digest}"


def _network(cfg: ExperimentConfig, out: Path, task: str, method: str, seed: int, x_test: np.ndarray):
    """Train (or re-use) one network; returns (test predictions, parameters, seconds, re-used?, folder)."""
    from ...train import fit, predict
    from ...train.module import SphereTask

    config = train_config(cfg, task, method, seed)
    run_dir = _run_dir(out, task, method, seed, config)
    config["output_dir"] = str(run_dir)
    best, timing = run_dir / "checkpoints" / "best.ckpt", run_dir / "seconds.json"
    t0 = time.perf_counter()
    reused = (run_dir / "metrics.json").exists() and best.exists()
    if not reused:
        best = fit(config).best_checkpoint
    module = SphereTask.from_checkpoint(best)
    n_params = sum(p.numel() for p in module.model.parameters())
    pred = predict(module, x_test, batch_size=8)
    seconds = time.perf_counter() - t0
    if reused and timing.exists():      # the table shows what training took, not the re-evaluation
        seconds = float(json.loads(timing.read_text())["seconds"])
    elif not reused:
        from ...files import atomic_write

        with atomic_write(timing, "w") as fh:
            fh.write(json.dumps({"seconds": round(seconds, 1)}))
    return pred, n_params, seconds, reused, run_dir


# -- the two tasks --------------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(f"[climate] {msg}", flush=True)


#: forecasts made without a network (and without a seed: run once)
_NO_TRAINING = ("persistence", "climatology")


def _plan(cfg: ExperimentConfig) -> list[str]:
    """The network runs of the sweep in their order, one kind per task and method (for the time left)."""
    plan = []
    if "segmentation" in cfg.tasks:
        plan += [f"segmentation {m}" for _ in cfg.seeds for m in cfg.segmentation.methods]
    if "forecast" in cfg.tasks:
        plan += [f"forecast {m}" for _ in cfg.seeds for m in cfg.forecast.methods if m not in _NO_TRAINING]
    return plan


def _segmentation(cfg: ExperimentConfig, out: Path, fields, clock: SweepClock) -> dict:
    from ...data.climate_datasets import segmentation_task

    s, d = cfg.segmentation, cfg.data
    task = segmentation_task(fields, d.test_years, d.val_years, s.inputs, (90, 99), s.month_window, s.labels)
    y_test = np.asarray(task.y["test"])
    runs, predictions = [], {}
    plan = [(m, seed) for seed in cfg.seeds for m in s.methods]
    for method, seed in plan:
        tag = clock.tag
        _say(f"{tag}: segmentation, {LABELS[method]}, seed {seed} ...")
        t0 = time.perf_counter()
        proba, n, secs, reused, run_dir = _network(cfg, out, "segmentation", method, seed, task.x["test"])
        scores = segmentation_scores(proba, y_test)
        if seed == cfg.seeds[0]:
            predictions[method] = proba.argmax(-1).astype(np.int8)
        runs.append({"method": method, "seed": seed, "params": n, "seconds": round(secs, 1), "reused": reused,
                     "run": run_dir.name, **scores})
        _say(f"{tag} done: mean accuracy {100 * scores['mean_accuracy']:.1f}%, mAP (events) "
             f"{100 * scores['map_events']:.1f}% ({'re-evaluated' if reused else f'in {secs:.0f} s'}); "
             f"{clock.finished(f'segmentation {method}', time.perf_counter() - t0)}")
    sizes = {k: int(len(v)) for k, v in task.x.items()}
    freq = {k: v["frequency_target" if s.labels == "target" else "frequency_source"]
            for k, v in task.label_check.items()}
    return {"runs": runs, "sizes": sizes, "channels": list(task.channels), "class_frequencies": freq,
            "label_check": task.label_check, "years": {k: v.tolist() for k, v in task.years.items()},
            "_task": task, "_predictions": predictions}


def _forecast(cfg: ExperimentConfig, out: Path, fields, clock: SweepClock) -> dict:
    from ...data.climate_datasets import forecast_task

    f, d = cfg.forecast, cfg.data
    task = forecast_task(fields, d.test_years, d.val_years, f.n_input, f.anomalies)
    observed = task.values("test", task.y["test"])
    clim = task.climatology[task.times["test"].astype(np.int64) % 12]
    area = np.asarray(fields.sampling.area, dtype=np.float64)
    runs, forecasts = [], {}
    plan = [(m, seed) for seed in cfg.seeds for m in f.methods]
    for method, seed in plan:
        tag, t0 = None, time.perf_counter()
        if method in _NO_TRAINING:
            if seed != cfg.seeds[0]:
                continue                             # no training, nothing to replicate
            fc = task.persistence["test"] if method == "persistence" else clim
            n, secs, reused, name = 0, time.perf_counter() - t0, False, None
        else:
            tag = clock.tag
            _say(f"{tag}: forecast, {FORECAST_LABELS[method]}, seed {seed} ...")
            pred, n, secs, reused, run_dir = _network(cfg, out, "forecast", method, seed, task.x["test"])
            fc, name = task.values("test", pred), run_dir.name
        scores = forecast_scores(fc, observed, clim, area)
        if seed == cfg.seeds[0]:
            forecasts[method] = np.asarray(fc, np.float32)
        runs.append({"method": method, "seed": seed, "params": n, "seconds": round(secs, 1), "reused": reused,
                     "run": name, **scores})
        rmse = f"RMSE u {scores['rmse'][0]:.3f}, v {scores['rmse'][1]:.3f} m/s"
        if tag is None:
            _say(f"{FORECAST_LABELS[method]}: {rmse}")
        else:
            _say(f"{tag} done: {rmse} ({'re-evaluated' if reused else f'in {secs:.0f} s'}); "
                 f"{clock.finished(f'forecast {method}', time.perf_counter() - t0)}")
    sizes = {k: int(len(v)) for k, v in task.x.items()}
    return {"runs": runs, "sizes": sizes, "channels": list(task.channels),
            "years": {k: v.tolist() for k, v in task.years.items()},
            "_task": task, "_forecasts": forecasts, "_observed": observed, "_climatology": clim}


def run(cfg: ExperimentConfig | dict | None = None) -> dict:
    """Run the experiment; returns the results, merged with the earlier runs of the same settings in
    ``output_dir`` (:func:`merge_results`), also written to ``output_dir/results.json``, with the
    tables in ``results.md`` and the pictures (of this invocation's tasks) beside them."""
    from ...data.climate_datasets import climate_fields
    from ...files import atomic_write
    from . import baselines  # noqa: F401  (registers PixelNet for the engine)

    cfg = cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    sampling = cfg.sampling.build()
    _say(f"{' and '.join(cfg.tasks)} on {sampling!r}, seeds {cfg.seeds}; test years {cfg.data.test_years}, "
         f"validation {cfg.data.val_years}; results in {out}")
    try:
        fields = climate_fields(sampling, cfg.data.path, cfg.data.regrid, cfg.data.supersample)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}\n  data.path in the experiment's config names that folder (null: fetch the "
                                "data set)") from None
    data_seconds = time.perf_counter() - t_start
    _say(f"winds {fields.source_u.shape[1]} x {fields.source_u.shape[2]} x {fields.u.shape[0]} months regridded "
         f"({cfg.data.regrid}) to {sampling.npix} pixels, land fraction from ETOPO, in {data_seconds:.0f} s")
    results = {"config": cfg.to_dict(), "sampling": sampling.to_state(), "npix": int(sampling.npix),
               "data_seconds": round(data_seconds, 1)}
    clock = SweepClock(_plan(cfg))
    _say(f"{len(clock.plan)} network runs")
    if "segmentation" in cfg.tasks:
        results["segmentation"] = _segmentation(cfg, out, fields, clock)
    if "forecast" in cfg.tasks:
        results["forecast"] = _forecast(cfg, out, fields, clock)
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    public = merge_results(out, _public(results))
    table = format_tables(public)
    with atomic_write(out / "results.json", "w") as fh:
        fh.write(json.dumps(public, indent=1))
    with atomic_write(out / "results.md", "w") as fh:
        fh.write(table + "\n")
    print(table, flush=True)
    _pictures(cfg, results, fields, out)
    return public


# -- results of several invocations ----------------------------------------------------------------
#: What may change between invocations whose results merge: the sweep itself (and where it prints).
_SWEEP = frozenset({"tasks", "seeds", "segmentation.methods", "forecast.methods", "progress", "output_dir",
                    "accelerator"})
_ORDER = {"segmentation": SEGMENTATION_METHODS, "forecast": FORECAST_METHODS}


def merge_results(out: Path, results: dict) -> dict:
    """``results`` of this invocation merged with those in ``out/results.json`` of the same settings
    (:mod:`..results`): a run (task, method, seed) measured again replaces the earlier one, the others
    stay, a task not run this time keeps its earlier block; the config's tasks, seeds and methods become
    the union, so the tables never shrink."""
    config = results["config"]
    digest = settings_digest(config, _SWEEP)
    old = previous_results(out, digest, "climate")
    merged = {**results, "settings": digest, "config": {**config, **{t: dict(config[t]) for t in _ORDER}}}
    tasks = [t for t in _ORDER if t in results or t in old]
    for task in tasks:
        if task not in results:
            merged[task] = old[task]
            continue
        runs = {(r["method"], r["seed"]): r for r in old.get(task, {}).get("runs", [])}
        runs.update({(r["method"], r["seed"]): r for r in results[task]["runs"]})
        merged[task] = {**results[task], "runs": sorted(runs.values(), key=lambda r: (
            _ORDER[task].index(r["method"]), r["seed"]))}
    merged["config"]["tasks"] = tasks
    runs = [r for t in tasks for r in merged[t]["runs"]]
    merged["config"]["seeds"] = sorted({r["seed"] for r in runs}) or config["seeds"]
    for task in tasks:
        merged["config"][task]["methods"] = list(dict.fromkeys(r["method"] for r in merged[task]["runs"]))
    return merged


def _public(results: dict) -> dict:
    """The results without the arrays kept for the pictures (keys starting with ``_``)."""
    if isinstance(results, dict):
        return {k: _public(v) for k, v in results.items() if not k.startswith("_")}
    return results


# -- tables ---------------------------------------------------------------------------------------

def _cell(values, scale: float = 100.0, digits: int = 1) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float) * scale
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else "")


def _by_method(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["method"], []).append(r)
    return out


def format_tables(results: dict) -> str:
    """The segmentation and forecasting tables (markdown), mean ± std over seeds."""
    cfg = results["config"]
    sampling = results["sampling"]
    where = ", ".join(f"{k} {v}" for k, v in sampling.items() if k not in ("type", "nest"))
    seeds = cfg["seeds"]
    lines = [f"FNOC monthly surface winds 1982-1992 on {sampling['type']} ({where}, {results['npix']} pixels), "
             f"regridded {cfg['data']['regrid']}; test years {cfg['data']['test_years']}, validation "
             f"{cfg['data']['val_years']}, the other years train; {len(seeds)} seed(s) {seeds}"
             + (" (mean ± std over seeds)." if len(seeds) > 1 else "."), ""]
    if "segmentation" in results:
        seg = results["segmentation"]
        sz, freq = seg["sizes"], seg["class_frequencies"]
        lines += ["**Segmentation** (background / strong > 90th / extreme > 99th percentile of the calendar month's "
                  f"local wind speed, training years): {sz['train']} training / {sz['val']} validation / "
                  f"{sz['test']} test months; inputs {', '.join(seg['channels'])}; class frequencies "
                  f"train {_pct(freq.get('train'))}, test {_pct(freq.get('test'))}. Percent, test years.", "",
                  "| method | params | accuracy (recall) bg / strong / extreme | IoU bg / strong / extreme | "
                  "AP strong / extreme | mean accuracy | mAP (events) | time |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, rs in _by_method(seg["runs"]).items():
            per = {k: [_cell([r[k][c] for r in rs]) for c in range(3)] for k in ("recall", "iou", "ap")}
            lines.append(f"| {LABELS[m]} | {rs[0]['params']:,} | {' / '.join(per['recall'])} | "
                         f"{' / '.join(per['iou'])} | {per['ap'][1]} / {per['ap'][2]} | "
                         f"{_cell([r['mean_accuracy'] for r in rs])} | {_cell([r['map_events'] for r in rs])} | "
                         f"{sum(r['seconds'] for r in rs):.0f} s |")
        check = seg["label_check"].get("test", {})
        other = "source grid, carried by nearest neighbour" if cfg["segmentation"]["labels"] == "target" else \
            "regridded winds"
        lines += ["", f"Regridding's own error on the labels (test years): the rule applied to the {other} agrees on "
                  f"{100 * check.get('agreement', float('nan')):.1f}% of the pixels with the labels used; IoU between "
                  f"the two labelings {' / '.join(f'{100 * v:.1f}' for v in check.get('iou', []))} (bg / strong / "
                  "extreme). Paper (CAM5 cyclones and rivers, 13M parameters): mean accuracy "
                  f"{PAPER['weighted'][0]} / mAP {PAPER['weighted'][1]} weighted, {PAPER['unweighted'][0]} / "
                  f"{PAPER['unweighted'][1]} unweighted.", ""]
    if "forecast" in results:
        fc = results["forecast"]
        sz = fc["sizes"]
        lines += [f"**Forecasting** next month's u and v (m/s) from the previous {cfg['forecast']['n_input']} months"
                  + (" (departures from the training climatology)" if cfg["forecast"]["anomalies"] else "")
                  + f" and the land fraction: {sz['train']} training / {sz['val']} validation / {sz['test']} test "
                  "months. Area-weighted RMSE (m/s) and anomaly correlation, test years.", "",
                  "| method | params | RMSE u | RMSE v | ACC u | ACC v | time |", "|---|---|---|---|---|---|---|"]
        for m, rs in _by_method(fc["runs"]).items():
            rm, ac = ([_cell([r[k][c] for r in rs], 1.0, 3) for c in (0, 1)] for k in ("rmse", "acc"))
            lines.append(f"| {FORECAST_LABELS[m]} | {rs[0]['params']:,} | {rm[0]} | {rm[1]} | {ac[0]} | {ac[1]} | "
                         f"{sum(r['seconds'] for r in rs):.0f} s |")
        lines.append("")
    runs = [r for task in ("segmentation", "forecast") for r in results.get(task, {}).get("runs", [])]
    reused = sum(r["reused"] for r in runs)
    lines.append(f"Time: {sum(r['seconds'] for r in runs):.0f} s of training and evaluation over {len(runs)} runs; "
                 f"this invocation {results['total_seconds']:.0f} s (data {results['data_seconds']:.0f} s"
                 + (f", {reused} finished run(s) only re-evaluated)." if reused else ")."))
    return "\n".join(lines)


def _pct(f) -> str:
    return "-" if not f else " / ".join(f"{100 * v:.1f}" for v in f)


# -- pictures -------------------------------------------------------------------------------------

def _pictures(cfg: ExperimentConfig, results: dict, fields, out: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _say("matplotlib missing: no pictures (pip install -e '.[plot]' in the repository)")
        return
    from . import figures

    written = []
    coast = figures.coastlines(cfg.data.path)
    if "segmentation" in results:
        written += [figures.segmentation_maps(results["segmentation"], fields, coast, out / "segmentation_maps.png",
                                             cfg.segmentation.month_window),
                    figures.pr_curves(results["segmentation"], out / "pr_curves.png")]
    if "forecast" in results:
        written.append(figures.forecast_maps(results["forecast"], fields, coast, out / "forecast_maps.png"))
    _say("wrote " + ", ".join(str(p) for p in written))
