"""fit, evaluate, predict: what ``graphsphere train / evaluate / predict`` run.

>>> from graphsphere.train import fit, evaluate, predict          # doctest: +SKIP
>>> result = fit("experiments/example_synthetic.yaml")            # doctest: +SKIP
>>> result.metrics["test"]["acc"]                                 # doctest: +SKIP
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

from .config import Config, ConfigError, load_config

__all__ = ["fit", "evaluate", "predict", "FitResult", "build_trainer", "read_inputs", "write_predictions"]


class _QuietLightning(logging.Filter):
    """Drop Lightning's advertisement for its cloud logger from our output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QuietLightning())
# Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


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

    from .callbacks import AtomicCheckpointIO, LayerSummary

    t = cfg.trainer
    cbs: list = []
    if stage == "fit":
        ckdir = out / "checkpoints"
        monitor = t.monitor
        if not has_val and monitor.startswith("val_"):
            monitor = "train_loss_epoch"  # no validation split: the best is the lowest training loss
        if t.checkpoint_every_n_steps:
            cbs.append(ModelCheckpoint(dirpath=ckdir, every_n_train_steps=t.checkpoint_every_n_steps,
                                       save_top_k=0, save_last=True))
        cbs.append(ModelCheckpoint(dirpath=ckdir, filename="best", monitor=monitor, mode=t.monitor_mode,
                                   save_top_k=1, save_last=True, save_on_train_epoch_end=True,
                                   auto_insert_metric_name=False, enable_version_counter=False))
        if t.early_stopping_patience:
            cbs.append(EarlyStopping(monitor=monitor, patience=t.early_stopping_patience, mode=t.monitor_mode))
        cbs.append(LayerSummary())
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
        deterministic=t.deterministic, enable_model_summary=False, enable_progress_bar=t.progress_bar,
        enable_checkpointing=stage == "fit",
        # Our EpochSampler shards the data itself (and can resume mid-epoch); don't let
        # Lightning swap in a DistributedSampler.
        use_distributed_sampler=False)


def _plain(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _latest_checkpoint(out: Path) -> Path | None:
    """The newest of ``checkpoints/last.ckpt`` and the ``hpc_ckpt_*.ckpt`` that
    Lightning writes when SLURM signals a job before requeueing it."""
    found = [p for p in [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")] if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def fit(config, overrides=None, *, callbacks=()) -> FitResult:
    """Train as the config says; resume from ``output_dir/checkpoints/last.ckpt`` if it exists
    (or from a newer SLURM requeue checkpoint ``output_dir/hpc_ckpt_*.ckpt``).

    ``config``: a YAML path, a dict or a :class:`Config`; ``overrides``:
    ``["trainer.max_epochs=3", ...]``. Writes ``config.yaml``, checkpoints,
    logs and ``metrics.json`` to ``output_dir``.
    """
    import lightning.pytorch as pl

    from .datamodule import SphereDataModule
    from .datasets import build_splits
    from .module import SphereTask, read_checkpoint

    cfg = load_config(config, overrides)
    if cfg.trainer.sync_batchnorm and (cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError([("trainer.sync_batchnorm", " = True: torch's SyncBatchNorm runs on GPUs only; set it "
                            "to false on CPUs (or use a model without batch norm: model.batchnorm=false)")])
    out = Path(cfg.output_dir).expanduser()
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    splits = build_splits(cfg)
    module = SphereTask(cfg, splits.sampling, splits.in_channels, splits.n_out, splits.class_names)
    seed = cfg.data.seed if cfg.data.seed is not None else cfg.trainer.seed
    dm = SphereDataModule(splits, cfg.trainer.batch_size, seed, cfg.data.num_workers)

    last = out / "checkpoints" / "last.ckpt"
    resume_from = _latest_checkpoint(out) if cfg.trainer.resume else None
    if resume_from is not None:
        module.check_compatible(read_checkpoint(resume_from)["graphsphere"], resume_from)
    trainer = build_trainer(cfg, out, has_val=splits.val is not None, callbacks=callbacks,
                            steps_per_epoch=len(splits.train) // cfg.trainer.batch_size)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        if resume_from:
            print(f"resuming from {resume_from}", flush=True)
    with warnings.catch_warnings():
        if resume_from:  # of course the folder holds checkpoints: we resume from one
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            # Lightning only knows loaders with state_dict(); ours resume through SphereDataModule.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None)

    metrics = {"val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}}
    best_cb = next(cb for cb in trainer.checkpoint_callbacks if cb.filename == "best")
    best = Path(best_cb.best_model_path) if best_cb.best_model_path else None
    if splits.test is not None:
        weights = module.state_dict()
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
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return result


def _load(checkpoint):
    from .module import SphereTask

    return checkpoint if isinstance(checkpoint, SphereTask) else SphereTask.from_checkpoint(checkpoint)


def evaluate(checkpoint, *, split: str = "test", overrides=None, batch_size: int | None = None,
             accelerator: str = "auto", devices=1, progress_bar: bool = False) -> dict[str, float]:
    """Metrics of a checkpoint on a split (``test`` or ``val``) of the data set
    it was trained on; ``overrides`` change the data (``["data.noise=0.5"]``)."""
    import lightning.pytorch as pl

    from .datamodule import SphereDataModule
    from .datasets import build_splits
    from .module import CheckpointError

    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
    module = _load(checkpoint)
    cfg = load_config(module.config, overrides) if overrides else module.config
    splits = build_splits(cfg)
    if splits.sampling != module.sampling or splits.in_channels != module.in_channels:
        raise CheckpointError(f"the data ({splits.sampling!r}, {splits.in_channels} channels) do not match the "
                              f"model ({module.sampling!r}, {module.in_channels} channels)")
    ds = getattr(splits, split)
    if ds is None:
        raise ValueError(f"dataset {cfg.data.name!r} has no {split} split")
    dm = SphereDataModule(splits, batch_size or cfg.trainer.batch_size, cfg.trainer.seed, cfg.data.num_workers)
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, precision=cfg.trainer.precision, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress_bar,
                         use_distributed_sampler=False)
    res = trainer.test(module, dataloaders=dm._loader(ds, False, False), verbose=False)
    return {k.removeprefix("test_"): float(v) for k, v in res[0].items()}


# -- predict ---------------------------------------------------------------------------------------
def _as_batch(x: np.ndarray, npix: int, channels: int, what: str) -> np.ndarray:
    """[npix] / [n, npix] / [npix, C] / [C, npix] / [n, npix, C] -> [n, npix, C]."""
    if x.ndim == 1 and channels == 1:
        return x[None, :, None]
    if x.ndim == 2:
        if x.shape[1] == npix and channels == 1:
            return x[:, :, None]
        if x.shape == (npix, channels):
            return x[None]
        if x.shape == (channels, npix):  # channels first, as in multi-field FITS files
            return x.T[None]
    if x.ndim == 3 and x.shape[1:] == (npix, channels):
        return x
    raise ValueError(f"{what}: shape {tuple(x.shape)} does not fit a model on {npix} pixels with {channels} input "
                     f"channel(s); expected [n, {npix}, {channels}]" + (f", [n, {npix}] or [{npix}]"
                                                                          if channels == 1 else ""))


def read_inputs(path, sampling, channels: int, var: str | None = None) -> np.ndarray:
    """Maps from ``.npy``, HEALPix ``.fits`` or NetCDF ``.nc``, as ``[n, npix, C]``.

    FITS is read with ``healpy.read_map`` in the sampling's ordering (healpy
    converts from the file's ORDERING header); its fields are channels.
    """
    from ..sampling import HEALPix

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path.resolve()}")
    name = path.name.lower()
    if name.endswith(".npy"):
        x = np.load(path, mmap_mode="r")
    elif name.endswith((".fits", ".fit", ".fits.gz")):
        import healpy as hp

        if not isinstance(sampling, HEALPix):
            raise ValueError(f"{path}: FITS maps are HEALPix maps, but the model is on {sampling!r}")
        x = np.atleast_2d(hp.read_map(path, field=None, nest=sampling.nest, dtype=np.float64))
        if x.shape[-1] != 12 * sampling.nside**2:
            raise ValueError(f"{path}: maps of {x.shape[-1]} pixels, but the model is on {sampling!r}")
        x = x[:, sampling.pixels]  # partial sky: the model's pixels
        if np.any(x == hp.UNSEEN):
            raise ValueError(f"{path}: the map is unobserved (UNSEEN) on pixels the model needs")
        x = x.T[None] if x.shape[0] == channels else x[:, :, None]
    elif name.endswith(".nc"):
        from scipy.io import netcdf_file

        with netcdf_file(path, "r", mmap=False) as f:
            names = [v for v in f.variables if v not in f.dimensions]
            if var is None:
                cands = [v for v in names if sampling.npix in f.variables[v].shape]
                if len(cands) != 1:
                    raise ValueError(f"{path}: pick the variable with var= among {names} (variables with "
                                     f"{sampling.npix} pixels: {cands})")
                var = cands[0]
            if var not in f.variables:
                raise ValueError(f"{path}: no variable {var!r}; it has {names}")
            x = np.array(f.variables[var][:])
    else:
        raise ValueError(f"{path}: unknown input format; use .npy, .fits or .nc")
    return _as_batch(np.asarray(x), sampling.npix, channels, str(path))


def predict(checkpoint, inputs, *, batch_size: int = 32, device: str = "cpu", check_order: bool = True,
            var: str | None = None) -> np.ndarray:
    """Run a trained model on maps (an array or a file path, see :func:`read_inputs`).

    Returns probabilities ``[n, classes]`` (classification), ``[n, npix,
    classes]`` (segmentation) or values ``[n, outputs]`` (regression).
    """
    from ..data.maps import check_maps

    module = _load(checkpoint)
    s = module.sampling
    if isinstance(inputs, (str, Path)):
        x = read_inputs(inputs, s, module.in_channels, var=var)
        what = str(inputs)
    else:
        x = _as_batch(np.asarray(inputs), s.npix, module.in_channels, "inputs")
        what = "inputs"
    x = check_maps(x, s, what=what, check_order=check_order)
    module.eval().to(device)
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.tensor(np.asarray(x[i:i + batch_size], dtype=np.float32), device=device)
            outs.append(module.postprocess(module(xb)).cpu().numpy())
    return np.concatenate(outs)


def write_predictions(pred: np.ndarray, path, module) -> Path:
    """Write predictions to ``.npy``, NetCDF ``.nc`` or HEALPix ``.fits``.

    FITS holds maps: one column per input map, the predicted class
    (segmentation) or value (dense regression with one output) per pixel;
    partial skies are written as partial maps.
    """
    from ..sampling import HEALPix

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    s = module.sampling
    dense = pred.ndim == 3
    if name.endswith(".npy"):
        np.save(path, pred)
    elif name.endswith(".nc"):
        from scipy.io import netcdf_file

        with netcdf_file(path, "w", version=2) as f:
            f.createDimension("sample", pred.shape[0])
            dims = ["sample"]
            if dense:
                f.createDimension("pixel", pred.shape[1])
                dims.append("pixel")
                pix = f.createVariable("pixel", "i", ("pixel",))
                pix[:] = np.asarray(getattr(s, "pixels", np.arange(s.npix)), dtype=np.int32)
            last = "output" if module.task == "regression" else "class"
            f.createDimension(last, pred.shape[-1])
            v = f.createVariable("prediction", "f", tuple(dims + [last]))
            v[:] = pred.astype(np.float32)
            v.description = ("probability per class" if module.task != "regression" else "predicted value")
            f.task = module.task
            f.sampling = repr(s)
            if isinstance(s, HEALPix):
                f.nside, f.ordering = s.nside, s.order
    elif name.endswith((".fits", ".fit")):
        import healpy as hp

        if not dense or not isinstance(s, HEALPix):
            raise ValueError(f"{path}: FITS holds HEALPix maps, but this model predicts "
                             f"{'non-HEALPix maps' if dense else 'one vector per map'} (shape {pred.shape}); "
                             "write .npy or .nc instead")
        if module.task == "segmentation":
            maps = pred.argmax(-1).astype(np.float32)
        elif pred.shape[-1] == 1:
            maps = pred[..., 0].astype(np.float32)
        else:
            raise ValueError(f"{path}: {pred.shape[-1]} outputs per pixel; FITS takes one map per input here, "
                             "write .npy or .nc instead")
        full = np.full((maps.shape[0], 12 * s.nside**2), hp.UNSEEN, dtype=np.float32)
        full[:, s.pixels] = maps
        hp.write_map(str(path), list(full), nest=s.nest, partial=not s.full_sphere, overwrite=True,
                     column_names=[f"MAP{i}" for i in range(len(full))], dtype=np.float32)
    else:
        raise ValueError(f"{path}: unknown output format; use .npy, .nc or .fits")
    return path

