"""The LightningModule: a spherical model, its loss, optimizer and metrics.

Checkpoints carry everything needed to rebuild the model without the config
file (``checkpoint["graphsphere"]``: the config, the sampling, the data's
channels and outputs, the shapes of all weights) and the random-number
state, so that a resumed run continues bit for bit.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from .config import AUTOMATIC_MODEL_ARGS, Config, ConfigError, resolve_model_class
from .metrics import make_metrics

__all__ = ["SphereTask", "build_model", "convert_sync_batchnorm", "CHECKPOINT_FORMAT",
           "CheckpointError", "read_checkpoint", "sampling_to_plain", "sampling_from_plain"]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is not ours, is damaged, or belongs to another model."""


def build_model(model_cfg, task: str, sampling, in_channels: int, n_out: int) -> torch.nn.Module:
    """Instantiate the configured model; the automatic arguments are passed
    where the model's signature has them."""
    import inspect

    cls = resolve_model_class(model_cfg.type)
    params = inspect.signature(cls).parameters
    # graphsphere.models speak of "classification" for per-vertex classes too.
    model_task = "regression" if task == "regression" else "classification"
    auto = {"sampling": sampling, "in_channels": in_channels, "task": model_task}
    auto["out_channels" if "out_channels" in params else "out_features"] = n_out
    kwargs = {k: v for k, v in auto.items() if k in params}
    kwargs.update(model_cfg.extra)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError([("model", f" ({model_cfg.type}): {e}")]) from None


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Swap batch norms for synchronized ones (DDP on GPUs), in place.

    The batch norms of ``graphsphere.models`` normalise the channels of
    ``[B, V, C]``; ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` would
    make them plain SyncBatchNorms that normalise axis 1 (the vertices), so
    they become :class:`_VertexSyncBatchNorm`, which keep the layout.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    from ..models import _VertexBatchNorm

    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.SyncBatchNorm):
            continue
        if isinstance(child, _VertexBatchNorm):
            new = _VertexSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.train(child.training))
        elif isinstance(child, _BatchNorm):
            setattr(module, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            convert_sync_batchnorm(child)
    return module


class _VertexSyncBatchNorm(torch.nn.SyncBatchNorm):
    """SyncBatchNorm over the channels of ``[batch, vertices, channels]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def sampling_to_plain(s) -> dict[str, Any]:
    """A sampling as plain Python (lists, not arrays): safe in a checkpoint."""
    d = {"type": type(s).__name__}
    for k, v in s.to_dict().items():
        d[k] = np.asarray(v).tolist() if np.ndim(v) > 0 else (v.item() if hasattr(v, "item") else v)
    return d


def sampling_from_plain(d: dict[str, Any]):
    from ..sampling import from_dict

    return from_dict({k: (np.asarray(v) if isinstance(v, list) else v) for k, v in d.items()})


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


def read_checkpoint(path) -> dict[str, Any]:
    """Load a graphsphere checkpoint (tensors only: safe with ``weights_only``)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path.resolve()}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not one of ours"
        raise CheckpointError(f"{path} is not a readable graphsphere checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "graphsphere" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a graphsphere training checkpoint (no 'graphsphere' entry; found "
                              f"{keys}); checkpoints are written by graphsphere.train.fit / `graphsphere train`")
    return ckpt


class SphereTask(pl.LightningModule):
    """A spherical model trained for ``task`` (classification, regression or segmentation).

    Built from a validated config and what the data say (sampling, channels,
    outputs); :meth:`from_checkpoint` rebuilds it from a checkpoint alone.
    """

    def __init__(self, config: Config, sampling, in_channels: int, n_out: int, class_names=None):
        super().__init__()
        self.config, self.task = config, config.task
        self.sampling, self.in_channels, self.n_out = sampling, int(in_channels), int(n_out)
        self.class_names = list(class_names) if class_names else None
        self.model = build_model(config.model, self.task, sampling, self.in_channels, self.n_out)
        if config.trainer.sync_batchnorm:
            convert_sync_batchnorm(self.model)
        self.val_metrics = make_metrics(self.task, self.n_out)
        self.test_metrics = make_metrics(self.task, self.n_out)
        self._pending_rng = None

    # -- identity ---------------------------------------------------------------------------------
    def weight_shapes(self) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self.model.state_dict().items() if isinstance(v, torch.Tensor)}

    def meta(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(),
                "sampling": sampling_to_plain(self.sampling), "in_channels": self.in_channels,
                "n_out": self.n_out, "class_names": self.class_names, "weight_shapes": self.weight_shapes()}

    def check_compatible(self, meta: dict[str, Any], path) -> None:
        """Raise :class:`CheckpointError` if a checkpoint holds another model."""
        mine = self.meta()
        problems = []
        for key in ("in_channels", "n_out"):
            if meta.get(key) != mine[key]:
                problems.append(f"{key}: {meta.get(key)} there, {mine[key]} here")
        if meta.get("sampling") != mine["sampling"]:
            problems.append(f"sampling: {_short(meta.get('sampling'))} there, {_short(mine['sampling'])} here")
        old_model = (meta.get("config") or {}).get("model")
        if old_model != mine["config"]["model"]:
            problems.append(f"model: {old_model} there, {mine['config']['model']} here")
        old_task = (meta.get("config") or {}).get("task")
        if old_task != self.task:
            problems.append(f"task: {old_task} there, {self.task} here")
        if not problems and meta.get("weight_shapes") != mine["weight_shapes"]:
            theirs, ours = meta.get("weight_shapes") or {}, mine["weight_shapes"]
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            problems.append(f"weights differ: {diff[:5]}")
        if problems:
            raise CheckpointError(f"{path} holds a different model:\n  " + "\n  ".join(problems)
                                  + "\n  use a new output_dir, set trainer.resume=false, or restore the old settings")

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> "SphereTask":
        """Rebuild the trained module from a checkpoint file."""
        ckpt = read_checkpoint(path)
        meta = ckpt["graphsphere"]
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {meta.get('format')} is not supported "
                                  f"(this version reads {CHECKPOINT_FORMAT})")
        from .config import load_config

        cfg = load_config(meta["config"])
        module = cls(cfg, sampling_from_plain(meta["sampling"]), meta["in_channels"], meta["n_out"],
                     meta.get("class_names"))
        module.check_compatible(meta, path)
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
        return self.model(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            if out.shape != y.shape:
                out = out.reshape(y.shape)
            return F.mse_loss(out.float(), y.float())
        return F.cross_entropy(out.reshape(-1, self.n_out).float(), y.reshape(-1))

    def _check_output(self, out: torch.Tensor, x: torch.Tensor) -> None:
        if self.task == "segmentation":
            want = (x.shape[0], x.shape[1], self.n_out)
        elif self.task == "classification":
            want = (x.shape[0], self.n_out)
        else:
            return
        if tuple(out.shape) != want:
            raise ValueError(f"{self.config.model.type} returned shape {tuple(out.shape)} for task {self.task!r}, "
                             f"expected {want} ([batch, classes] for classification, [batch, pixels, classes] for "
                             "segmentation)")

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self._check_output(out, x)
        loss = self.loss(out, y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def _eval_step(self, batch, metrics, prefix: str):
        x, y = batch
        out = self(x)
        self._check_output(out, x)
        loss = self.loss(out, y)
        metrics.update(out, y)
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
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.postprocess(self(x))

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        """Probabilities for classification/segmentation, values for regression."""
        return out.float() if self.task == "regression" else out.float().softmax(-1)

    def configure_optimizers(self):
        o = self.config.optim
        params = self.parameters()
        if o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        elif o.name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
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


def _short(d) -> str:
    if not isinstance(d, dict):
        return repr(d)
    return "{" + ", ".join(f"{k}: {('<%d ids>' % len(v)) if isinstance(v, list) else v}" for k, v in d.items()) + "}"
