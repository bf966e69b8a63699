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
    """Stop a run that diverges, with a message that says what to do (instead of a huge or NaN loss logged
    for the rest of the run, weights saved that are of no use, or an input-data error deeper in).

    Checked after every optimiser step, before any checkpoint of that step is written (Lightning runs the
    checkpoint callbacks last): the loss is not finite; a weight or a buffer (batch-norm statistics) is not
    finite after the step; or the loss exceeds ``factor`` times the first training loss of the run (Adam at a
    learning rate far too high gives finite losses of 1e23 and weights of 1e12, which no NaN check sees).
    The first loss travels in the checkpoints, so a resumed run compares with the same value.

    ``factor`` (``trainer.divergence_factor``, default 1e6; None: no such check): the first loss is that
    of the untrained model, which an ordinary run only lowers (cross-entropy starts near ln C, a standardised
    regression near 1); a batch 10^6 times worse means predictions ~1000 standard deviations off, which no
    learning run goes through, whereas a run that diverges passes 10^6 within a few steps (lr 1e12: 0.74 at
    step 1, 2.7e24 at step 2).
    """

    def __init__(self, factor: float | None = 1e6):
        self.factor = factor
        self.first_loss: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach().float().mean())
        step = trainer.global_step          # this step's update is done; its loss came from the weights before
        why, bad_from = None, step - 1      # the first step whose weights are not to be kept
        if not torch.isfinite(loss).all():
            why = f"loss {value:g}"
        else:
            bad = _first_non_finite(pl_module)
            if bad is not None:
                why, bad_from = f"{bad} is not finite after the optimiser step", step
            elif self.factor is not None:
                if self.first_loss is None and value > 0:
                    self.first_loss = value
                elif self.first_loss is not None and value > self.factor * self.first_loss:
                    why = (f"loss {value:.3g}, over trainer.divergence_factor={self.factor:g} times the first loss "
                           f"{self.first_loss:.3g}")
        if why is not None:
            removed = _remove_checkpoints_from(trainer, bad_from)
            raise TrainingDiverged(
                f"the loss diverged at step {step} ({why}): lower the learning rate "
                f"(optim.lr={pl_module.config.optim.lr:g} now), or check the data for NaN or huge values"
                + (f"; removed {', '.join(removed)} (written from the diverged weights)" if removed else ""))


def _remove_checkpoints_from(trainer, step: int) -> list[str]:
    """Delete the run's checkpoints of global step ``step`` or later: the loss that revealed the divergence
    was computed with those weights (finite, but of no use: Adam at lr 1e12 gives weights of 1e12 a step
    before the loss shows it). Earlier checkpoints stay. Returns the names removed."""
    import os

    if not trainer.is_global_zero:
        return []
    paths = {p for cb in trainer.checkpoint_callbacks for p in (getattr(cb, "last_model_path", ""),
                                                                getattr(cb, "best_model_path", "")) if p}
    removed = []
    for p in sorted(paths):
        try:
            written_at = torch.load(p, map_location="cpu", weights_only=True).get("global_step", 0)
        except Exception:  # noqa: BLE001 - gone or unreadable: nothing to remove
            continue
        if written_at >= step:
            os.remove(p)
            removed.append(os.path.basename(p))
    return removed


def _first_non_finite(module: torch.nn.Module) -> str | None:
    """The name of the first floating-point parameter or buffer holding NaN or Inf, or None (one
    device sync: the sums of all tensors are stacked; a sum is finite only if every value is)."""
    named = [(n, t) for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_floating_point()]
    if not named:
        return None
    finite = torch.isfinite(torch.stack([t.detach().sum().float() for _, t in named]))
    if bool(finite.all()):
        return None
    # a sum past the float range with every value finite is not a NaN or Inf (the loss check sees it)
    return next((n for (n, t), ok in zip(named, finite.tolist()) if not ok and not torch.isfinite(t).all()), None)


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
        start = getattr(self, "_start", None)      # None: an epoch resumed mid-way (its start was not seen)
        seconds = time.perf_counter() - start if start is not None else 0.0
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({seconds:.0f} s)", flush=True)
