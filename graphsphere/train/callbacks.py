"""Checkpoints that survive a crash, and the summary printed at the start.

:class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the
same folder, flushes it to disk (``fsync``) and renames it over the old one
(``os.replace``, atomic on POSIX): a kill at any moment leaves either the old
checkpoint or the new one, never half a file.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from ..files import atomic_write
from .checkpoint import DIGEST_KEY, read_checkpoint, tensor_digest

__all__ = ["AtomicCheckpointIO", "LayerSummary", "PlainProgress", "layer_summary", "atomic_torch_save",
           "DivergenceGuard", "TrainingDiverged"]


def atomic_torch_save(obj: Any, path) -> None:
    """``torch.save`` to ``path`` atomically (:func:`graphsphere.files.atomic_write`).

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "x.pt")
    >>> atomic_torch_save({"w": torch.ones(2)}, p)
    >>> torch.load(p)["w"].tolist()
    [1.0, 1.0]
    """
    with atomic_write(path) as f:
        torch.save(obj, f)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-safe (see module docstring) and verifiable: every
    checkpoint carries the SHA-256 of its tensors, and one whose weights are not finite (a run that
    diverged) is never written."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        bad = next((k for k, v in checkpoint.get("state_dict", {}).items()
                    if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise TrainingDiverged(f"not writing {path}: {bad} is not finite (the training diverged at step "
                                   f"{checkpoint.get('global_step')}); lower the learning rate (optim.lr)")
        checkpoint[DIGEST_KEY] = tensor_digest(checkpoint)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # graphsphere checkpoints hold tensors and plain Python only: load them safely, verified,
        # in the current format (a checkpoint of graphsphere 0.1 resumes too).
        return read_checkpoint(path)


class TrainingDiverged(ValueError):
    """The loss or the weights are no longer finite: the learning rate is too high (or the data hold NaN)."""


class DivergenceGuard(Callback):
    """Stop at the first training step whose loss is not finite, with a message that says what to do
    (instead of a NaN loss logged for the rest of the run, or an input-data error deeper in)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"the loss diverged ({float(loss):g}) at step {trainer.global_step}: lower the learning rate "
                f"(optim.lr={pl_module.config.optim.lr:g} now), or check the data for NaN or huge values")


def layer_summary(model: torch.nn.Module, x: torch.Tensor) -> str:
    """A table of the layers that ran on ``x``: output shape, pixels, parameters.

    Lists modules that own parameters or have no children, in the order they
    ran; parameters are counted where they live, so the column sums to the total.
    """
    rows: dict[str, tuple] = {}
    hooks = []
    for name, mod in model.named_modules():
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        if not name or not (own or next(mod.children(), None) is None):
            continue

        def hook(m, inp, out, name=name, own=own):
            if name not in rows:
                t = out[0] if isinstance(out, (tuple, list)) else out
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else ()
                rows[name] = (type(m).__name__, shape, own)

        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    total = sum(p.numel() for p in model.parameters())
    lines = [f"{'layer':<32} {'type':<18} {'output':<18} {'pixels':>8} {'params':>10}"]
    for name, (kind, shape, own) in rows.items():
        pixels = str(shape[1]) if len(shape) == 3 else "-"
        lines.append(f"{name[:32]:<32} {kind[:18]:<18} {str(list(shape))[:18]:<18} {pixels:>8} {own:>10,}")
    lines.append(f"{'total':<32} {'':<18} {'':<18} {'':>8} {total:>10,}")
    return "\n".join(lines)


class LayerSummary(Callback):
    """At the start of fit, one line about the model (``verbose``: the :func:`layer_summary` table
    of the model on one training sample)."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        n = sum(p.numel() for p in pl_module.model.parameters())
        print(f"{pl_module.config.model.type} on {pl_module.sampling!r}, task {pl_module.task}, "
              f"{pl_module.in_channels} input channel(s), {pl_module.n_out} output(s), {n:,} parameters"
              + (":" if self.verbose else ""), flush=True)
        if self.verbose:
            sample = trainer.datamodule.splits.train[0]
            x = sample[0] if isinstance(sample, (tuple, list)) else sample
            print(layer_summary(pl_module.model, x[None].to(pl_module.device)), flush=True)


class PlainProgress(Callback):
    """Progress as plain lines, one per epoch (for logs and pipes, where a progress bar's carriage
    returns would fill the file): ``epoch 3/10  train_loss 0.52  val_loss 0.61  val_acc 0.80  (4 s)``."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import time

        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import time

        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        keys = ["train_loss_epoch"] + sorted(k for k in m if k.startswith("val_") and m[k].numel() == 1)
        shown = "  ".join(f"{k.removesuffix('_epoch')} {float(m[k]):.4g}" for k in keys if k in m)
        seconds = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({seconds:.0f} s)", flush=True)
