"""The 3D-shapes experiment of DeepSphere (2020), end to end, on real meshes.

For every protocol (``SO3/SO3``, ``z/SO3``) it trains, on the same samples:

- ``deepsphere``: the paper's graph CNN, ``SphericalCNN(HEALPix(nside), 6, classes, channels, K,
  head="global", global_pool="mean")`` (the paper: nside 32, channels 16-32-64-128-256, K = 4);
- ``sht_cnn``: an SHT-based spherical CNN (:mod:`.sht_cnn`, isotropic spectral filters as in Esteves et al.
  2018) on the Gauss-Legendre grid with the same pixel count;

both through :func:`graphsphere.train.fit` (standardised inputs, checkpoints, resume, the epoch with the
best validation loss). It then scores the test split with test-time augmentation (class probabilities
averaged over ``tta_copies`` copies of every sample: same rotation, other translation and scale), computes
accuracy and the SHREC'17 retrieval metrics (:mod:`.retrieval`), measures both models' inference time per
sample at batch 1 and 32 in this process, and writes ``results.json``, ``results.md`` and the pictures
``mesh_maps.png``, ``precision_recall.png`` and ``confusion.png``. With a list ``data.seed`` it does all this
once per seed, through the config with that seed alone, and adds the mean ± std over seeds and the paired
differences (:mod:`.summary`); timing and pictures are of the first seed.

Every training run lives in ``runs/<method>_<protocol>_<digest>``, the digest of its settings: the same
command resumes an interrupted run or only re-tests a finished one, and changed settings never reuse a
model trained with others.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ...data.progress import SweepClock
from ...files import atomic_write
from ...plot.style import DPI
from .config import LABELS, ExperimentConfig, load_config
from .summary import paired_differences, summarize, summary_lines

__all__ = ["run", "format_table", "precision_recall_curve", "PAPER_SHREC17"]

#: The paper's SHREC'17 table (perturbed split, 55 classes, 51,300 ShapeNet models; REFERENCE.md section 5):
#: weighted F1 (%), mAP, parameters, inference per sample on a GPU (ms), training time.
PAPER_SHREC17 = [("Cohen et al. 2018 (SO(3) CNN)", None, 0.676, "1400k", 38.0, "50 h"),
                 ("Esteves et al. 2018 (S2 CNN)", 79.4, 0.685, "500k", 9.8, "3 h"),
                 ("DeepSphere, HEALPix nside 32", 80.7, 0.686, "190k", 0.9, "50 min")]

_PROTOCOL_TAG = {"SO3/SO3": "SO3-SO3", "z/SO3": "z-SO3"}


# --- configs of the runs -------------------------------------------------------------------------------

def _sampling_spec(cfg: ExperimentConfig, method: str) -> dict:
    if method == "deepsphere":
        return {"type": "HEALPix", "nside": cfg.deepsphere.nside}
    g = cfg.sht_cnn.grid(cfg.deepsphere.nside)
    return {"type": "GaussLegendre", "nlat": g.nlat, "nlon": g.nlon}


def _data_params(cfg: ExperimentConfig, protocol: str) -> dict:
    """The ``shapes`` dataset's parameters. Projection happens before training (with the configured
    workers and a progress bar), so the engine only reads the cache: workers and progress are fixed here,
    and changing them never makes a run look like another one."""
    return cfg.data.dataset_params(protocol=protocol, workers=1, progress=False)


def _model_spec(cfg: ExperimentConfig, method: str) -> dict:
    if method == "deepsphere":
        n = cfg.deepsphere
        spec = {"type": "SphericalCNN", "channels": list(n.channels), "K": n.K, "pool": n.pool, "head": "global",
                "global_pool": n.global_pool}
        if n.k != 8:   # only then: runs on the paper's graph keep their folders (digests)
            spec["k"] = n.k
        if n.triplet_margin is not None:   # likewise
            spec.update(triplet_margin=n.triplet_margin, triplet_weight=n.triplet_weight)
    else:
        n = cfg.sht_cnn
        spec = {"type": "SHTCNN", "channels": list(n.channels), "anchors": n.anchors}
    if n.dropout:  # likewise
        spec["dropout"] = n.dropout
    return spec


def _train_config(cfg: ExperimentConfig, method: str, protocol: str, output_dir: Path, n_train: int) -> dict:
    """The graphsphere.train config of one network on one protocol (``n_train`` training samples: a batch
    holds at most that many)."""
    net = cfg.deepsphere if method == "deepsphere" else cfg.sht_cnn
    data = {"name": "shapes", "seed": cfg.data.seed, "standardize_inputs": True, **_data_params(cfg, protocol)}
    trainer = {"max_epochs": net.epochs, "batch_size": min(net.batch_size, n_train), "seed": cfg.data.seed,
               "accelerator": net.accelerator, "precision": net.precision, "loggers": ["csv"],
               "progress_bar": cfg.progress, "checkpoint_every_n_steps": 50}
    if net.select == "val_acc":  # only then: runs kept on the validation loss keep their folders (digests)
        trainer.update(monitor="val_acc", monitor_mode="max")
    return {"task": "classification", "output_dir": str(output_dir), "data": data,
            "sampling": _sampling_spec(cfg, method), "model": _model_spec(cfg, method),
            "optim": {"name": "adam", "lr": net.lr, "weight_decay": net.weight_decay, "scheduler": net.scheduler,
                      "interval": "epoch", **({"eps": net.adam_eps} if net.adam_eps != 1e-8 else {})},
            "trainer": trainer}


def _run_dir(cfg: ExperimentConfig, method: str, protocol: str, n_train: int) -> Path:
    train_cfg = _train_config(cfg, method, protocol, Path(), n_train)
    train_cfg["trainer"]["progress_bar"] = None  # how a run is shown is not what it is
    digest = hashlib.sha1(json.dumps(train_cfg, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cfg.output_dir) / "runs" / f"{method}_{_PROTOCOL_TAG[protocol]}_{digest}"


# --- training ----------------------------------------------------------------------------------------

def _epoch_timer(path: Path):
    """A Lightning callback writing, after every epoch, the seconds its training part took (batches,
    without validation) to ``path`` ({epoch: seconds}, kept across resumed sessions)."""
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.start = None
            self.times = json.loads(path.read_text()) if path.exists() else {}

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def _record(self, trainer):
            if self.start is None or not trainer.is_global_zero:
                return
            self.times[str(trainer.current_epoch)] = round(time.perf_counter() - self.start, 3)
            self.start = None
            with atomic_write(path, "w") as f:
                json.dump(self.times, f)

        def on_validation_epoch_start(self, trainer, pl_module):
            if not trainer.sanity_checking:   # the epoch's batches are done: validation is not training
                self._record(trainer)

        def on_train_epoch_end(self, trainer, pl_module):
            self._record(trainer)           # epochs without validation

    return EpochTimer()


def _finished(run_dir: Path) -> Path | None:
    """The best checkpoint of a run whose training finished (the engine writes ``metrics.json`` only then;
    a killed run has ``last.ckpt`` and no ``metrics.json``)."""
    best = run_dir / "checkpoints" / "best.ckpt"
    return best if (run_dir / "metrics.json").exists() and best.exists() else None


def _train(cfg: ExperimentConfig, method: str, protocol: str, n_train: int) -> dict:
    """Train one network through the engine (resuming a killed run), or, when its folder holds a finished
    training, only read what it recorded; the run's record."""
    from ...train import fit
    from ...train.checkpoint import read_checkpoint

    run_dir = _run_dir(cfg, method, protocol, n_train)
    times_file = run_dir / "epoch_times.json"
    t0 = time.perf_counter()
    best = _finished(run_dir)
    retested = best is not None
    if not retested:
        fit(_train_config(cfg, method, protocol, run_dir, n_train), callbacks=[_epoch_timer(times_file)])
        # the run's own file (a resumed run restores the path its checkpoint recorded, which is elsewhere
        # when the folder was moved or copied)
        best = run_dir / "checkpoints" / "best.ckpt"
    engine = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    ckpt = read_checkpoint(best)
    best_epoch = int(ckpt["epoch"])
    epoch_seconds = [times[k] for k in sorted(times, key=int)]
    return {"run_dir": str(run_dir), "best_checkpoint": str(best), "retested": retested,
            "epochs": len(epoch_seconds), "best_epoch": best_epoch,
            "train_seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
            "train_seconds_to_best": float(sum(epoch_seconds[:best_epoch + 1])) if epoch_seconds else None,
            "test_acc_engine": engine.get("test", {}).get("test_acc"),
            "fit_seconds": round(time.perf_counter() - t0, 1)}


# --- evaluation --------------------------------------------------------------------------------------

def _device(cfg: ExperimentConfig, method: str) -> str:
    import torch

    net = cfg.deepsphere if method == "deepsphere" else cfg.sht_cnn
    return "cuda" if net.accelerator != "cpu" and torch.cuda.is_available() else "cpu"


def _probabilities(module, copies: list[np.ndarray], device: str) -> list[np.ndarray]:
    from ...train import predict

    return [predict(module, x, batch_size=64, device=device, check_order=False) for x in copies]


def precision_recall_curve(probabilities, labels, recall_levels=None) -> np.ndarray:
    """Mean interpolated precision over all queries at ``recall_levels``, for the SHREC'17 retrieval
    (:func:`.retrieval.retrieval_lists`): at recall r, a query's precision is the highest it reaches at
    any recall >= r (0 where its list never reaches r). Default levels: 0, 0.05, ..., 1.

    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    >>> precision_recall_curve(probs, np.array([0, 0, 1, 1]), [0.5, 1.0]).tolist()   # a perfect ranking
    [1.0, 1.0]
    """
    from .retrieval import CUTOFF, retrieval_lists

    labels = np.asarray(labels)
    levels = np.linspace(0, 1, 21) if recall_levels is None else np.asarray(recall_levels, dtype=float)
    counts = {c: min(n, CUTOFF) for c, n in zip(*np.unique(labels, return_counts=True))}
    curves = []
    for q, ranked in enumerate(retrieval_lists(probabilities)):
        rel = labels[ranked] == labels[q]
        hits = np.cumsum(rel)
        precision = hits / np.arange(1, len(rel) + 1)
        recall = hits / counts[labels[q]]
        best = np.maximum.accumulate(precision[::-1])[::-1]   # best precision at this rank or later
        curve = np.zeros(len(levels))
        for i, r in enumerate(levels):
            reached = np.flatnonzero(recall >= r - 1e-12)
            curve[i] = best[reached[0]] if reached.size else 0.0
        curves.append(curve)
    return np.mean(curves, axis=0)


def _time_call(module, xb, sync, clock=time.perf_counter, calls: int = 2) -> float:
    """The fastest of ``calls`` forward passes, in seconds of ``clock``."""
    best = float("inf")
    for _ in range(calls):
        t = clock()
        module(xb)
        sync()
        best = min(best, clock() - t)
    return best


def _inference_times(models: dict, rounds: int = 10, cpu_rounds: int = 4) -> dict:
    """Milliseconds per sample of the forward pass (eval mode, no gradients) at batch 1 and 32 of every
    model of ``models`` ({key: (module, maps [n, npix, C], device)}), measured two ways:

    - ``ms_per_sample``: wall clock with torch's threads, the fastest of ``rounds`` turns (models timed in
      turn, so that all see the same machine; on a shared machine other jobs slow some calls many times
      over, so the fastest turn is what the model costs; ``median_ms_per_sample``, what it cost here);
    - ``cpu_ms_per_sample``: CPU time of this process with one torch thread (CPU models only), the fastest
      of ``cpu_rounds`` turns: what other jobs disturb least, the figure to compare on a busy machine;
      ``train_cpu_ms_per_sample`` the same for a training step's forward and backward pass at batch 32
      (on a copy of the model in training mode; no optimizer step).
    """
    import copy

    import torch

    times: dict = {key: {1: [], 32: []} for key in models}
    cpu: dict = {key: {1: [], 32: [], "train": []} for key, (_, _, device) in models.items() if device == "cpu"}
    prepared = {}
    threads = torch.get_num_threads()
    with torch.no_grad():
        for key, (module, x, device) in models.items():
            module = module.eval().to(device)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            batches = {b: torch.tensor(np.concatenate([x] * int(np.ceil(b / len(x))))[:b], device=device)
                       for b in (1, 32)}
            for xb in batches.values():   # warm-up: first calls build caches and allocate
                module(xb)
            prepared[key] = (module, batches, sync)
        for _ in range(rounds):
            for key, (module, batches, sync) in prepared.items():
                for b, xb in batches.items():
                    times[key][b].append(_time_call(module, xb, sync) * 1000 / b)
        torch.set_num_threads(1)
        try:
            for _ in range(cpu_rounds):
                for key in cpu:
                    module, batches, sync = prepared[key]
                    for b, xb in batches.items():
                        cpu[key][b].append(_time_call(module, xb, sync, clock=time.process_time) * 1000 / b)
            with torch.enable_grad():
                for key in cpu:
                    module, batches, sync = prepared[key]
                    trainee = copy.deepcopy(module).train()

                    def step(xb, trainee=trainee):
                        trainee.zero_grad(set_to_none=True)
                        trainee(xb).logsumexp(-1).mean().backward()

                    for _ in range(cpu_rounds):
                        seconds = _time_call(step, batches[32], sync, clock=time.process_time)
                        cpu[key]["train"].append(seconds * 1000 / 32)
        finally:
            torch.set_num_threads(threads)
    return {key: {"ms_per_sample": {str(b): float(np.min(t)) for b, t in per.items()},
                  "median_ms_per_sample": {str(b): float(np.median(t)) for b, t in per.items()},
                  "cpu_ms_per_sample": ({str(b): float(np.min(cpu[key][b])) for b in (1, 32)}
                                        if key in cpu else None),
                  "train_cpu_ms_per_sample": float(np.min(cpu[key]["train"])) if key in cpu else None}
            for key, per in times.items()}


def _evaluate(cfg: ExperimentConfig, method: str, protocol: str, run: dict) -> tuple[dict, tuple]:
    """The test scores of a trained run, and (module, test maps, device) for timing it."""
    from ...data.shapes import plan_from_params
    from ...sampling import from_spec
    from ...train.module import SphereTask
    from .retrieval import classification_scores, shrec17_scores

    spec = dict(_sampling_spec(cfg, method))
    sampling = from_spec(spec.pop("type"), **spec)
    plan = plan_from_params(sampling, cfg.data.seed, _data_params(cfg, protocol))
    copies = [plan.arrays("test", copy=c, rotate=cfg.tta_rotations, workers=cfg.data.workers,
                          progress=cfg.progress) for c in range(cfg.tta_copies)]
    labels = plan.labels("test")
    module = SphereTask.from_checkpoint(run["best_checkpoint"])
    device = _device(cfg, method)
    probs = _probabilities(module, copies, device)
    mean = np.mean(probs, axis=0)
    scores = shrec17_scores(mean, labels)
    out = {"params": int(sum(p.numel() for p in module.model.parameters())), "accuracy": scores["accuracy"],
           "f1_weighted": scores["f1_weighted"], "f1_macro": scores["f1_macro"],
           "micro": scores["micro"], "macro": scores["macro"],
           "accuracy_no_tta": classification_scores(probs[0].argmax(1), labels)["accuracy"],
           "pr_curve": precision_recall_curve(mean, labels).tolist(),
           "predicted": mean.argmax(1).tolist(), "labels": labels.tolist(),
           "pixels": sampling.npix, "sampling": sampling.to_state(), "device": device}
    return out, (module, copies[0], device)


# --- the experiment ----------------------------------------------------------------------------------

def _project_all(cfg: ExperimentConfig) -> dict:
    """Project every sample of every protocol and sampling (cached), with progress bars; the sizes."""
    from ...data.shapes import plan_from_params
    from ...sampling import from_spec

    sizes = {}
    for method in cfg.methods:
        spec = dict(_sampling_spec(cfg, method))
        sampling = from_spec(spec.pop("type"), **spec)
        for protocol in cfg.data.protocols:
            plan = plan_from_params(sampling, cfg.data.seed, _data_params(cfg, protocol))
            for split in ("train", "val", "test"):
                if plan.pairs[split]:
                    plan.arrays(split, workers=cfg.data.workers, progress=cfg.progress)
            for copy in range(1, cfg.tta_copies):   # the test-time augmentation's copies
                plan.arrays("test", copy=copy, rotate=cfg.tta_rotations, workers=cfg.data.workers,
                            progress=cfg.progress)
            sizes = {"meshes": plan.info["meshes"], "classes": len(plan.class_names),
                     "class_names": plan.class_names if cfg.data.task == "category" else None,
                     **{s: len(p) for s, p in plan.pairs.items()},
                     **{f"{s}_objects": len(plan.objects(s)) for s in plan.pairs},
                     "train_class_counts": np.bincount(plan.labels("train"),
                                                       minlength=len(plan.class_names)).tolist()}
    return sizes


def _run_seed(cfg: ExperimentConfig, clock: SweepClock, of: str, keep_models: bool) -> tuple:
    """Project, train and test every (protocol, method) of ``cfg`` (one scalar seed); the runs, the sizes,
    the projection's seconds and, when ``keep_models``, the models for timing."""
    seed, t_data = cfg.data.seed, time.perf_counter()
    print(f"[shapes] seed {seed}{of}: projecting the meshes (cached after the first run) ...", flush=True)
    sizes = _project_all(cfg)
    data_seconds = time.perf_counter() - t_data
    runs = []
    for protocol in cfg.data.protocols:
        for method in cfg.methods:
            tag, t0 = clock.tag, time.perf_counter()
            print(f"[shapes] {tag}: seed {seed}, {protocol}, {LABELS[method]} ...", flush=True)
            r = {"seed": seed, "protocol": protocol, "method": method, **_train(cfg, method, protocol, sizes["train"])}
            how = "re-tested (trained earlier)" if r["retested"] else f"trained in {r['fit_seconds']:.0f} s"
            print(f"[shapes] {tag} done: test accuracy {100 * r['test_acc_engine']:.1f}% (no "
                  f"augmentation), {how}; {clock.finished(method, time.perf_counter() - t0)}", flush=True)
            runs.append(r)
    print(f"[shapes] seed {seed}: testing (with test-time augmentation) ...", flush=True)
    models = {}
    for i, r in enumerate(runs):
        scores, model = _evaluate(cfg, r["method"], r["protocol"], r)
        r.update(scores)
        if keep_models:
            models[i] = model
        print(f"[shapes] seed {seed}, {r['protocol']}, {LABELS[r['method']]}: accuracy {100 * r['accuracy']:.1f}%, "
              f"mAP {r['micro']['mAP']:.3f} (micro)", flush=True)
    return runs, sizes, data_seconds, models


def run(cfg: ExperimentConfig | dict | None = None) -> dict:
    """Run the experiment, once per seed of ``data.seed`` (each seed's runs are those of the config with that
    seed alone); returns the results (also in ``output_dir/results.json``) and writes ``results.md`` and the
    pictures (of the first seed) there."""
    import torch

    cfg = cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    seeds = cfg.data.seeds
    configs = [cfg.for_seed(s) for s in seeds]
    clock = SweepClock([method for _ in seeds for _ in cfg.data.protocols for method in cfg.methods])
    runs, sizes, data_seconds, models = [], {}, 0.0, {}
    for k, seed_cfg in enumerate(configs):
        of = f" ({k + 1}/{len(seeds)})" if len(seeds) > 1 else ""
        seed_runs, sizes[str(seeds[k])], seconds, kept = _run_seed(seed_cfg, clock, of, keep_models=k == 0)
        runs += seed_runs
        data_seconds += seconds
        models.update(kept)   # indices of the first seed's runs are those in ``runs``
    load_before_timing = [round(v, 2) for v in os.getloadavg()]
    if cfg.timing:   # the first seed's models (the others are the same architectures)
        print(f"[shapes] timing the models of seed {seeds[0]} ...", flush=True)
        for i, timing in _inference_times(models).items():
            runs[i]["inference_ms"] = timing["ms_per_sample"]
            runs[i]["inference_median_ms"] = timing["median_ms_per_sample"]
            runs[i]["inference_cpu_ms_1thread"] = timing["cpu_ms_per_sample"]
            runs[i]["train_cpu_ms_1thread"] = timing["train_cpu_ms_per_sample"]
    results = {"config": cfg.model_dump(mode="json"), "seeds": seeds, "sizes": sizes[str(seeds[0])],
               "sizes_by_seed": sizes, "runs": runs, "summary": summarize(runs),
               "paired_differences": paired_differences(runs),
               "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "processor": platform.machine(), "torch": torch.__version__,
                           "load_average_at_timing": load_before_timing, "timed_seed": seeds[0] if cfg.timing else None,
                           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
               "data_seconds": round(data_seconds, 1), "total_seconds": round(time.perf_counter() - t_start, 1)}
    with atomic_write(out / "results.json", "w") as f:
        json.dump(results, f, indent=1)
    table = format_table(results)
    with atomic_write(out / "results.md", "w") as f:
        f.write(table + "\n")
    print(table)
    _pictures(configs[0], {**results, "runs": [r for r in runs if r["seed"] == seeds[0]]}, out)
    return results


# --- the table ---------------------------------------------------------------------------------------

def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_table(results: dict) -> str:
    """The results as markdown: retrieval and accuracy per protocol and model, their cost, and the
    paper's SHREC'17 table for comparison; over several seeds, first their mean ± std and the paired
    differences (:func:`.summary.summary_lines`), then the rows of every seed (a seed column)."""
    cfg, sizes = results["config"], results["sizes"]
    d, m = cfg["data"], results.get("machine", {})
    seeds = list(dict.fromkeys(r.get("seed") for r in results["runs"]))
    sc, sh = ("", "") if len(seeds) < 2 else ("| {} ", "| seed ")   # the seed column: several seeds only
    what = ("coarse categories, split by object (test objects never seen in training)" if d["task"] == "category"
            else "every mesh its own class, split by perturbation seed")
    lines = [f"Task **{d['task']}** ({what}): {sizes['meshes']} meshes, {sizes['classes']} classes; "
             f"{sizes['train']} training / {sizes['val']} validation / {sizes['test']} test samples "
             f"({d['samples_per_mesh']} random perturbations per mesh: rotation, translation up to "
             f"{d['max_translation']:g}, scale in [{d['scale_range'][0]:g}, {d['scale_range'][1]:g}]). "
             f"Test-time augmentation: {cfg['tta_copies']} copies"
             f"{' (each rotated afresh)' if cfg.get('tta_rotations') else ''}. Retrieval as SHREC'17: a query "
             "retrieves the objects predicted in its class, ranked by that class's probability."
             + (f" Sizes of seed {seeds[0]}'s split; every seed draws its own." if sh else ""), "",
             *summary_lines(results),
             sh + "| protocol | model | pixels | params | accuracy (%) | no TTA (%) | F1 (%) | mAP micro | mAP macro "
             "| P@N | R@N | F1@N |",
             "|---" * bool(sh) + "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        lines.append(sc.format(r.get("seed")) + f"| {r['protocol']} | {LABELS[r['method']]} | {r['pixels']} | "
                     f"{r['params']:,} | {100 * r['accuracy']:.1f} | {100 * r['accuracy_no_tta']:.1f} | "
                     f"{100 * r['f1_weighted']:.1f} | {r['micro']['mAP']:.3f} | {r['macro']['mAP']:.3f} | "
                     f"{r['micro']['P@N']:.3f} | {r['micro']['R@N']:.3f} | {r['micro']['F1@N']:.3f} |")
    where = f"GPU {m['cuda']}" if m.get("cuda") else f"CPU, {m.get('torch_threads', '?')} torch threads"
    if sh and m.get("timed_seed") is not None:
        where += f"; inference and training step timed on the models of seed {m['timed_seed']} only"
    lines += ["", f"Cost, measured in this run ({where}). Inference per sample in eval mode: wall clock (the "
                  "fastest of 10 turns, the models timed in turn) and CPU time with one thread (the fastest of 4; "
                  "the figure other jobs disturb least); a training step's forward and backward pass at batch 32, "
                  "CPU time, one thread; training seconds per epoch (batches only, no validation) and until the "
                  "epoch kept (best validation loss).", "",
              sh + "| protocol | model | inference, batch 1 (ms) | batch 32 (ms/sample) | CPU, 1 thread, batch 1 (ms) "
              "| batch 32 (ms/sample) | training step, CPU, 1 thread (ms/sample) | training (s/epoch) "
              "| epochs (kept) | training to kept epoch (s) |",
              "|---" * bool(sh) + "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        inf, cpu = r.get("inference_ms") or {}, r.get("inference_cpu_ms_1thread") or {}
        kept = "-" if r["best_epoch"] is None else r["best_epoch"] + 1
        cells = [_f(inf.get("1"), ".1f"), _f(inf.get("32"), ".1f"), _f(cpu.get("1"), ".1f"),
                 _f(cpu.get("32"), ".1f"), _f(r.get("train_cpu_ms_1thread"), ".1f"),
                 _f(r["train_seconds_per_epoch"], ".1f"), f"{r['epochs']} ({kept})",
                 _f(r["train_seconds_to_best"], ".0f")]
        lines.append(sc.format(r.get("seed")) + f"| {r['protocol']} | {LABELS[r['method']]} | " + " | ".join(cells)
                     + " |")
    lines += ["", "The paper (SHREC'17 perturbed, 55 classes, 51,300 ShapeNet models; GPU timings):", "",
              "| method | F1 (%) | mAP | params | inference (ms) | training |", "|---|---|---|---|---|---|"]
    for name, f1, m_ap, params, ms, train in PAPER_SHREC17:
        lines.append(f"| {name} | {_f(f1, '.1f')} | {m_ap:.3f} | {params} | {ms:g} | {train} |")
    trained = sum(r["train_seconds_per_epoch"] * r["epochs"] for r in results["runs"]
                  if r["train_seconds_per_epoch"] is not None)
    retested = sum(bool(r.get("retested")) for r in results["runs"])
    load = ", ".join(f"{v:g}" for v in m.get("load_average_at_timing", []))
    lines += ["", f"Time: {results['total_seconds']:.0f} s for this command (projection "
                  f"{results['data_seconds']:.0f} s" + (f"; {retested} run(s) trained earlier, re-tested" if retested
                                                       else "")
              + f"); training batches of all runs, as recorded: {trained:.0f} s. Load average of the machine when "
                f"timing: {load} ({m.get('cpu_count', '?')} cores)."]
    return "\n".join(lines)


# --- pictures ----------------------------------------------------------------------------------------

def _pictures(cfg: ExperimentConfig, results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[shapes] matplotlib missing: no pictures (from the repository: pip install -e '.[plot]')")
        return
    _mesh_maps(cfg, plt, out / "mesh_maps.png")
    _precision_recall(results, plt, out / "precision_recall.png")
    _confusion(results, plt, out / "confusion.png")
    print(f"[shapes] wrote {out / 'mesh_maps.png'}, {out / 'precision_recall.png'}, {out / 'confusion.png'}")


def _mesh_maps(cfg: ExperimentConfig, plt, path: Path) -> None:
    """A mesh beside its 6 maps on HEALPix (Mollweide), unperturbed."""
    import healpy as hp

    from ...data.meshes import CHANNELS, load_mesh, normalize, project
    from ...data.shapes import load_categories, plan_from_params
    from ...sampling import HEALPix

    sampling = HEALPix(cfg.deepsphere.nside)
    plan = plan_from_params(sampling, cfg.data.seed, _data_params(cfg, cfg.data.protocols[0]))
    collection = plan.collections["test"]
    categories = load_categories(cfg.data.category_table)
    if (collection.root / cfg.picture_mesh).is_file() and cfg.picture_mesh in categories:
        name, category, mesh_file = cfg.picture_mesh, categories[cfg.picture_mesh], collection.root / cfg.picture_mesh
    else:   # not in this data set: a mesh of the experiment
        first = collection.entries[0]
        name, category, mesh_file = first.name, first.category, first.path
    mesh = normalize(load_mesh(mesh_file))
    maps = project(mesh, sampling)
    fig = plt.figure(figsize=(13, 5.2))
    ax = fig.add_axes((0.0, 0.12, 0.24, 0.72), projection="3d")
    v = mesh.vertices
    ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=mesh.faces, color="0.75", edgecolor="none",
                    linewidth=0, shade=True)
    ax.set_box_aspect((1, 1, 1))
    ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticks=[], yticks=[], zticks=[])
    ax.set_title(f"{name} ({category}),\nnormalised to the unit ball", fontsize=9)
    for c, channel in enumerate(CHANNELS):
        unit = "unit-ball radii" if channel.endswith("distance") else "dimensionless"
        hp.mollview(maps[:, c], nest=True, fig=fig.number, sub=(2, 4, 2 + c + (c >= 3)), cmap="viridis",
                    title=channel.replace("_", " "), cbar=True, min=0, max=float(maps[:, c].max()) or 1.0,
                    format="%.2f", unit=unit, fontsize={"title": 10, "cbar_label": 7, "cbar_tick_label": 7})
    fig.suptitle(f"6 input maps, HEALPix nside {cfg.deepsphere.nside} ({sampling.npix} pixels): rays from the "
                 "centre, farthest hit of the mesh (top) and of its convex hull (bottom)", fontsize=10)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _precision_recall(results: dict, plt, path: Path) -> None:
    protocols = list(dict.fromkeys(r["protocol"] for r in results["runs"]))
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 4.2), squeeze=False, sharey=True)
    levels = np.linspace(0, 1, 21)
    for ax, protocol in zip(axes[0], protocols):
        for i, r in enumerate(x for x in results["runs"] if x["protocol"] == protocol):
            ax.plot(levels, r["pr_curve"], marker="o", ms=3, color=f"C{i}",
                    label=f"{LABELS[r['method']]}, mAP {r['micro']['mAP']:.3f}")
        ax.set(xlabel="recall", title=f"protocol {protocol}", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0][0].set_ylabel("interpolated precision (mean over queries)")
    fig.suptitle(f"SHREC'17-style retrieval on the test split ({results['config']['data']['task']} task)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _confusion(results: dict, plt, path: Path) -> None:
    runs = results["runs"]
    names = results["sizes"].get("class_names")
    n = results["sizes"]["classes"]
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs) + 0.6, 3.9), squeeze=False)
    for ax, r in zip(axes[0], runs):
        cm = np.zeros((n, n))
        np.add.at(cm, (np.array(r["labels"]), np.array(r["predicted"])), 1)
        rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        if names and n <= 12:
            ax.set_xticks(range(n), names, rotation=60, fontsize=7, ha="right")
            ax.set_yticks(range(n), names, fontsize=7)
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                                color="white" if rate[i, j] > 0.5 else "black")
        ax.set_title(f"{r['protocol']}: {LABELS[r['method']].split(' (')[0]}\naccuracy "
                     f"{100 * r['accuracy']:.1f}%", fontsize=9)
        ax.set_xlabel("predicted")
        if ax is axes[0][0]:
            ax.set_ylabel("true")
        else:
            ax.set_yticklabels([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="fraction of the true class")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
