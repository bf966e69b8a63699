"""The LightningModule: a spherical model, its loss, optimizer, metrics and
input/target standardisation.

Checkpoints carry everything needed to rebuild the module without the config
file (``checkpoint["graphsphere"]``: the config, the sampling, the data's
channels and outputs, which standardisations are on; see
:mod:`graphsphere.train.checkpoint`) and the random-number state, so that a
resumed run continues bit for bit.
"""

from __future__ import annotations

import inspect
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from ..models.registry import model_class
from ..nn.norm import Standardize, convert_sync_batchnorm
from ..sampling import from_state
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint
from .config import Config, ConfigError, load_train_config
from .metrics import make_metrics

__all__ = ["SphereTask", "build_model", "CheckpointError"]

#: Config entries a resumed run may change: how it runs, not what it learns.
RESUMABLE_CHANGES = {"trainer": ("max_epochs", "max_steps", "accelerator", "devices", "strategy", "num_nodes",
                                 "progress_bar", "verbose", "loggers", "log_every_n_steps", "checkpoint_every_n_steps",
                                 "resume", "divergence_factor", "early_stopping_patience", "val_every_n_epochs",
                                 "limit_val_batches"),
                     "data": ("num_workers",), "output_dir": ()}


def build_model(model_cfg, task: str, sampling, in_channels: int, n_out: int, trust_code: bool = False):
    """Instantiate the configured model; the automatic arguments (sampling,
    channels, outputs, task) are passed where the model's signature has them."""
    try:
        cls = model_class(model_cfg.type, trust_code=trust_code)
    except ValueError as e:
        raise ConfigError([("model.type", f" = {model_cfg.type!r}: {e}")]) from None
    params = inspect.signature(cls).parameters
    # graphsphere.models speak of "classification" for per-vertex classes too.
    model_task = "regression" if task == "regression" else "classification"
    auto = {"sampling": sampling, "in_channels": in_channels, "task": model_task}
    auto["out_channels" if "out_channels" in params else "out_features"] = n_out
    kwargs = {k: v for k, v in auto.items() if k in params}
    kwargs.update(model_cfg.args)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError([("model", f" ({model_cfg.type}): {e}")]) from None


def _capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(t):
    return [_to_lists(v) for v in t] if isinstance(t, (tuple, list)) else t


def _to_tuples(t):
    return tuple(_to_tuples(v) for v in t) if isinstance(t, list) else t


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SphereTask(pl.LightningModule):
    """A spherical model trained for ``task`` (classification, regression or segmentation).

    Built by the engine from a validated config, the model and what the data
    say (sampling, channels, outputs, standardisation statistics);
    :meth:`from_checkpoint` rebuilds it from a checkpoint alone. With
    ``input_stats`` (per-channel mean and std of the training inputs) the
    model sees standardised inputs; with ``target_stats`` (regression) it
    learns standardised targets, and predictions and metrics come back in
    the data's units.
    """

    def __init__(self, config: Config, model: torch.nn.Module, sampling, in_channels: int, n_out: int,
                 class_names=None, input_stats=None, target_stats=None, class_weights=None):
        super().__init__()
        self.config, self.task = config, config.task
        self.sampling, self.in_channels, self.n_out = sampling, int(in_channels), int(n_out)
        self.class_names = list(class_names) if class_names else None
        self.model = model
        if config.trainer.sync_batchnorm:
            convert_sync_batchnorm(self.model)
        self.input_norm = Standardize(*input_stats) if input_stats is not None else None
        if target_stats is not None and self.task != "regression":
            raise ValueError(f"target standardisation is for regression, not {self.task}")
        self.target_norm = Standardize(*target_stats) if target_stats is not None else None
        if class_weights is not None:
            if self.task == "regression" or len(class_weights) != self.n_out:
                raise ValueError(f"class weights need a classification task and one weight per class ({self.n_out}), "
                                 f"got {len(class_weights)} for {self.task}")
            self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float32))
        else:
            self.class_weights = None
        self.val_metrics = make_metrics(self.task, self.n_out)
        self.test_metrics = make_metrics(self.task, self.n_out)
        self._pending_rng = None

    # -- identity ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "sampling": self.sampling.to_state(),
                "in_channels": self.in_channels, "n_out": self.n_out, "class_names": self.class_names,
                "standardize": {"inputs": self.input_norm is not None, "targets": self.target_norm is not None},
                "class_weights": self.class_weights is not None,
                "weight_shapes": {k: list(v.shape) for k, v in self.state_dict().items()}}

    def check_compatible(self, meta: dict[str, Any], path) -> None:
        """Raise :class:`CheckpointError` if a checkpoint holds another model or another run
        (other data, optimiser or seed): resuming from it would train something else."""
        mine = self.meta()
        problems = [f"{key}: {meta.get(key)} there, {mine[key]} here" for key in ("in_channels", "n_out")
                    if meta.get(key) != mine[key]]
        if meta.get("sampling") != mine["sampling"]:
            problems.append(f"sampling: {_short(meta.get('sampling'))} there, {_short(mine['sampling'])} here")
        problems += _config_differences(meta.get("config") or {}, mine["config"])
        if not problems and meta.get("weight_shapes") not in (None, mine["weight_shapes"]):
            theirs, ours = meta["weight_shapes"], mine["weight_shapes"]
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            problems.append(f"weights differ: {diff[:5]}")
        if problems:
            raise CheckpointError(f"{path} was trained with other settings:\n  " + "\n  ".join(problems)
                                  + "\n  use a new output_dir, set trainer.resume=false to start afresh, or "
                                    "restore the old settings")

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu", trust_code: bool = False) -> "SphereTask":
        """Rebuild the trained module from a checkpoint file. Only registered
        model classes are built unless ``trust_code`` (the checkpoint's
        config could otherwise name any importable code)."""
        ckpt = read_checkpoint(path)
        meta = ckpt["graphsphere"]
        cfg = load_train_config(meta["config"], trust_code=trust_code)
        sampling = from_state(meta["sampling"])
        model_channels = meta["in_channels"] * (2 if cfg.data.missing_inputs == "flag" else 1)
        model = build_model(cfg.model, cfg.task, sampling, model_channels, meta["n_out"], trust_code)
        std = meta.get("standardize") or {}
        # placeholders of the right size: the state_dict fills in the statistics
        module = cls(cfg, model, sampling, meta["in_channels"], meta["n_out"], meta.get("class_names"),
                     input_stats=_unit_stats(meta["in_channels"]) if std.get("inputs") else None,
                     target_stats=_unit_stats(meta["n_out"]) if std.get("targets") else None,
                     class_weights=torch.ones(meta["n_out"]) if meta.get("class_weights") else None)
        try:
            module.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the model: {str(e)[:500]}") from None
        return module.to(map_location)

    # -- Lightning hooks --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["graphsphere"] = self.meta()
        checkpoint["graphsphere_rng"] = _capture_rng()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "graphsphere" not in checkpoint:
            raise CheckpointError("not a graphsphere checkpoint (no 'graphsphere' entry)")
        self.check_compatible(checkpoint["graphsphere"], "the checkpoint")
        # Restored at the first training batch, not now: building loaders and
        # the sanity check may draw random numbers in between.
        self._pending_rng = checkpoint.get("graphsphere_rng")

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._pending_rng is not None:
            _restore_rng(self._pending_rng)
            self._pending_rng = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw output (logits, or standardised values) for raw inputs: standardised, and
        missing values (NaN) handled as ``data.missing_inputs`` says."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        missing = self.config.data.missing_inputs
        if missing != "error":
            observed = torch.isfinite(x)
            # 0 is the training mean once standardised (the raw value 0 otherwise)
            x = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if missing == "flag":
                x = torch.cat([x, observed.to(x.dtype)], dim=-1)
        elif not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            raise ValueError("the inputs hold NaN or Inf (missing pixels?): set data.missing_inputs: fill (replace them "
                             "by the training mean) or flag (the same, plus one observed/missing channel per input "
                             "channel), or clean the data")
        return self.model(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The task's loss over the entries that count: regression targets that are NaN and
        segmentation labels -1 are left out, and ``weight`` (per sample ``[B]`` or per pixel
        ``[B, V]``, 0 to leave out) weighs the rest. A masked target never reaches a gradient."""
        if self.task == "regression":
            y = y.reshape(out.shape) if out.shape != y.shape and y.numel() == out.numel() else y
            if self.target_norm is not None:
                y = self.target_norm(y)
            w = torch.isfinite(y).to(torch.float32)
            if weight is not None:
                w = w * _broadcast(weight, w)
            # masked targets become 0 before the difference: no NaN, no overflow, no gradient from them
            y = torch.where(w > 0, y.float(), torch.zeros((), device=y.device))
            err = (out.float() - y) ** 2
            return (err * w).sum() / w.sum().clamp(min=1e-12)
        target = y.reshape(-1).long()
        w = (target >= 0).to(torch.float32)
        if weight is not None:
            w = w * _broadcast(weight, y.to(torch.float32)).expand_as(y).reshape(-1)  # per map: on its pixels
        if self.class_weights is not None:  # as torch's weighted mean: divided by the weights' sum
            w = w * self.class_weights[target.clamp(min=0)]
        ce = F.cross_entropy(out.reshape(-1, self.n_out).float(), target.clamp(min=0), reduction="none")
        loss = (ce * w).sum() / w.sum().clamp(min=1e-12)
        extra = getattr(self.model, "auxiliary_loss", None)  # a model's own term: SphericalCNN's triplet loss
        if extra is not None and self.task == "classification":
            loss = loss + extra(out.float(), target, w)  # samples of weight 0 left out there too
        return loss

    def _check_output(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        model = self.config.model.type
        if self.task == "segmentation":
            want = (x.shape[0], x.shape[1], self.n_out)
        elif self.task == "classification":
            want = (x.shape[0], self.n_out)
        else:
            dense_target = y.dim() >= 2 and y.shape[1] == x.shape[1] and (y.dim() == 3 or self.n_out == 1)
            if dense_target and out.dim() != 3:
                raise ValueError(f"the targets are per pixel ({tuple(y.shape)}) but {model} outputs one vector per map "
                                 f"({tuple(out.shape)}): use a per-vertex model such as SphericalUNet")
            if not dense_target and out.dim() == 3:
                raise ValueError(f"the targets are one vector per map ({tuple(y.shape)}) but {model} outputs one per "
                                 f"pixel ({tuple(out.shape)}): use SphericalCNN, or give per-pixel targets [n, npix(, k)]")
            return
        if tuple(out.shape) != want:
            raise ValueError(f"{model} returned shape {tuple(out.shape)} for task {self.task!r}, "
                             f"expected {want} ([batch, classes] for classification, [batch, pixels, classes] for "
                             "segmentation)")

    def training_step(self, batch, batch_idx):
        x, y, w = _unpack(batch)
        out = self(x)
        self._check_output(out, x, y)
        loss = self.loss(out, y, w)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def _eval_step(self, batch, metrics, prefix: str):
        x, y, w = _unpack(batch)
        out = self(x)
        self._check_output(out, x, y)
        loss = self.loss(out, y, w)
        metrics.update(self.in_data_units(out), y, w)
        self.log(f"{prefix}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, self.test_metrics, "test")

    def _log_metrics(self, metrics, prefix: str) -> None:
        values = metrics.compute()
        # Already reduced over processes by torchmetrics; sync_dist only tells Lightning so.
        self.log_dict({f"{prefix}_{k}": v for k, v in values.items()}, prog_bar=False, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def predict_step(self, batch, batch_idx):
        x = _unpack(batch)[0] if isinstance(batch, (tuple, list)) else batch
        return self.postprocess(self(x))

    def in_data_units(self, out: torch.Tensor) -> torch.Tensor:
        """Regression outputs with the target standardisation undone (other tasks: unchanged)."""
        return self.target_norm.inverse(out) if self.target_norm is not None else out

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        """Probabilities for classification/segmentation, values (in the data's units) for regression."""
        return self.in_data_units(out).float() if self.task == "regression" else out.float().softmax(-1)

    def configure_optimizers(self):
        o = self.config.optim
        params = self.parameters()
        if o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay)
        elif o.name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        if o.scheduler == "none":
            return opt
        if o.scheduler == "cosine":
            total = (self.trainer.estimated_stepping_batches if o.interval == "step"
                     else self.config.trainer.max_epochs)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(total)))
        elif o.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
        elif o.scheduler == "exponential":
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o.gamma)
        else:
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=o.gamma, patience=o.step_size)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.config.trainer.monitor,
                                                       "interval": "epoch"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": o.interval}}


def _unpack(batch):
    """``(x, y, weight)`` of a batch of ``(x, y)`` or ``(x, y, weight)`` samples."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return batch[0], batch[1], None


def _broadcast(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample ``[B]`` or per-pixel ``[B, V]`` weights shaped to multiply ``like`` ([B, ...])."""
    weight = weight.to(device=like.device, dtype=like.dtype)
    return weight.reshape(weight.shape + (1,) * (like.dim() - weight.dim()))


def _unit_stats(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(n), torch.ones(n)


def _config_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What differs between two run configs, ignoring what a resumed run may change."""
    out = []
    for section in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(section), ours.get(section)
        if section in RESUMABLE_CHANGES and not RESUMABLE_CHANGES[section]:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            skip = RESUMABLE_CHANGES.get(section, ())
            for key in sorted(set(a) | set(b)):
                if key not in skip and a.get(key) != b.get(key):
                    out.append(f"{section}.{key}: {a.get(key)!r} there, {b.get(key)!r} here")
        elif a != b:
            out.append(f"{section}: {a!r} there, {b!r} here")
    return out


def _short(d) -> str:
    if not isinstance(d, dict):
        return repr(d)
    return "{" + ", ".join(f"{k}: {('<%d values>' % len(v)) if isinstance(v, list) else v}" for k, v in d.items()) + "}"
