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

__all__ = ["AtomicCheckpointIO", "LayerSummary", "layer_summary", "atomic_torch_save"]


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
    """Lightning's checkpoint writer, made crash-safe (see module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # graphsphere checkpoints hold tensors and plain Python only: load them safely.
        return torch.load(path, map_location=map_location or "cpu", weights_only=True if weights_only is None
                          else weights_only)


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
    """Print :func:`layer_summary` of the model on one training sample at the start of fit."""

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        sample = trainer.datamodule.splits.train[0]
        x = sample[0] if isinstance(sample, (tuple, list)) else sample
        x = x[None].to(pl_module.device)
        print(f"{pl_module.config.model.type} on {pl_module.sampling!r}, task {pl_module.task}, "
              f"{pl_module.in_channels} input channel(s), {pl_module.n_out} output(s):")
        print(layer_summary(pl_module.model, x), flush=True)
