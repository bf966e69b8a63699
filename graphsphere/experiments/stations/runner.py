"""The weather-station experiment, end to end.

From the Colorado network of r-cran-fields (or a synthetic one) it

1. chooses the period and the stations by the documented rule (the best ``n_years`` window, stations
   with at least ``min_coverage`` of their months observed);
2. builds the k-NN station graph with the paper's kernel width, compares it with graphsphere's 2019
   heuristic, and checks that the graph's low spectrum behaves like a Laplacian on the region
   (:func:`.graphs.spectral_check`);
3. **regression**: next month's value at every station from the ``n_lags`` previous months, on
   departures from the training-years climatology; every network of ``regression.networks`` at every
   K and seed (through :func:`graphsphere.train.fit`), against the climatology and the per-station
   linear baseline; MSE, MAE, R^2 on the held-out (last) years, in the data's units;
4. **month**: the month of the year from one snapshot: SphericalCNN (pooling on balanced clusters of
   stations) against per-station naive Bayes;

and prints the tables, writes ``results.json``, ``results.md`` and the pictures
(``stations_graph.png``, ``stations_spectrum.png``, ``stations_predictions.png``,
``stations_error_map.png``, ``stations_month.png``).

Each network run lives in ``runs/<name>_<digest>`` (the digest of its training config): running the
same command again re-tests finished runs from their best checkpoint instead of training them, and
resumes killed ones; changed settings make new folders.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ...data.progress import SweepClock
from .config import ExperimentConfig, load_config

__all__ = ["data_params", "format_tables", "network_label", "run"]

LABELS = {"climatology": "climatology (training-years mean of the month)",
          "per_station_linear": "per-station linear (own lags, one fit per station)",
          "per_station_linear_tv": "per-station linear, fitted on training + validation years",
          "per_station_bayes": "per-station naive Bayes (a Gaussian per station and month)",
          "lda": "all-station linear discriminant (shrinkage LDA; not per station)"}


def _log(msg: str) -> None:
    print(f"[stations] {msg}", flush=True)


def network_label(name: str, channels) -> str:
    """``"filter"`` with no hidden layer -> ``"filter: GC1 (one linear Chebyshev filter)"``;
    ``[50, 100, 100]`` -> ``"GC50-GC100-GC100-GC1"``."""
    layers = "-".join(f"GC{c}" for c in [*channels, 1])
    return f"{name}: {layers}" + (" (one linear Chebyshev filter)" if not channels else "")


def data_params(cfg: ExperimentConfig) -> dict:
    """The ``stations`` data set's parameters for the engine."""
    d = cfg.data.model_dump()
    d["neighbours"] = cfg.graph.neighbours
    return d


def _train_config(cfg: ExperimentConfig, task: str, net: str | None, K: int, seed: int) -> dict:
    """The graphsphere.train config of one network run (output_dir filled in by :func:`_run_dir`)."""
    g = cfg.graph
    data = {"name": "stations", **data_params(cfg), "missing_inputs": "flag"}
    if task == "regression":
        n = cfg.regression.networks[net]
        model = {"type": "StationGCN", "channels": list(n.channels), "K": K, "k": g.neighbours,
                 "kernel_width": g.kernel_width, "laplacian": g.laplacian, "batchnorm": n.batchnorm,
                 "dropout": n.dropout}
    else:
        n = cfg.month
        model = {"type": "SphericalCNN", "channels": list(n.channels), "K": K, "pool": n.pool, "head": n.head,
                 "k": g.neighbours, "kernel_width": n.kernel_width, "laplacian": g.laplacian, "dropout": n.dropout}
    return {"task": task, "output_dir": "", "data": data, "model": model,
            "optim": {"name": "adam", "lr": n.lr, "weight_decay": n.weight_decay, "scheduler": "cosine",
                      "interval": "step"},
            "trainer": {"max_epochs": n.epochs, "batch_size": n.batch_size, "seed": seed,
                        "accelerator": cfg.accelerator, "loggers": ["csv"], "progress_bar": cfg.epoch_progress,
                        "checkpoint_every_n_steps": 0}}


def _run_dir(cfg: ExperimentConfig, out: Path, task: str, net: str | None, K: int, seed: int) -> tuple[Path, dict]:
    train_cfg = _train_config(cfg, task, net, K, seed)
    keyed = {k: v for k, v in train_cfg.items() if k != "output_dir"}
    keyed["trainer"] = {k: v for k, v in keyed["trainer"].items() if k not in ("progress_bar", "accelerator")}
    digest = hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = f"{task}_{net or 'cnn'}_K{K}_seed{seed}_{digest}"
    train_cfg["output_dir"] = str(out / "runs" / name)
    return out / "runs" / name, train_cfg


def _finished(run_dir: Path) -> Path | None:
    best = run_dir / "checkpoints" / "best.ckpt"
    return best if (run_dir / "metrics.json").exists() and best.exists() else None


def _train_or_reuse(cfg: ExperimentConfig, out: Path, task: str, net: str | None, K: int, seed: int):
    """(best checkpoint, parameters, training seconds, re-tested?, run folder name) of one network run."""
    from ...files import atomic_write
    from ...train import fit

    run_dir, train_cfg = _run_dir(cfg, out, task, net, K, seed)
    best = _finished(run_dir) if cfg.reuse else None
    if best is None:
        if not cfg.reuse:
            train_cfg["trainer"]["resume"] = False
        t0 = time.perf_counter()
        result = fit(train_cfg)
        seconds = time.perf_counter() - t0
        params = sum(p.numel() for p in result.module.model.parameters())
        with atomic_write(run_dir / "stations_run.json", "w") as f:
            f.write(json.dumps({"train_seconds": round(seconds, 1), "params": params}))
        return result.best_checkpoint, params, seconds, False, run_dir.name
    try:
        info = json.loads((run_dir / "stations_run.json").read_text())
    except (OSError, ValueError):
        info = {}
    if "params" not in info:
        from ...train.module import SphereTask

        info["params"] = sum(p.numel() for p in SphereTask.from_checkpoint(best).model.parameters())
    return best, info["params"], info.get("train_seconds"), True, run_dir.name


# -- the tasks -------------------------------------------------------------------------------------

def _regression(cfg: ExperimentConfig, out: Path, splits, clock: SweepClock) -> dict:
    from ...train import predict
    from .baselines import (
        PerStationLinear,
        per_station_mse,
        regression_metrics,
    )

    data = splits.info["data"]
    month = {s: data.times[s].astype(int) % 12 for s in data.times}
    truth_dep = data.y["test"].astype(np.float64)
    truth = data.values("test", truth_dep)
    # the climatology forecast, in the data set's units (0 for departures)
    clim_pred = data.climatology[month["test"]] - data.offset[month["test"]]
    records, preds = [], {}

    def score(method, K, seed, pred_dataset_units, params, seconds, extra=None):
        pred = np.asarray(pred_dataset_units, np.float64)
        metrics = regression_metrics(data.values("test", pred), truth, baseline=data.values("test", clim_pred))
        metrics["r2_departures"] = regression_metrics(data.values("test", pred) - data.climatology[month["test"]],
                                                      truth - data.climatology[month["test"]])["r2"]
        rec = {"task": "regression", "method": method, "K": K, "seed": seed, "params": int(params),
               "seconds": round(seconds, 1), **{k: (round(v, 5) if isinstance(v, float) else v)
                                                for k, v in metrics.items()}, **(extra or {})}
        records.append(rec)
        preds.setdefault((method, K), []).append(pred)
        return rec

    for b in cfg.regression.baselines:
        t0 = time.perf_counter()
        tag = clock.tag
        if b == "climatology":
            rec = score(b, None, None, clim_pred, 0, time.perf_counter() - t0)
        else:
            # on the training years, as the networks' weights; "_tv" adds the validation years, which the
            # networks only use to choose their epoch (a sensitivity check in the baseline's favour)
            x, y = data.x["train"], data.y["train"]
            if b.endswith("_tv") and len(data.x["val"]):
                x, y = np.concatenate([x, data.x["val"]]), np.concatenate([y, data.y["val"]])
            lin = PerStationLinear().fit(x, y)
            rec = score(b, None, None, lin.predict(data.x["test"]), lin.n_params, time.perf_counter() - t0)
        _log(f"{tag}: {LABELS[b]}: test MSE {rec['mse']:.3f}, MAE {rec['mae']:.3f}, R2 {rec['r2']:.4f}; "
             f"{clock.finished('baseline', time.perf_counter() - t0)}")
    for net, n in cfg.regression.networks.items():
        for K in cfg.regression.K:
            for seed in cfg.seeds:
                tag = clock.tag
                _log(f"{tag}: regression, {network_label(net, n.channels)}, K={K}, seed {seed} ...")
                t0 = time.perf_counter()
                best, params, train_seconds, retested, run_name = _train_or_reuse(cfg, out, "regression", net, K,
                                                                                  seed)
                p = predict(best, data.x["test"], device="cpu")[..., 0].astype(np.float64)
                # no lag observed at a station: the model says nothing (NaN); the forecast is the climatology
                p = np.where(np.isfinite(p), p, clim_pred)
                seconds = time.perf_counter() - t0
                rec = score(net, K, seed, p, params, train_seconds or seconds, {"run": run_name, "retested": retested})
                how = "re-tested (trained earlier)" if retested else f"in {seconds:.0f} s"
                _log(f"{tag} done: test MSE {rec['mse']:.3f}, MAE {rec['mae']:.3f}, R2 {rec['r2']:.4f} {how}; "
                     f"{clock.finished(f'regression {net}', seconds)}")
    per_station = {f"{m}|{K}": np.nanmean([per_station_mse(data.values('test', p), truth) for p in ps], axis=0)
                   .tolist() for (m, K), ps in preds.items()}
    return {"records": records, "per_station_mse": per_station,
            "_preds": {f"{m}|{K}": ps[0] for (m, K), ps in preds.items()}, "_truth": truth, "_data": data}


def _month(cfg: ExperimentConfig, out: Path, splits, clock: SweepClock) -> dict:
    from ...train import predict
    from .baselines import PerStationBayes, accuracy

    data = splits.info["data"]
    truth = data.y["test"]
    records, confusion = [], {}

    def confusion_of(pred):
        m = np.zeros((12, 12), dtype=int)
        np.add.at(m, (truth, pred), 1)
        return m.tolist()

    t0 = time.perf_counter()
    tag = clock.tag
    x, y = data.x["train"], data.y["train"]          # the training years, as the networks' weights
    nb = PerStationBayes().fit(x, y)
    pred = nb.predict(data.x["test"])
    single = [accuracy(PerStationBayes().fit(x[:, s:s + 1], y).predict(data.x["test"][:, s:s + 1]), truth)
              for s in range(x.shape[1])]
    records.append({"task": "month", "method": "per_station_bayes", "K": None, "seed": None, "params": nb.n_params,
                    "accuracy": round(accuracy(pred, truth), 5), "n": int(truth.size),
                    "single_station_accuracy": {"mean": round(float(np.mean(single)), 4),
                                                "best": round(float(np.max(single)), 4)},
                    "seconds": round(time.perf_counter() - t0, 1)})
    confusion["per_station_bayes"] = confusion_of(pred)
    _log(f"{tag}: {LABELS['per_station_bayes']}: test accuracy {100 * records[-1]['accuracy']:.1f}% "
         f"(one station alone: {100 * np.mean(single):.1f}% on average); "
         f"{clock.finished('baseline', time.perf_counter() - t0)}")
    if cfg.month.lda:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        t0 = time.perf_counter()
        tag = clock.tag
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(np.nan_to_num(x[..., 0]), y)
        pred = lda.predict(np.nan_to_num(data.x["test"][..., 0]))     # a missing value: the station's mean
        records.append({"task": "month", "method": "lda", "K": None, "seed": None,
                        "params": int(lda.coef_.size + lda.intercept_.size),
                        "accuracy": round(accuracy(pred, truth), 5), "n": int(truth.size),
                        "seconds": round(time.perf_counter() - t0, 1)})
        confusion["lda"] = confusion_of(pred)
        _log(f"{tag}: {LABELS['lda']}: test accuracy {100 * records[-1]['accuracy']:.1f}%; "
             f"{clock.finished('baseline', time.perf_counter() - t0)}")
    for K in cfg.month.K:
        for seed in cfg.seeds:
            tag = clock.tag
            _log(f"{tag}: month of the year, SphericalCNN {cfg.month.channels} K={K}, seed {seed} ...")
            t0 = time.perf_counter()
            best, params, train_seconds, retested, run_name = _train_or_reuse(cfg, out, "classification", None, K,
                                                                              seed)
            pred = predict(best, data.x["test"], device="cpu").argmax(-1)
            seconds = time.perf_counter() - t0
            records.append({"task": "month", "method": "cnn", "K": K, "seed": seed, "params": int(params),
                            "accuracy": round(accuracy(pred, truth), 5), "n": int(truth.size),
                            "seconds": round(train_seconds or seconds, 1), "run": run_name, "retested": retested})
            confusion.setdefault(f"cnn|{K}", confusion_of(pred))
            how = "re-tested (trained earlier)" if retested else f"in {seconds:.0f} s"
            _log(f"{tag} done: test accuracy {100 * records[-1]['accuracy']:.1f}% {how}; "
                 f"{clock.finished('month', seconds)}")
    return {"records": records, "confusion": confusion}


# -- the graph -------------------------------------------------------------------------------------

def _graph_summary(cfg: ExperimentConfig, points, series) -> dict:
    from .graphs import (
        mean_kernel_width,
        neighbour_distances,
        paper_kernel_width,
        spectral_check,
        station_graph,
    )

    g = cfg.graph
    d = neighbour_distances(points, g.neighbours)
    t_paper, t_mean = paper_kernel_width(points, g.neighbours), mean_kernel_width(points, g.neighbours)
    out = {"neighbours": g.neighbours, "laplacian": g.laplacian,
           "mean_neighbour_distance_km": float(np.mean(d) * 6371.0),
           "t_paper": t_paper, "t_mean": t_mean, "t_ratio_mean_over_paper": t_mean / t_paper,
           "weight_at_mean_distance": {"paper": 0.5, "mean": float(np.exp(-np.mean(d) ** 2 / (4 * t_mean)))}}
    checks = {}
    for name, width in (("paper", "paper"), ("mean", "mean")):
        graph = station_graph(points, g.neighbours, width, g.laplacian)
        c = spectral_check(graph, series.lon, series.lat, g.spectrum)
        c["edges"] = int(graph.n_edges)
        c["components"] = int(graph.n_components)
        checks[name] = c
    out["spectral"] = checks
    area = np.asarray(points.area)
    top = np.sort(area)[::-1]
    out["voronoi"] = {"largest_share_10": float(top[:10].sum() / area.sum()),
                      "median_area_km2": float(np.median(area) * 6371.0**2),
                      "largest_area_km2": float(top[0] * 6371.0**2)}
    return out


# -- tables ----------------------------------------------------------------------------------------

def _cell(values, scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float) * scale
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else "")


def _groups(records: list[dict]) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault((r["method"], r["K"]), []).append(r)
    return out


def margins(records: list[dict], nets) -> list[dict]:
    """For each network: test MSE of its largest K minus that of its smallest K (paired by seed), and
    minus each per-station linear baseline's, as mean and sample std over seeds, with how many seeds
    the larger K won (negative: the larger K is better)."""
    groups = _groups(records)
    rows = []

    def summary(diff):
        return {"mean": float(np.mean(diff)), "std": float(np.std(diff, ddof=1)) if len(diff) > 1 else None,
                "wins": int(sum(x < 0 for x in diff)), "of": len(diff)}

    for net in nets:
        Ks = sorted(K for (m, K) in groups if m == net)
        if not Ks:
            continue
        top = {r["seed"]: r["mse"] for r in groups[(net, Ks[-1])]}
        row = {"network": net, "K": Ks[-1], "seeds": sorted(top)}
        if Ks[0] != Ks[-1]:
            low = {r["seed"]: r["mse"] for r in groups[(net, Ks[0])]}
            row[f"vs_K{Ks[0]}"] = summary([top[s] - low[s] for s in top if s in low])
        for base in ("per_station_linear", "per_station_linear_tv"):
            if (base, None) in groups:
                row[f"vs_{base}"] = summary([v - groups[(base, None)][0]["mse"] for v in top.values()])
        rows.append(row)
    return rows


def _pm(d: dict) -> str:
    return f"{d['mean']:+.3f}" + (f" ± {d['std']:.3f}" if d.get("std") is not None else "") + \
        f" (lower in {d['wins']} of {d['of']} seeds)"


def format_tables(results: dict) -> str:
    """The regression and month tables (markdown), with the settings and the margins."""
    cfg, sel = results["config"], results["selection"]
    units = results.get("units", "degC")
    lines = []
    seeds = cfg["seeds"]
    years = results["years"]
    head = (f"{sel['kept']} of {sel['stations']} stations ({cfg['data']['source']}, {cfg['data']['variable']}), "
            f"{sel['period'][0]}-{sel['period'][1]} ({sel['period_rule']}; stations with at least "
            f"{100 * sel['min_coverage']:.0f}% of the months observed, {100 * sel['observed']:.1f}% observed); "
            f"train {years['train'][0]}-{years['train'][-1]}, "
            + (f"validation {years['val'][0]}-{years['val'][-1]}, " if years["val"] else "")
            + f"test {years['test'][0]}-{years['test'][-1]}; k = {results['graph']['neighbours']} neighbours, "
            f"kernel width {cfg['graph']['kernel_width']}; seeds {seeds}"
            + (" (mean ± sample std over seeds)." if len(seeds) > 1 else "."))
    lines += [head, ""]
    if results.get("regression"):
        reg = results["regression"]
        inputs = ("departures from the training-years climatology" if cfg["data"]["seasonal"] == "anomaly"
                  else "raw values")
        lines += [(f"**Next month at every station** from the previous {cfg['data']['n_lags']} months ({inputs}); "
                   f"test years, {units}; R² of the values (as the paper) and skill = 1 - MSE / MSE(climatology):"),
                  "",
                  f"| method | K | params | MSE ({units}²) | MAE ({units}) | R² | skill | time (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for (m, K), rs in _groups(reg["records"]).items():
            label = LABELS.get(m) or network_label(m, cfg["regression"]["networks"][m]["channels"])
            lines.append(f"| {label} | {K if K is not None else '-'} | {rs[0]['params']} | "
                         f"{_cell([r['mse'] for r in rs])} | {_cell([r['mae'] for r in rs])} | "
                         f"{_cell([r['r2'] for r in rs], digits=4)} | {_cell([r['skill'] for r in rs])} | "
                         f"{_cell([r['seconds'] for r in rs], digits=0)} |")
        if reg.get("margins"):
            lines += ["", "Margins in test MSE (the largest K minus ...; negative: the larger K is better):", ""]
            for row in reg["margins"]:
                parts = [f"K = {row['K']} minus K = {k.removeprefix('vs_K')}: {_pm(v)}" for k, v in row.items()
                         if k.startswith("vs_K")]
                if "vs_per_station_linear" in row:
                    parts.append(f"minus per-station linear: {_pm(row['vs_per_station_linear'])}")
                if "vs_per_station_linear_tv" in row:
                    parts.append(f"minus per-station linear on training + validation years: "
                                 f"{_pm(row['vs_per_station_linear_tv'])}")
                lines.append(f"- {row['network']}: " + "; ".join(parts))
    if results.get("month"):
        mon = results["month"]
        lines += ["", (f"**Month of the year** from one snapshot of all stations (departures from each station's "
                  f"training mean); test accuracy, {mon['records'][0]['n']} snapshots (chance 8.3%):"), "",
                  "| method | K | params | accuracy (%) | time (s) |", "|---|---|---|---|---|"]
        for (m, K), rs in _groups(mon["records"]).items():
            label = LABELS.get(m) or (f"SphericalCNN {cfg['month']['channels']}, pooled on balanced clusters, "
                                      f"head {cfg['month']['head']}")
            lines.append(f"| {label} | {K if K is not None else '-'} | {rs[0]['params']} | "
                         f"{_cell([r['accuracy'] for r in rs], 100, 1)} | "
                         f"{_cell([r['seconds'] for r in rs], digits=0)} |")
        nb = next(r for r in mon["records"] if r["method"] == "per_station_bayes")
        alone = nb["single_station_accuracy"]
        lines += ["", (f"One station alone (naive Bayes on its own value): {100 * alone['mean']:.1f}% on average, "
                       f"{100 * alone['best']:.1f}% at the best station.")]
    retested = [r for part in ("regression", "month") for r in (results.get(part) or {}).get("records", [])
                if r.get("retested")]
    lines += ["", f"Total time {results['seconds']:.0f} s"
              + (f" ({len(retested)} network run(s) re-tested from earlier invocations; the time column is their "
                 "training time)." if retested else ".")]
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------

def run(cfg: ExperimentConfig | dict | str | None = None) -> dict:
    """Run the experiment as configured; returns the results (also in ``output_dir/results.json``)."""
    import torch

    from ...data.registry import build_splits
    from ...files import atomic_write
    from . import models  # noqa: F401 - registers StationGCN for the engine and its checkpoints

    cfg = cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    reg_splits = build_splits("stations", data_params(cfg), None, "regression", 0) if cfg.regression.enabled else None
    month_splits = build_splits("stations", data_params(cfg), None, "classification", 0) if cfg.month.enabled else None
    splits = reg_splits or month_splits
    data = splits.info["data"]
    sel = splits.info["selection"]
    years = {k: [int(y) for y in v] for k, v in data.years.items()}
    _log(f"{sel['kept']} of {sel['stations']} stations kept: {sel['period'][0]}-{sel['period'][1]} "
         f"({sel['period_rule']}), at least {100 * sel['min_coverage']:.0f}% of the months observed "
         f"({sel['dropped']} dropped); {100 * sel['observed']:.1f}% of the values present, the rest masked")
    _log(f"years: train {years['train'][0]}-{years['train'][-1]}"
         + (f", validation {years['val'][0]}-{years['val'][-1]}" if years["val"] else "")
         + f", test {years['test'][0]}-{years['test'][-1]}; samples "
         + ", ".join(f"{k} {len(v) if v is not None else 0}" for k, v in
                     (("train", splits.train), ("val", splits.val), ("test", splits.test))))
    graph = _graph_summary(cfg, splits.sampling, data.series)
    sp = graph["spectral"][cfg.graph.kernel_width if isinstance(cfg.graph.kernel_width, str) else "paper"]
    _log(f"graph: k = {cfg.graph.neighbours}, mean neighbour distance {graph['mean_neighbour_distance_km']:.0f} km, "
         f"t = {graph['t_paper']:.3g} (paper's rule; the 2019 heuristic gives {graph['t_ratio_mean_over_paper']:.2f}x "
         f"wider); spectrum vs the region: Weyl-law R2 {sp['weyl_r2']:.3f}, first eigenvectors "
         f"{', '.join(f'{c:.2f}' for c in sp['mode_corr'])} in the span of the smooth modes")

    plan = []
    if cfg.regression.enabled:
        plan += ["baseline"] * len(cfg.regression.baselines)
        plan += [f"regression {n}" for n in cfg.regression.networks for _ in cfg.regression.K for _ in cfg.seeds]
    if cfg.month.enabled:
        plan += ["baseline"] * (2 if cfg.month.lda else 1) + ["month"] * (len(cfg.month.K) * len(cfg.seeds))
    clock = SweepClock(plan)
    _log(f"{len(plan)} runs; results in {out}")
    results = {"config": cfg.model_dump(mode="json"), "selection": sel, "years": years, "units": data.series.units,
               "graph": {k: v for k, v in graph.items() if k != "spectral"},
               "spectral": {k: {kk: vv for kk, vv in v.items() if kk != "eigenvectors"}
                            for k, v in graph["spectral"].items()}}
    reg = mon = None
    if cfg.regression.enabled:
        reg = _regression(cfg, out, reg_splits, clock)
        results["regression"] = {"records": reg["records"], "per_station_mse": reg["per_station_mse"],
                                 "margins": margins(reg["records"], list(cfg.regression.networks)),
                                 "stations": data.series.ids.tolist()}
    if cfg.month.enabled:
        mon = _month(cfg, out, month_splits, clock)
        results["month"] = mon
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    table = format_tables(results)
    with atomic_write(out / "results.json", "w") as f:
        f.write(json.dumps(results, indent=1, default=_plain))
    with atomic_write(out / "results.md", "w") as f:
        f.write(table + "\n")
    print(table, flush=True)
    if cfg.pictures:
        _pictures(cfg, out, splits, graph, reg, mon)
    return results


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _pictures(cfg, out: Path, splits, graph, reg, mon) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _log("matplotlib missing: no pictures (pip install -e '.[plot]' in the repository)")
        return
    from . import pictures

    written = pictures.draw_all(cfg, out, splits, graph, reg, mon, raw=_raw_series(cfg))
    _log("wrote " + ", ".join(str(p) for p in written))


def _raw_series(cfg: ExperimentConfig):
    """The series before the station rule (to show the dropped stations)."""
    from ...data import station_tasks

    d = cfg.data
    return station_tasks._read_series(d.source, d.path, d.variable, d.synthetic_stations, d.synthetic_years,
                                      d.synthetic_seed)
