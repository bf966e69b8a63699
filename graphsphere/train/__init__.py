"""Training on PyTorch Lightning: configs, the engine, checkpoints, metrics.

Needs the ``train`` extra (lightning, torchmetrics, pydantic, pyyaml). Names
are imported on first use, so ``import graphsphere.train`` is cheap.

>>> import graphsphere.train as gt
>>> cfg = gt.load_train_config({"task": "classification", "sampling": {"type": "HEALPix", "nside": 4}})
>>> cfg.trainer.batch_size
32

    result = gt.fit("experiments/example_synthetic.yaml", ["trainer.max_epochs=3"])
    gt.evaluate(result.best_checkpoint)            # {"test_acc": ..., "test_f1": ..., "test_loss": ...}
    gt.predict(result.best_checkpoint, maps)       # [n, classes] probabilities

Datasets come from :mod:`graphsphere.data` (``register_dataset``), models from
:mod:`graphsphere.models` (``register_model``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fit": "engine", "evaluate": "engine", "predict": "engine", "FitResult": "engine",
    "Config": "config", "ConfigError": "config", "load_train_config": "config",
    "SphereTask": "module", "CheckpointError": "checkpoint",
    "make_metrics": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
