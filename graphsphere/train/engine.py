"""fit, evaluate, predict: what ``graphsphere train / evaluate / predict`` run.

The engine is where a validated config becomes things: the sampling
(:func:`graphsphere.sampling.from_spec`), the data (the dataset registry of
:mod:`graphsphere.data`), the standardisation statistics (on the training
split only), the model (the model registry) and the Lightning trainer.

>>> from graphsphere.train import fit, evaluate, predict          # doctest: +SKIP
>>> result = fit("experiments/example_synthetic.yaml")            # doctest: +SKIP
>>> result.metrics["test"]["test_acc"]                            # doctest: +SKIP
>>> evaluate(result.last_checkpoint)                              # doctest: +SKIP
>>> probs = predict(result.best_checkpoint, maps)                 # [n, classes]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import as_batch, map_options, read_maps
from ..data.registry import build_splits
from ..files import atomic_write
from .config import Config, ConfigError, load_train_config

__all__ = ["fit", "evaluate", "predict", "FitResult", "build_trainer", "build_data", "training_statistics",
           "RunLockedError", "resolve_device"]


class _QuietLightning(logging.Filter):
    """Drop Lightning's lines that say nothing to act on: its cloud logger's advertisement, the
    hardware inventory ("GPU available: False, used: False", TPU, HPU) and the absolute paths of the
    states it restores (the engine says "resuming from ..." itself)."""

    NOISE = ("litlogger", " available: ", "Restoring states", "Restored all states", "LOCAL_RANK:",
             "Loaded model weights from the checkpoint")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(n in msg for n in self.NOISE)


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
              "lightning.pytorch.accelerators.cuda"):
    logging.getLogger(_name).addFilter(_QuietLightning())
# Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
# The validation sanity check sees two batches: average precision of a class absent from them is
# undefined, and torchmetrics says so each time; the epoch-end metrics see the whole split.
warnings.filterwarnings("ignore", message="No positive samples found in target", category=UserWarning)


@dataclass
class FitResult:
    """What :func:`fit` returns. ``metrics``: ``{"val": {...}, "test": {...}}``
    (test: of the best checkpoint); ``module``: the trained LightningModule
    (its ``.model`` is the network) with the weights of the end of training."""

    output_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    metrics: dict[str, dict[str, float]]
    epochs: int
    global_step: int
    resumed_from: Path | None
    module: Any = field(repr=False, default=None)


def build_data(cfg: Config, trust_code: bool = False):
    """The :class:`~graphsphere.data.Splits` a validated config describes."""
    sampling = cfg.sampling.build() if cfg.sampling is not None else None
    seed = cfg.data.seed if cfg.data.seed is not None else cfg.trainer.seed
    return build_splits(cfg.data.name, cfg.data.params, sampling, cfg.task, seed, trust_code)


def training_statistics(dataset, what: str = "inputs", batch_size: int = 64,
                        n_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (float64 sums, then float32) of a dataset's
    inputs ``x [npix, C]`` or targets ``y`` (``n_out`` outputs on the last
    axis), over every sample and pixel that holds a value (NaN, missing, and
    entries of weight 0 are left out). A channel with zero spread gets std 1."""
    from torch.utils.data import DataLoader

    total = total_sq = count = None
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        t = (batch[0] if what == "inputs" else batch[1]).double()
        c = t.shape[-1] if what == "inputs" else (n_out or 1)
        ok = torch.isfinite(t)
        if what == "targets" and len(batch) == 3:                # per-sample or per-pixel weights
            w = batch[2].double()
            ok &= (w.reshape(w.shape + (1,) * (t.dim() - w.dim())) > 0).expand_as(t)
        t, ok = t.reshape(-1, c), ok.reshape(-1, c)
        t = torch.where(ok, t, torch.zeros((), dtype=t.dtype))
        s, s2, n = t.sum(0), (t * t).sum(0), ok.sum(0)
        total, total_sq, count = (s, s2, n) if total is None else (total + s, total_sq + s2, count + n)
    if total is None or (count == 0).any():
        raise ValueError(f"the training split holds no value of some {what[:-1]} channel (all missing)")
    mean = total / count
    std = (total_sq / count - mean**2).clamp(min=0).sqrt()
    std = torch.where(std > 1e-12 * mean.abs().clamp(min=1e-30), std, torch.ones_like(std))
    return mean.float(), std.float()


def _loggers(cfg: Config, out: Path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = []
    if "csv" in cfg.trainer.loggers:
        loggers.append(CSVLogger(save_dir=str(out), name="logs"))
    if "tensorboard" in cfg.trainer.loggers:
        try:
            loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard", default_hp_metric=False))
        except ModuleNotFoundError:
            warnings.warn("tensorboard is not installed: logging to CSV only (pip install tensorboard)",
                          stacklevel=3)
            if "csv" not in cfg.trainer.loggers:
                loggers.append(CSVLogger(save_dir=str(out), name="logs"))
    return loggers


def build_trainer(cfg: Config, out: Path, has_val: bool, callbacks=(), stage: str = "fit",
                  steps_per_epoch: int | None = None):
    """A Lightning ``Trainer`` for ``cfg``: checkpoints in ``out/checkpoints``
    (``last.ckpt`` every ``checkpoint_every_n_steps`` steps and every epoch,
    ``best.ckpt`` by ``monitor``), logs in ``out/logs`` and ``out/tensorboard``."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from .callbacks import AtomicCheckpointIO, DivergenceGuard, LayerSummary, PlainProgress

    t = cfg.trainer
    cbs: list = []
    if stage == "fit":
        ckdir = out / "checkpoints"
        monitor = t.monitor
        if not has_val and monitor.startswith("val_"):
            monitor = "train_loss_epoch"  # no validation split: the best is the lowest training loss
        if t.checkpoint_every_n_steps:
            cbs.append(ModelCheckpoint(dirpath=ckdir, every_n_train_steps=t.checkpoint_every_n_steps,
                                       save_top_k=0, save_last=True, enable_version_counter=False))
        # last.ckpt at every epoch end, whatever the monitored metric did (a best-only callback writes
        # last.ckpt only when the metric improves, which left it a few steps behind the run).
        cbs.append(ModelCheckpoint(dirpath=ckdir, save_top_k=0, save_last=True, save_on_train_epoch_end=True,
                                   enable_version_counter=False))
        cbs.append(ModelCheckpoint(dirpath=ckdir, filename="best", monitor=monitor, mode=t.monitor_mode,
                                   save_top_k=1, save_on_train_epoch_end=True,
                                   auto_insert_metric_name=False, enable_version_counter=False))
        if t.early_stopping_patience:
            cbs.append(EarlyStopping(monitor=monitor, patience=t.early_stopping_patience, mode=t.monitor_mode))
        cbs.append(LayerSummary(verbose=t.verbose))
        cbs.append(DivergenceGuard(t.divergence_factor))
        if t.progress_bar and not _interactive():
            cbs.append(PlainProgress())
    cbs.extend(callbacks)
    # Passed only when set: Lightning announces every explicit limit.
    limits = {k: v for k, v in (("limit_train_batches", t.limit_train_batches),
                                ("limit_val_batches", t.limit_val_batches if has_val else 0)) if v != 1.0}
    return pl.Trainer(**limits,
        default_root_dir=str(out), max_epochs=t.max_epochs, max_steps=t.max_steps, accelerator=t.accelerator,
        devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision,
        callbacks=cbs, logger=_loggers(cfg, out) if stage == "fit" else False,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=max(1, min(t.log_every_n_steps, steps_per_epoch or t.log_every_n_steps)),
        check_val_every_n_epoch=t.val_every_n_epochs, gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic, enable_model_summary=False,
        enable_progress_bar=t.progress_bar and _interactive(),
        enable_checkpointing=stage == "fit",
        # Our EpochSampler shards the data itself (and can resume mid-epoch); don't let
        # Lightning swap in a DistributedSampler.
        use_distributed_sampler=False)


def class_counts(dataset, n_classes: int, batch_size: int = 64) -> torch.Tensor:
    """How often each class occurs among a dataset's labels (pixels, or maps), labels -1 and weight 0
    left out."""
    from torch.utils.data import DataLoader

    counts = torch.zeros(n_classes, dtype=torch.float64)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        y = batch[1].reshape(-1).long()
        keep = y >= 0
        if len(batch) == 3:
            w = batch[2]
            keep &= (w.reshape(w.shape + (1,) * (batch[1].dim() - w.dim())) > 0).expand_as(batch[1]).reshape(-1)
        counts += torch.bincount(y[keep], minlength=n_classes).double()
    return counts


def _class_weights(cfg: Config, splits):
    """The loss's class weights: none, given, or balanced from the training split's label counts."""
    cw = cfg.data.class_weights
    if cw == "none":
        return None
    if cfg.task == "regression":
        raise ConfigError([("data.class_weights", f" = {cw!r}: class weights are for classification and segmentation")])
    if isinstance(cw, list):
        if len(cw) != splits.n_out:
            raise ConfigError([("data.class_weights", f" = {cw}: one weight per class ({splits.n_out}) needed")])
        return torch.tensor(cw, dtype=torch.float32)
    counts = class_counts(splits.train, splits.n_out)
    if (counts == 0).any():
        raise ValueError(f"class(es) {torch.nonzero(counts == 0).ravel().tolist()} never occur in the training split: "
                         "balanced class weights are undefined; give data.class_weights as a list")
    return (counts.sum() / (len(counts) * counts)).float()


def _interactive() -> bool:
    """A progress bar only on a terminal: redirected to a file, its frames would fill it."""
    import sys

    return sys.stdout.isatty()


def _plain(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _latest_checkpoint(out: Path) -> Path | None:
    """The newest of ``checkpoints/last.ckpt`` and the ``hpc_ckpt_*.ckpt`` that
    Lightning writes when SLURM signals a job before requeueing it."""
    found = [p for p in [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")] if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def fit(config, overrides=None, *, callbacks=(), trust_code: bool = False) -> FitResult:
    """Train as the config says; resume from ``output_dir/checkpoints/last.ckpt`` if it exists
    (or from a newer SLURM requeue checkpoint ``output_dir/hpc_ckpt_*.ckpt``).

    ``config``: a YAML path, a dict or a :class:`Config`; ``overrides``:
    ``["trainer.max_epochs=3", ...]``; ``trust_code`` allows a model type
    that is code outside graphsphere (``"package.module:Class"``). Writes
    ``config.yaml``, checkpoints, logs and ``metrics.json`` to ``output_dir``.
    """
    cfg = load_train_config(config, overrides, trust_code=trust_code)
    if cfg.trainer.sync_batchnorm and (cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError([("trainer.sync_batchnorm", " = True: torch's SyncBatchNorm runs on GPUs only; set it "
                            "to false on CPUs (or use a model without batch norm: model.batchnorm=false)")])
    out = _output_dir(cfg.output_dir)
    return _fit(cfg, out, callbacks, trust_code)


def _output_dir(path) -> Path:
    """``output_dir`` as a Path, or a clear error if it cannot be a folder."""
    out = Path(path).expanduser()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError([("output_dir", f" = {str(path)!r}: {p} is a file, not a folder; choose another "
                                    "output_dir")])
            break
    return out


class _RunLock:
    """One run per output_dir: an exclusive lock on ``output_dir/.lock`` holding the PID (a second
    run refuses, naming the first); taken by the first process of a distributed run only."""

    def __init__(self, out: Path):
        self.out, self.fd = out, None

    def __enter__(self):
        import os

        if any(int(os.environ.get(v, "0") or 0) != 0 for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")):
            return self
        import fcntl

        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / ".lock"
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise RunLockedError(f"output_dir {self.out} is in use by another run (PID {other}); wait for it to "
                                 "finish, or give this run another output_dir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            import os

            os.close(self.fd)  # closing releases the lock; the file stays (removing it would race)
        return False


class RunLockedError(ValueError):
    """Another run holds the output_dir."""


def _fit(cfg: Config, out: Path, callbacks, trust_code: bool) -> FitResult:
    import lightning.pytorch as pl

    from .checkpoint import read_checkpoint
    from .datamodule import SphereDataModule
    from .module import SphereTask, build_model

    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    splits = build_data(cfg, trust_code)
    input_stats = training_statistics(splits.train, "inputs") if cfg.data.standardize_inputs else None
    target_stats = (training_statistics(splits.train, "targets", n_out=splits.n_out)
                    if cfg.data.standardize_targets and cfg.task == "regression" else None)
    class_weights = _class_weights(cfg, splits)
    model_channels = splits.in_channels * (2 if cfg.data.missing_inputs == "flag" else 1)
    model = build_model(cfg.model, cfg.task, splits.sampling, model_channels, splits.n_out, trust_code)
    module = SphereTask(cfg, model, splits.sampling, splits.in_channels, splits.n_out, splits.class_names,
                        input_stats=input_stats, target_stats=target_stats, class_weights=class_weights)
    seed = cfg.data.seed if cfg.data.seed is not None else cfg.trainer.seed
    dm = SphereDataModule(splits, cfg.trainer.batch_size, seed, cfg.data.num_workers)

    # The data and the model are built (and any mistake in them reported) before the output_dir is
    # touched: the lock, the checkpoints and the logs come after.
    with _RunLock(out):
        last = out / "checkpoints" / "last.ckpt"
        resume_from = _latest_checkpoint(out) if cfg.trainer.resume else None
        if resume_from is not None:
            module.check_compatible(read_checkpoint(resume_from)["graphsphere"], resume_from)
        trainer = build_trainer(cfg, out, has_val=splits.val is not None, callbacks=callbacks,
                                steps_per_epoch=len(splits.train) // cfg.trainer.batch_size)
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            _retire_outputs(out, fresh=resume_from is None)
            with atomic_write(out / "config.yaml", "w") as f:
                f.write(cfg.to_yaml())
            if resume_from:
                print(f"resuming from {resume_from}", flush=True)
        with warnings.catch_warnings():
            if resume_from:  # of course the folder holds checkpoints: we resume from one
                warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
                # Lightning only knows loaders with state_dict(); ours resume through SphereDataModule.
                warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
            trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None)

        metrics = {"val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}}
        # This folder's own best.ckpt: Lightning restores the path it had when the run was first trained,
        # which is wrong when the folder was copied or moved since.
        best = out / "checkpoints" / "best.ckpt"
        best = best if best.exists() else None
        if splits.test is not None:
            # copies: state_dict() shares the parameters' storage, which testing best.ckpt overwrites
            weights = {k: v.clone() for k, v in module.state_dict().items()}
            res = trainer.test(module, datamodule=dm, ckpt_path=str(best) if best else None, verbose=False)
            module.load_state_dict(weights)  # keep the end-of-training weights in the returned module
            metrics["test"] = _plain(res[0]) if res else {}
        result = FitResult(output_dir=out, last_checkpoint=last if last.exists() else None, best_checkpoint=best,
                           metrics=metrics, epochs=trainer.current_epoch, global_step=trainer.global_step,
                           resumed_from=resume_from, module=module)
        if trainer.is_global_zero:
            summary = {"metrics": metrics, "epochs": result.epochs, "global_step": result.global_step,
                       "best_checkpoint": str(best) if best else None, "last_checkpoint": str(result.last_checkpoint),
                       "resumed_from": str(resume_from) if resume_from else None}
            with atomic_write(out / "metrics.json", "w") as f:
                f.write(json.dumps(summary, indent=2))
        return result


def _retire_outputs(out: Path, fresh: bool) -> None:
    """Keep config.yaml and metrics.json true of the weights beside them at every moment, before the new
    config.yaml is written. A fresh run (``trainer.resume=false``, or nothing to resume) moves a previous
    run's checkpoints, metrics.json and config.yaml (in that order, config last, so what stays is always
    one run's) into ``output_dir/replaced/<time>/``; a resumed run removes metrics.json, which stops
    describing the weights at the first new checkpoint (the run writes it again when it ends)."""
    import os
    import time

    from ..files import fsync_dir

    if not fresh:
        (out / "metrics.json").unlink(missing_ok=True)
        return
    old = [out / "metrics.json", out / "checkpoints", *sorted(out.glob("hpc_ckpt_*.ckpt"))]
    old = [p for p in old if p.exists() and not (p.is_dir() and not any(p.iterdir()))]
    if not old:
        return                                   # no weights, no metrics: config.yaml alone is replaced
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = out / "replaced" / stamp
    n = 0
    while aside.exists():
        n += 1
        aside = out / "replaced" / f"{stamp}-{n}"
    aside.mkdir(parents=True)
    for p in [*old, out / "config.yaml"]:
        if p.exists() or p.is_symlink():
            os.replace(p, aside / p.name)
    fsync_dir(out)
    print(f"starting afresh: the previous run's checkpoints, config and metrics are now in {aside}", flush=True)


def _load(checkpoint, trust_code: bool = False):
    from .module import SphereTask

    return checkpoint if isinstance(checkpoint, SphereTask) else SphereTask.from_checkpoint(checkpoint,
                                                                                          trust_code=trust_code)


def evaluate(checkpoint, *, split: str = "test", overrides=None, batch_size: int | None = None,
             device: str = "auto", progress_bar: bool = False, trust_code: bool = False) -> dict[str, float]:
    """Metrics of a checkpoint on a split (``test``, ``val`` or ``train``) of
    the data set it was trained on; ``overrides`` change the data
    (``["data.noise=0.5"]``). Metric names are those of ``metrics.json``
    (``test_acc``, ``val_mse``, ...). ``device``: ``auto``, ``cpu`` or ``cuda``."""
    import lightning.pytorch as pl

    from .checkpoint import CheckpointError
    from .datamodule import SphereDataModule

    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
    module = _load(checkpoint, trust_code)
    cfg = load_train_config(module.config, overrides, trust_code=trust_code) if overrides else module.config
    splits = build_data(cfg, trust_code)
    if splits.sampling != module.sampling or splits.in_channels != module.in_channels:
        raise CheckpointError(f"the data ({splits.sampling!r}, {splits.in_channels} channels) do not match the "
                              f"model ({module.sampling!r}, {module.in_channels} channels)")
    ds = getattr(splits, split)
    if ds is None:
        raise ValueError(f"dataset {cfg.data.name!r} has no {split} split")
    dm = SphereDataModule(splits, batch_size or cfg.trainer.batch_size, cfg.trainer.seed, cfg.data.num_workers)
    device = resolve_device(device)
    accelerator, devices = ("gpu", [int(device.partition(":")[2] or 0)]) if device.startswith("cuda") else ("cpu", 1)
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, precision=cfg.trainer.precision, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress_bar,
                         use_distributed_sampler=False)
    res = trainer.test(module, dataloaders=dm._loader(ds, False, False), verbose=False)
    return {f"{split}_{k.removeprefix('test_')}": float(v) for k, v in res[0].items()}


def resolve_device(device: str) -> str:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``, checked.

    >>> resolve_device("cpu")
    'cpu'
    """
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but there is no CUDA device here; use --device cpu "
                             "(or auto)")
        return device
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def predict(checkpoint, inputs, *, batch_size: int = 32, device: str = "cpu", check_order: bool = True,
            var: str | None = None, fits_fields: str = "auto", trust_code: bool = False,
            patch_nside: int | None = None, border: int | None = None) -> np.ndarray:
    """Run a trained model on maps (an array, a file path or a list of files whose channels are
    concatenated, see :func:`graphsphere.data.io.read_maps`).

    Returns probabilities ``[n, classes]`` (classification), ``[n, npix,
    classes]`` (segmentation) or values ``[n, outputs]`` (regression, in the
    data's units).

    ``patch_nside``: a per-pixel model on a HEALPix sky too large for one pass runs patch by patch
    (cores under each pixel at that nside, with ``border`` rings of context; by default the
    receptive field, which gives the one-pass result to float precision), see docs/patches.md.
    """
    from ..data.maps import check_maps

    device = resolve_device(device)
    module = _load(checkpoint, trust_code)
    s = module.sampling
    if isinstance(inputs, (str, Path)) or (isinstance(inputs, (list, tuple)) and isinstance(inputs[0], (str, Path))):
        x = read_maps(inputs, s, module.in_channels, var=var, fits_fields=fits_fields,
                      **map_options(module.config.data))      # as the training files were read
        what = str(inputs)
    else:
        x = as_batch(np.asarray(inputs), s.npix, module.in_channels, "inputs")
        what = "inputs"
    x = check_maps(x, s, what=what, check_order=check_order)
    module.eval().to(device)
    model = module.model
    if patch_nside is not None:  # the module's own input handling, then the model in patches
        from ..models.patches import PatchPredictor

        module.model = PatchPredictor(model, patch_nside, border)
    elif border is not None:
        raise ValueError("border is the context around patches: give patch_nside too")
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = torch.tensor(np.asarray(x[i:i + batch_size], dtype=np.float32), device=device)
                out = module.postprocess(module(xb))
                if out.dim() == 3:  # per-pixel outputs: none where no input channel was observed
                    out[~torch.isfinite(xb).any(-1)] = float("nan")
                outs.append(out.cpu().numpy())
    finally:
        module.model = model
    return np.concatenate(outs)
